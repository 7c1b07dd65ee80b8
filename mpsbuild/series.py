"""Series stage: apply, export, check and report the patch series.

The series is a folder of ``git format-patch`` files listed in ``series`` and applied with
``git am``, one commit per patch, on the branch ``mps-patched`` over the base: the conda-forge /
quilt workflow. ``--export`` regenerates the files from that branch, byte-stable.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mpsbuild.console import say, stage
from mpsbuild.errors import BuildError
from mpsbuild.options import DEFAULT_SERIES, PATCHED_BRANCH
from mpsbuild.patchfile import (
    PartialFile,
    parse_patch,
    partial_path,
    touched_paths,
    without_files,
)
from mpsbuild.reference import partial_blob, partial_files_at_hand, reference_partial
from mpsbuild.source import SourceTree, stand_in_blob, verify_base
from mpsbuild.state import WorkdirState

__all__ = ["DEFAULT_SERIES", "apply", "apply_series", "check", "export", "status"]

# Commits made by --apply carry the patch's author and date as committer too, so re-applying
# the same series gives the same commit hashes on every machine.
_COMMITTER = {"GIT_COMMITTER_NAME": "build.py", "GIT_COMMITTER_EMAIL": "build.py@localhost"}
# Options that make `git format-patch` output independent of the user's git config and version.
_FORMAT_PATCH_CONFIG = ["-c", "core.abbrev=12", "-c", "diff.renames=false",
                        "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
                        "-c", "diff.algorithm=myers", "-c", "diff.relative=false",
                        "-c", "format.signature=", "-c", "format.coverLetter=false",
                        "-c", "format.numbered=false", "-c", "format.useAutoBase=false",
                        "-c", "diff.orderFile=/dev/null", "-c", "diff.suppressBlankEmpty=false"]
PATCH_NAME = re.compile(r"^\d{4}-.+\.patch$")
INDEX_LINE = re.compile(r"^index [0-9a-f]+\.\.[0-9a-f]+(?: \d{6})?\n", re.MULTILINE)
HUNK_SECTION = re.compile(r"^(@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@).*$", re.MULTILINE)


# --- reading the series -------------------------------------------------------------------

def read_series(series: Path) -> list[Path]:
    """The patch files ``series`` lists, in order; a missing listed file is an error."""
    if not series.exists():
        raise BuildError(f"series file {series} not found.",
                         "pass --series with the path of a series file (patches/v2.9.1/series).")
    patches = []
    for line in series.read_text().splitlines():
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        patch = series.parent.resolve() / name
        if not patch.is_file():
            raise BuildError(f"{series} lists {name}, but {patch} does not exist.",
                             "restore the file, or regenerate the series with --export.")
        patches.append(patch)
    return patches


def patch_digests(series: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in read_series(series)}


def series_digest(series: Path) -> str:
    """8 hex digits naming the exact series (names, order and bytes): the wheel's version tag."""
    hasher = hashlib.sha256()
    for patch in read_series(series):
        hasher.update(patch.name.encode() + b"\0" + patch.read_bytes() + b"\0")
    return hasher.hexdigest()[:8]


# --- git helpers --------------------------------------------------------------------------

def _git(repo: Path, *args: str, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise BuildError(f"`git {' '.join(args)}` failed in {repo}:\n{result.stderr.strip()}",
                         "see git's message above.")
    return result


def _patch_id(diff_text: str, repo: Path) -> str:
    result = subprocess.run(["git", "-C", str(repo), "patch-id", "--stable"], input=diff_text,
                            capture_output=True, text=True, check=True)
    return result.stdout.split()[0] if result.stdout else ""


def _branch_commits(repo: Path, base: str) -> list[str]:
    if not _branch_exists(repo):
        return []
    out = _git(repo, "rev-list", "--reverse", "--no-merges", f"{base}..{PATCHED_BRANCH}").stdout
    return out.split()


def _branch_exists(repo: Path) -> bool:
    return _git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{PATCHED_BRANCH}",
                check=False).returncode == 0


def _commit_patch_id(repo: Path, commit: str) -> str:
    return _patch_id(_git(repo, "show", "--format=", commit).stdout, repo)


def _dirty_files(repo: Path) -> list[str]:
    out = _git(repo, "status", "--porcelain", "--untracked-files=no").stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def _current_head(repo: Path) -> str:
    branch = _git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip()
    return branch or _git(repo, "rev-parse", "HEAD").stdout.strip()


