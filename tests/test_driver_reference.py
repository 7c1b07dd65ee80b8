"""Where the reference files come from: variables, ../shared, a verified download, the overlay.

GitHub is out of reach here, so the download is tested against a local stand-in (an
http.server on 127.0.0.1, or file:// URLs) through TORCH_REFERENCE_URL. "Fresh clone" tests
copy this working tree to a folder with no ``shared/`` beside it, as a user's clone is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from driver_helpers import (
    PROJECT_ROOT,
    FileServer,
    closed_port_url,
    fresh_clone,
    git,
    user_env,
)

from mpsbuild.reference import (
    ManifestRow,
    ReferenceConflict,
    ReferenceUnavailable,
    download_reference,
    git_blob,
    locate_reference,
    make_reference_repo,
    partial_files,
    read_manifest,
)

SHARED = PROJECT_ROOT.parent / "shared" / "pytorch-v2.9.1"
HEADER = "aten/src/ATen/mps/Extra.h"
PARTIAL = "aten/src/ATen/native/mps/operations/Extra.mm"


def run(clone: Path, *argv: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *map(str, argv)], cwd=clone, capture_output=True,
                          text=True, env=env, timeout=600)


def assert_three_ways_paragraph(output: str, clone: Path) -> None:
    assert "Traceback" not in output
    assert "the PyTorch v2.9.1 reference files are not available" in output
    for way in ("TORCH_REFERENCE_TREE", "TORCH_REFERENCE_PARTIAL",
                str(clone.parent / "shared" / "pytorch-v2.9.1"), "ci/reference-files.tsv",
                "Connection refused"):
        assert way in output, way
    assert output.count("\nfix: ") == 1


# --- a fresh clone where nothing is reachable ---------------------------------------------

def test_run_tests_in_a_fresh_clone_stops_with_one_paragraph(tmp_path):
    clone = fresh_clone(tmp_path)
    result = run(clone, "scripts/run_tests.py", "--no-venv",
                 env=user_env(TORCH_REFERENCE_URL=closed_port_url()))
    assert result.returncode == 1
    assert_three_ways_paragraph(result.stdout + result.stderr, clone)
    assert not (clone / ".venv").exists()  # it stopped before doing anything slow


def test_ci_entry_in_a_fresh_clone_stops_with_the_same_paragraph(tmp_path):
    clone = fresh_clone(tmp_path)
    tools = tmp_path / "bin"  # clang, libc++ and node present, so .ci/run installs nothing
    tools.mkdir()
    (tools / "python3").symlink_to(sys.executable)
    result = subprocess.run(
        ["bash", ".ci/run"], cwd=clone, capture_output=True, text=True, timeout=600,
        env=user_env(TORCH_REFERENCE_URL=closed_port_url(),
                     PATH=f"{tools}:{user_env()['PATH']}"))
    if "apt-get" in result.stdout + result.stderr:
        pytest.skip("this machine lacks a tool .ci/run would install")
    assert result.returncode == 1
    assert_three_ways_paragraph(result.stdout + result.stderr, clone)


def test_build_check_in_a_fresh_clone_names_the_three_ways(tmp_path, reference_repo):
    clone = fresh_clone(tmp_path)
    result = run(clone, "build.py", "--check", "--repo", reference_repo, "--workdir",
                 tmp_path / "w", "--no-submodules",
                 env=user_env(TORCH_REFERENCE_URL=closed_port_url()))
    assert result.returncode == 1
    assert_three_ways_paragraph(result.stdout + result.stderr, clone)


def test_offline_recipe_in_a_fresh_clone_stops_with_the_paragraph(tmp_path):
    clone = fresh_clone(tmp_path)
    result = run(clone, "scripts/make_reference_repo.py", tmp_path / "ref",
                 env=user_env(TORCH_REFERENCE_URL=closed_port_url()))
    assert result.returncode == 1
    assert_three_ways_paragraph(result.stdout + result.stderr, clone)
    assert not (tmp_path / "ref").exists()


# --- the download -------------------------------------------------------------------------

def served_reference(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh clone whose manifest lists the whole files only (we do not hold the partly
    known ones whole), and a folder laid out like raw.githubusercontent.com/<commit>/."""
    clone = fresh_clone(tmp_path)
    manifest = clone / "ci" / "reference-files.tsv"
    rows = [line for line in manifest.read_text().splitlines(keepends=True)
            if line.startswith("#") or line.rstrip("\n").endswith("\ttree")]
    manifest.write_text("".join(rows))
    served = tmp_path / "github"
    shutil.copytree(SHARED / "tree", served)
    return clone, served


