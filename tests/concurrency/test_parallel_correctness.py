"""Every output of every thread equals the golden single-thread output (1..64 threads)."""

from __future__ import annotations

from typing import Any

import pytest
from cs_checks import fail
from cs_config import WORKLOADS


@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload(scenario, figures: dict[str, Any], workload: str) -> None:
    result = scenario("correctness", workload=workload)
    problems = []
    outputs = mismatches = 0
    worst: float | str = 0.0
    for variant, section in result.sections.items():
        totals = section["figures"].get("totals", {})
        figures[variant] = section["figures"]
        outputs += totals.get("outputs_checked", 0)
        mismatches += totals.get("mismatches", 0)
        diff = totals.get("worst_abs_diff", 0.0)
        worst = "inf" if "inf" in (diff, worst) else max(worst, diff)
        problems += [f"[{variant}] {msg}" for msg in section["failures"]]
        if section["error"]:
            problems.append(f"[{variant}] raised:\n{section['error']}")
    figures["summary"] = (
        f"{len(result.sections)} variants, {outputs} outputs, "
        f"{mismatches} mismatches, worst abs diff {worst}"
    )
    if not result.sections:
        fail("no variant finished")
    if problems:
        fail(f"{workload}: " + "\n".join(problems))
