"""The v2.9.1 reference files: where they come from, the in-repo overlay, and a git repo of them.

Tests and offline checks need the exact v2.9.1 files our patches touch (``tree/``) and the
files we know only in part (``partial/``, ``LINENO|TEXT``). They come from the first of:

1. ``$TORCH_REFERENCE_TREE`` / ``$TORCH_REFERENCE_PARTIAL`` (a copy anywhere);
2. ``../shared/pytorch-v2.9.1`` beside the checkout (our own machines);
3. a download from GitHub at the pinned commit, each file verified against
   ``ci/reference-files.tsv`` and cached in ``.cache/reference/``.

Files the project holds itself (``ci/reference-extra/{tree,partial}``) are merged over the
external ones: an overlay file is added; one the external copy also has must agree with it.
Standard library only: ``scripts/run_tests.py`` resolves the reference before any venv exists.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mpsbuild.errors import BuildError
from mpsbuild.patchfile import PartialFile

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TAG = "v2.9.1"
# The commit that tag v2.9.1 names upstream.
PINNED_COMMIT = "d38164a545b4a4e4e0cf73ce67173f70574890b6"
MANIFEST = PROJECT_ROOT / "ci" / "reference-files.tsv"
DEFAULT_OVERLAY = PROJECT_ROOT / "ci" / "reference-extra"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/pytorch/pytorch/{PINNED_COMMIT}"

TREE_ENV = "TORCH_REFERENCE_TREE"
PARTIAL_ENV = "TORCH_REFERENCE_PARTIAL"
# Where the download comes from (a mirror of raw.githubusercontent.com; file:// works too).
URL_ENV = "TORCH_REFERENCE_URL"
OVERLAY_ENV = "MPSBUILD_REFERENCE_EXTRA"
CACHE_ENV = "MPSBUILD_REFERENCE_CACHE"
DOWNLOAD_TIMEOUT_S = 30

# Fixed identity and date: the reference commit hash is then identical on every machine.
_FIXED_GIT_ENV = {
    "GIT_AUTHOR_NAME": "reference",
    "GIT_AUTHOR_EMAIL": "reference@localhost",
    "GIT_COMMITTER_NAME": "reference",
    "GIT_COMMITTER_EMAIL": "reference@localhost",
    "GIT_AUTHOR_DATE": "2025-11-12T00:00:00+00:00",
    "GIT_COMMITTER_DATE": "2025-11-12T00:00:00+00:00",
}


class ReferenceUnavailable(BuildError):
    """No source of the reference files could be used."""


class ReferenceConflict(BuildError):
    """The overlay and the external reference disagree about a file."""


@dataclass(frozen=True)
class ReferenceFiles:
    tree: Path
    partial: Path
    origin: str  # where the external files came from, for messages


@dataclass(frozen=True)
class ManifestRow:
    path: str
    blob: str  # git blob sha1 at v2.9.1, or its prefix for files known in part
    kind: str  # "tree" (held whole) or "partial" (known in part)


# --- locations ----------------------------------------------------------------------------

def shared_dir() -> Path:
    """``shared/`` beside the checkout (our machines keep the reference files there)."""
    return PROJECT_ROOT.parent / "shared"


def overlay_dir() -> Path:
    return Path(os.environ.get(OVERLAY_ENV) or DEFAULT_OVERLAY)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or PROJECT_ROOT / ".cache" / "reference")


def base_url() -> str:
    return (os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def locate_reference(*, fetch: bool = True) -> ReferenceFiles:
    """The reference files with the overlay merged in; downloads them if ``fetch`` allows.

    Raises ReferenceUnavailable (one paragraph naming every way to provide them) when no
    source works, ReferenceConflict when the overlay contradicts the external files.
    """
    overlay = overlay_dir()
    return _locate(os.environ.get(TREE_ENV, ""), os.environ.get(PARTIAL_ENV, ""), shared_dir(),
                   cache_dir(), base_url(), overlay, _fingerprint(overlay), fetch)


def _fingerprint(folder: Path) -> str:
    """The content of a folder's files: a changed overlay is never served from memory."""
    digest = hashlib.sha256()
    if folder.is_dir():
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(file).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def reference_available() -> bool:
    """True when the reference files are at hand without a download."""
    try:
        locate_reference(fetch=False)
    except ReferenceUnavailable:
        return False
    return True


