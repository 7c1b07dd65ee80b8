"""The reference tree with our series applied, in a scratch directory (for Linux checks)."""

from __future__ import annotations

from pathlib import Path

from mpsbuild.reference import make_reference_repo
from mpsbuild.series import DEFAULT_SERIES, apply_series


def patched_reference_tree(dest: Path, series: Path = DEFAULT_SERIES) -> Path:
    """Build a reference repo at ``dest`` (must not exist), apply ``series``, return ``dest``."""
    make_reference_repo(dest)
    apply_series(dest, series)
    return dest