def test_offline_recipe_in_a_fresh_clone_downloads_and_verifies(tmp_path):
    clone, served = served_reference(tmp_path)
    with FileServer(served) as github:
        env = user_env(TORCH_REFERENCE_URL=github.url,
                       TORCH_REFERENCE_PARTIAL=str(SHARED / "partial"))
        made = run(clone, "scripts/make_reference_repo.py", tmp_path / "ref", env=env)
        assert made.returncode == 0, made.stderr
        tree_rows = [r for r in read_manifest() if r.kind == "tree"]
        assert len(github.requested) == len(tree_rows)
        checked = run(clone, "build.py", "--check", "--repo", tmp_path / "ref", "--workdir",
                      tmp_path / "w", "--no-submodules", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 hunks on partly known files touch unknown lines" in checked.stdout
    cached = list((clone / ".cache" / "reference").glob("pytorch-v2.9.1-*/tree"))
    assert len(cached) == 1
    assert (cached[0] / "aten/src/ATen/mps/MPSStream.mm").read_bytes() == \
        (SHARED / "tree/aten/src/ATen/mps/MPSStream.mm").read_bytes()
    # A second run uses the cache: the stand-in for GitHub is gone now.
    again = run(clone, "scripts/make_reference_repo.py", tmp_path / "ref2",
                env={**env, "TORCH_REFERENCE_URL": closed_port_url()})
    assert again.returncode == 0, again.stderr


def test_download_refuses_a_file_whose_blob_differs_and_caches_nothing(tmp_path):
    clone, served = served_reference(tmp_path)
    stream = served / "aten/src/ATen/mps/MPSStream.mm"
    stream.write_text(stream.read_text() + "// not v2.9.1\n")
    with FileServer(served) as github:
        result = run(clone, "scripts/make_reference_repo.py", tmp_path / "ref",
                     env=user_env(TORCH_REFERENCE_URL=github.url,
                                  TORCH_REFERENCE_PARTIAL=str(SHARED / "partial")))
    assert result.returncode == 1
    assert "aten/src/ATen/mps/MPSStream.mm: blob" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((clone / ".cache" / "reference").glob("pytorch-v2.9.1-*"))


def test_download_writes_partly_known_files_with_every_line(tmp_path):
    served = tmp_path / "served"
    (served / "a").mkdir(parents=True)
    (served / "a" / "whole.h").write_text("#pragma once\n")
    (served / "a" / "part.mm").write_text("first\nsecond\n")
    rows = [ManifestRow("a/whole.h", git_blob(b"#pragma once\n"), "tree"),
            ManifestRow("a/part.mm", git_blob(b"first\nsecond\n")[:8], "partial")]
    download_reference(served.as_uri(), rows, tmp_path / "out")
    assert (tmp_path / "out/tree/a/whole.h").read_text() == "#pragma once\n"
    part = (tmp_path / "out/partial/a/part.mm.partial").read_text().splitlines()
    assert part[1:] == ["1|first", "2|second"]
    assert "a/whole.h" in (tmp_path / "out/MANIFEST.tsv").read_text()


# --- TORCH_REFERENCE_TREE without TORCH_REFERENCE_PARTIAL ----------------------------------

def test_tree_variable_finds_partial_beside_it(tmp_path):
    clone = fresh_clone(tmp_path)
    env = user_env(TORCH_REFERENCE_TREE=str(SHARED / "tree"),
                   TORCH_REFERENCE_URL=closed_port_url())
    assert run(clone, "scripts/make_reference_repo.py", tmp_path / "ref", env=env).returncode == 0
    checked = run(clone, "build.py", "--check", "--repo", tmp_path / "ref", "--workdir",
                  tmp_path / "w", "--no-submodules", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_tree_variable_alone_names_the_partial_variable(tmp_path):
    clone = fresh_clone(tmp_path)
    copy = tmp_path / "copy" / "tree"
    shutil.copytree(SHARED / "tree", copy)
    result = run(clone, "scripts/make_reference_repo.py", tmp_path / "ref",
                 env=user_env(TORCH_REFERENCE_TREE=str(copy)))
    assert result.returncode == 1
    assert "TORCH_REFERENCE_PARTIAL" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_file_names_the_partial_reference_not_only_the_ref(make_series, tmp_path,
                                                                     reference_repo):
    """A reference repo lacking a file the series changes, with no partial copy of it known."""
    series = make_series([("Touch the allocator", lambda repo: (
        repo / "aten/src/ATen/mps/MPSAllocator.h").write_text("// edited\n"))])
    git(reference_repo, "rm", "-q", "aten/src/ATen/mps/MPSAllocator.h")
    git(reference_repo, "commit", "-q", "-m", "drop a file")
    git(reference_repo, "tag", "-f", "v2.9.1")
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "build.py"), "--check", "--repo", reference_repo,
         "--workdir", tmp_path / "w", "--series", series, "--no-submodules"],
        capture_output=True, text=True, env=user_env())
    assert result.returncode == 1
    assert "aten/src/ATen/mps/MPSAllocator.h is missing from the base tree" in result.stderr
    assert "TORCH_REFERENCE_PARTIAL" in result.stderr and "--stand-ins" in result.stderr


