"""scripts/make_index.py: the PEP 503 index pip and uv install our wheels from.

The end-to-end tests serve stand-in wheels (tiny pure-Python wheels named like ours, built here
with the standard library) with `python -m http.server` on 127.0.0.1 and install them with real
pip and real uv into fresh, temporary venvs: never into the project's .venv. A stand-in "PyPI"
next to it carries upstream's torch 2.9.1, torchvision and torchaudio (pinned `torch==2.9.1`,
as the real 0.24.1 and 2.9.1 are) and a dependency of our torch.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from driver_helpers import run_build

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_index.py"
sys.path.insert(0, str(ROOT))
from mpsbuild import package  # noqa: E402

OURS = "2.9.1+mps.0123abcd"
# A later series whose wheel needs a Python that does not exist: pip must skip it from the
# index's data-requires-python alone, without downloading it.
OURS_FUTURE_PYTHON = "2.9.1+mps.ffff0000"
RELEASE_PATH = "releases/download/v2.9.1-mps.1/"


# --- stand-in wheels -------------------------------------------------------------------------

def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def make_wheel(folder: Path, name: str, version: str, *, tag: str = "py3-none-any",
               requires_python: str | None = ">=3.10", requires: tuple[str, ...] = (),
               flavour: str = "ours") -> Path:
    """A minimal valid wheel: package ``name`` whose ``FLAVOUR`` says which build it is."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        metadata.append(f"Requires-Python: {requires_python}")
    metadata += [f"Requires-Dist: {requirement}" for requirement in requires]
    files = {
        f"{module}/__init__.py": f"__version__ = {version!r}\nFLAVOUR = {flavour!r}\n",
        f"{dist_info}/METADATA": "\n".join(metadata) + "\n\n",
        f"{dist_info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: test_make_index\n"
                               f"Root-Is-Purelib: true\nTag: {tag}\n"),
    }
    record = [f"{path},{_record_hash(text.encode())},{len(text.encode())}"
              for path, text in files.items()]
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(2025, 1, 1, 0, 0, 0)), text)
    return wheel