def reference_tree() -> Path:
    """The exact v2.9.1 files (see the module docstring for where they come from)."""
    return locate_reference().tree


def reference_partial() -> Path:
    """The files known only in part, as ``<path>.partial``."""
    return locate_reference().partial


@functools.cache
def _locate(tree_env: str, partial_env: str, shared: Path, cache: Path, url: str,
            overlay: Path, overlay_fingerprint: str, fetch: bool) -> ReferenceFiles:
    external = _external_reference(tree_env, partial_env, shared, cache, url, overlay, fetch)
    return merge_overlay(external, overlay, cache)


def _external_reference(tree_env: str, partial_env: str, shared: Path, cache: Path, url: str,
                        overlay: Path, fetch: bool) -> ReferenceFiles:
    if partial_env and not Path(partial_env).is_dir():
        raise ReferenceUnavailable(f"{PARTIAL_ENV}={partial_env} is not a directory.",
                                   f"point {PARTIAL_ENV} at the partial/ folder of the reference "
                                   "files (shared/pytorch-v2.9.1/partial), or unset it.")
    if tree_env:
        tree = Path(tree_env)
        if not tree.is_dir():
            raise ReferenceUnavailable(f"{TREE_ENV}={tree_env} is not a directory.",
                                       f"point {TREE_ENV} at the tree/ folder of the reference "
                                       "files (shared/pytorch-v2.9.1/tree), or unset it.")
        partial = Path(partial_env) if partial_env else tree.parent / "partial"
        if not partial.is_dir():
            raise ReferenceUnavailable(
                f"{TREE_ENV} is set, but {PARTIAL_ENV} is not and there is no {partial} beside "
                "the tree: the series also changes files known only in part (MPSProfiler.mm, "
                "RenormKernel.mm), whose known lines are in that folder.",
                f"set {PARTIAL_ENV} to the partial/ folder of the same copy "
                "(shared/pytorch-v2.9.1/partial).")
        return ReferenceFiles(tree, partial, f"{TREE_ENV}={tree_env}")
    found = _shared_or_cached(shared, cache, overlay)
    if found is None and fetch:
        found = _download_to_cache(cache, url, overlay, shared)
    if found is None:
        raise ReferenceUnavailable(*_unavailable_message(shared, cache, url, "not tried"))
    if partial_env:
        return ReferenceFiles(found.tree, Path(partial_env), f"{found.origin}; {PARTIAL_ENV}")
    return found


def _shared_or_cached(shared: Path, cache: Path, overlay: Path) -> ReferenceFiles | None:
    copy = shared / "pytorch-v2.9.1"
    if (copy / "tree").is_dir():
        return ReferenceFiles(copy / "tree", copy / "partial", str(copy))
    cached = _cached_download(cache, overlay)
    if (cached / "tree").is_dir():
        return ReferenceFiles(cached / "tree", cached / "partial", str(cached))
    return None


def _cached_download(cache: Path, overlay: Path) -> Path:
    """The download's folder, named after the exact list of files it must hold."""
    listing = "".join(f"{r.path}\t{r.blob}\t{r.kind}\n" for r in reference_rows(overlay))
    return cache / f"pytorch-v2.9.1-{hashlib.sha256(listing.encode()).hexdigest()[:12]}"


def _download_to_cache(cache: Path, url: str, overlay: Path, shared: Path) -> ReferenceFiles:
    dest = _cached_download(cache, overlay)
    try:
        download_reference(url, reference_rows(overlay), dest)
    except ReferenceUnavailable as failed:
        raise ReferenceUnavailable(*_unavailable_message(shared, cache, url, failed.problem)) \
            from None
    return ReferenceFiles(dest / "tree", dest / "partial", f"{url} (cached in {dest})")