# --- the in-repo overlay ------------------------------------------------------------------

@pytest.fixture
def external(tmp_path, monkeypatch) -> Path:
    """A small external reference (tree/ and partial/) and an empty overlay, all in tmp."""
    root = tmp_path / "external"
    (root / "tree" / "aten").mkdir(parents=True)
    (root / "tree" / "aten" / "Base.h").write_text("#pragma once\n")
    (root / "partial" / Path(PARTIAL).parent).mkdir(parents=True)
    (root / "partial" / f"{PARTIAL}.partial").write_text(
        f"# {PARTIAL} (git blob 1234abcd...)\n1|one\n2|two\n...\n")
    monkeypatch.setenv("TORCH_REFERENCE_TREE", str(root / "tree"))
    monkeypatch.setenv("TORCH_REFERENCE_PARTIAL", str(root / "partial"))
    monkeypatch.setenv("MPSBUILD_REFERENCE_EXTRA", str(tmp_path / "overlay"))
    monkeypatch.setenv("MPSBUILD_REFERENCE_CACHE", str(tmp_path / "cache"))
    return root


def add_overlay(tmp_path: Path, path: str, text: str) -> Path:
    target = tmp_path / "overlay" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def test_no_overlay_uses_the_external_folders_as_they_are(external):
    found = locate_reference()
    assert (found.tree, found.partial) == (external / "tree", external / "partial")


def test_overlay_files_are_added_to_tree_and_partial(external, tmp_path):
    add_overlay(tmp_path, f"tree/{HEADER}", "#pragma once // extra\n")
    add_overlay(tmp_path, "partial/aten/New.mm.partial",
                "# aten/New.mm (git blob abcdef12...)\n5|five\n...\n")
    found = locate_reference()
    assert (found.tree / HEADER).read_text() == "#pragma once // extra\n"
    assert (found.tree / "aten/Base.h").exists()
    assert sorted(partial_files(found.partial)) == ["aten/New.mm", PARTIAL]
    assert HEADER in (found.tree.parent / "MANIFEST.tsv").read_text()
    repo = make_reference_repo(tmp_path / "repo", stand_ins=True)
    assert (repo / HEADER).exists() and (repo / "aten/New.mm").read_text().splitlines()[4] == \
        "five"


def test_overlay_file_that_differs_from_the_external_copy_is_an_error(external, tmp_path):
    add_overlay(tmp_path, "tree/aten/Base.h", "#pragma once // not the same\n")
    with pytest.raises(ReferenceConflict, match=r"Base\.h differs from"):
        locate_reference()


def test_identical_overlay_file_is_accepted(external, tmp_path):
    add_overlay(tmp_path, "tree/aten/Base.h", "#pragma once\n")
    assert (locate_reference().tree / "aten/Base.h").read_text() == "#pragma once\n"


