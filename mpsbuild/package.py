"""Package stage: repair the wheel with delocate, then write SHA256SUMS and build-info.json."""

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


def package(compiled: CompiledWheel, workdir: Workdir, spec: BuildSpec, info: BuildInfo,
            runner: Runner) -> Path:
    """Repair ``compiled`` into the wheelhouse and write its checksums and provenance."""
    stage(f"package: {spec.wheelhouse}")
    delocate = workdir.build_venv / "bin" / "delocate-wheel"
    runner.run([delocate, "--require-archs", "arm64", "-w", spec.wheelhouse, "-v",
                compiled.path], log_name="delocate")
    if runner.dry_run:
        runner.show(["write", spec.wheelhouse / "SHA256SUMS"])
        runner.show(["write", spec.wheelhouse / "build-info.json"])
        return spec.wheelhouse / compiled.path.name
    wheel = spec.wheelhouse / compiled.path.name
    if not wheel.exists():
        raise BuildError(f"delocate-wheel did not write {wheel}.",
                         "read the delocate log in the logs folder of the workdir.")
    (spec.wheelhouse / "SHA256SUMS").write_text(f"{sha256_file(wheel)}  {wheel.name}\n")
    info.environment = compiled.environment
    info.toolchain = collect_toolchain(workdir.build_venv)
    freeze = subprocess.run([str(venv_python(workdir.build_venv)), "-m", "pip", "freeze"],
                            capture_output=True, text=True, check=False)
    info.dependencies = freeze.stdout.split()
    info.host = collect_host()
    info.finished_at = utc_now()
    (spec.wheelhouse / "build-info.json").write_text(json.dumps(asdict(info), indent=2) + "\n")
    say(f"wheel: {wheel}")
    return wheel