# --- which series files exist in this tree ------------------------------------------------

@dataclass
class PartialSkips:
    """Files the series patches that this tree lacks but ``partial/`` knows in part.

    A repository built from the reference files holds only whole files; hunks on the others are
    left out when applying there and proven against ``partial/`` by ``--check`` instead.
    """

    paths: set[str] = field(default_factory=set)

    def exclude_args(self) -> list[str]:
        return [f"--exclude={p}" for p in sorted(self.paths)]


def _partial_skips(repo: Path, base: str, patches: list[Path],
                   partial_root: Path | None) -> PartialSkips:
    """Files the series changes that the base lacks and ``partial/`` knows in part.

    The reference files are looked up only when the base lacks such a file, so a real
    PyTorch clone never needs them.
    """
    skips = PartialSkips()
    for patch in patches:
        for diff in touched_paths(patch):
            if diff.is_new or diff.path in skips.paths:
                continue
            if _git(repo, "cat-file", "-e", f"{base}:{diff.path}", check=False).returncode == 0:
                continue
            partial_root = partial_root or reference_partial()
            if partial_path(partial_root, diff.path).exists():
                skips.paths.add(diff.path)
    return skips


# --- apply --------------------------------------------------------------------------------

@dataclass
class ApplyResult:
    applied: list[str]
    already_applied: bool
    skipped_partial: list[str]


def apply(tree: SourceTree, series: Path = DEFAULT_SERIES, *, force: bool = False,
          partial_root: Path | None = None, state_file: Path | None = None) -> ApplyResult:
    """Apply ``series`` on ``mps-patched`` over the base: idempotent, all-or-nothing."""
    stage(f"apply: {series}")
    repo = tree.path
    patches = read_series(series)
    skips = _partial_skips(repo, tree.base_commit, patches, partial_root)
    verify_base(tree.path, tree.base_commit, series.parent / "BASE", frozenset(skips.paths))
    _refuse_am_in_progress(repo)

    wanted = _wanted_patch_ids(repo, patches, skips)
    existing = [_commit_patch_id(repo, c) for c in _branch_commits(repo, tree.base_commit)]
    if existing == wanted and _branch_exists(repo):
        _check_out_applied_branch(repo, force)
        say(f"already applied: {PATCHED_BRANCH} holds all {len(patches)} patches and is checked "
            "out; nothing to do")
        _remember_series(state_file, series, sorted(skips.paths))
        return ApplyResult([], True, sorted(skips.paths))
    todo = _patches_still_to_apply(repo, patches, wanted, existing, force)

    dirty = _dirty_files(repo)
    stash = _stash_if_forced(repo, dirty, force)
    before = _current_head(repo)
    old_tip = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{PATCHED_BRANCH}",
                   check=False).stdout.strip()
    try:
        if old_tip:
            _git(repo, "checkout", "-q", PATCHED_BRANCH)
        else:
            _git(repo, "checkout", "-q", "-b", PATCHED_BRANCH, tree.base_commit)
        for patch in todo:
            _am_one(repo, patch, skips)
            say(f"  applied {patch.name}")
    except BuildError:
        _rollback(repo, before, old_tip, stash)
        raise
    if skips.paths:
        say("left out (file not in this tree; known in part, proven by --check): "
            + ", ".join(sorted(skips.paths)) + ". --export from this clone is refused, as it "
            "would write the patches without these hunks.")
    say(f"{PATCHED_BRANCH}: {len(patches)} patches over {tree.base_commit[:12]}")
    _remember_series(state_file, series, sorted(skips.paths))
    return ApplyResult([p.name for p in todo], False, sorted(skips.paths))


def _wanted_patch_ids(repo: Path, patches: list[Path], skips: PartialSkips) -> list[str]:
    """Patch ids of the series as this tree receives it (diffs of left-out files removed)."""
    return [_patch_id(without_files(p.read_text(errors="surrogateescape"), skips.paths), repo)
            for p in patches]


