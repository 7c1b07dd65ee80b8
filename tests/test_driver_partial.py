"""Hunks on files known only in part must touch known lines alone; --check proves it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from driver_helpers import git, run_build

from mpsbuild.patchfile import PartialFile, parse_patch
from mpsbuild.reference import make_reference_repo

FAKE = "aten/src/ATen/native/mps/operations/Fake.mm"
# A file known in part: lines 1-8 known, 9-12 unknown, 13-20 known (as shared/partial holds).
KNOWN = {i: f"  line_{i}();" for i in [*range(1, 9), *range(13, 21)]}


@pytest.fixture
def partial_root(tmp_path: Path) -> Path:
    root = tmp_path / "partial"
    target = root / f"{FAKE}.partial"
    target.parent.mkdir(parents=True)
    body = "".join(f"{i}|{KNOWN[i]}\n" if i in KNOWN else ("...\n" if i == 9 else "")
                   for i in range(1, 21))
    target.write_text(f"# {FAKE} (test fixture, git blob 1234abcd...): only these lines are "
                      f"known.\n{body}")
    return root


def series_editing_fake(tmp_path: Path, line_number: int) -> Path:
    """A one-patch series that changes the fake file at ``line_number`` (1-based)."""
    lines = [KNOWN.get(i, f"  unknown_{i}();") for i in range(1, 21)]
    work = tmp_path / "author"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / FAKE).parent.mkdir(parents=True)
    (work / FAKE).write_text("\n".join(lines) + "\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    lines[line_number - 1] += "  // changed"
    (work / FAKE).write_text("\n".join(lines) + "\n")
    git(work, "commit", "-q", "-am", "Change Fake.mm", "-m", "Why: test.")
    out = tmp_path / "series"
    out.mkdir()
    git(work, "format-patch", "-q", "--zero-commit", "--no-signature", "-o", str(out), "HEAD~1")
    (out / "series").write_text("0001-Change-Fake.mm.patch\n")
    (out / "BASE").write_text("")
    return out / "series"


def check(series: Path, repo: Path, workdir: Path, partial: Path,
          stage: str = "--check") -> subprocess.CompletedProcess[str]:
    return run_build(stage, "--repo", repo, "--workdir", workdir, "--series", series,
                     "--no-submodules", env={"TORCH_REFERENCE_PARTIAL": str(partial)})


def test_partial_model_accepts_known_lines_and_rejects_unknown():
    model = PartialFile("# comment\n...\n3|a\n4|b\n5|c\n...\n")
    hunk = parse_patch("diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -3,3 +3,3 @@\n a\n-b\n+B\n c\n")
    assert model.apply(hunk[0].hunks[0]) is None
    assert model.lines[2:5] == ["a", "B", "c"]
    unknown = parse_patch("diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n x\n-y\n+Y\n a\n")
    assert "line 1 is not known" in model.apply(unknown[0].hunks[0])
    wrong = parse_patch("diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -3,1 +3,1 @@\n-zzz\n+q\n")
    assert "known as 'a'" in model.apply(wrong[0].hunks[0])


def test_check_accepts_a_hunk_on_known_lines(tmp_path, reference_repo, partial_root):
    series = series_editing_fake(tmp_path, line_number=4)
    result = check(series, reference_repo, tmp_path / "w", partial_root)
    assert result.returncode == 0, result.stderr
    assert "0 hunks on partly known files touch unknown lines" in result.stdout


def test_check_refuses_a_hunk_on_unknown_lines(tmp_path, reference_repo, partial_root):
    series = series_editing_fake(tmp_path, line_number=14)  # its context reaches lines 11-12
    result = check(series, reference_repo, tmp_path / "w", partial_root)
    assert result.returncode == 1
    assert f"0001-Change-Fake.mm.patch: {FAKE} @@ -11,7 +11,7" in result.stdout
    assert "line 11 is not known" in result.stdout


def test_apply_to_the_reference_repo_leaves_out_partial_files(tmp_path, reference_repo,
                                                             partial_root):
    series = series_editing_fake(tmp_path, line_number=4)
    result = check(series, reference_repo, tmp_path / "w", partial_root, stage="--apply")
    assert result.returncode == 0, result.stderr
    assert f"left out (file not in this tree; known in part, proven by --check): {FAKE}" \
        in result.stdout


def test_without_the_partial_file_the_patch_has_nowhere_to_apply(tmp_path, reference_repo):
    series = series_editing_fake(tmp_path, line_number=4)
    empty = tmp_path / "no-partials"
    empty.mkdir()
    result = check(series, reference_repo, tmp_path / "w", empty)
    assert result.returncode == 1
    assert "0001-Change-Fake.mm.patch does not apply" in result.stdout


def test_stand_in_repo_round_trip(tmp_path, reference_repo, partial_root, monkeypatch):
    """Work on a partly known file in a repository with stand-ins, export, check, re-apply."""
    monkeypatch.setenv("TORCH_REFERENCE_PARTIAL", str(partial_root))
    stand_in_repo = make_reference_repo(tmp_path / "ref-stand-ins", stand_ins=True)
    empty = tmp_path / "empty" / "series"
    empty.parent.mkdir()
    empty.write_text("")
    workdir = tmp_path / "w"
    assert check(empty, stand_in_repo, workdir, partial_root, stage="--apply").returncode == 0
    clone = workdir / "pytorch"
    source = clone / FAKE
    source.write_text(source.read_text().replace("line_4();", "line_4();  // edited"))
    git(clone, "commit", "-q", "-am", "Edit a partly known file", "-m", "Why: test.")

    out = tmp_path / "out" / "series"
    exported = run_build("--export", "--workdir", workdir, "--series", out)
    assert exported.returncode == 0, exported.stderr
    patch = (out.parent / "0001-Edit-a-partly-known-file.patch").read_text()
    assert "\nindex " not in patch
    hunks = [line for line in patch.splitlines() if line.startswith("@@ ")]
    assert hunks and all(line.endswith(" @@") for line in hunks)  # no function-name context
    assert f"{FAKE}\t1234abcd" in (out.parent / "BASE").read_text()

    # The exported series checks out against a repository without the file ...
    assert check(out, reference_repo, tmp_path / "w2", partial_root).returncode == 0
    # ... and applies for real to one with the stand-in, which BASE accepts.
    applied = check(out, stand_in_repo, tmp_path / "w3", partial_root, stage="--apply")
    assert applied.returncode == 0, applied.stderr
    assert "line_4();  // edited" in (tmp_path / "w3" / "pytorch" / FAKE).read_text()


def test_export_from_a_clone_that_left_files_out_refuses_and_keeps_the_series(
        tmp_path, reference_repo, partial_root):
    """Issue 13 item 3: --apply left the partly known file out; --export must not then empty
    the maintainer's patch and drop its BASE entry."""
    series = series_editing_fake(tmp_path, line_number=4)
    (series.parent / "BASE").write_text(f"{FAKE}\t1234abcd\n")
    before = {p.name: p.read_bytes() for p in series.parent.iterdir()}
    workdir = tmp_path / "w"
    applied = check(series, reference_repo, workdir, partial_root, stage="--apply")
    assert applied.returncode == 0, applied.stderr
    assert "--export from this clone is refused" in applied.stdout

    for extra in ((), ("--force",)):
        exported = run_build("--export", "--workdir", workdir, "--series", series, *extra,
                             env={"TORCH_REFERENCE_PARTIAL": str(partial_root)})
        assert exported.returncode == 1, exported.stdout + exported.stderr
        assert f"{FAKE} (changed by 0001-Change-Fake.mm.patch)" in exported.stderr
        assert "--stand-ins" in exported.stderr
        assert {p.name: p.read_bytes() for p in series.parent.iterdir()} == before

    # Exporting to a new folder is refused too: the branch itself lacks the hunks.
    elsewhere = run_build("--export", "--workdir", workdir, "--series",
                          tmp_path / "new" / "series")
    assert elsewhere.returncode == 1
    assert f"{FAKE} (left out when the series was applied)" in elsewhere.stderr
    assert not (tmp_path / "new").exists()
