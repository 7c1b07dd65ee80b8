"""Fixtures of the concurrency suite.

These tests are collected only when scripts/concurrency_suite.py runs them: it resolves and
probes the device, then registers a plugin carrying SuiteOptions. A plain `pytest tests` run of
the project ignores this directory (the project's tests/test_concurrency_suite.py runs the
script end to end instead), so nothing here ever runs against an unprobed device.

Nothing in the parent process touches the device: every check runs its scenario in a child
interpreter (cs_runner), so a crash fails one check, names its signal, and the run goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cs_checks import fail
from cs_config import PLUGIN_ATTRIBUTE, SuiteOptions
from cs_runner import ScenarioResult, run_scenario


def suite_options(config: pytest.Config) -> SuiteOptions | None:
    for plugin in config.pluginmanager.get_plugins():
        options = getattr(plugin, PLUGIN_ATTRIBUTE, None)
        if options is not None:
            return options
    return None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if suite_options(config) is None:
        return True  # only scripts/concurrency_suite.py collects the suite
    return None


@pytest.fixture(scope="session")
def suite(pytestconfig: pytest.Config) -> SuiteOptions:
    options = suite_options(pytestconfig)
    assert options is not None
    return options


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Numbers a check wants in the JSON report (travel in the test report's user_properties)."""
    data: dict[str, Any] = {}
    request.node.user_properties.append(("figures", data))
    return data


@pytest.fixture(scope="session")
def device_ready(suite: SuiteOptions) -> SuiteOptions:
    if not suite.device_check.get("usable"):
        fail(
            f"device {suite.device} is not usable, so this check cannot run: "
            f"{suite.device_check.get('reason', 'unknown')}"
        )
    return suite


@pytest.fixture
def scenario(device_ready: SuiteOptions) -> Callable[..., ScenarioResult]:
    """run(name, **extra_params) -> result of that scenario in a child process."""

    def run(name: str, *, allow_crash: bool = False, **extra: Any) -> ScenarioResult:
        params = {**device_ready.scenario_params(), **extra}
        label = name + "".join(f"[{value}]" for value in extra.values())
        return run_scenario(
            name, params, timeout_s=device_ready.timeout_s, allow_crash=allow_crash, label=label
        )

    return run
