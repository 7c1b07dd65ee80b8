"""Proof that the correctness checker has teeth: a deliberately unsafe module is caught."""

from __future__ import annotations

from typing import Any

from cs_checks import judge_section


def test_unsafe_shared_module_is_detected(scenario, figures: dict[str, Any]) -> None:
    result = scenario("control")
    section = judge_section(result, "control", figures)
    figures["summary"] = f"{section['figures']['mismatches_detected']} mismatches detected"