def _check_out_applied_branch(repo: Path, force: bool) -> None:
    """Make HEAD the tip of the applied branch, or refuse: "applied" must describe HEAD.

    Uncommitted edits are refused in every state (or stashed with ``force``): a tree that
    differs from the series is never reported as applied.
    """
    head = _current_head(repo)
    dirty = _dirty_files(repo)
    if dirty and not force:
        listed = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        where = ("on top of the applied series" if head == PATCHED_BRANCH else
                 f"with {head} checked out instead of {PATCHED_BRANCH}")
        raise BuildError(
            f"{repo} has uncommitted edits ({listed}) {where}; --apply reports a tree as "
            "applied only when it is exactly the series.",
            f"commit them on {PATCHED_BRANCH} and run --export, or `git -C {repo} stash` them "
            "(or pass --force, which stashes them; nothing is discarded), then run --apply "
            "again.")
    _stash_if_forced(repo, dirty, force)
    if head != PATCHED_BRANCH:
        _git(repo, "checkout", "-q", PATCHED_BRANCH)
        say(f"switched {repo} from {head} to {PATCHED_BRANCH}")
    tip = _git(repo, "rev-parse", f"refs/heads/{PATCHED_BRANCH}").stdout.strip()
    if _git(repo, "rev-parse", "HEAD").stdout.strip() != tip or _dirty_files(repo):
        raise BuildError(f"{repo} could not be switched to {PATCHED_BRANCH} cleanly.",
                         f"run `git -C {repo} status` and `git -C {repo} checkout "
                         f"{PATCHED_BRANCH}` to see why, then run --apply again.")


def _remember_series(state_file: Path | None, series: Path,
                     left_out: list[str] | None = None) -> None:
    if state_file is None:
        return
    state = WorkdirState.load(state_file)
    state.series_digest = series_digest(series)
    if left_out is not None:
        state.left_out = left_out
    state.save(state_file)


def _refuse_am_in_progress(repo: Path) -> None:
    git_dir = Path(_git(repo, "rev-parse", "--absolute-git-dir").stdout.strip())
    if (git_dir / "rebase-apply").exists():
        raise BuildError(f"a `git am` or rebase is in progress in {repo}.",
                         f"finish it or run `git -C {repo} am --abort`, then run again.")


def _patches_still_to_apply(repo: Path, patches: list[Path], wanted: list[str],
                            existing: list[str], force: bool) -> list[Path]:
    if existing == wanted[: len(existing)]:
        return patches[len(existing):]
    foreign = len([pid for pid in existing if pid not in wanted])
    if not force:
        raise BuildError(
            f"branch {PATCHED_BRANCH} in {repo} has {len(existing)} commits that differ from "
            f"the series ({foreign} not in it): applying would lose them.",
            "run --export to save the branch's commits into the series, or --force to keep "
            "them on a backup branch and re-apply the series from the base.",
        )
    backup = f"{PATCHED_BRANCH}.backup-{time.strftime('%Y%m%d-%H%M%S')}"
    if _current_head(repo) == PATCHED_BRANCH:
        _git(repo, "checkout", "-q", "--detach")
    _git(repo, "branch", "-m", PATCHED_BRANCH, backup)
    say(f"--force: kept the old branch as {backup}")
    return patches


def _stash_if_forced(repo: Path, dirty: list[str], force: bool) -> bool:
    if not dirty:
        return False
    if not force:
        listed = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        raise BuildError(
            f"{repo} has uncommitted edits ({listed}); applying could overwrite them.",
            "commit them (then --export), or pass --force to stash them (`git stash list` "
            "shows them; nothing is discarded).",
        )
    _git(repo, "stash", "push", "-q", "-m", f"build.py --apply --force {time.ctime()}")
    say("--force: stashed your uncommitted edits (git stash list)")
    return True


def _am_one(repo: Path, patch: Path, skips: PartialSkips) -> None:
    env = dict(_COMMITTER)
    result = _git(repo, "am", "-q", "--keep-cr", "--committer-date-is-author-date",
                  *skips.exclude_args(), str(patch), env=env, check=False)
    if result.returncode == 0:
        return
    message = (result.stdout + result.stderr).strip()
    _git(repo, "am", "--abort", check=False)
    raise BuildError(_describe_failure(patch, message), _apply_fix_hint(patch))


def _describe_failure(patch: Path, git_message: str) -> str:
    match = re.search(r"patch failed: (.+?):(\d+)", git_message)
    if not match:
        missing = re.search(r"error: (.+?): (does not exist in index|No such file)", git_message)
        where = f" ({missing.group(1)} is missing from the tree)" if missing else ""
        return f"{patch.name} does not apply{where}.\ngit said:\n{git_message}"
    path, line = match.group(1), int(match.group(2))
    hunk = next((h for d in parse_patch(patch.read_text(errors="surrogateescape"))
                 if d.path == path for h in d.hunks if h.old_start == line), None)
    shown = f"\n  {hunk.header}\n" + "\n".join(f"  {x}" for x in hunk.lines[:8]) if hunk else ""
    return (f"{patch.name} does not apply: file {path}, hunk at line {line}:{shown}\n"
            f"The tree was left as it was before --apply.")


