"""Series stage: apply, export and check the patch series (placeholder, being written)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mpsbuild.reference import PROJECT_ROOT

DEFAULT_SERIES = PROJECT_ROOT / "patches" / "v2.9.1" / "series"


def read_series(series: Path) -> list[Path]:
    names = [line.strip() for line in series.read_text().splitlines()]
    return [series.parent / n for n in names if n and not n.startswith("#")]


def apply_series(repo: Path, series: Path = DEFAULT_SERIES) -> None:
    patches = read_series(series) if series.exists() else []
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-b", "mps-patched"], check=True)
    if patches:
        subprocess.run(["git", "-C", str(repo), "am", "-q", "--keep-cr",
                        *[str(p) for p in patches]], check=True)
