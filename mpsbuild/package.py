"""Package stage: repair the wheel with delocate, then write its checksums and provenance.

Each wheel gets ``<wheel stem>.build-info.json`` and ``<wheel stem>.SHA256SUMS`` beside it, so
wheels for several Pythons (or series) share one wheelhouse, and one release, without
overwriting each other's files. ``SHA256SUMS`` combines every wheel's checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mpsbuild.build import CompiledWheel, venv_python
from mpsbuild.console import Runner, say, stage
from mpsbuild.errors import BuildError
from mpsbuild.options import BuildSpec, Workdir


@dataclass
class BuildInfo:
    """Provenance written beside the wheel: enough to reproduce or audit the build."""

    base_commit: str
    series_digest: str
    patches: dict[str, str]  # patch file name -> sha256
    started_at: str
    finished_at: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    toolchain: dict[str, str] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    host: dict[str, str] = field(default_factory=dict)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "not found"
    return out.strip().splitlines()[0] if out.strip() else "not found"


def collect_toolchain(venv: Path) -> dict[str, str]:
    return {
        "xcode": _first_line(["xcodebuild", "-version"]),
        "clang": _first_line(["xcrun", "clang", "--version"]),
        "metal": _first_line(["xcrun", "-sdk", "macosx", "metal", "--version"]),
        "cmake": _first_line([str(venv / "bin" / "cmake"), "--version"]),
        "ninja": _first_line([str(venv / "bin" / "ninja"), "--version"]),
        "python": _first_line([str(venv_python(venv)), "--version"]),
        "git": _first_line(["git", "--version"]),
    }


def collect_host() -> dict[str, str]:
    return {
        "system": platform.system(),
        "macos": platform.mac_ver()[0],
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "node": platform.node(),
    }


def build_info_path(wheel: Path) -> Path:
    return wheel.with_name(wheel.name.removesuffix(".whl") + ".build-info.json")


def checksums_path(wheel: Path) -> Path:
    return wheel.with_name(wheel.name.removesuffix(".whl") + ".SHA256SUMS")


def combined_checksums(wheelhouse: Path) -> Path:
    """Every per-wheel ``*.SHA256SUMS`` of the wheelhouse in one file, the release's layout."""
    combined = wheelhouse / "SHA256SUMS"
    lines = [line for sums in sorted(wheelhouse.glob("*.SHA256SUMS"))
             for line in sums.read_text().splitlines() if line.strip()]
    by_file_name = sorted(lines, key=lambda line: line.split("  ", 1)[-1])
    combined.write_text("".join(f"{line}\n" for line in by_file_name))
    return combined


def write_wheel_records(wheel: Path, info: BuildInfo) -> tuple[Path, Path]:
    """Write the wheel's build-info.json, then its SHA256SUMS (wheel and build-info), then
    refresh the wheelhouse's combined SHA256SUMS."""
    info_file = build_info_path(wheel)
    info_file.write_text(json.dumps(asdict(info), indent=2) + "\n")
    sums = checksums_path(wheel)
    sums.write_text("".join(f"{sha256_file(path)}  {path.name}\n" for path in (wheel, info_file)))
    combined_checksums(wheel.parent)
    return info_file, sums


def package(compiled: CompiledWheel, workdir: Workdir, spec: BuildSpec, info: BuildInfo,
            runner: Runner) -> Path:
    """Repair ``compiled`` into the wheelhouse and write its checksums and provenance."""
    stage(f"package: {spec.wheelhouse}")
    delocate = workdir.build_venv / "bin" / "delocate-wheel"
    runner.run([delocate, "--require-archs", "arm64", "-w", spec.wheelhouse, "-v",
                compiled.path], log_name="delocate")
    wheel = spec.wheelhouse / compiled.path.name
    if runner.dry_run:
        for path in (build_info_path(wheel), checksums_path(wheel), spec.wheelhouse / "SHA256SUMS"):
            say(f"would write: {path}")
        return wheel
    if not wheel.exists():
        raise BuildError(f"delocate-wheel did not write {wheel}.",
                         "read the delocate log in the logs folder of the workdir.")
    info.environment = compiled.environment
    info.toolchain = collect_toolchain(workdir.build_venv)
    freeze = subprocess.run([str(venv_python(workdir.build_venv)), "-m", "pip", "freeze"],
                            capture_output=True, text=True, check=False)
    info.dependencies = freeze.stdout.split()
    info.host = collect_host()
    info.finished_at = utc_now()
    write_wheel_records(wheel, info)
    say(f"wheel: {wheel}")
    return wheel
