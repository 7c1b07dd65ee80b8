#!/usr/bin/env python3
"""Write a PEP 503 simple index of the wheels in a wheelhouse, for pip and uv.

Usage: python scripts/make_index.py WHEELHOUSE SITE [--base-url URL] [--previous URL]

For each project it writes ``SITE/simple/<project>/index.html``: one link per wheel, with a
``#sha256=`` fragment and the wheel's ``Requires-Python`` as ``data-requires-python``, and
``SITE/simple/index.html`` listing the projects. Without ``--base-url`` the wheels are copied
next to their page and linked relatively; with it they are linked at ``URL<file name>`` (the
release job links the GitHub Release's assets). ``--previous`` names the index now published
(``https://<owner>.github.io/<repo>/simple/``): its links are kept, so wheels of earlier
releases stay installable; a 404 there means there is none yet. Only the standard library is
used, so it runs on any Python 3.10+.
"""

from __future__ import annotations

import argparse
import email.message
import email.parser
import hashlib
import html
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

FETCH_TIMEOUT_S = 60


class IndexProblem(Exception):
    """A problem with the input: the message names it and says how to fix it."""


@dataclass(frozen=True)
class Link:
    """One file on a project page."""

    filename: str
    url: str  # without the hash fragment
    sha256: str
    requires_python: str | None


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_wheel_name(filename: str) -> tuple[str, str]:
    """(distribution, version) from ``name-version[-build]-python-abi-platform.whl``."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6) or not all(parts):
        raise IndexProblem(f"{filename} is not a wheel file name "
                           "(name-version[-build]-python-abi-platform.whl); move it out of the "
                           "wheelhouse or restore its name.")
    return parts[0], parts[1]


def read_metadata(wheel: Path) -> email.message.Message:
    """The wheel's ``*.dist-info/METADATA`` headers."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist()
                     if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(names) != 1:
                raise IndexProblem(f"{wheel} has {len(names)} .dist-info/METADATA files, not 1; "
                                   "it is not a valid wheel: rebuild it.")
            text = archive.read(names[0]).decode("utf-8")
    except zipfile.BadZipFile as error:
        raise IndexProblem(f"{wheel} is not a zip archive ({error}): the download or build was "
                           "cut short; fetch or build it again.") from None
    return email.parser.HeaderParser().parsestr(text)


def wheel_link(wheel: Path, base_url: str | None) -> tuple[str, Link]:
    """(normalized project, link) for one wheel, after checking its name against METADATA."""
    name, version = split_wheel_name(wheel.name)
    metadata = read_metadata(wheel)
    meta_name, meta_version = metadata.get("Name", ""), metadata.get("Version", "")
    # Wheel file names escape '-' as '_' in both fields (PEP 427).
    if (normalize(meta_name) != normalize(name)
            or meta_version.replace("-", "_").lower() != version.lower()):
        raise IndexProblem(f"{wheel.name} says {name} {version}, but its METADATA says "
                           f"{meta_name} {meta_version}: the file was renamed. Restore its "
                           "original name (or rebuild it); pip would refuse it anyway.")
    quoted = urllib.parse.quote(wheel.name)
    url = f"{base_url}{quoted}" if base_url else quoted
    return normalize(name), Link(wheel.name, url, sha256_file(wheel),
                                 metadata.get("Requires-Python"))


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def parse_project_page(page: str, page_url: str) -> list[Link]:
    """The links of a published project page, with absolute URLs."""
    parser = _AnchorParser()
    parser.feed(page)
    links = []
    for attrs, text in parser.anchors:
        url, _, fragment = urllib.parse.urljoin(page_url, attrs.get("href") or "").partition("#")
        if not fragment.startswith("sha256=") or not text.endswith(".whl"):
            raise IndexProblem(f"the previous index {page_url} has a link without a sha256 "
                               f"fragment or wheel name ({text or url}); it was not written by "
                               "this script. Publish a fresh index (leave out --previous).")
        links.append(Link(text, url, fragment.removeprefix("sha256="),
                          attrs.get("data-requires-python")))
    return links


def fetch_previous(previous: str, project: str) -> list[Link]:
    """Links of ``project`` in the published index at ``previous``; none on a 404."""
    page_url = f"{previous}{project}/"
    try:
        with urllib.request.urlopen(page_url, timeout=FETCH_TIMEOUT_S) as response:
            page = response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            print(f"no previous index at {page_url} (404): starting a new one")
            return []
        raise IndexProblem(f"could not read the previous index {page_url}: HTTP {error.code}. "
                           "Publishing now would drop earlier releases from the index; retry "
                           "when the site answers.") from None
    except (urllib.error.URLError, OSError) as error:
        raise IndexProblem(f"could not read the previous index {page_url}: {error}. Check the "
                           "URL, or retry when the network answers.") from None
    return parse_project_page(page, page_url)