def make_index(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


class Anchors(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__()
        self.links: list[tuple[dict[str, str | None], str]] = []
        self._attrs: dict[str, str | None] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._attrs = dict(attrs)

    def handle_data(self, data):
        if self._attrs is not None:
            self.links.append((self._attrs, data))
            self._attrs = None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the index itself ------------------------------------------------------------------------

def test_each_wheel_is_linked_with_its_hash_and_requires_python(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    wheels = [make_wheel(wheelhouse, "torch", OURS, tag=f"cp{v}-cp{v}-macosx_11_0_arm64")
              for v in (310, 311, 312, 313, 314)]
    result = make_index(wheelhouse, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "site" / "simple" / "torch" / "index.html").read_text()
    assert 'data-requires-python="&gt;=3.10"' in page  # escaped, as PEP 503 requires
    links = Anchors(page).links
    assert [text for _, text in links] == [w.name for w in wheels]
    for (attrs, text), wheel in zip(links, wheels, strict=True):
        assert attrs["href"] == f"{text.replace('+', '%2B')}#sha256={sha256(wheel)}"
        assert attrs["data-requires-python"] == ">=3.10"
        copied = tmp_path / "site" / "simple" / "torch" / text
        assert copied.read_bytes() == wheel.read_bytes()
    root = Anchors((tmp_path / "site" / "simple" / "index.html").read_text()).links
    assert [(attrs["href"], text) for attrs, text in root] == [("torch/", "torch")]


def test_project_names_are_normalized_and_a_missing_requires_python_is_left_out(tmp_path):
    wheel = make_wheel(tmp_path / "wh", "Tiny_Dependency.Stand-in", "1.0", requires_python=None)
    assert make_index(tmp_path / "wh", tmp_path / "site").returncode == 0
    page = (tmp_path / "site" / "simple" / "tiny-dependency-stand-in" / "index.html").read_text()
    [(attrs, text)] = Anchors(page).links
    assert text == wheel.name and "data-requires-python" not in attrs


def test_base_url_links_the_release_assets_and_copies_nothing(tmp_path):
    wheel = make_wheel(tmp_path / "wh", "torch", OURS)
    base = "https://github.com/o/r/releases/download/v2.9.1-mps.1"  # no slash: one is added
    assert make_index(tmp_path / "wh", tmp_path / "site", "--base-url", base).returncode == 0
    folder = tmp_path / "site" / "simple" / "torch"
    [(attrs, _)] = Anchors((folder / "index.html").read_text()).links
    assert attrs["href"] == (f"{base}/torch-2.9.1%2Bmps.0123abcd-py3-none-any.whl"
                             f"#sha256={sha256(wheel)}")
    assert sorted(p.name for p in folder.iterdir()) == ["index.html"]


@pytest.mark.parametrize(("setup", "expected"), [
    ("empty", "no .whl files in"),
    ("missing", "does not exist"),
    ("renamed", "the file was renamed"),
    ("not-a-zip", "is not a zip archive"),
    ("bad-name", "is not a wheel file name"),
    ("site-not-empty", "already exists and is not an empty folder"),
    ("bad-base-url", "is not an http(s) URL"),
    ("previous-without-base", "--previous needs --base-url"),
])
def test_bad_input_fails_with_the_problem_and_writes_nothing(tmp_path, setup, expected):
    wheelhouse, site, extra = tmp_path / "wh", tmp_path / "site", []
    wheelhouse.mkdir()
    if setup == "missing":
        wheelhouse.rmdir()
    elif setup == "renamed":
        wheel = make_wheel(wheelhouse, "torch", OURS)
        wheel.rename(wheelhouse / "torch-2.9.1+mps.99999999-py3-none-any.whl")
    elif setup == "not-a-zip":
        (wheelhouse / "torch-2.9.1-py3-none-any.whl").write_bytes(b"partial download")
    elif setup == "bad-name":
        (wheelhouse / "torch.whl").write_bytes(b"")
    elif setup != "empty":
        make_wheel(wheelhouse, "torch", OURS)
    if setup == "site-not-empty":
        site.mkdir()
        (site / "keep.txt").write_text("mine")
    extra = {"bad-base-url": ["--base-url", "ftp://example.org/"],
             "previous-without-base": ["--previous", "https://example.org/simple/"]}.get(setup, [])
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = make_index(wheelhouse, site, *extra)
    assert result.returncode == 1
    assert expected in result.stderr and result.stderr.startswith("error: ")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written or lost


# --- the wheelhouse layout make_index reads (mpsbuild/package.py) ----------------------------

def test_each_wheel_gets_its_own_records_and_sha256sums_combines_them(tmp_path):
    info = package.BuildInfo("d38164a5", "0123abcd", {"0001-x.patch": "00"}, "2026-01-01")
    wheels = [make_wheel(tmp_path, "torch", OURS, tag=f"cp{v}-cp{v}-macosx_11_0_arm64")
              for v in (312, 313)]
    for wheel in wheels:
        package.write_wheel_records(wheel, info)
    stems = [wheel.name.removesuffix(".whl") for wheel in wheels]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["SHA256SUMS", *(w.name for w in wheels), *(f"{s}.build-info.json" for s in stems),
         *(f"{s}.SHA256SUMS" for s in stems)])
    combined = (tmp_path / "SHA256SUMS").read_text().splitlines()
    assert len(combined) == 4 and combined == sorted(combined, key=lambda line: line[66:])
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS",
                            *(f"{s}.SHA256SUMS" for s in stems)], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    wheels[1].write_bytes(wheels[1].read_bytes() + b"tampered")
    check = subprocess.run(["sha256sum", "--check", "SHA256SUMS"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 1 and f"{wheels[1].name}: FAILED" in check.stdout


def test_the_wheel_stage_plans_the_per_wheel_records(tmp_path):
    result = run_build("--apply", "--wheel", "--dry-run", "--workdir", tmp_path / "w",
                       "--wheelhouse", tmp_path / "wh")
    assert result.returncode == 0, result.stdout + result.stderr
    planned = re.findall(r"would write: (\S+)", result.stdout + result.stderr)
    stem = re.escape(str(tmp_path / "wh" / "torch-2.9.1+mps.")) + r"[0-9a-f]{8}-<tags>"
    assert len(planned) == 3, result.stdout + result.stderr
    assert re.fullmatch(stem + r"\.build-info\.json", planned[0])
    assert re.fullmatch(stem + r"\.SHA256SUMS", planned[1])
    assert planned[2] == str(tmp_path / "wh" / "SHA256SUMS")


# --- served for real: http.server, pip and uv ------------------------------------------------

@dataclass
class Server:
    root: Path
    url: str
    log: Path

    def requested(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[Server]:
    """`python -m http.server` on 127.0.0.1 (a free port) serving ``folder/served``."""
    root = folder / "served"
    root.mkdir()
    log = folder / "http.log"
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
             "--directory", str(root)], stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        banner = process.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...)"
        match = re.search(r"port (\d+)", banner)
        assert match, f"http.server did not start: {banner!r}"
        yield Server(root, f"http://127.0.0.1:{match.group(1)}/", log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path) as served:
        yield served


def test_previous_index_links_are_kept_and_a_rebuilt_file_replaces_its_old_link(
        tmp_path, server):
    old, new = tmp_path / "old", tmp_path / "new"
    kept = make_wheel(old, "torch", "2.9.1+mps.11112222", requires_python=">=3.9")
    make_wheel(old, "torch", OURS)
    old_base = "https://github.com/o/r/releases/download/v2.9.1-mps.1/"
    published = server.root / "published"
    assert make_index(old, published, "--base-url", old_base).returncode == 0
    rebuilt = make_wheel(new, "torch", OURS, flavour="rebuilt")
    new_base = "https://github.com/o/r/releases/download/v2.9.1-mps.2/"
    result = make_index(new, tmp_path / "site", "--base-url", new_base,
                        "--previous", f"{server.url}published/simple")
    assert result.returncode == 0, result.stderr
    assert "replacing the previous link of torch-2.9.1+mps.0123abcd" in result.stdout
    page = (tmp_path / "site" / "simple" / "torch" / "index.html").read_text()
    hrefs = {text: (attrs["href"], attrs.get("data-requires-python"))
             for attrs, text in Anchors(page).links}
    assert hrefs == {
        kept.name: (f"{old_base}torch-2.9.1%2Bmps.11112222-py3-none-any.whl"
                    f"#sha256={sha256(kept)}", ">=3.9"),
        rebuilt.name: (f"{new_base}torch-2.9.1%2Bmps.0123abcd-py3-none-any.whl"
                       f"#sha256={sha256(rebuilt)}", ">=3.10"),
    }
    assert "GET /published/simple/torch/ " in server.requested()


def test_no_previous_index_yet_starts_a_new_one(tmp_path, server):
    make_wheel(tmp_path / "wh", "torch", OURS)
    result = make_index(tmp_path / "wh", tmp_path / "site", "--base-url", "https://x.org/d/",
                        "--previous", f"{server.url}never-published/simple/")
    assert result.returncode == 0, result.stderr
    assert "(404): starting a new one" in result.stdout
    assert len(Anchors((tmp_path / "site/simple/torch/index.html").read_text()).links) == 1


@pytest.mark.parametrize(("previous", "expected"), [
    ("unreachable", "could not read the previous index"),
    ("foreign", "it was not written by this script"),
])
def test_a_previous_index_that_cannot_be_read_stops_before_anything_is_dropped(
        tmp_path, server, previous, expected):
    make_wheel(tmp_path / "wh", "torch", OURS)
    # http.server answers a folder without index.html with a listing: links, but no hashes.
    (server.root / "listing" / "simple" / "torch").mkdir(parents=True)
    (server.root / "listing" / "simple" / "torch" / "other.whl").write_bytes(b"")
    url = {"unreachable": "http://127.0.0.1:9/simple/",
           "foreign": f"{server.url}listing/simple/"}[previous]
    result = make_index(tmp_path / "wh", tmp_path / "site", "--base-url", "https://x.org/d/",
                        "--previous", url)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert not (tmp_path / "site").exists()


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """No pip configuration, caches, constraints or proxies of this machine may take part."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_")) and "proxy" not in key.lower()}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1",
               UV_CACHE_DIR=str(tmp_path / "uv-cache"), UV_PYTHON_DOWNLOADS="never",
               NO_PROXY="127.0.0.1")
    return env


@dataclass
class Indexes:
    pypi: str  # stand-in PyPI: upstream torch, torchvision, torchaudio, our torch's dependency
    ours: str  # our index, linking the release assets
    tampered: str  # our index, but the asset it links was replaced after indexing
    ours_wheel: Path


@pytest.fixture
def indexes(server: Server, tmp_path: Path) -> Indexes:
    return build_indexes(server, tmp_path)


def build_indexes(server: Server, tmp_path: Path) -> Indexes:
    pypi_wheels, ours_wheels = tmp_path / "pypi-wheels", tmp_path / "ours-wheels"
    make_wheel(pypi_wheels, "torch", "2.9.1", flavour="upstream")
    make_wheel(pypi_wheels, "torchvision", "0.24.1", requires=("torch==2.9.1",))
    make_wheel(pypi_wheels, "torchaudio", "2.9.1", requires=("torch==2.9.1",))
    make_wheel(pypi_wheels, "tiny-dependency", "1.0")
    ours_wheel = make_wheel(ours_wheels, "torch", OURS, requires=("tiny-dependency>=1.0",))
    make_wheel(ours_wheels, "torch", OURS_FUTURE_PYTHON, requires_python=">=3.99")
    for name, base in (("pypi", None), ("ours", RELEASE_PATH),
                       ("tampered", "releases/download/tampered/")):
        args = ["--base-url", server.url + base] if base else []
        result = make_index(pypi_wheels if name == "pypi" else ours_wheels,
                            server.root / name, *args)
        assert result.returncode == 0, result.stderr
    shutil.copytree(ours_wheels, server.root / RELEASE_PATH)
    # Same name, other bytes (a valid wheel, even): what a swapped release asset looks like.
    make_wheel(server.root / "releases/download/tampered", "torch", OURS,
               requires=("tiny-dependency>=1.0",), flavour="tampered")
    return Indexes(f"{server.url}pypi/simple", f"{server.url}ours/simple",
                   f"{server.url}tampered/simple", ours_wheel)


def fresh_venv(path: Path) -> Path:
    """A new venv without pip: pip (`pip --python`) and uv install into it from outside."""
    venv.create(path, with_pip=False, clear=True)
    return path / "bin" / "python"


def pip_install(python: Path) -> list[str | Path]:
    return [sys.executable, "-m", "pip", "--python", python, "install"]


def run(argv: list[str | Path], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env,
                          timeout=120)


def installed(python: Path, env: dict[str, str]) -> dict[str, str]:
    """{distribution: version} and torch's FLAVOUR in the venv."""
    code = ("import importlib.metadata as m, json, torch; "
            "print(json.dumps({**{d.metadata['Name']: d.version for d in m.distributions()}, "
            "'FLAVOUR': torch.FLAVOUR}))")
    result = run([python, "-c", code], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_pip_installs_our_wheel_by_name_and_torchvision_torchaudio_accept_it(
        tmp_path, indexes, server):
    env = isolated_env(tmp_path)
    python = fresh_venv(tmp_path / "venv-pip")
    pip = [*pip_install(python), "-v", "--index-url", indexes.pypi]
    # The README's line, with the stand-in PyPI as the default index.
    result = run([*pip, f"torch=={OURS}", "--extra-index-url", indexes.ours], env)
    assert result.returncode == 0, result.stdout + result.stderr
    found = installed(python, env)
    assert (found["torch"], found["FLAVOUR"], found["tiny-dependency"]) == (OURS, "ours", "1.0")
    assert f"GET /{RELEASE_PATH}torch-2.9.1%2Bmps.0123abcd-py3-none-any.whl" in server.requested()
    # torchvision/torchaudio pin torch==2.9.1, which our local version satisfies: pip keeps it.
    result = run([*pip, "torchvision==0.24.1", "torchaudio==2.9.1"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    found = installed(python, env)
    assert (found["torch"], found["FLAVOUR"]) == (OURS, "ours")
    assert found["torchvision"] == "0.24.1" and found["torchaudio"] == "2.9.1"


def test_pip_skips_a_wheel_for_another_python_from_the_index_alone(tmp_path, indexes, server):
    env = isolated_env(tmp_path)
    python = fresh_venv(tmp_path / "venv-pip")
    result = run([*pip_install(python), "--no-deps", "--index-url", indexes.ours, "torch"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(python, env)["torch"] == OURS  # not the newer OURS_FUTURE_PYTHON
    assert "mps.ffff0000" not in server.requested()  # skipped unread, not tried and dropped


def test_pip_refuses_a_wheel_whose_hash_does_not_match_the_index(tmp_path, indexes):
    env = isolated_env(tmp_path)
    python = fresh_venv(tmp_path / "venv-pip")
    result = run([*pip_install(python), "--index-url", indexes.pypi, "--extra-index-url",
                  indexes.tampered, f"torch=={OURS}"], env)
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr
    assert f"Expected sha256 {sha256(indexes.ours_wheel)}" in result.stderr
    assert run([python, "-c", "import torch"], env).returncode != 0  # nothing installed


def uv_binary() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        pytest.skip("uv is not installed (it is in pyproject's [test] extra: "
                    "pip install -e '.[test]')")
    return find_uv_bin()


def test_uv_installs_our_wheel_and_torchvision_torchaudio_accept_it(tmp_path, indexes):
    uv, env = uv_binary(), isolated_env(tmp_path)
    python = fresh_venv(tmp_path / "venv-uv")
    uv_pip = [uv, "pip", "install", "--python", python, "--index-url", indexes.pypi]
    # uv tries --extra-index-url before --index-url and takes each package from the first
    # index that has it: torch from ours, everything else from the default index.
    result = run([*uv_pip, f"torch=={OURS}", "--extra-index-url", indexes.ours], env)
    assert result.returncode == 0, result.stdout + result.stderr
    found = installed(python, env)
    assert (found["torch"], found["FLAVOUR"], found["tiny-dependency"]) == (OURS, "ours", "1.0")
    result = run([*uv_pip, "torchvision==0.24.1", "torchaudio==2.9.1"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    found = installed(python, env)
    assert (found["torch"], found["FLAVOUR"], found["torchvision"]) == (OURS, "ours", "0.24.1")


def test_uv_refuses_a_wheel_whose_hash_does_not_match_the_index(tmp_path, indexes):
    uv, env = uv_binary(), isolated_env(tmp_path)
    python = fresh_venv(tmp_path / "venv-uv")
    result = run([uv, "pip", "install", "--python", python, "--index-url", indexes.pypi,
                  "--extra-index-url", indexes.tampered, f"torch=={OURS}"], env)
    assert result.returncode != 0
    assert "Hash mismatch" in result.stderr and sha256(indexes.ours_wheel) in result.stderr
    assert run([python, "-c", "import torch"], env).returncode != 0


def test_uv_takes_torch_only_from_the_index_it_tries_first(tmp_path, indexes):
    """Why the README gives uv our index as --extra-index-url: uv takes each package from the
    first index that has it, and tries --extra-index-url before --index-url."""
    uv, env = uv_binary(), isolated_env(tmp_path)
    python = fresh_venv(tmp_path / "venv-uv")
    install = [uv, "pip", "install", "--python", python, f"torch=={OURS}"]
    # Ours as the only index: torch's dependencies (on PyPI) are not found.
    result = run([*install, "--index-url", indexes.ours], env)
    assert result.returncode != 0 and "tiny-dependency was not found" in result.stderr
    # Ours as --index-url and PyPI as the extra: PyPI has a torch, so uv looks no further.
    result = run([*install, "--index-url", indexes.ours, "--extra-index-url", indexes.pypi], env)
    assert result.returncode != 0 and "not at the requested version" in result.stderr


def test_a_uv_project_pins_torch_to_our_index(tmp_path, indexes):
    """The README's pyproject.toml: torch from our index only, everything else from the
    default index (PyPI there; the stand-in here, through --default-index)."""
    uv, env = uv_binary(), isolated_env(tmp_path)
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(f"""[project]
name = "app"
version = "0.1"
requires-python = ">=3.10"
dependencies = ["torch=={OURS}", "torchvision==0.24.1"]

[[tool.uv.index]]
name = "mps-parallel"
url = "{indexes.ours}"
explicit = true

[tool.uv.sources]
torch = {{ index = "mps-parallel" }}
""")
    result = run([uv, "sync", "--default-index", indexes.pypi, "--python", sys.executable,
                  "--directory", project], env)
    assert result.returncode == 0, result.stdout + result.stderr
    found = installed(project / ".venv" / "bin" / "python", env)
    assert (found["torch"], found["FLAVOUR"], found["torchvision"]) == (OURS, "ours", "0.24.1")
