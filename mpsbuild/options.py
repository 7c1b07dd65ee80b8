"""Typed inputs shared by the stages, and the defaults users see in ``--help``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mpsbuild.reference import PINNED_COMMIT, PROJECT_ROOT

DEFAULT_REPO = "https://github.com/pytorch/pytorch.git"
DEFAULT_REF = "v2.9.1"
# The commit that tag v2.9.1 names upstream; a clone of the default URL must resolve to it.
V2_9_1_COMMIT = PINNED_COMMIT
DEFAULT_WORKDIR = PROJECT_ROOT / "build"
DEFAULT_SERIES = PROJECT_ROOT / "patches" / "v2.9.1" / "series"
DEFAULT_WHEELHOUSE = PROJECT_ROOT / "wheelhouse"
PATCHED_BRANCH = "mps-patched"
# A shallow v2.9.1 clone with submodules (~2.5 GB) + a BUILD_TEST=0 build tree (~5 GB) + the
# build venv and compiler cache (~1 GB), with headroom: an estimate, see README "Disk".
DEFAULT_MIN_FREE_GB = 10.0


def default_jobs() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Workdir:
    """Everything the driver writes outside the project lives under one directory."""

    root: Path

    @property
    def source(self) -> Path:
        return self.root / "pytorch"

    @property
    def partial_clone(self) -> Path:
        # A clone lands here first and is renamed when complete, so a half-finished clone is
        # never mistaken for a good one.
        return self.root / "pytorch.partial"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def build_venv(self) -> Path:
        return self.root / "build-venv"

    @property
    def test_venv(self) -> Path:
        return self.root / "test-venv"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"


@dataclass(frozen=True)
class SourceSpec:
    """Where the PyTorch source comes from."""

    repo: str = DEFAULT_REPO
    ref: str = DEFAULT_REF
    submodules: bool = True

    @property
    def is_default_repo(self) -> bool:
        return self.repo.rstrip("/") in {DEFAULT_REPO, DEFAULT_REPO.removesuffix(".git")}


@dataclass(frozen=True)
class BuildSpec:
    """How the wheel is compiled."""

    jobs: int = field(default_factory=default_jobs)
    python: Path = Path(sys.executable)
    min_free_gb: float = DEFAULT_MIN_FREE_GB
    wheelhouse: Path = DEFAULT_WHEELHOUSE
