"""The fake-Metal runtime simulation: clean on the patched tree, and it catches planted bugs.

Runs ``scripts/metal_sim.py`` (the unmodified MPS runtime files on a fake Metal device, under
ThreadSanitizer and a GPU hazard checker) against the patched tree (the ``patched_tree`` fixture;
MPSBUILD_PATCHED_TREE points it at another tree). Needs clang++-16, cmake and ninja; the first
run builds libobjc2 and libdispatch into .cache/metalsim/ (about a minute).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_ROOT / "scripts" / "metal_sim.py"
sys.path.insert(0, str(PROJECT_ROOT / "scripts"))

import metal_sim  # noqa: E402

SUMMARY = re.compile(r"^metal sim: (\d+) scenarios, (\d+) threads, (\d+) events, (\d+) hazards, "
                     r"(\d+) tsan reports$")
MISSING = [tool for tool in metal_sim.TOOLS if shutil.which(tool) is None]
needs_toolchain = pytest.mark.skipif(
    bool(MISSING), reason=f"needs {', '.join(MISSING)} ({metal_sim.APT_HINT})")


def run_sim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=1500, env=env)


def summary(proc: subprocess.CompletedProcess[str]) -> tuple[int, ...]:
    lines = proc.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1]) if lines else None
    assert match, f"no summary line last:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return tuple(int(g) for g in match.groups())


@needs_toolchain
def test_every_scenario_is_clean_on_the_patched_tree(patched_tree: Path) -> None:
    proc = run_sim("--tree", str(patched_tree))
    scenarios, threads, events, hazards, tsan = summary(proc)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert scenarios == len(metal_sim.SCENARIOS)
    assert (hazards, tsan) == (0, 0)
    assert threads >= 64 and events > 0
    assert proc.stdout.count(": ok: ") == scenarios


@needs_toolchain
@pytest.mark.parametrize("bug", sorted(metal_sim.PLANTED_BUGS))
def test_planted_bug_is_reported(patched_tree: Path, bug: str) -> None:
    proc = run_sim("--tree", str(patched_tree), "--plant-bug", bug, "--scale", "50")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-3000:]
    _, _, _, hazards, tsan = summary(proc)
    if bug == "old-query":
        assert "query()" in proc.stdout and "CHECK FAILED" in proc.stdout, proc.stdout[-4000:]
    elif bug == "unlocked-cache":
        assert tsan > 0, proc.stdout[-4000:]
    elif bug == "consumed-flag":
        assert "CHECK FAILED" in proc.stdout, proc.stdout[-4000:]
        assert "re-recorded event" in proc.stdout, proc.stdout[-4000:]
    elif bug == "stale-time":
        assert "CHECK FAILED" in proc.stdout, proc.stdout[-4000:]
        assert "elapsedTime()" in proc.stdout, proc.stdout[-4000:]
    elif bug == "destroyed-pool":
        assert tsan > 0 and "heap-use-after-free" in proc.stdout, proc.stdout[-4000:]
    elif bug == "reused-shared-event":
        assert hazards > 0, proc.stdout[-4000:]
        assert "a read ordered by an event that was released and reused" in proc.stdout
        assert "a read ordered by an event recorded again elsewhere" in proc.stdout
    elif bug == "unordered-write":
        assert hazards > 0, proc.stdout[-4000:]
        assert "write-handoff" in proc.stdout and "CHECK FAILED" in proc.stdout, proc.stdout[-4000:]
    else:
        assert hazards > 0, proc.stdout[-4000:]
        assert "handoff consumer" in proc.stdout and "handoff producer" in proc.stdout


def test_tree_without_runtime_files_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_sim("--tree", str(tmp_path))
    assert proc.returncode == 2
    assert "aten/src/ATen/mps" in proc.stderr and "--tree" in proc.stderr


def test_missing_tools_name_the_apt_packages(tmp_path: Path) -> None:
    (tmp_path / "aten" / "src" / "ATen" / "mps").mkdir(parents=True)
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    proc = run_sim("--tree", str(tmp_path), env=env)
    assert proc.returncode == 2
    assert "apt-get install" in proc.stderr
    for package in ("clang-16", "cmake", "ninja-build"):
        assert package in proc.stderr


def test_unknown_scenario_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "aten" / "src" / "ATen" / "mps").mkdir(parents=True)
    proc = run_sim("--tree", str(tmp_path), "--scenarios", "no-such-scenario")
    assert proc.returncode == 2
    assert "unknown scenarios: no-such-scenario" in proc.stderr


def test_depfile_parsing_and_portable_cache_keys(tmp_path: Path) -> None:
    text = "out.o: a.mm /x/tree/b.h \\\n  /x/tree/c.h\n"
    assert metal_sim.parse_depfile(text) == ["a.mm", "/x/tree/b.h", "/x/tree/c.h"]
    assert metal_sim.portable("/x/tree/b.h -I/x/tree", Path("/x/tree")) == "<tree>/b.h -I<tree>"
    header = tmp_path / "h.h"
    header.write_text("one")
    before = metal_sim.dependency_digest([str(header)], ["-O1"], tmp_path)
    header.write_text("two")
    assert metal_sim.dependency_digest([str(header)], ["-O1"], tmp_path) != before
    assert metal_sim.dependency_digest([str(tmp_path / "gone.h")], [], tmp_path) is None


def test_outcome_is_clean_only_without_any_finding() -> None:
    base = {"name": "s", "returncode": 0, "output": "", "failures": 0}
    assert metal_sim.Outcome(**base).clean
    assert not metal_sim.Outcome(**{**base, "returncode": 1}).clean
    assert not metal_sim.Outcome(**{**base, "failures": -1}).clean  # no summary printed
    assert not metal_sim.Outcome(**base, hazards=1).clean
    assert not metal_sim.Outcome(**base, tsan_reports=1).clean
    assert not metal_sim.Outcome(**base, signature_mismatches=1).clean
