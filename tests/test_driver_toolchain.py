"""Tests that need clang's ThreadSanitizer skip with the reason where only g++ is installed
(issue 13 item 6), and fail instead under --require-all."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from driver_helpers import PROJECT_ROOT, user_env

STRESS_TEST = "tests/test_pool_stress.py::test_full_stress_run_is_clean"


def only_gcc_path(tmp_path: Path) -> str:
    """A PATH with g++ and git but no clang."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("g++", "gcc", "git", "as", "ld"):
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    if not (tools / "g++").exists():
        pytest.skip("g++ is not installed here, so the g++-only case cannot be set up")
    return str(tools)


def run_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           STRESS_TEST], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=1200, env=user_env(PATH=only_gcc_path(tmp_path), **env))


def test_stress_test_skips_with_the_reason_when_only_gcc_is_installed(tmp_path):
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 skipped" in result.stdout
    assert "clang++-16 (or clang++) is not installed" in result.stdout
    assert "apt-get install clang-16" in result.stdout


def test_under_require_all_the_skip_fails(tmp_path):
    result = run_pytest(tmp_path, MPSBUILD_REQUIRE_ALL="1")
    assert result.returncode == 1
    assert "every check must run here" in result.stdout