def _apply_fix_hint(patch: Path) -> str:
    return (f"rebase the patch: apply the series up to the patch before {patch.name}, make the "
            f"change by hand, commit, and run --export; or check --repo/--ref point at v2.9.1.")


def _rollback(repo: Path, before: str, old_tip: str, stashed: bool) -> None:
    _git(repo, "checkout", "-q", "--force", before, check=False)
    if old_tip:
        _git(repo, "update-ref", f"refs/heads/{PATCHED_BRANCH}", old_tip, check=False)
    else:
        _git(repo, "branch", "-q", "-D", PATCHED_BRANCH, check=False)
    if stashed:
        _git(repo, "stash", "pop", "-q", check=False)


def apply_series(repo: Path, series: Path = DEFAULT_SERIES) -> ApplyResult:
    """Apply ``series`` to a repository whose HEAD is the base (scratch and reference use)."""
    base = _git(repo, "rev-parse", "HEAD").stdout.strip()
    return apply(SourceTree(repo, base), series)


# --- export -------------------------------------------------------------------------------

@dataclass
class ExportResult:
    written: list[str]
    unchanged: list[str]
    removed: list[str]


def export(tree: SourceTree, series: Path = DEFAULT_SERIES, *, force: bool = False,
           state_file: Path | None = None) -> ExportResult:
    """Regenerate the patch files, ``series`` and ``BASE`` from the branch's commits."""
    stage(f"export: {PATCHED_BRANCH} -> {series.parent}")
    repo = tree.path
    if not _branch_exists(repo):
        raise BuildError(f"{repo} has no branch {PATCHED_BRANCH} to export.",
                         "run --apply first, then commit your changes on that branch.")
    _refuse_dropping_hunks(tree, series, state_file)
    _refuse_overwriting_edited_series(series, state_file, force)
    with tempfile.TemporaryDirectory() as scratch:
        fresh = _format_patches(repo, tree.base_commit, Path(scratch))
        result = _write_series(series, fresh, _base_entries(repo, tree.base_commit))
    _remember_series(state_file, series)
    say(f"exported {len(fresh)} patches: {len(result.written)} written, "
        f"{len(result.unchanged)} unchanged, {len(result.removed)} removed")
    return result


def _refuse_dropping_hunks(tree: SourceTree, series: Path, state_file: Path | None) -> None:
    """Refuse to export from a clone that lacks files the series changes.

    Such a clone got the series without those hunks (``--apply`` left them out), so its
    commits cannot reproduce them: exporting would empty patches and drop BASE entries.
    ``--force`` does not override this; it would destroy the maintainer's series.
    """
    lacking: dict[str, list[str]] = {}
    if series.exists():
        created: set[str] = set()
        for patch in read_series(series):
            for diff in touched_paths(patch):
                if diff.is_new:
                    created.add(diff.path)
                elif diff.path not in created and _git(
                        tree.path, "cat-file", "-e", f"{tree.base_commit}:{diff.path}",
                        check=False).returncode != 0:
                    lacking.setdefault(diff.path, []).append(patch.name)
    recorded = WorkdirState.load(state_file).left_out if state_file else []
    for path in recorded:
        lacking.setdefault(path, [])
    if lacking:
        listed = "; ".join(f"{path}" + (f" (changed by {', '.join(names)})" if names else
                                        " (left out when the series was applied)")
                           for path, names in sorted(lacking.items()))
        raise BuildError(
            f"--export would write patches without their hunks on files this clone lacks: "
            f"{listed}. Nothing was written.",
            "export from a clone that holds these files: a PyTorch v2.9.1 clone, or a "
            "repository of the reference files made with `python "
            "scripts/make_reference_repo.py DEST --stand-ins` (then --apply --repo DEST "
            "--workdir NEW, commit your work there, --export).")


def _refuse_overwriting_edited_series(series: Path, state_file: Path | None, force: bool) -> None:
    if force or not series.exists() or not read_series(series):
        return
    known = WorkdirState.load(state_file).series_digest if state_file else ""
    if known != series_digest(series):
        raise BuildError(
            f"the patch files in {series.parent} changed since this workdir last applied or "
            f"exported them; exporting would overwrite those edits.",
            "run --apply to bring the edits into the branch first, or pass --force to "
            "overwrite the files with the branch's commits.",
        )


