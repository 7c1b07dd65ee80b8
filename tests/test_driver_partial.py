"""Hunks on files known only in part must touch known lines alone; --check proves it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import git, run_build

from mpsbuild.patchfile import PartialFile, parse_patch
from mpsbuild.reference import reference_partial

REPEAT = "aten/src/ATen/native/mps/operations/Repeat.mm"


def synthetic_file_from_partial(partial: Path) -> list[str]:
    """The partial file's known lines at their numbers, unknown lines filled with filler."""
    model = PartialFile(partial.read_text())
    return [line if line is not None else f"// unknown line {i + 1}"
            for i, line in enumerate(model.lines)]


def series_editing_repeat(tmp_path: Path, line_number: int) -> Path:
    """A one-patch series that changes Repeat.mm at ``line_number`` (1-based)."""
    lines = synthetic_file_from_partial(reference_partial() / f"{REPEAT}.partial")
    work = tmp_path / "author"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / REPEAT).parent.mkdir(parents=True)
    (work / REPEAT).write_text("\n".join(lines) + "\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    lines[line_number - 1] += "  // changed"
    (work / REPEAT).write_text("\n".join(lines) + "\n")
    git(work, "commit", "-q", "-am", "Change Repeat.mm", "-m", "Why: test.")
    out = tmp_path / "series"
    out.mkdir()
    git(work, "format-patch", "-q", "--zero-commit", "--no-signature", "-o", str(out), "HEAD~1")
    (out / "series").write_text("0001-Change-Repeat.mm.patch\n")
    (out / "BASE").write_text("")
    return out / "series"


def test_partial_model_accepts_known_lines_and_rejects_unknown():
    model = PartialFile("# comment\n...\n3|a\n4|b\n5|c\n...\n")
    hunk = parse_patch("diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -3,3 +3,3 @@\n a\n-b\n+B\n c\n")
    assert model.apply(hunk[0].hunks[0]) is None
    assert model.lines[2:5] == ["a", "B", "c"]
    unknown = parse_patch("diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n x\n-y\n+Y\n a\n")
    assert "line 1 is not known" in model.apply(unknown[0].hunks[0])
    wrong = parse_patch("diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -3,1 +3,1 @@\n-zzz\n+q\n")
    assert "known as 'a'" in model.apply(wrong[0].hunks[0])


def test_check_accepts_a_hunk_on_known_lines(tmp_path, reference_repo):
    series = series_editing_repeat(tmp_path, line_number=103)  # 100-106 are all known
    result = run_build("--check", "--repo", reference_repo, "--workdir", tmp_path / "w",
                       "--series", series, "--no-submodules")
    assert result.returncode == 0, result.stderr
    assert "0 hunks on partly known files touch unknown lines" in result.stderr


def test_check_refuses_a_hunk_on_unknown_lines(tmp_path, reference_repo):
    partial = PartialFile((reference_partial() / f"{REPEAT}.partial").read_text())
    unknown = next(i + 1 for i, line in enumerate(partial.lines) if line is None and i >= 100)
    series = series_editing_repeat(tmp_path, line_number=unknown)
    result = run_build("--check", "--repo", reference_repo, "--workdir", tmp_path / "w",
                       "--series", series, "--no-submodules")
    assert result.returncode == 1
    assert f"0001-Change-Repeat.mm.patch: {REPEAT}" in result.stderr
    assert "is not known" in result.stderr


def test_apply_to_the_reference_repo_leaves_out_partial_files(tmp_path, reference_repo):
    series = series_editing_repeat(tmp_path, line_number=103)
    result = run_build("--apply", "--repo", reference_repo, "--workdir", tmp_path / "w",
                       "--series", series, "--no-submodules")
    assert result.returncode == 0, result.stderr
    assert f"left out (file not in this tree; known in part, proven by --check): {REPEAT}" \
        in result.stderr


def test_partial_root_can_be_overridden(tmp_path, reference_repo):
    series = series_editing_repeat(tmp_path, line_number=103)
    empty = tmp_path / "no-partials"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, str(Path(__file__).parent.parent / "build.py"), "--check", "--repo",
         str(reference_repo), "--workdir", str(tmp_path / "w"), "--series", str(series),
         "--no-submodules"], capture_output=True, text=True,
        env={**os.environ, "TORCH_REFERENCE_PARTIAL": str(empty), "COLUMNS": "200"})
    # Without the partial file the patch has no file to apply to: the check must fail.
    assert result.returncode == 1
    assert "0001-Change-Repeat.mm.patch does not apply" in result.stderr
