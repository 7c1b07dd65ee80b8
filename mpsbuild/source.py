"""Source stage: a shallow clone of the PyTorch ref, cached in the workdir and verified.

The base is verified before anything is applied: with the default URL the ref must name the
v2.9.1 commit; for every repository each file the series touches must have the blob recorded in
``BASE``. So a mirror, or a repository holding only the reference files, is accepted exactly
when its content is right.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import git

from mpsbuild.console import Runner, say, stage
from mpsbuild.errors import BuildError
from mpsbuild.options import V2_9_1_COMMIT, SourceSpec, Workdir
from mpsbuild.reference import PARTIAL_ENV, partial_files_at_hand, stand_in_text
from mpsbuild.state import WorkdirState

GIT_PROGRESS = re.compile(r"(\d+)% \((\d+)/(\d+)\)")
OFFLINE_RECIPE = ("python scripts/make_reference_repo.py /tmp/ref && python build.py --check "
                  "--repo /tmp/ref --workdir /tmp/w --no-submodules")


def network_fix(url: str, also: str = "") -> str:
    """The advice for a clone or submodule fetch that failed, most often for want of network."""
    return (f"if git could not reach {url} (no network, a proxy, a firewall), pass --repo with "
            "a mirror or a local clone of PyTorch (`--repo /path/to/pytorch`; its content is "
            "verified against patches/v2.9.1/BASE); to check the series with no network at "
            f"all, use the offline recipe: `{OFFLINE_RECIPE}`. {also}Otherwise read the log "
            "above, fix the cause and run the same command again.")


@dataclass(frozen=True)
class SourceTree:
    path: Path
    base_commit: str


def clone_url(repo: str) -> str:
    """Local paths become file:// URLs: git ignores --depth for plain-path clones."""
    if "://" in repo or repo.startswith("git@"):
        return repo
    path = Path(repo).expanduser()
    if not path.exists():
        raise BuildError(f"--repo {repo}: no such directory.",
                         "pass an existing git repository path or a URL.")
    return path.resolve().as_uri()


def git_progress(line: str) -> tuple[int, int] | None:
    match = GIT_PROGRESS.search(line)
    return (int(match.group(2)), int(match.group(3))) if match else None


def fetch(spec: SourceSpec, workdir: Workdir, runner: Runner, *, force: bool = False,
          jobs: int = 4) -> SourceTree:
    """Clone (or reuse) the source in ``workdir`` and verify its base commit."""
    stage(f"source: {spec.repo} @ {spec.ref}")
    state = WorkdirState.load(workdir.state_file)
    if workdir.source.exists():
        _check_cached_clone_matches(spec, workdir, state, force)
    if not workdir.source.exists():
        _clone(spec, workdir, runner, jobs)
    if spec.submodules:
        runner.run(["git", "-C", workdir.source, "submodule", "update", "--init", "--recursive",
                    "--depth", "1", "--jobs", str(jobs), "--progress"],
                   log_name="submodules", progress=git_progress, description="submodules",
                   fix=network_fix("the submodules' URLs", "--no-submodules skips them "
                                   "(enough for --apply and --check, not for --wheel). "))
    if runner.dry_run:
        return SourceTree(workdir.source, V2_9_1_COMMIT if spec.is_default_repo else "<ref>")
    base = resolve_base(workdir.source, spec)
    state = WorkdirState.load(workdir.state_file)
    state.repo, state.ref, state.base_commit = spec.repo, spec.ref, base
    state.save(workdir.state_file)
    say(f"base: {base} ({spec.ref})")
    return SourceTree(workdir.source, base)


def _check_cached_clone_matches(spec: SourceSpec, workdir: Workdir, state: WorkdirState,
                                force: bool) -> None:
    if state.repo in ("", spec.repo) and state.ref in ("", spec.ref) and _is_repo(workdir.source):
        say(f"reusing the clone in {workdir.source}")
        return
    if not force:
        held = f"{state.repo} @ {state.ref}" if state.repo else "an unknown or broken checkout"
        raise BuildError(
            f"{workdir.source} holds {held}, not {spec.repo} @ {spec.ref}.",
            "use another --workdir, or pass --force to move the old clone aside "
            "(it is renamed, not deleted) and clone afresh.",
        )
    aside = workdir.root / f"pytorch.old-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.source.rename(aside)
    say(f"moved the old clone aside to {aside}")


