"""The series workflow against a real git repository of the v2.9.1 reference files."""

from __future__ import annotations

from pathlib import Path

from driver_helpers import append_line, git, replace_text, run_build

STREAM_H = "aten/src/ATen/mps/MPSStream.h"
GUARD_H = "aten/src/ATen/mps/MPSGuardImpl.h"


DEFAULT_DECL = "TORCH_API MPSStream* getDefaultMPSStream();"


def two_patch_series(make_series) -> Path:
    return make_series([
        ("Declare a stream pool", replace_text(
            STREAM_H, DEFAULT_DECL, DEFAULT_DECL + "\nTORCH_API MPSStream* getStreamFromPool();")),
        ("Add a pool header", append_line("aten/src/ATen/mps/MPSStreamPool.h", "#pragma once")),
    ])


def apply(series: Path, repo: Path, workdir: Path, *extra: str):
    return run_build("--apply", "--repo", repo, "--workdir", workdir, "--series", series,
                     "--no-submodules", *extra)


def test_apply_makes_one_commit_per_patch_and_is_idempotent(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    first = apply(series, reference_repo, tmp_path / "w")
    assert first.returncode == 0, first.stderr
    clone = tmp_path / "w" / "pytorch"
    subjects = git(clone, "log", "--format=%s", "v2.9.1..mps-patched").splitlines()
    assert subjects == ["Add a pool header", "Declare a stream pool"]
    tip = git(clone, "rev-parse", "mps-patched")

    second = apply(series, reference_repo, tmp_path / "w")
    assert second.returncode == 0, second.stderr
    assert "already applied" in second.stdout
    assert git(clone, "rev-parse", "mps-patched") == tip


def test_reapplying_in_a_new_workdir_gives_the_same_commits(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    assert apply(series, reference_repo, tmp_path / "a").returncode == 0
    assert apply(series, reference_repo, tmp_path / "b").returncode == 0
    tips = [git(tmp_path / w / "pytorch", "rev-parse", "mps-patched") for w in ("a", "b")]
    assert tips[0] == tips[1]


def test_conflicting_patch_names_patch_file_and_hunk_and_rolls_back(make_series, reference_repo,
                                                                    tmp_path):
    good = append_line("aten/src/ATen/mps/MPSStreamPool.h", "#pragma once")
    bad = replace_text(GUARD_H, "namespace at::mps {", "namespace at::mps { // edited")
    series = make_series([("Add a pool header", good), ("Edit the guard", bad)])
    # Break the second patch's context so it cannot apply.
    second = series.parent / sorted(p.name for p in series.parent.glob("*.patch"))[1]
    second.write_text(second.read_text().replace(" #include <memory>\n",
                                                 " #include <memory_not_there>\n", 1))
    workdir = tmp_path / "w"
    assert run_build("--fetch", "--repo", reference_repo, "--workdir", workdir,
                     "--no-submodules").returncode == 0
    clone = workdir / "pytorch"
    head_before = git(clone, "rev-parse", "HEAD")

    result = apply(series, reference_repo, workdir)
    assert result.returncode == 1
    assert "0002-Edit-the-guard.patch does not apply" in result.stderr
    assert f"file {GUARD_H}" in result.stderr
    assert "@@ -" in result.stderr  # the failing hunk is shown
    assert "fix:" in result.stderr
    assert git(clone, "rev-parse", "HEAD") == head_before
    assert git(clone, "branch", "--list", "mps-patched") == ""
    assert git(clone, "status", "--porcelain") == ""
    assert not (clone / ".git" / "rebase-apply").exists()


def test_dirty_tree_is_refused_and_force_keeps_the_edit(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert run_build("--fetch", "--repo", reference_repo, "--workdir", workdir,
                     "--no-submodules").returncode == 0
    edited = workdir / "pytorch" / GUARD_H
    edited.write_text(edited.read_text() + "// my local edit\n")

    refused = apply(series, reference_repo, workdir)
    assert refused.returncode == 1
    assert "uncommitted edits" in refused.stderr and GUARD_H in refused.stderr
    assert edited.read_text().endswith("// my local edit\n")

    forced = apply(series, reference_repo, workdir, "--force")
    assert forced.returncode == 0, forced.stderr
    stash = git(workdir / "pytorch", "stash", "show", "-p", "stash@{0}")
    assert "// my local edit" in stash


def test_foreign_commits_on_the_branch_are_refused_then_kept_with_force(make_series,
                                                                        reference_repo, tmp_path):
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert apply(series, reference_repo, workdir).returncode == 0
    clone = workdir / "pytorch"
    (clone / "NOTES.md").write_text("work in progress\n")
    git(clone, "add", "NOTES.md")
    git(clone, "commit", "-q", "-m", "My own work")
    mine = git(clone, "rev-parse", "HEAD")
    other = make_series([("Something else", append_line("torch/mps/extra.py", "x = 1"))],
                        name="other")

    refused = apply(other, reference_repo, workdir)
    assert refused.returncode == 1 and "--export" in refused.stderr
    assert git(clone, "rev-parse", "mps-patched") == mine

    forced = apply(other, reference_repo, workdir, "--force")
    assert forced.returncode == 0, forced.stderr
    backups = git(clone, "branch", "--list", "mps-patched.backup-*").split()
    assert backups and git(clone, "rev-parse", backups[-1]) == mine


def test_export_round_trip_is_byte_identical(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert apply(series, reference_repo, workdir).returncode == 0
    out = tmp_path / "exported" / "series"
    first = run_build("--export", "--workdir", workdir, "--series", out)
    assert first.returncode == 0, first.stderr
    snapshot = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert sorted(snapshot) == ["0001-Declare-a-stream-pool.patch", "0002-Add-a-pool-header.patch",
                                "BASE", "series"]
    assert b"Why: declare a stream pool." in snapshot["0001-Declare-a-stream-pool.patch"]
    assert snapshot["BASE"].decode().splitlines()[1].startswith(f"{STREAM_H}\t")

    # Apply the exported series in a fresh workdir and export again: the same bytes.
    assert apply(out, reference_repo, tmp_path / "w2").returncode == 0
    again = run_build("--export", "--workdir", tmp_path / "w2", "--series", out)
    assert again.returncode == 0, again.stderr
    assert "0 written, 2 unchanged, 0 removed" in again.stdout
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == snapshot


def test_export_picks_up_a_new_commit_and_renumbers_stably(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert apply(series, reference_repo, workdir).returncode == 0
    out = tmp_path / "exported" / "series"
    assert run_build("--export", "--workdir", workdir, "--series", out).returncode == 0
    clone = workdir / "pytorch"
    (clone / "torch" / "mps" / "pool_doc.py").write_text('"""Doc."""\n')
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "Document the pool")
    result = run_build("--export", "--workdir", workdir, "--series", out)
    assert result.returncode == 0, result.stderr
    assert "1 written, 2 unchanged" in result.stdout
    assert out.read_text().splitlines()[-1] == "0003-Document-the-pool.patch"


def test_export_refuses_to_overwrite_hand_edited_patches(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert apply(series, reference_repo, workdir).returncode == 0
    patch = series.parent / "0002-Add-a-pool-header.patch"
    patch.write_text(patch.read_text().replace("Why:", "Why, edited by hand:"))
    refused = run_build("--export", "--workdir", workdir, "--series", series)
    assert refused.returncode == 1
    assert "changed since" in refused.stderr
    assert "edited by hand" in patch.read_text()


def test_base_mismatch_is_refused_with_the_first_wrong_path(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    base = series.parent / "BASE"
    path, blob = base.read_text().split("\t")
    base.write_text(f"{path}\t{'1' * 40}\n")
    result = apply(series, reference_repo, tmp_path / "w")
    assert result.returncode == 1
    assert f"{STREAM_H} is {blob.strip()}" in result.stderr
    assert "BASE expects 1111111111111111111111111111111111111111" in result.stderr


def test_check_applies_each_patch_in_a_scratch_worktree(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    result = run_build("--check", "--repo", reference_repo, "--workdir", workdir,
                       "--series", series, "--no-submodules")
    assert result.returncode == 0, result.stderr
    assert "ok   0001-Declare-a-stream-pool.patch" in result.stdout
    assert "check: 2/2 patches apply" in result.stdout
    clone = workdir / "pytorch"
    assert git(clone, "branch", "--list", "mps-patched") == ""  # the clone itself is untouched
    assert git(clone, "worktree", "list").count("\n") == 0


def test_status_lists_applied_and_missing(make_series, reference_repo, tmp_path):
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert run_build("--fetch", "--repo", reference_repo, "--workdir", workdir,
                     "--no-submodules").returncode == 0
    before = run_build("--status", "--workdir", workdir, "--series", series)
    assert before.returncode == 0, before.stderr
    assert "applied:  0" in before.stdout and "0002-Add-a-pool-header.patch" in before.stdout
    assert apply(series, reference_repo, workdir).returncode == 0
    after = run_build("--status", "--workdir", workdir, "--series", series)
    assert "applied:  2" in after.stdout and "missing:  none" in after.stdout


def test_apply_switches_a_clean_checkout_of_the_base_back_to_the_branch(make_series,
                                                                       reference_repo, tmp_path):
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert apply(series, reference_repo, workdir).returncode == 0
    clone = workdir / "pytorch"
    git(clone, "checkout", "-q", "v2.9.1")
    again = apply(series, reference_repo, workdir)
    assert again.returncode == 0, again.stderr
    assert "switched" in again.stdout
    assert git(clone, "symbolic-ref", "--short", "HEAD") == "mps-patched"
    assert "getStreamFromPool" in (clone / STREAM_H).read_text()


def test_apply_refuses_an_edited_checkout_of_the_base(make_series, reference_repo, tmp_path):
    """Issue 13 item 4: it said "already applied" and left the unpatched base checked out."""
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert apply(series, reference_repo, workdir).returncode == 0
    clone = workdir / "pytorch"
    git(clone, "checkout", "-q", "v2.9.1")
    edited = clone / GUARD_H
    edited.write_text(edited.read_text() + "// my local edit\n")
    refused = apply(series, reference_repo, workdir)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "already applied" not in refused.stdout + refused.stderr
    assert "uncommitted edits" in refused.stderr and GUARD_H in refused.stderr
    assert "instead of mps-patched" in refused.stderr and "stash" in refused.stderr
    assert edited.read_text().endswith("// my local edit\n")
    assert git(clone, "rev-parse", "HEAD") == git(clone, "rev-parse", "v2.9.1")


def test_apply_refuses_uncommitted_edits_on_an_applied_tree_too(make_series, reference_repo,
                                                               tmp_path):
    """Issue 13 item 5: the README's promise holds in every state; --force stashes."""
    series = two_patch_series(make_series)
    workdir = tmp_path / "w"
    assert apply(series, reference_repo, workdir).returncode == 0
    clone = workdir / "pytorch"
    edited = clone / GUARD_H
    edited.write_text(edited.read_text() + "// my local edit\n")
    refused = apply(series, reference_repo, workdir)
    assert refused.returncode == 1
    assert "uncommitted edits" in refused.stderr and "on top of the applied series" in \
        refused.stderr
    assert edited.read_text().endswith("// my local edit\n")

    forced = apply(series, reference_repo, workdir, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "already applied" in forced.stdout
    assert "// my local edit" in git(clone, "stash", "show", "-p", "stash@{0}")
    assert git(clone, "status", "--porcelain", "--untracked-files=no") == ""
