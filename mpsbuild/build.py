"""Build stage: compile the patched tree into a macOS arm64 wheel in a private venv.

The environment follows the official macOS arm64 wheels of v2.9.1 (deployment target 11.0,
BUILD_TEST=0, distributed on, MPS on); only the version differs, so a user sees at a glance
which series a wheel carries.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mpsbuild.console import Runner, ninja_progress, say, stage
from mpsbuild.errors import BuildError
from mpsbuild.options import BuildSpec, Workdir

BUILD_REQUIREMENTS = Path(__file__).with_name("build-requirements.txt")
TORCH_BASE_VERSION = "2.9.1"


def wheel_version(digest: str) -> str:
    """``2.9.1+mps.<8-hex series digest>``: a PEP 440 local version naming the exact series."""
    return f"{TORCH_BASE_VERSION}+mps.{digest}"


def compiler_launcher() -> str | None:
    """sccache or ccache when installed: a rebuild with a warm cache takes minutes, not an hour."""
    for tool in ("sccache", "ccache"):
        if shutil.which(tool):
            return tool
    return None


def build_environment(jobs: int, digest: str, launcher: str | None) -> dict[str, str]:
    """The variables the build sets (the rest of the environment is inherited)."""
    env = {
        "MACOSX_DEPLOYMENT_TARGET": "11.0",
        "CMAKE_OSX_ARCHITECTURES": "arm64",
        "BUILD_TEST": "0",
        "USE_DISTRIBUTED": "1",
        "USE_MPS": "1",
        "USE_CUDA": "0",
        "MAX_JOBS": str(jobs),
        "PYTORCH_BUILD_VERSION": wheel_version(digest),
        # 1 keeps the version exactly as given (higher numbers append .postN).
        "PYTORCH_BUILD_NUMBER": "1",
    }
    if launcher:
        # PyTorch's setup passes CMAKE_* variables through to CMake.
        for language in ("C", "CXX", "OBJC", "OBJCXX"):
            env[f"CMAKE_{language}_COMPILER_LAUNCHER"] = launcher
    return env


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@dataclass(frozen=True)
class CompiledWheel:
    path: Path
    environment: dict[str, str]


def compile_wheel(source: Path, workdir: Workdir, spec: BuildSpec, digest: str,
                  runner: Runner) -> CompiledWheel:
    """Create the build venv, install pinned build dependencies and build the wheel."""
    stage(f"wheel: torch {wheel_version(digest)} with {spec.jobs} jobs")
    python = venv_python(workdir.build_venv)
    if not python.exists():
        runner.run([spec.python, "-m", "venv", workdir.build_venv], log_name="venv")
    runner.run([python, "-m", "pip", "install", "--upgrade", "pip"], log_name="pip-upgrade")
    runner.run([python, "-m", "pip", "install", "-r", source / "requirements.txt"],
               log_name="pip-torch-requirements", description="build dependencies")
    runner.run([python, "-m", "pip", "install", "-r", BUILD_REQUIREMENTS],
               log_name="pip-build-requirements")
    launcher = compiler_launcher()
    say(f"compiler cache: {launcher or 'none found (install ccache or sccache to rebuild fast)'}")
    env = build_environment(spec.jobs, digest, launcher)
    dist = workdir.root / "dist"
    if dist.exists() and not runner.dry_run:
        for stale in dist.glob("torch-*.whl"):
            stale.unlink()  # our own earlier output: never let an old wheel be packaged
    runner.run([python, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist],
               cwd=source, env=env, log_name="build", progress=ninja_progress,
               description="compiling")
    if runner.dry_run:
        return CompiledWheel(dist / f"torch-{wheel_version(digest)}-<tags>.whl", env)
    wheels = sorted(dist.glob(f"torch-{wheel_version(digest)}-*.whl"))
    if not wheels:
        raise BuildError(f"the build finished but left no torch {wheel_version(digest)} wheel "
                         f"in {dist}.", "read the build log in the logs folder of the workdir.")
    return CompiledWheel(wheels[-1], env)