def _unavailable_message(shared: Path, cache: Path, url: str, download: str) -> tuple[str, str]:
    problem = (
        "the PyTorch v2.9.1 reference files are not available. They come from the first of: "
        f"(1) ${TREE_ENV} and ${PARTIAL_ENV} (the tree/ and partial/ folders of a copy): "
        f"{TREE_ENV} is not set; (2) {shared / 'pytorch-v2.9.1'} beside this checkout: not "
        f"there; (3) a download of the files listed in ci/reference-files.tsv from {url}, "
        f"verified by git blob and cached in {cache}: {download}.")
    fix = (f"set {TREE_ENV} and {PARTIAL_ENV} to a copy, place one at "
           f"{shared / 'pytorch-v2.9.1'}, or run again where raw.githubusercontent.com is "
           f"reachable (or set {URL_ENV} to a mirror of it).")
    return problem, fix


# --- the manifest and the download --------------------------------------------------------

def read_manifest(manifest: Path = MANIFEST) -> list[ManifestRow]:
    rows = []
    for line in manifest.read_text().splitlines():
        if line and not line.startswith("#"):
            path, blob, kind = line.split("\t")
            rows.append(ManifestRow(path, blob, kind))
    return rows


def reference_rows(overlay: Path | None = None) -> list[ManifestRow]:
    """The manifest plus the overlay's files it does not list (so a download verifies them)."""
    rows = read_manifest()
    listed = {row.path for row in rows}
    root = overlay or overlay_dir()
    for path, file in sorted(_overlay_files(root / "tree", "").items()):
        if path not in listed:
            rows.append(ManifestRow(path, git_blob(file.read_bytes()), "tree"))
    for path, file in sorted(_overlay_files(root / "partial", ".partial").items()):
        if path not in listed:
            rows.append(ManifestRow(path, partial_blob(file), "partial"))
    return rows


def git_blob(data: bytes) -> str:
    """``git hash-object`` of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def download_reference(url: str, rows: list[ManifestRow], dest: Path) -> None:
    """Download every row from ``url/<path>`` into ``dest`` (tree/, partial/), verified.

    Files known only in part are written to ``partial/`` with every line known, as the whole
    real file is at hand. ``dest`` appears only when everything arrived and matched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
    try:
        # One file first: an unreachable host then costs one timeout, not one per file.
        bodies = [_download(url, rows[0].path)] if rows else []
        with ThreadPoolExecutor(max_workers=8) as pool:
            bodies += pool.map(lambda row: _download(url, row.path), rows[1:])
        problems = [f"{row.path}: blob {git_blob(body)}, expected {row.blob}"
                    for row, body in zip(rows, bodies, strict=True)
                    if not git_blob(body).startswith(row.blob)]
        if problems:
            raise ReferenceUnavailable(
                f"files downloaded from {url} are not the v2.9.1 files: " + "; ".join(problems),
                f"point {URL_ENV} at a copy of PyTorch at commit {PINNED_COMMIT}.")
        write_reference_files(scratch, [(row, body) for row, body in zip(rows, bodies,
                                                                           strict=True)], url)
        if dest.exists():  # another process finished the same download first
            return
        scratch.rename(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _download(url: str, path: str) -> bytes:
    try:
        with urllib.request.urlopen(f"{url}/{path}", timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ReferenceUnavailable(f"downloading {url}/{path} failed ({reason})",
                                   "see the reason above.") from None


def write_reference_files(dest: Path, files: list[tuple[ManifestRow, bytes]],
                          source: str) -> None:
    """Lay ``files`` out as shared/ does: tree/, partial/ (every line known), MANIFEST.tsv."""
    manifest = ["path\tgit_blob_sha1\tsource\tcheck\n"]
    for row, body in files:
        blob = git_blob(body)
        if row.kind == "tree":
            target = dest / "tree" / row.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            manifest.append(f"{row.path}\t{blob}\t{source}\tverified\n")
        else:
            target = dest / "partial" / f"{row.path}.partial"
            target.parent.mkdir(parents=True, exist_ok=True)
            lines = body.decode("utf-8", errors="surrogateescape").splitlines()
            header = f"# {row.path} at v2.9.1 (git blob {blob}): every line is known.\n"
            target.write_text(header + "".join(f"{i}|{t}\n" for i, t in enumerate(lines, 1)),
                              errors="surrogateescape")
    (dest / "MANIFEST.tsv").write_text("".join(manifest))


# --- the overlay --------------------------------------------------------------------------

def _overlay_files(root: Path, suffix: str) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)).removesuffix(suffix): p
            for p in sorted(root.rglob(f"*{suffix}")) if p.is_file()}


