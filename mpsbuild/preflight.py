"""Preflight: refuse early, with the fix, when a host cannot build or test the wheel."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

from mpsbuild.errors import BuildError

MIN_MACOS = (14, 0)
# The CPython versions torch 2.9.1 ships macOS arm64 wheels for.
SUPPORTED_PYTHONS = ((3, 10), (3, 11), (3, 12), (3, 13), (3, 14))


def check_git() -> None:
    if shutil.which("git") is None:
        raise BuildError("git is not installed or not on PATH.",
                         "install git (on macOS: `xcode-select --install` or Homebrew).")


def check_wheel_host(python: Path, workdir: Path, min_free_gb: float) -> None:
    """Everything ``--wheel`` needs: macOS 14+ on arm64, Xcode's Metal compiler, a supported
    Python, git and enough disk. Raises on the first problem."""
    check_macos_arm64()
    check_metal_compiler()
    check_python(python)
    check_git()
    check_disk(workdir, min_free_gb)


def check_macos_arm64(system: str | None = None, machine: str | None = None,
                      macos: str | None = None) -> None:
    system = system or platform.system()
    machine = machine or platform.machine()
    if system != "Darwin":
        raise BuildError(
            f"--wheel builds a macOS arm64 wheel with Metal, and this host is {system} {machine}.",
            "run it on an Apple-Silicon Mac with macOS 14 or newer; add --dry-run here to "
            "print the exact macOS plan instead.",
        )
    if machine != "arm64":
        raise BuildError(
            f"this Python runs as {machine}; the MPS wheel needs an arm64 build host.",
            "use an arm64 Python (not one running under Rosetta), e.g. /usr/bin/python3 or "
            "a Homebrew/python.org arm64 build.",
        )
    version = tuple(int(x) for x in (macos or platform.mac_ver()[0] or "0").split(".")[:2])
    if version < MIN_MACOS:
        raise BuildError(f"macOS {'.'.join(map(str, version))} is too old to build the wheel.",
                         "upgrade to macOS 14 (Sonoma) or newer.")


def check_metal_compiler() -> None:
    result = subprocess.run(["xcrun", "-sdk", "macosx", "--find", "metal"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(
            "the Metal compiler was not found (`xcrun -sdk macosx --find metal` failed); "
            "the Command Line Tools alone cannot compile PyTorch's Metal shaders.",
            "install full Xcode, then `sudo xcode-select -s /Applications/Xcode.app`; on "
            "Xcode 26+ also `xcodebuild -downloadComponent MetalToolchain`.",
        )


def check_python(python: Path) -> None:
    result = subprocess.run([str(python), "-c", "import sys; print(*sys.version_info[:2])"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"--python {python} does not run.", "pass a working Python 3.10-3.14.")
    version = tuple(int(x) for x in result.stdout.split())
    if version not in SUPPORTED_PYTHONS:
        raise BuildError(
            f"--python {python} is Python {'.'.join(map(str, version))}; torch 2.9.1 supports "
            "3.10 to 3.14.",
            "pass --python with a supported interpreter (e.g. python3.12).",
        )


def check_disk(workdir: Path, min_free_gb: float) -> None:
    existing = workdir
    while not existing.exists():
        existing = existing.parent
    free_gb = shutil.disk_usage(existing).free / 1e9
    if free_gb < min_free_gb:
        raise BuildError(
            f"{existing} has {free_gb:.1f} GB free; the build needs about {min_free_gb:.0f} GB "
            "(clone, build tree, venv, compiler cache).",
            "free some disk, use --workdir on a larger volume, or lower --min-free-gb if you "
            "know the build fits.",
        )