def _format_patches(repo: Path, base: str, out: Path) -> list[Path]:
    _git(repo, *_FORMAT_PATCH_CONFIG, "format-patch", "--quiet", "--zero-commit",
         "--no-signature", "--no-numbered", "--no-renames", "--no-binary",
         "--output-directory", str(out), f"{base}..{PATCHED_BRANCH}")
    patches = sorted(out.glob("*.patch"))
    for patch in patches:
        patch.write_text(_tree_independent(patch.read_text(errors="surrogateescape")),
                         errors="surrogateescape")
    return patches


def _tree_independent(text: str) -> str:
    """Drop what depends on the tree the patch was exported from, not on the change.

    ``index <old>..<new>`` lines name blobs, and the text after a hunk's ``@@`` names the
    nearest function above it; both differ between a real v2.9.1 clone and a repository with
    stand-ins for partly known files. ``git am`` needs neither (no three-way merge), and
    ``BASE`` pins the base blobs instead.
    """
    return HUNK_SECTION.sub(r"\1", INDEX_LINE.sub("", text))


def _base_entries(repo: Path, base: str) -> dict[str, str]:
    changed = _git(repo, "diff", "--name-only", "--no-renames", base, PATCHED_BRANCH).stdout
    entries = {}
    for path in sorted(changed.split()):
        blob = _git(repo, "rev-parse", f"{base}:{path}", check=False)
        if blob.returncode != 0:
            continue  # a file the series adds
        entries[path] = blob.stdout.strip()
        partial = partial_files_at_hand().get(path)
        if partial and entries[path] == stand_in_blob(path):
            entries[path] = partial_blob(partial)  # the real file's blob, not the stand-in's
    return entries


def _write_series(series: Path, fresh: list[Path], base: dict[str, str]) -> ExportResult:
    folder = series.parent
    folder.mkdir(parents=True, exist_ok=True)
    result = ExportResult([], [], [])
    names = {p.name for p in fresh}
    for old in sorted(folder.glob("*.patch")):
        if PATCH_NAME.match(old.name) and old.name not in names:
            old.unlink()
            result.removed.append(old.name)
    for patch in fresh:
        target = folder / patch.name
        data = patch.read_bytes()
        if target.exists() and target.read_bytes() == data:
            result.unchanged.append(patch.name)
        else:
            target.write_bytes(data)
            result.written.append(patch.name)
    _write_if_changed(series, "# Applied in this order by `python build.py --apply` (git am).\n"
                      "# Regenerate with `python build.py --export`; do not edit by hand.\n"
                      + "".join(f"{p.name}\n" for p in fresh))
    _write_if_changed(folder / "BASE", "# git blob sha1 at the base of every file the series "
                      "changes; written by `python build.py --export`.\n"
                      + "".join(f"{path}\t{blob}\n" for path, blob in base.items()))
    return result


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# --- check --------------------------------------------------------------------------------

@dataclass
class CheckReport:
    applied: list[str] = field(default_factory=list)
    failed: str = ""
    partial_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.partial_problems


def check(tree: SourceTree, series: Path = DEFAULT_SERIES,
          partial_root: Path | None = None) -> CheckReport:
    """Apply the whole series to a scratch worktree of the base and prove partial-file hunks."""
    stage(f"check: {series} against {tree.base_commit[:12]}")
    partial_root = partial_root or reference_partial()
    patches = read_series(series)
    report = CheckReport()
    with _scratch_worktree(tree) as scratch:
        skips = _partial_skips(scratch, tree.base_commit, patches, partial_root)
        verify_base(tree.path, tree.base_commit, series.parent / "BASE", frozenset(skips.paths))
        for patch in patches:
            try:
                _am_one(scratch, patch, skips)
            except BuildError as error:
                report.failed = error.problem
                say(f"  [red]FAIL[/] {error.problem}")
                break
            report.applied.append(patch.name)
            say(f"  [green]ok[/]   {patch.name}")
    report.partial_problems = check_partial_hunks(patches, partial_root)
    for problem in report.partial_problems:
        say(f"  [red]FAIL[/] {problem}")
    say(f"check: {len(report.applied)}/{len(patches)} patches apply; "
        f"{len(report.partial_problems)} hunks on partly known files touch unknown lines")
    if not report.ok:
        raise BuildError("the series does not check out against the base (see above).",
                         "rebase the failing patch (apply, edit, commit, --export) and run "
                         "--check again.")
    return report


