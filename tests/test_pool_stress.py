"""The stream-pool stress test passes on the patched tree and fails on broken pool cores.

The patched tree is the reference tree with the project's series applied (the ``patched_tree``
fixture; MPSBUILD_PATCHED_TREE points it at another tree).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_ROOT / "scripts" / "pool_stress.py"
SUMMARY = re.compile(
    r"pool stress: (\d+) cycles, (\d+) short-lived threads, .*?(\d+) invariant violations, "
    r"(\d+) tsan reports")


def run_stress(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), "--tree", str(tree), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def test_full_stress_run_is_clean(patched_tree: Path) -> None:
    proc = run_stress(patched_tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = SUMMARY.search(last_line(proc))
    assert match, f"no summary line last: {proc.stdout[-2000:]}"
    cycles, short_threads, violations, tsan = (int(g) for g in match.groups())
    assert cycles >= 64 * 10_000
    assert short_threads == 10_000
    assert (violations, tsan) == (0, 0)
    assert "32 exclusive, 32 shared" in last_line(proc)
    assert "fork child ok" in last_line(proc)
    assert "wait policy ok" in last_line(proc)


@pytest.mark.parametrize(
    ("bug", "caught_by"),
    [
        ("no-lock-pin", "tsan"),
        ("double-assign", "invariant"),
        ("free-before-drain", "invariant"),
        ("no-exit-giveback", "invariant"),
        ("keep-slot-on-create-failure", "invariant"),
        ("auto-bind-without-opt-in", "invariant"),
    ],
)
def test_planted_bug_is_caught(patched_tree: Path, bug: str, caught_by: str) -> None:
    proc = run_stress(patched_tree, "--plant-bug", bug, "--scale", "20", "--mode", "share")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    match = SUMMARY.search(last_line(proc))
    if caught_by == "tsan":
        assert match and int(match.group(4)) > 0, proc.stdout[-3000:]
    else:
        assert "INVARIANT VIOLATION" in proc.stdout, proc.stdout[-3000:]


def test_tree_without_pool_core_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tree", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "MPSStreamPool.cpp" in proc.stderr and "--tree" in proc.stderr
