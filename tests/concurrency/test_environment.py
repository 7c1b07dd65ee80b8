"""The device really works, the wheel is ours when required, and crashes are detected."""

from __future__ import annotations

from typing import Any

import pytest
from cs_checks import fail, not_applicable
from cs_config import SuiteOptions
from cs_runner import ScenarioDied, run_scenario


def test_device_usable(suite: SuiteOptions, figures: dict[str, Any]) -> None:
    """A real allocation and a computed result on the device (done by the probe child)."""
    figures.update(device=suite.device, selection=suite.device_reason, **suite.device_check)
    if not suite.device_check.get("usable"):
        fail(f"{suite.device}: {suite.device_check.get('reason', 'allocation/compute failed')}")
    figures["summary"] = f"{suite.device}: allocation and computed result OK"


def test_patched_build(suite: SuiteOptions, figures: dict[str, Any]) -> None:
    """With --require-patched: torch must be our thread-safe MPS wheel."""
    info = suite.info
    figures.update(
        series_digest=info.get("series_digest"),
        missing_mps_stream_api=info.get("mps_missing_stream_api"),
        torch_mps_batch_queue=info.get("torch_mps_batch_queue"),
    )
    if not suite.require_patched:
        not_applicable("checked only with --require-patched")
    problems = []
    if not info.get("series_digest"):
        problems.append(f"torch {info.get('torch_version')} has no '+mps.<digest>' label")
    if info.get("mps_missing_stream_api"):
        problems.append(f"torch.mps lacks the stream API: {info['mps_missing_stream_api']}")
    if not info.get("torch_mps_batch_queue"):
        problems.append("torch.mps.BatchQueue is missing")
    if problems:
        fail(
            "--require-patched, but this torch is not a thread-safe MPS wheel: "
            + "; ".join(problems)
        )


def test_crash_detection(figures: dict[str, Any]) -> None:
    """A child that dies by a signal must be reported with the signal's and scenario's names."""
    with pytest.raises(ScenarioDied) as died:
        run_scenario("selftest_crash", {}, timeout_s=60)
    message = str(died.value)
    figures["report"] = message.splitlines()[0]
    assert "SIGSEGV" in message and "selftest_crash" in message, message
    figures["summary"] = figures["report"]