def _is_repo(path: Path) -> bool:
    try:
        git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False
    return True


def _clone(spec: SourceSpec, workdir: Workdir, runner: Runner, jobs: int) -> None:
    partial = workdir.partial_clone
    if partial.exists() and not runner.dry_run:
        # Left by an interrupted run of ours: it lives in our workdir and never held user edits.
        say(f"found an interrupted clone in {partial}; cloning again")
        shutil.rmtree(partial)
    if not runner.dry_run:  # a dry run writes nothing
        workdir.root.mkdir(parents=True, exist_ok=True)
    runner.run(["git", "clone", "--progress", "--depth", "1", "--branch", spec.ref,
                "--no-tags", clone_url(spec.repo), partial],
               log_name="clone", progress=git_progress, description="clone",
               fix=network_fix(spec.repo))
    if runner.dry_run:
        runner.show(["mv", partial, workdir.source])
        return
    # --no-tags keeps the clone small but leaves the ref unnamed; name it so later runs (and
    # the user) can say `v2.9.1` inside the clone.
    repo = git.Repo(partial)
    try:
        repo.git.rev_parse("--verify", "--quiet", f"{spec.ref}^{{commit}}")
    except git.GitCommandError:
        repo.git.tag(spec.ref, "HEAD")
    partial.rename(workdir.source)


def resolve_base(path: Path, spec: SourceSpec) -> str:
    repo = git.Repo(path)
    try:
        commit = repo.git.rev_parse(f"{spec.ref}^{{commit}}")
    except git.GitCommandError:
        commit = repo.head.commit.hexsha
    if spec.is_default_repo and commit != V2_9_1_COMMIT:
        raise BuildError(
            f"{spec.repo} @ {spec.ref} resolves to {commit}, not the v2.9.1 commit "
            f"{V2_9_1_COMMIT}.",
            "use --ref v2.9.1 (the series is written for it), or a mirror whose tag is intact.",
        )
    return commit


def read_base_file(base_file: Path) -> dict[str, str]:
    """``BASE``: one ``path<TAB>blob-sha1`` line per file the series touches (``#`` comments)."""
    if not base_file.exists():
        return {}
    entries: dict[str, str] = {}
    for line in base_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, blob = line.split("\t")
            entries[path] = blob
    return entries


def stand_in_blob(file_path: str) -> str | None:
    """The blob of our stand-in for a file known in part (None if it is held whole)."""
    partial = partial_files_at_hand().get(file_path)
    if partial is None:
        return None
    return subprocess.run(["git", "hash-object", "--stdin"], input=stand_in_text(partial),
                          capture_output=True, text=True, check=True).stdout.strip()


def verify_base(path: Path, base_commit: str, base_file: Path,
                skip: frozenset[str] = frozenset()) -> None:
    """Refuse a tree whose files differ from the ones the series was written against.

    BASE may hold an abbreviated blob for a file we know only in part; a repository of the
    reference files may hold our stand-in for such a file instead of the real one, or lack it
    (``skip``: such files are proven against partial/ by --check instead).
    """
    repo = git.Repo(path)
    for file_path, expected in read_base_file(base_file).items():
        if file_path in skip:
            continue
        try:
            actual = repo.git.rev_parse(f"{base_commit}:{file_path}")
        except git.GitCommandError:
            actual = "missing"
        if actual.startswith(expected) or actual == stand_in_blob(file_path):
            continue
        if actual == "missing":
            raise BuildError(
                f"{file_path} is missing from the base tree at {base_commit[:12]}; the series "
                "changes it.",
                "point --repo/--ref at PyTorch v2.9.1. If --repo is a repository of the "
                "reference files, this file is one they hold only in part: its known lines "
                f"must be in the partial reference files (${PARTIAL_ENV}, or "
                "../shared/pytorch-v2.9.1/partial), or make the repository with "
                "`make_reference_repo.py --stand-ins`.")
        raise BuildError(
            f"the base tree differs from the one the series was written against: "
            f"{file_path} is {actual} at {base_commit[:12]}, BASE expects {expected}.",
            "point --repo/--ref at PyTorch v2.9.1 (or a mirror with the same content); "
            "if you rebased the series on purpose, regenerate BASE with --export.",
        )
