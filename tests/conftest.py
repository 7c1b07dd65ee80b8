"""Fixtures for the project's tests (the helpers live in driver_helpers.py)."""

import os
import shutil

import pytest
from driver_helpers import make_series, patched_tree, reference_repo, reference_repo_template

__all__ = ["make_series", "patched_tree", "reference_repo", "reference_repo_template"]

# The pool stress test needs clang's ThreadSanitizer: with GCC's, the forked child reports
# "dup thread with used id", a false invariant violation (scripts/pool_stress.py would fall
# back to g++). Its tests that compile the pool (those on the patched tree) skip without clang.
CLANG_TSAN_MODULE = "test_pool_stress.py"
CLANG_MISSING = ("clang++-16 (or clang++) is not installed, and GCC's ThreadSanitizer reports "
                 "false errors in the stress test's forked child: install clang-16 "
                 "(apt-get install clang-16)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if shutil.which("clang++-16") or shutil.which("clang++"):
        return
    for item in items:
        if item.path.name == CLANG_TSAN_MODULE and "patched_tree" in item.fixturenames:
            item.add_marker(pytest.mark.skip(reason=CLANG_MISSING))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under MPSBUILD_REQUIRE_ALL=1 (CI) a test skipped for a missing tool fails instead."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("MPSBUILD_REQUIRE_ALL") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped, but every check must run here: {report.longrepr}"