def project_page(project: str, links: list[Link]) -> str:
    rows = []
    for link in sorted(links, key=lambda item: item.filename):
        requires = (f' data-requires-python="{html.escape(link.requires_python)}"'
                    if link.requires_python else "")
        href = html.escape(f"{link.url}#sha256={link.sha256}")
        rows.append(f'    <a href="{href}"{requires}>{html.escape(link.filename)}</a><br>\n')
    return page(f"Links for {project}", "".join(rows))


def root_page(projects: list[str]) -> str:
    rows = "".join(f'    <a href="{html.escape(p)}/">{html.escape(p)}</a><br>\n'
                   for p in sorted(projects))
    return page("Simple index", rows)


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html>\n  <head>\n"
            '    <meta name="pypi:repository-version" content="1.0">\n'
            f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
            f"    <h1>{html.escape(title)}</h1>\n{body}  </body>\n</html>\n")


def check_url(option: str, url: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise IndexProblem(f"{option} {url!r} is not an http(s) URL; give one such as "
                           "https://github.com/OWNER/REPO/releases/download/TAG/.")
    return url if url.endswith("/") else url + "/"


def collect(wheelhouse: Path, base_url: str | None) -> dict[str, list[Link]]:
    if not wheelhouse.is_dir():
        raise IndexProblem(f"the wheelhouse {wheelhouse} does not exist; build wheels with "
                           "`python build.py --apply --wheel` or download the release's wheels "
                           "into it.")
    wheels = sorted(wheelhouse.glob("*.whl"))
    if not wheels:
        raise IndexProblem(f"no .whl files in {wheelhouse}; build wheels with "
                           "`python build.py --apply --wheel` first.")
    projects: dict[str, list[Link]] = {}
    for wheel in wheels:
        project, link = wheel_link(wheel, base_url)
        projects.setdefault(project, []).append(link)
    return projects


def merge(new: list[Link], previous: list[Link]) -> list[Link]:
    """``new`` plus the previous links of other files (a new file of the same name wins)."""
    names = {link.filename for link in new}
    replaced = sorted(names.intersection(link.filename for link in previous))
    for name in replaced:
        print(f"replacing the previous link of {name}")
    return new + [link for link in previous if link.filename not in names]


def check_site(site: Path) -> None:
    if site.exists() and (not site.is_dir() or any(site.iterdir())):
        raise IndexProblem(f"{site} already exists and is not an empty folder; nothing was "
                           "written. Remove it or choose another folder.")


def write_site(site: Path, wheelhouse: Path, projects: dict[str, list[Link]],
               copy_wheels: bool) -> None:
    simple = site / "simple"
    for project, links in projects.items():
        folder = simple / project
        folder.mkdir(parents=True, exist_ok=True)
        if copy_wheels:
            for link in links:
                if (wheelhouse / link.filename).exists():
                    shutil.copy2(wheelhouse / link.filename, folder / link.filename)
        (folder / "index.html").write_text(project_page(project, links))
    (simple / "index.html").write_text(root_page(list(projects)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheelhouse", type=Path, help="folder with the .whl files")
    parser.add_argument("site", type=Path,
                        help="new or empty folder; the index goes to SITE/simple")
    parser.add_argument("--base-url", help="link wheels at URL<file name> instead of copying them")
    parser.add_argument("--previous", help="published index (…/simple/) whose links to keep")
    args = parser.parse_args(argv)
    try:
        base_url = check_url("--base-url", args.base_url) if args.base_url else None
        previous = check_url("--previous", args.previous) if args.previous else None
        if previous and not base_url:
            raise IndexProblem("--previous needs --base-url: kept links point at earlier "
                               "releases, so new wheels must be linked the same way.")
        check_site(args.site)
        projects = collect(args.wheelhouse, base_url)
        if previous:
            projects = {name: merge(links, fetch_previous(previous, name))
                        for name, links in projects.items()}
        write_site(args.site, args.wheelhouse, projects, copy_wheels=base_url is None)
    except IndexProblem as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for project, links in sorted(projects.items()):
        print(f"{args.site / 'simple' / project / 'index.html'}: {len(links)} wheels of {project}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
