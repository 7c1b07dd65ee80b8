#!/usr/bin/env python3
"""Stress-test the MPS stream pool core under ThreadSanitizer.

Compiles aten/src/ATen/mps/MPSStreamPool.cpp of the patched PyTorch tree together with the
driver tests/pool_stress/stress_main.cpp (a test stream type stands in for MPSStream) using
``clang++-16 -std=c++17 -O1 -g -fsanitize=thread -pthread`` and runs it twice: once under the
default policy (64 threads x 10,000 cycles, 10,000 short-lived threads, 64 threads on 32
streams, set_stream overrides, fork with live threads) and once with
PYTORCH_MPS_STREAM_POOL_POLICY=wait. Exit status 0 iff ThreadSanitizer reports nothing and no
invariant is violated; the summary line comes last.

Usage: python scripts/pool_stress.py [--tree DIR] [--scale PCT] [--mode both|share|wait]
                                    [--plant-bug NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

DRIVER = PROJECT_ROOT / "tests" / "pool_stress" / "stress_main.cpp"
CORE_DIR = Path("aten/src/ATen/mps")
CORE_FILES = ("MPSStreamPool.h", "MPSStreamPool.cpp")
CXX_FLAGS = ["-std=c++17", "-O1", "-g", "-fsanitize=thread", "-pthread"]
# exitcode: TSan's own exit status when it reported something. die_after_fork=0: the fork
# scenario starts a thread in the child on purpose (to check it gets a clear error).
TSAN_EXITCODE = 66
TSAN_OPTIONS = f"halt_on_error=0 exitcode={TSAN_EXITCODE} die_after_fork=0 second_deadlock_stack=1"
TSAN_REPORT = "WARNING: ThreadSanitizer:"
WAIT_POLICY_TIMEOUT_MS = 1000
RUN_TIMEOUT_S = 600

# Deliberate bugs for proving that the stress test can fail: name -> (original, replacement)
# in MPSStreamPool.cpp. Each one breaks a different promise of the pool.
PLANTED_BUGS: dict[str, tuple[str, str]] = {
    # data race: pinning a stream without the pool lock (ThreadSanitizer must report it)
    "no-lock-pin": (
        "void MPSStreamPoolCore::pin(int id) {\n  std::lock_guard<std::mutex> lock(impl_->mu);",
        "void MPSStreamPoolCore::pin(int id) {",
    ),
    # a held stream counts as free: two threads get one stream exclusively
    "double-assign": (
        "if (impl.slots[i].holders == 0 && !impl.slots[i].draining) {\n        id = i;",
        "if (!impl.slots[i].draining) {\n        id = i;",
    ),
    # a slot is free again before its last holder drained it
    "free-before-drain": (
        "      impl.slots[id].draining = true;\n    }\n  }",
        "    }\n  }",
    ),
    # thread exit does not give the stream back
    "no-exit-giveback": ("    pool->releaseCurrentThread();\n  }", "  }"),
    # a binding whose stream could not be created keeps its slot
    "keep-slot-on-create-failure": (
        "    giveBack(id, /*thread_exit=*/false); // the slot must not stay held by a failed"
        " binding\n",
        "",
    ),
    # outside per-thread mode a thread still gets a worker stream of its own
    "auto-bind-without-opt-in": (
        "if (b.exited || isMainThread(b) || !perThread()) {",
        "if (b.exited || isMainThread(b)) {",
    ),
}


class StressError(Exception):
    """A usage or setup problem with a clear fix."""


@dataclass
class RunResult:
    mode: str
    returncode: int
    output: str
    tsan_reports: int
    values: dict[str, str] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return int(self.values.get("violations", "-1"))

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and self.tsan_reports == 0 and self.violations == 0


def find_compiler() -> tuple[str, str | None]:
    """The C++ compiler and, when it is not clang++-16, a note saying so."""
    for name in ("clang++-16", "clang++"):
        path = shutil.which(name)
        if path:
            note = None if name == "clang++-16" else f"note: clang++-16 not found, using {path}"
            return path, note
    gxx = shutil.which("g++")
    if gxx:
        return gxx, f"note: clang++ not found, falling back to {gxx} (ThreadSanitizer of GCC)"
    raise StressError("no C++ compiler found (need clang++-16, clang++ or g++ with TSan); "
                      "install clang-16 (apt-get install clang-16)")


def core_sources(tree: Path) -> Path:
    core = tree / CORE_DIR
    missing = [name for name in CORE_FILES if not (core / name).is_file()]
    if missing:
        raise StressError(
            f"{tree} has no {', '.join(str(CORE_DIR / m) for m in missing)}: the stream-pool "
            "patch is not applied there. Pass --tree with a tree that has it "
            "(e.g. the pool helper's patch repository) or add the patch to the series.")
    return core


def prepare_sources(tree: Path, workdir: Path, planted_bug: str | None) -> Path:
    """Copy the pool core into ``workdir/include/ATen/mps`` (planting a bug if asked)."""
    include = workdir / "include"
    target = include / CORE_DIR.relative_to("aten/src")
    target.mkdir(parents=True)
    core = core_sources(tree)
    for name in CORE_FILES:
        shutil.copy2(core / name, target / name)
    if planted_bug:
        old, new = PLANTED_BUGS[planted_bug]
        cpp = target / "MPSStreamPool.cpp"
        text = cpp.read_text()
        if old not in text:
            raise StressError(f"cannot plant bug {planted_bug!r}: its code is not in "
                              f"{core / 'MPSStreamPool.cpp'} any more; update PLANTED_BUGS")
        cpp.write_text(text.replace(old, new, 1))
    return include


def compile_driver(compiler: str, include: Path, output: Path) -> None:
    cmd = [compiler, *CXX_FLAGS, "-I", str(include), str(DRIVER),
           str(include / "ATen" / "mps" / "MPSStreamPool.cpp"), "-o", str(output)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StressError(f"compiling the stress driver failed:\n{' '.join(cmd)}\n"
                          f"{proc.stdout}{proc.stderr}")


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def run_mode(binary: Path, mode: str, scale: int) -> RunResult:
    env = {**os.environ, "TSAN_OPTIONS": TSAN_OPTIONS}
    env.pop("PYTORCH_MPS_STREAM_POOL_POLICY", None)
    env.pop("PYTORCH_MPS_STREAM_POOL_WAIT_MS", None)
    if mode == "wait":
        env["PYTORCH_MPS_STREAM_POOL_POLICY"] = "wait"
        env["PYTORCH_MPS_STREAM_POOL_WAIT_MS"] = str(WAIT_POLICY_TIMEOUT_MS)
    try:
        proc = subprocess.run([str(binary), mode, str(scale)], env=env, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT_S)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as error:
        returncode = -1
        partial = [_text(error.stdout), _text(error.stderr)]
        output = f"TIMEOUT after {RUN_TIMEOUT_S} s (deadlock?)\n" + "".join(partial)
    values: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith(f"RESULT mode={mode} "):
            values = dict(item.split("=", 1) for item in line.split()[1:])
    reports = output.count(TSAN_REPORT)
    if returncode == TSAN_EXITCODE and reports == 0:
        reports = 1  # TSan's exit status says it reported, even if the text got lost
    return RunResult(mode, returncode, output, reports, values)


def describe_exit(result: RunResult) -> str:
    if result.returncode in (0, 1, TSAN_EXITCODE):
        return ""
    return f" ({result.mode} driver exit status {result.returncode})"


def summary(share: RunResult | None, wait: RunResult | None) -> str:
    runs = [r for r in (share, wait) if r is not None]
    s = share.values if share else {}
    w = wait.values if wait else {}
    cycles = int(s.get("cycles", 0)) + int(w.get("cycles", 0))
    if any(r.violations < 0 for r in runs):
        violations_text = "driver did not finish (see output above)"
    else:
        violations_text = f"{sum(r.violations for r in runs)} invariant violations"
    parts = [f"pool stress: {cycles} cycles"]
    if share:
        fork = "fork child ok" if s.get("fork_child_ok") == "1" else "fork child FAILED"
        parts += [f"{s.get('short_threads', 0)} short-lived threads",
                  f"64 threads on 32 streams ({s.get('overflow_exclusive', '?')} exclusive, "
                  f"{s.get('overflow_shared', '?')} shared)",
                  f"{s.get('overrides', 0)} overrides", fork]
    if wait:
        wait_ok = "ok" if wait.passed and w.get("waiter_served") == "1" else "FAILED"
        parts.append(f"wait policy {wait_ok} (error after {w.get('timeout_error_ms', '?')} ms)")
    parts += [violations_text, f"{sum(r.tsan_reports for r in runs)} tsan reports"]
    return ", ".join(parts) + "".join(describe_exit(r) for r in runs)


def resolve_tree(tree: Path | None, scratch: Path) -> Path:
    if tree is not None:
        if not tree.is_dir():
            raise StressError(f"--tree {tree} is not a directory; give the root of a PyTorch "
                              "tree (the folder that holds aten/)")
        return tree
    from mpsbuild.scratch import patched_reference_tree

    return patched_reference_tree(scratch / "patched")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=None,
                        help="patched PyTorch tree (default: reference tree + project series)")
    parser.add_argument("--scale", type=int, default=100,
                        help="percent of the full workload (default 100)")
    parser.add_argument("--plant-bug", choices=sorted(PLANTED_BUGS), default=None,
                        help="compile a deliberately broken core (proves the test can fail)")
    parser.add_argument("--mode", choices=("both", "share", "wait"), default="both",
                        help="which policy runs (default both)")
    args = parser.parse_args()
    if not 1 <= args.scale <= 1000:
        print(f"error: --scale {args.scale} must be between 1 and 1000", file=sys.stderr)
        return 2
    try:
        compiler, note = find_compiler()
        if note:
            print(note)
        with tempfile.TemporaryDirectory(prefix="pool_stress_") as tmp:
            work = Path(tmp)
            tree = resolve_tree(args.tree, work)
            include = prepare_sources(tree, work, args.plant_bug)
            binary = work / "stress_main"
            compile_driver(compiler, include, binary)
            share = run_mode(binary, "share", args.scale) if args.mode != "wait" else None
            wait = run_mode(binary, "wait", args.scale) if args.mode != "share" else None
    except StressError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = [r for r in (share, wait) if r is not None]
    for result in results:
        if not result.passed:
            print(f"--- {result.mode} run: exit status {result.returncode}, "
                  f"{result.tsan_reports} tsan reports; last output:")
            print("\n".join(result.output.splitlines()[-60:]))
    if args.plant_bug:
        print(f"planted bug: {args.plant_bug}")
    print(summary(share, wait))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
