"""Throughput table: serial, locked threads, free threads, BatchQueue (outputs checked too)."""

from __future__ import annotations

from typing import Any

from cs_checks import judge_section


def test_throughput_table(scenario, figures: dict[str, Any]) -> None:
    section = judge_section(scenario("throughput"), "throughput", figures)
    table = section["figures"]["table"]
    figures["summary"] = ", ".join(
        f"{mode} {row['requests_per_s']}/s"
        for mode, row in table.items()
        if "requests_per_s" in row
    )
