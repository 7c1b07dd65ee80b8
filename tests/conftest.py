"""Fixtures for the project's tests (the helpers live in driver_helpers.py)."""

import os

import pytest
from driver_helpers import make_series, patched_tree, reference_repo, reference_repo_template

__all__ = ["make_series", "patched_tree", "reference_repo", "reference_repo_template"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under MPSBUILD_REQUIRE_ALL=1 (CI) a test skipped for a missing tool fails instead."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("MPSBUILD_REQUIRE_ALL") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped, but every check must run here: {report.longrepr}"