def test_partial_overlay_must_agree_and_adds_its_known_lines(external, tmp_path):
    add_overlay(tmp_path, f"partial/{PARTIAL}.partial",
                f"# {PARTIAL} (git blob 1234abcd...)\n2|two\n...\n7|seven\n")
    merged = (locate_reference().partial / f"{PARTIAL}.partial").read_text().splitlines()
    assert merged[1:] == ["1|one", "2|two", "...", "7|seven", "..."]

    add_overlay(tmp_path, f"partial/{PARTIAL}.partial",
                f"# {PARTIAL} (git blob 1234abcd...)\n2|TWO\n")
    with pytest.raises(ReferenceConflict, match="line 2 is 'TWO'"):
        locate_reference()


def test_whole_overlay_file_replaces_a_partial_copy_it_agrees_with(external, tmp_path):
    add_overlay(tmp_path, f"tree/{PARTIAL}", "one\ntwo\nthree\n")
    found = locate_reference()
    assert (found.tree / PARTIAL).exists() and PARTIAL not in partial_files(found.partial)

    add_overlay(tmp_path, f"tree/{PARTIAL}", "one\nTWO\nthree\n")
    with pytest.raises(ReferenceConflict, match="knows line 2 as 'two'"):
        locate_reference()


def test_check_proves_hunks_against_an_overlay_partial_file(tmp_path, reference_repo):
    """--check takes a file known in part from the overlay like one from shared/partial."""
    known = {i: f"  line_{i}();" for i in range(1, 9)}
    add_overlay(tmp_path, f"partial/{PARTIAL}.partial",
                f"# {PARTIAL} (git blob 1234abcd...)\n"
                + "".join(f"{i}|{t}\n" for i, t in known.items()) + "...\n")
    author = tmp_path / "author"
    author.mkdir()
    git(author, "init", "-q", "-b", "main")
    (author / PARTIAL).parent.mkdir(parents=True)
    lines = [known.get(i, f"  unknown_{i}();") for i in range(1, 21)]
    (author / PARTIAL).write_text("\n".join(lines) + "\n")
    git(author, "add", "-A")
    git(author, "commit", "-q", "-m", "base")
    series = tmp_path / "series"
    series.mkdir()

    def check(line: int) -> subprocess.CompletedProcess[str]:
        edited = list(lines)
        edited[line - 1] += "  // changed"
        (author / PARTIAL).write_text("\n".join(edited) + "\n")
        git(author, "commit", "-q", "-am", "Change Extra.mm", "-m", "Why: test.")
        for old in series.glob("*"):
            old.unlink()
        git(author, "format-patch", "-q", "--zero-commit", "--no-signature", "-o", str(series),
            "HEAD~1")
        git(author, "reset", "-q", "--hard", "HEAD~1")
        (series / "series").write_text("0001-Change-Extra.mm.patch\n")
        (series / "BASE").write_text("")
        return subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "build.py"), "--check", "--repo",
             reference_repo, "--workdir", tmp_path / f"w{line}", "--series", series / "series",
             "--no-submodules"], capture_output=True, text=True,
            env=user_env(MPSBUILD_REFERENCE_EXTRA=str(tmp_path / "overlay"),
                         MPSBUILD_REFERENCE_CACHE=str(tmp_path / "cache")))

    assert check(4).returncode == 0
    refused = check(14)
    assert refused.returncode == 1
    assert "line 11 is not known" in refused.stdout


def test_download_includes_and_verifies_overlay_files(external, tmp_path, monkeypatch):
    add_overlay(tmp_path, f"tree/{HEADER}", "#pragma once // extra\n")
    monkeypatch.delenv("TORCH_REFERENCE_TREE")
    monkeypatch.delenv("TORCH_REFERENCE_PARTIAL")
    monkeypatch.setattr("mpsbuild.reference.shared_dir", lambda: tmp_path / "no-shared")
    served = tmp_path / "served"
    shutil.copytree(SHARED / "tree", served)
    (served / HEADER).write_text("#pragma once // something else\n")
    monkeypatch.setenv("TORCH_REFERENCE_URL", served.as_uri())
    monkeypatch.setattr("mpsbuild.reference.read_manifest",
                        lambda manifest=None: [r for r in read_manifest() if r.kind == "tree"])
    with pytest.raises(ReferenceUnavailable, match=f"{HEADER}: blob"):
        locate_reference()
    (served / HEADER).write_text("#pragma once // extra\n")
    assert (locate_reference().tree / HEADER).read_text() == "#pragma once // extra\n"
