"""Helpers the suite's checks share: outcomes and judging a scenario's sections."""

from __future__ import annotations

from typing import Any

import pytest
from cs_config import NOT_APPLICABLE_PREFIX
from cs_runner import ScenarioResult, describe_death


def not_applicable(reason: str) -> None:
    """Report a check as not applicable: listed as such, never counted as passed."""
    pytest.skip(f"{NOT_APPLICABLE_PREFIX} {reason}")


def fail(message: str) -> None:
    pytest.fail(message, pytrace=False)


def judge_section(result: ScenarioResult, name: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Fail the check unless section `name` of the scenario finished cleanly."""
    section = result.sections.get(name)
    if section is None:
        fail(f"section {name!r} never finished: " + describe_death(result))
    figures.update(section["figures"])
    if section.get("not_applicable"):
        not_applicable(section["not_applicable"])
    problems = list(section["failures"])
    if section["error"]:
        problems.append("raised:\n" + section["error"])
    if problems:
        fail(f"{result.scenario}/{name}: " + "\n".join(problems))
    return section
