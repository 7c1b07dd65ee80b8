"""BatchQueue on the device: 64 clients, every result against its golden output."""

from __future__ import annotations

from typing import Any

import pytest
from cs_checks import fail, judge_section, not_applicable
from cs_config import BATCH_QUEUE_SECTIONS, SuiteOptions
from cs_runner import ScenarioResult, run_scenario


def batch_queue_available(suite: SuiteOptions) -> bool:
    return bool(suite.info.get("torch_mps_batch_queue") or suite.batch_queue_file)


@pytest.fixture(scope="module")
def queue_run(device_ready: SuiteOptions) -> ScenarioResult | None:
    if not batch_queue_available(device_ready):
        return None
    return run_scenario(
        "batch_queue",
        device_ready.scenario_params(),
        timeout_s=device_ready.timeout_s,
        allow_crash=True,
    )


@pytest.mark.parametrize("part", BATCH_QUEUE_SECTIONS)
def test_batch_queue(
    suite: SuiteOptions, queue_run: ScenarioResult | None, figures: dict[str, Any], part: str
) -> None:
    if not batch_queue_available(suite):
        reason = "torch.mps.BatchQueue is missing and no --batch-queue-file was given"
        if suite.require_patched:
            fail(f"--require-patched: {reason}")
        not_applicable(reason)
    assert queue_run is not None
    judge_section(queue_run, part, figures)
    if "mean_batch_rows" in figures:
        figures["summary"] = (
            f"{figures['requests']} requests in {figures['batches']} batches "
            f"(mean {figures['mean_batch_rows']} rows, max {figures['max_batch_rows']})"
        )