def merge_overlay(external: ReferenceFiles, overlay: Path, cache: Path) -> ReferenceFiles:
    """``external`` with the overlay's files added, in a folder of the cache (or as it is).

    An overlay file the external copy also has must agree with it: a whole file byte for
    byte; a file known in part on every line both know (the merge knows the union). Where a
    whole file is known, its partial copy must agree with it and is dropped.
    """
    extra_tree = _overlay_files(overlay / "tree", "")
    extra_partial = _overlay_files(overlay / "partial", ".partial")
    if not extra_tree and not extra_partial:
        return external
    tree = _overlay_files(external.tree, "")
    partial = _overlay_files(external.partial, ".partial")
    merged_partial: dict[str, str] = {p: f.read_text(errors="surrogateescape")
                                      for p, f in partial.items()}
    for path, file in extra_tree.items():
        if path in tree and tree[path].read_bytes() != file.read_bytes():
            raise ReferenceConflict(
                f"{file} differs from {tree[path]}: a file of the overlay must be identical to "
                "the external reference's copy.",
                "make the overlay file the exact v2.9.1 file (its git blob is in "
                "ci/reference-files.tsv), or remove it from the overlay.")
    for path, file in extra_partial.items():
        text = file.read_text(errors="surrogateescape")
        merged_partial[path] = (merge_partial_texts(merged_partial[path], text, str(file))
                                if path in merged_partial else text)
    whole = {**tree, **extra_tree}
    for path in sorted(set(whole) & set(merged_partial)):
        _require_partial_matches_whole(merged_partial.pop(path), whole[path], path)
    return _materialize(external, whole, merged_partial, cache, overlay)


def merge_partial_texts(first: str, second: str, second_name: str) -> str:
    """Two ``.partial`` texts of one file as one: every line either knows; a clash is an error."""
    a, b = PartialFile(first).lines, PartialFile(second).lines
    merged: list[str | None] = []
    for number in range(1, max(len(a), len(b)) + 1):
        x = a[number - 1] if number <= len(a) else None
        y = b[number - 1] if number <= len(b) else None
        if x is not None and y is not None and x != y:
            raise ReferenceConflict(
                f"{second_name} line {number} is {y!r}, the external reference knows it as "
                f"{x!r}.", "correct the overlay's line (it must be the v2.9.1 text) or remove it.")
        merged.append(x if x is not None else y)
    headers = [t.split("\n", 1)[0] for t in (first, second)]
    header = max(headers, key=lambda h: len(_blob_in(h)))  # the one naming the fuller blob
    return header + "\n" + render_partial(merged)


def render_partial(lines: list[str | None]) -> str:
    out, gap = [], False
    for number, text in enumerate(lines, 1):
        if text is None:
            gap = True
            continue
        if gap:
            out.append("...\n")
            gap = False
        out.append(f"{number}|{text}\n")
    return "".join(out) + "...\n"


def _require_partial_matches_whole(partial_text: str, whole: Path, path: str) -> None:
    real = whole.read_text(errors="surrogateescape").splitlines()
    for number, known in enumerate(PartialFile(partial_text).lines, 1):
        if known is not None and (number > len(real) or real[number - 1] != known):
            raise ReferenceConflict(
                f"{path}: the partial copy knows line {number} as {known!r}, the whole file "
                f"{whole} has {real[number - 1] if number <= len(real) else 'no such line'!r}.",
                "one of the two is not the v2.9.1 file: correct or remove the overlay's copy.")


