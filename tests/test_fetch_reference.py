"""scripts/fetch_reference.py rebuilds shared/'s reference files and verifies every blob."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from driver_helpers import git

from mpsbuild.reference import reference_tree

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fetch_reference.py"


def fetch(repo: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--dest", str(dest), "--repo", str(repo),
                           "--kinds", "tree"], capture_output=True, text=True)


def test_rebuilds_the_reference_tree_exactly(reference_repo, tmp_path):
    result = fetch(reference_repo, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    comparison = filecmp.dircmp(tmp_path / "out" / "tree", reference_tree())
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files


def test_refuses_a_file_whose_blob_differs(reference_repo, tmp_path):
    stream = reference_repo / "aten/src/ATen/mps/MPSStream.mm"
    stream.write_text(stream.read_text() + "// not v2.9.1\n")
    git(reference_repo, "commit", "-q", "-am", "tamper")
    git(reference_repo, "tag", "-f", "v2.9.1")
    result = fetch(reference_repo, tmp_path / "out")
    assert result.returncode == 1
    assert "aten/src/ATen/mps/MPSStream.mm: blob" in result.stderr
