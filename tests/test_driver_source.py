"""Source stage: clone, reuse, resume after an interrupted clone, and verify the base."""

from __future__ import annotations

import pytest
from driver_helpers import closed_port_url, git, run_build

from mpsbuild.errors import BuildError
from mpsbuild.options import DEFAULT_REPO, V2_9_1_COMMIT, SourceSpec
from mpsbuild.source import resolve_base


def test_fetch_clones_shallow_and_a_second_run_reuses_it(reference_repo, tmp_path):
    workdir = tmp_path / "w"
    first = run_build("--fetch", "--repo", reference_repo, "--workdir", workdir, "--no-submodules")
    assert first.returncode == 0, first.stderr
    clone = workdir / "pytorch"
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"
    assert git(clone, "rev-parse", "v2.9.1^{commit}") == git(reference_repo, "rev-parse", "v2.9.1")
    marker = clone / "untracked-marker"
    marker.write_text("still here")
    second = run_build("--fetch", "--repo", reference_repo, "--workdir", workdir,
                       "--no-submodules")
    assert second.returncode == 0, second.stderr
    assert "reusing the clone" in second.stdout
    assert marker.read_text() == "still here"


def test_an_interrupted_clone_is_redone_cleanly(reference_repo, tmp_path):
    workdir = tmp_path / "w"
    leftover = workdir / "pytorch.partial"
    leftover.mkdir(parents=True)
    (leftover / "half-written").write_text("x")
    result = run_build("--fetch", "--repo", reference_repo, "--workdir", workdir,
                       "--no-submodules")
    assert result.returncode == 0, result.stderr
    assert "interrupted clone" in result.stdout
    assert not leftover.exists()
    assert (workdir / "pytorch" / "aten" / "src" / "ATen" / "mps" / "MPSStream.h").exists()


def test_a_workdir_holding_another_source_is_refused_then_moved_aside(reference_repo, tmp_path):
    workdir = tmp_path / "w"
    assert run_build("--fetch", "--repo", reference_repo, "--workdir", workdir,
                     "--no-submodules").returncode == 0
    other = run_build("--fetch", "--repo", reference_repo, "--ref", "main", "--workdir", workdir,
                      "--no-submodules")
    assert other.returncode == 1
    assert "--force" in other.stderr and "another --workdir" in other.stderr
    forced = run_build("--fetch", "--repo", reference_repo, "--ref", "main", "--workdir",
                       workdir, "--no-submodules", "--force")
    assert forced.returncode == 0, forced.stderr
    assert list(workdir.glob("pytorch.old-*")), "the old clone must be kept, not deleted"


def test_default_url_must_resolve_to_the_v2_9_1_commit(reference_repo):
    spec = SourceSpec(repo=DEFAULT_REPO)
    with pytest.raises(BuildError) as error:
        resolve_base(reference_repo, spec)
    assert V2_9_1_COMMIT in error.value.problem
    # Any other repository is judged by BASE alone.
    assert resolve_base(reference_repo, SourceSpec(repo=str(reference_repo))) == git(
        reference_repo, "rev-parse", "v2.9.1")


def test_missing_repo_path_is_a_clear_error(tmp_path):
    result = run_build("--fetch", "--repo", tmp_path / "nope", "--workdir", tmp_path / "w")
    assert result.returncode == 1
    assert "no such directory" in result.stderr and "fix:" in result.stderr


def test_stages_that_need_a_clone_say_how_to_get_one(tmp_path):
    result = run_build("--status", "--workdir", tmp_path / "empty")
    assert result.returncode == 1
    assert "no PyTorch clone" in result.stderr and "--apply" in result.stderr


def test_no_stage_is_a_usage_error():
    result = run_build()
    assert result.returncode == 2
    assert "choose at least one stage" in result.stderr


def test_a_clone_that_cannot_reach_the_network_names_repo_and_the_offline_recipe(tmp_path):
    result = run_build("--fetch", "--repo", closed_port_url(), "--workdir", tmp_path / "w",
                       "--no-submodules")
    assert result.returncode == 1
    fix = result.stderr.split("fix:", 1)[1]
    assert "--repo" in fix and "mirror or a local clone" in fix
    assert "make_reference_repo.py /tmp/ref && python build.py --check --repo /tmp/ref" in fix
    assert not (tmp_path / "w" / "pytorch").exists()
