"""Hand-offs: a tensor made by one thread or stream and read by another, against golden runs.

The cases that apply share one child (one section each, like the stream checks: a crash fails
the case that was running and names it, and the cases after it report that they never ran);
the unsafe control runs in a child of its own, because on MPS it needs the backend's hand-off
tracking off. Where a case does not apply the parent says so without starting a child; under
--require-patched on MPS a missing stream API, per-thread mode or BatchQueue fails instead, as
in the stream and BatchQueue groups.
"""

from __future__ import annotations

from typing import Any

import pytest
from cs_checks import fail, judge_section, not_applicable
from cs_config import (
    HANDOFF_CASE_NAMES,
    HANDOFF_STREAM_CASES,
    MPS_NO_TRACKING_ENV,
    SuiteOptions,
)
from cs_runner import ScenarioResult, run_scenario

PER_THREAD_CASE = "per_thread_mode_to_main"
QUEUE_CASE = "queue_input_from_async_op"
UNSAFE_CASE = "missing_wait_is_detected"


def handoff_gap(suite: SuiteOptions, case: str) -> tuple[str | None, bool]:
    """(why `case` does not apply here or None, whether --require-patched makes it a failure)."""
    device, info = suite.device, suite.info
    if case == QUEUE_CASE and not (info.get("torch_mps_batch_queue") or suite.batch_queue_file):
        return "torch.mps.BatchQueue is missing and no --batch-queue-file was given", True
    if case not in HANDOFF_STREAM_CASES:
        return None, False
    if device == "cpu":
        return "the CPU device has no streams", False
    if device == "mps" and info.get("mps_missing_stream_api"):
        return f"torch.mps lacks the stream API {info['mps_missing_stream_api']}", True
    if case == PER_THREAD_CASE and device != "mps":
        return f"{device} has no per-thread stream mode (threads set streams themselves)", False
    missing_mode = info.get("mps_missing_per_thread_api")
    if case == PER_THREAD_CASE and missing_mode:
        return f"torch.mps lacks the per-thread stream mode {missing_mode}", True
    return None, False


def child_env(suite: SuiteOptions, cases: list[str]) -> dict[str, str] | None:
    """The unsafe control on MPS needs the backend's hand-off tracking off (CUDA semantics)."""
    return MPS_NO_TRACKING_ENV if cases == [UNSAFE_CASE] and suite.device == "mps" else None


def run_cases(suite: SuiteOptions, cases: list[str]) -> ScenarioResult | None:
    if not cases:
        return None
    return run_scenario(
        "handoff",
        {**suite.scenario_params(), "cases": cases},
        timeout_s=suite.timeout_s,
        allow_crash=True,
        label="handoff[" + ",".join(cases) + "]",
        env=child_env(suite, cases),
    )


def applicable(suite: SuiteOptions) -> list[str]:
    return [case for case in HANDOFF_CASE_NAMES if handoff_gap(suite, case)[0] is None]


@pytest.fixture(scope="module")
def shared_run(device_ready: SuiteOptions) -> ScenarioResult | None:
    return run_cases(device_ready, [c for c in applicable(device_ready) if c != UNSAFE_CASE])


@pytest.fixture(scope="module")
def unsafe_run(device_ready: SuiteOptions) -> ScenarioResult | None:
    return run_cases(device_ready, [c for c in applicable(device_ready) if c == UNSAFE_CASE])


@pytest.mark.parametrize("case", HANDOFF_CASE_NAMES)
def test_handoff(
    request: pytest.FixtureRequest,
    device_ready: SuiteOptions,
    figures: dict[str, Any],
    case: str,
) -> None:
    gap, required = handoff_gap(device_ready, case)
    if gap:
        if required and device_ready.require_patched:
            fail(f"--require-patched: {gap}")
        not_applicable(gap)
    result = request.getfixturevalue("unsafe_run" if case == UNSAFE_CASE else "shared_run")
    assert result is not None
    data = judge_section(result, case, figures)["figures"]
    figures["summary"] = summary(case, data)


def summary(case: str, data: dict[str, Any]) -> str:
    if case == UNSAFE_CASE:
        return f"{data['mismatches_detected']} of {data['rounds']} unordered hand-offs caught"
    if "handoffs_checked" in data:
        return (
            f"{data['handoffs_checked']} hand-offs, {data['mismatches']} mismatches, "
            f"{data['identical']} identical"
        )
    totals = data.get("totals", {})
    return f"{totals.get('outputs_checked')} outputs, {totals.get('mismatches')} mismatches"
