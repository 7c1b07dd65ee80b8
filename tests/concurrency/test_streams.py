"""Stream semantics where the torch has a stream API (our MPS wheel; CUDA)."""

from __future__ import annotations

from typing import Any

import pytest
from cs_checks import fail, judge_section, not_applicable
from cs_config import STREAM_CHECK_NAMES, SuiteOptions
from cs_runner import ScenarioResult, run_scenario

PER_THREAD_CHECK = "per_thread_current_stream"


def stream_api_gap(suite: SuiteOptions, check: str | None = None) -> str | None:
    """Why the stream checks (or `check`) do not apply on this device, or None when they do.

    On MPS the per-thread check also needs our per-thread mode (set_per_thread_streams), which
    stock and upstream torch lack.
    """
    if suite.device == "cpu":
        return "the CPU device has no streams"
    if suite.device == "mps" and suite.info.get("mps_missing_stream_api"):
        return f"torch.mps lacks the stream API {suite.info['mps_missing_stream_api']}"
    missing_mode = suite.info.get("mps_missing_per_thread_api")
    if check == PER_THREAD_CHECK and suite.device == "mps" and missing_mode:
        return f"torch.mps lacks the per-thread stream mode {missing_mode}"
    return None


@pytest.fixture(scope="module")
def stream_run(device_ready: SuiteOptions) -> ScenarioResult | None:
    if stream_api_gap(device_ready):
        return None
    return run_scenario(
        "streams",
        device_ready.scenario_params(),
        timeout_s=device_ready.timeout_s,
        allow_crash=True,
    )


@pytest.mark.parametrize("check", STREAM_CHECK_NAMES)
def test_stream(
    suite: SuiteOptions, stream_run: ScenarioResult | None, figures: dict[str, Any], check: str
) -> None:
    gap = stream_api_gap(suite, check)
    if gap:
        if suite.require_patched and suite.device == "mps":
            fail(f"--require-patched: {gap}")
        not_applicable(gap)
    assert stream_run is not None
    judge_section(stream_run, check, figures)
