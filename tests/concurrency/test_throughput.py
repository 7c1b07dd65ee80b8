"""Throughput: serial, locked threads, free threads, BatchQueue.

What passes or fails here is only that every output is right and no request raised under that
load. The requests/s figures are measurements, reported beside the verdict: no floor applies
(a BatchQueue slower than serial does not fail), since they depend on the machine and its load.
"""

from __future__ import annotations

from typing import Any

from cs_checks import judge_section


def test_throughput_outputs_correct_under_load(scenario, figures: dict[str, Any]) -> None:
    section = judge_section(scenario("throughput"), "throughput", figures)
    table = section["figures"]["table"]
    checked = sum(row.get("requests", 0) for row in table.values())
    figures["summary"] = f"{checked} outputs right; requests/s measured, no floor (see table)"
