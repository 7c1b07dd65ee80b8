"""Test stage: install the wheel into a fresh venv and run the concurrency suite against it."""

from __future__ import annotations

import shutil
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

from mpsbuild.build import venv_python, wheel_version
from mpsbuild.console import Runner, say, stage
from mpsbuild.errors import BuildError
from mpsbuild.options import Workdir
from mpsbuild.reference import PROJECT_ROOT

SUITE = PROJECT_ROOT / "scripts" / "concurrency_suite.py"
DEVICES = ("auto", "mps", "cuda", "cpu")


def find_wheel(wheelhouse: Path, digest: str) -> Path:
    """The wheel of exactly this series in the wheelhouse."""
    pattern = f"torch-{wheel_version(digest)}-*.whl"
    wheels = sorted(wheelhouse.glob(pattern))
    if not wheels:
        found = ", ".join(p.name for p in wheelhouse.glob("*.whl")) or "no wheels"
        raise BuildError(
            f"no wheel for this series ({pattern}) in {wheelhouse} (found: {found}).",
            "build it with `python build.py --apply --wheel`, or download the release wheel "
            "into wheelhouse/.",
        )
    return wheels[-1]


def check_installable(wheel: Path) -> None:
    """A wheel for another platform cannot be tested here: say so before making a venv."""
    _, _, _, tags = parse_wheel_filename(wheel.name)
    supported = set(sys_tags())
    if not any(tag in supported for tag in tags):
        platforms = sorted({tag.platform for tag in tags})
        raise BuildError(
            f"{wheel.name} is built for {', '.join(platforms)} and cannot be installed on this "
            "host.",
            "run --test on an Apple-Silicon Mac (macOS 14+), or add --dry-run to see the plan.",
        )


def run_suite(wheelhouse: Path, digest: str, workdir: Workdir, python: Path, device: str,
              runner: Runner, quick: bool = False) -> Path:
    """Fresh venv, install the wheel, run the suite with ``--require-patched``; returns JSON."""
    stage(f"test: concurrency suite on {device}")
    wheel = (wheelhouse / f"torch-{wheel_version(digest)}-<tags>.whl" if runner.dry_run
             else find_wheel(wheelhouse, digest))
    if not runner.dry_run:
        check_installable(wheel)
        if not SUITE.exists():
            raise BuildError(f"the concurrency suite {SUITE} is missing from this checkout.",
                             "restore scripts/concurrency_suite.py (git checkout -- scripts).")
        if workdir.test_venv.exists():
            shutil.rmtree(workdir.test_venv)  # ours, and it must start clean every time
    runner.run([python, "-m", "venv", workdir.test_venv], log_name="test-venv")
    venv = venv_python(workdir.test_venv)
    runner.run([venv, "-m", "pip", "install", wheel, "pytest", "numpy"],
               log_name="test-install", description="installing the wheel")
    report = workdir.logs / f"suite-{device}.json"
    argv = [venv, SUITE, "--device", device, "--require-patched", "--json", report]
    if quick:
        argv.append("--quick")
    # Run outside the project so `import torch` can only find the installed wheel.
    runner.run(argv, cwd=workdir.root, log_name=f"suite-{device}", description="suite")
    if not runner.dry_run:
        say(f"suite passed; report: {report}")
    return report