def _materialize(external: ReferenceFiles, tree: dict[str, Path], partial: dict[str, str],
                 cache: Path, overlay: Path) -> ReferenceFiles:
    digest = hashlib.sha256()
    for path, file in sorted(tree.items()):
        digest.update(path.encode() + b"\0" + file.read_bytes() + b"\0")
    for path, text in sorted(partial.items()):
        digest.update(path.encode() + b"\1" + text.encode(errors="surrogateescape") + b"\0")
    dest = cache / f"merged-{digest.hexdigest()[:16]}"
    origin = f"{external.origin} + overlay {overlay}"
    if not dest.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".merge-", dir=cache))
        try:
            manifest = ["path\tgit_blob_sha1\tsource\tcheck\n"]
            for path, file in sorted(tree.items()):
                target = scratch / "tree" / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)
                manifest.append(f"{path}\t{git_blob(file.read_bytes())}\t{file.parent}\tmerged\n")
            (scratch / "partial").mkdir()
            for path, text in sorted(partial.items()):
                target = scratch / "partial" / f"{path}.partial"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, errors="surrogateescape")
            (scratch / "MANIFEST.tsv").write_text("".join(manifest))
            if not dest.exists():
                scratch.rename(dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return ReferenceFiles(dest / "tree", dest / "partial", origin)


# --- files known in part ------------------------------------------------------------------

STAND_IN_FILLER = "// line {number}: not held here (shared/ knows this file in part)"


def stand_in_text(partial_file: Path) -> str:
    """A stand-in for a file known in part: known lines at their numbers, filler elsewhere.

    Patches whose hunks touch only known lines apply to it exactly as to the real file, so a
    maintainer can work on such files in a repository of the reference files.
    """
    lines = PartialFile(partial_file.read_text()).lines
    return "".join((text if text is not None else STAND_IN_FILLER.format(number=i)) + "\n"
                   for i, text in enumerate(lines, 1))


def partial_files(partial_root: Path | None = None) -> dict[str, Path]:
    """Repository path -> its ``.partial`` file."""
    root = partial_root or reference_partial()
    return _overlay_files(root, ".partial")


def partial_files_at_hand() -> dict[str, Path]:
    """``partial_files()`` without a download: empty when no reference is at hand."""
    if not reference_available():
        return {}
    return partial_files(locate_reference(fetch=False).partial)


def _blob_in(line: str) -> str:
    match = re.search(r"git blob ([0-9a-f]{7,40})", line)
    return match.group(1) if match else ""


def partial_blob(partial_file: Path) -> str:
    """The (abbreviated) git blob of the real file, from the partial file's header."""
    return _blob_in(partial_file.read_text(errors="surrogateescape").split("\n", 1)[0])


# --- a git repository of the reference files ----------------------------------------------

def make_reference_repo(dest: Path, tree: Path | None = None, *, stand_ins: bool = False) -> Path:
    """Create ``dest`` as a git repo holding ``tree`` in one commit tagged ``v2.9.1``.

    With ``stand_ins``, files known only in part are added as stand-ins (see ``stand_in_text``).
    ``dest`` must not exist yet; the function never touches an existing directory.
    """
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose a new path")
    source = tree or reference_tree()
    if not source.is_dir():
        raise FileNotFoundError(
            f"reference tree {source} not found; pass the folder that holds the v2.9.1 files "
            f"(shared/pytorch-v2.9.1/tree), or leave it out to use {TREE_ENV}, "
            "../shared/pytorch-v2.9.1 or the download")
    shutil.copytree(source, dest)
    if stand_ins:
        for path, partial in partial_files().items():
            target = dest / path
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(stand_in_text(partial))
    env = {**os.environ, **_FIXED_GIT_ENV}

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env,
                       stdout=subprocess.DEVNULL)

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "PyTorch v2.9.1 reference files")
    git("tag", REFERENCE_TAG)
    return dest