@contextmanager
def _scratch_worktree(tree: SourceTree) -> Iterator[Path]:
    scratch = Path(tempfile.mkdtemp(prefix="mps-check-"))
    path = scratch / "tree"
    _git(tree.path, "worktree", "add", "--quiet", "--detach", str(path), tree.base_commit)
    try:
        yield path
    finally:
        _git(tree.path, "worktree", "remove", "--force", str(path), check=False)
        _git(tree.path, "worktree", "prune", check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def check_partial_hunks(patches: list[Path], partial_root: Path) -> list[str]:
    """Every hunk on a file known only in part must touch known lines alone."""
    models: dict[str, PartialFile] = {}
    problems = []
    for patch in patches:
        for diff in touched_paths(patch):
            source = partial_path(partial_root, diff.path)
            if diff.is_new or not source.exists():
                continue
            model = models.setdefault(diff.path, PartialFile(source.read_text()))
            for hunk in diff.hunks:
                why = model.apply(hunk)
                if why:
                    problems.append(f"{patch.name}: {diff.path} {hunk.header.split(' @@')[0]} "
                                    f"@@: {why}")
    return problems


# --- status -------------------------------------------------------------------------------

@dataclass
class SeriesStatus:
    base: str
    head: str
    applied: list[str]
    missing: list[str]
    extra_commits: list[str]
    dirty: list[str]


def status(tree: SourceTree, series: Path = DEFAULT_SERIES) -> SeriesStatus:
    repo = tree.path
    patches = read_series(series)
    commits = _branch_commits(repo, tree.base_commit)
    ids = {_commit_patch_id(repo, c): c for c in commits}
    skips = _partial_skips(repo, tree.base_commit, patches, None)
    wanted = dict(zip([p.name for p in patches], _wanted_patch_ids(repo, patches, skips),
                      strict=True))
    applied = [name for name, pid in wanted.items() if pid in ids]
    extra = [_git(repo, "log", "-1", "--format=%h %s", c).stdout.strip()
             for pid, c in ids.items() if pid not in wanted.values()]
    result = SeriesStatus(tree.base_commit, _current_head(repo), applied,
                          [n for n in wanted if n not in applied], extra, _dirty_files(repo))
    say(f"base:     {result.base}\nHEAD:     {result.head}\n"
        f"branch:   {PATCHED_BRANCH} ({'present' if commits else 'absent'})\n"
        f"series:   {series} ({len(patches)} patches, digest {series_digest(series)})\n"
        f"applied:  {len(applied)}\nmissing:  {', '.join(result.missing) or 'none'}\n"
        f"commits not in the series: {', '.join(extra) or 'none'}\n"
        f"dirty:    {', '.join(result.dirty) or 'none'}")
    return result


# --- helpers for the other stages ---------------------------------------------------------

def plan_apply(tree: SourceTree, series: Path = DEFAULT_SERIES) -> list[list[str]]:
    """The git commands ``--apply`` runs on a fresh clone (for ``--dry-run``)."""
    plan = [["git", "checkout", "-b", PATCHED_BRANCH, tree.base_commit]]
    for patch in read_series(series):
        plan.append(["git", "am", "--keep-cr", "--committer-date-is-author-date", str(patch)])
    return plan


def require_applied(tree: SourceTree, series: Path = DEFAULT_SERIES) -> None:
    """The wheel must be built from exactly the series it is named after."""
    repo = tree.path
    patches = read_series(series)
    skips = _partial_skips(repo, tree.base_commit, patches, None)
    wanted = _wanted_patch_ids(repo, patches, skips)
    existing = [_commit_patch_id(repo, c) for c in _branch_commits(repo, tree.base_commit)]
    on_branch = _current_head(repo) == PATCHED_BRANCH
    if existing != wanted or not on_branch or _dirty_files(repo):
        raise BuildError(
            f"{repo} is not exactly the base plus the series (checked out: "
            f"{_current_head(repo)}; {len(existing)} of {len(wanted)} patches on "
            f"{PATCHED_BRANCH}; uncommitted edits: {len(_dirty_files(repo))}).",
            "run `python build.py --apply --wheel` so the wheel matches its version tag "
            "(commit and --export your edits first).",
        )
