#!/usr/bin/env python3
"""Syntax- and type-check PyTorch's MPS sources on Linux with clang (no Mac needed).

Usage: python scripts/syntax_check.py [--tree DIR] [--files F ...] [--jobs N] [--wheel WHL]

Every whole ``.mm``, ``.cpp`` and ``.h`` file under ``aten/src/ATen/mps/``,
``aten/src/ATen/native/mps/`` (with ``operations/`` and ``kernels/``) and ``torch/csrc/mps/`` is
parsed with ``clang++-16 -fsyntax-only``. Default tree: the v2.9.1 reference tree with our patch
series applied (``mpsbuild.scratch.patched_reference_tree`` in a scratch directory); ``--tree``
checks a given tree instead (the unpatched reference, a real v2.9.1 checkout, a patch repo).
Prints each error as ``file:line:col: error: message``; the last line is exactly
``checked N files: E errors``; exits 0 iff E is 0.

How each file is compiled, and why:

* Languages as in PyTorch's CMake build: ``.mm`` files as Objective-C++ with the flags CMake
  gives them (``CMAKE_OBJCXX_FLAGS``: ``-DUSE_MPS -fno-objc-arc -Wno-unguarded-availability-new``,
  i.e. manual retain/release, clang's default warnings); ``.cpp`` files as plain C++ (on macOS
  they never see ``__OBJC__``, so their ``#ifndef __OBJC__`` branches are the ones parsed here)
  with the warning flags recorded in the official 2.9.1 macOS wheel (``CXX_FLAGS`` of
  ``torch/lib/libtorch_cpu.dylib``: ``-Wall -Wextra -Werror=return-type ...``); headers as
  Objective-C++ headers, on their own (a header that upstream only ever parses after another
  header is given that header first, see ``HEADER_CONTEXT``). All modes get ``-std=c++17
  -fblocks`` (blocks are on by default on Darwin) and ``-DAT_PER_OPERATOR_HEADERS -DNDEBUG``.
* ``-Werror=objc-method-access``: a message to a selector that no visible declaration has is
  only a warning for clang, but here it means a shim gap or a call to an API that does not
  exist; either way the line is unchecked, so it fails the check.
* Target: the Linux host (x86_64-linux-gnu) with LLVM's libc++ (``-stdlib=libc++``, Debian
  package libc++-16-dev), not ``-target arm64-apple-macos``: a Darwin target needs a Darwin C
  library, and glibc's headers do not parse for a foreign architecture. libc++ rather than
  libstdc++ because Apple's toolchain uses libc++, and the MPS sources rely on its transitive
  includes (``MPSEvent.h`` uses ``std::condition_variable`` after only ``<mutex>``).
  ``-fobjc-runtime=macosx-11.0`` gives the Apple Objective-C runtime of the wheels' deployment
  target. ``__APPLE__`` is not defined: c10's Apple branches assume ``int64_t`` is ``long long``
  (``c10/core/Scalar.h`` static_asserts it), which is false on LP64 Linux. Known blind spot from
  that: code that only breaks because ``int64_t``/``uint64_t`` are ``long long`` on macOS (e.g.
  ``std::min(NSUInteger, uint64_t)``) passes here.
* Include order: the tree's ``aten/src`` and root (so patched and new headers win), then
  ``torch/include`` (and ``torch/include/torch/csrc/api/include``) of the official torch 2.9.1
  macOS arm64 wheel (every installed v2.9.1 header, generated ``ATen/ops`` included), then our
  Apple-SDK shim ``ci/apple-sdk-shim`` (it stands for the macOS 15 SDK, see its
  ``Availability.h``), then the host Python's include directory for ``Python.h``. The wheel is
  fetched once with ``pip download torch==2.9.1 --platform macosx_11_0_arm64
  --only-binary=:all: --no-deps`` and only its ``torch/include`` is unpacked into
  ``${XDG_CACHE_HOME:-~/.cache}/mps-parallel-toolkit/`` (``--cache-dir``, ``--wheel`` to use a
  wheel already on disk).

What a pass proves: every checked file is well-formed Objective-C++/C++ and type-checks against
the real v2.9.1 headers and Apple's declared API (names, selectors, argument types). What it
does not prove: that it links, that the Metal shaders compile, or anything about run time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIM_DIR = PROJECT_ROOT / "ci" / "apple-sdk-shim"

CLANG = "clang++-16"
INSTALL_HINT = "apt-get install -y clang-16 libc++-16-dev libc++abi-16-dev"

TORCH_VERSION = "2.9.1"
WHEEL_PLATFORM = "macosx_11_0_arm64"
CACHE_SUBDIR = f"torch-{TORCH_VERSION}-{WHEEL_PLATFORM}"
COMPLETE_MARKER = ".complete"

CHECKED_DIRS = ("aten/src/ATen/mps", "aten/src/ATen/native/mps", "torch/csrc/mps")
LANGUAGE_BY_SUFFIX = {".mm": "objective-c++", ".cpp": "c++", ".h": "objective-c++-header"}
SCHEDULE_ORDER = {".cpp": 0, ".mm": 1, ".h": 2}

# Files under CHECKED_DIRS that are not checked, with the reason. kernels/*.h are shared between
# host and shader code and guard their Metal-only parts with #ifdef __METAL__, so they parse as
# C++ and are checked; a Metal-only header would belong here.
EXCLUDED: dict[str, str] = {}

# Headers that upstream only ever parses after another header: they are checked with that header
# included first (-include), exactly as their includers see them.
HEADER_CONTEXT: dict[str, tuple[str, str]] = {
    "aten/src/ATen/native/mps/operations/BinaryKernel.h": (
        "ATen/native/mps/OperationUtils.h",
        "uses std::string, Tensor and Scalar without including them; BinaryOps.mm includes it "
        "after OperationUtils.h",
    ),
}

# Warnings (by clang flag) that only the shim causes, with the reason; these are not reported.
# Every other warning is reported. Empty: the shim declares no availability or deprecation
# attributes and lives on the system include path, so it causes no warning of its own.
SHIM_WARNINGS: dict[str, str] = {}

COMMON_FLAGS = (
    "-fsyntax-only",
    "-std=c++17",
    "-stdlib=libc++",
    "-fblocks",
    "-fobjc-runtime=macosx-11.0",
    "-DUSE_MPS",
    "-DAT_PER_OPERATOR_HEADERS",
    "-DNDEBUG",
    "-Werror=objc-method-access",
    "-ferror-limit=0",
    "-fno-color-diagnostics",
    "-fno-caret-diagnostics",
    "-fdiagnostics-show-option",
)

# CMAKE_OBJCXX_FLAGS of PyTorch's CMakeLists.txt (APPLE and USE_MPS), for .mm files and headers.
OBJCXX_FLAGS = ("-fobjc-exceptions", "-fno-objc-arc", "-Wno-unguarded-availability-new")

# The warning flags and defines of CXX_FLAGS recorded in torch 2.9.1's macOS libtorch_cpu.dylib.
CXX_FLAGS = (
    "-DC10_NODEPRECATED",
    "-Wall",
    "-Wextra",
    "-Werror=return-type",
    "-Werror=non-virtual-dtor",
    "-Werror=braced-scalar-init",
    "-Werror=range-loop-construct",
    "-Werror=bool-operation",
    "-Wnarrowing",
    "-Wno-missing-field-initializers",
    "-Wno-unknown-pragmas",
    "-Wno-unused-parameter",
    "-Wno-strict-overflow",
    "-Wno-strict-aliasing",
    "-Wvla-extension",
    "-Wsuggest-override",
    "-Wnewline-eof",
    "-Winconsistent-missing-override",
    "-Winconsistent-missing-destructor-override",
    "-Wno-pass-failed",
    "-Wno-error=old-style-cast",
    "-Wconstant-conversion",
    "-Werror=format",
    "-Wno-missing-braces",
)

DIAGNOSTIC_RE = re.compile(
    r"^(?P<path>[^:\n]+):(?P<line>\d+):(?P<col>\d+): "
    r"(?P<severity>fatal error|error|warning): (?P<message>.*?)(?: \[(?P<flag>[^\]]+)\])?$"
)


class SetupError(Exception):
    """A missing tool or input, with the command that fixes it."""


@dataclass(frozen=True, order=True)
class Diagnostic:
    path: str
    line: int
    col: int
    severity: str
    message: str
    flag: str = ""

    def render(self) -> str:
        suffix = f" [{self.flag}]" if self.flag else ""
        return f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message}{suffix}"


@dataclass
class CheckResult:
    files: list[str]
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    shim_warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return f"checked {len(self.files)} files: {len(self.errors)} errors"


@dataclass(frozen=True)
class Toolchain:
    clang: str
    torch_include: Path
    python_include: Path | None


# ---------------------------------------------------------------------------------------------
# Setup: clang, libc++, the wheel's headers
# ---------------------------------------------------------------------------------------------


def find_clang() -> str:
    """Path of clang++-16 with libc++ headers; raises SetupError naming the install command."""
    clang = shutil.which(CLANG)
    if clang is None:
        raise SetupError(f"{CLANG} not found on PATH. Install it: {INSTALL_HINT}")
    probe = subprocess.run(
        [clang, "-fsyntax-only", "-x", "c++", "-std=c++17", "-stdlib=libc++", "-"],
        input="#include <mutex>\nstd::condition_variable cv;\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise SetupError(
            f"{CLANG} cannot compile against libc++ ({probe.stderr.strip().splitlines()[:1]}). "
            f"Install it: {INSTALL_HINT}"
        )
    return clang


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mps-parallel-toolkit"


def download_wheel(dest: Path) -> Path:
    """``pip download`` the official torch 2.9.1 macOS arm64 wheel into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", f"torch=={TORCH_VERSION}",
        "--platform", WHEEL_PLATFORM, "--only-binary=:all:", "--no-deps", "-d", str(dest),
    ]
    print(f"downloading the torch {TORCH_VERSION} macOS wheel: {' '.join(command)}",
          file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(f"torch-{TORCH_VERSION}-*macosx*arm64.whl"))
    if done.returncode != 0 or not wheels:
        raise SetupError(
            f"pip download of torch=={TORCH_VERSION} ({WHEEL_PLATFORM}) failed:\n"
            f"{done.stderr.strip()}\nFix: make PyPI reachable, or pass --wheel PATH to a "
            "downloaded torch-2.9.1-*-macosx_11_0_arm64.whl"
        )
    return wheels[0]


def unpack_headers(wheel: Path, dest: Path) -> None:
    """Unpack only ``torch/include/**`` of ``wheel`` into ``dest`` (atomically via rename)."""
    if not zipfile.is_zipfile(wheel):
        raise SetupError(f"{wheel} is not a wheel (zip) file; pass a torch {TORCH_VERSION} "
                         f"{WHEEL_PLATFORM} wheel to --wheel")
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [n for n in archive.namelist() if n.startswith("torch/include/")]
            if not members:
                raise SetupError(f"{wheel} holds no torch/include/; is it the torch wheel?")
            archive.extractall(staging, members)
        (staging / COMPLETE_MARKER).write_text(wheel.name + "\n")
        staging.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def ensure_torch_headers(cache_dir: Path | None = None, wheel: Path | None = None) -> Path:
    """``torch/include`` of the torch 2.9.1 macOS wheel, from the cache or unpacked now."""
    headers_root = (cache_dir or default_cache_dir()) / CACHE_SUBDIR
    if not (headers_root / COMPLETE_MARKER).is_file():
        headers_root.parent.mkdir(parents=True, exist_ok=True)
        if wheel is None:
            with tempfile.TemporaryDirectory(dir=headers_root.parent) as download_dir:
                unpack_headers(download_wheel(Path(download_dir)), headers_root)
        else:
            unpack_headers(wheel, headers_root)
    return headers_root / "torch" / "include"


def python_include_dir() -> Path | None:
    include = Path(sysconfig.get_paths()["include"])
    return include if (include / "Python.h").is_file() else None


def make_toolchain(cache_dir: Path | None = None, wheel: Path | None = None) -> Toolchain:
    return Toolchain(find_clang(), ensure_torch_headers(cache_dir, wheel), python_include_dir())


# ---------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------


def collect_files(tree: Path) -> list[Path]:
    """Every checked file of ``tree`` (relative paths, sorted), less ``EXCLUDED``."""
    found: list[Path] = []
    for directory in CHECKED_DIRS:
        root = tree / directory
        if root.is_dir():
            found += [p.relative_to(tree) for p in root.rglob("*")
                      if p.is_file() and p.suffix in LANGUAGE_BY_SUFFIX]
    return sorted(p for p in found if p.as_posix() not in EXCLUDED)


def compile_command(tree: Path, relpath: Path, toolchain: Toolchain) -> list[str]:
    language = LANGUAGE_BY_SUFFIX[relpath.suffix]
    mode_flags = CXX_FLAGS if language == "c++" else OBJCXX_FLAGS
    includes = ["-I", str(tree / "aten" / "src"), "-I", str(tree),
                "-isystem", str(toolchain.torch_include),
                "-isystem", str(toolchain.torch_include / "torch" / "csrc" / "api" / "include"),
                "-isystem", str(SHIM_DIR)]
    if toolchain.python_include is not None:
        includes += ["-isystem", str(toolchain.python_include)]
    context = HEADER_CONTEXT.get(relpath.as_posix())
    pre_include = ["-include", context[0]] if context else []
    return [toolchain.clang, *COMMON_FLAGS, *mode_flags, *includes, *pre_include,
            "-x", language, relpath.as_posix()]


def parse_diagnostics(output: str, tree: Path) -> list[Diagnostic]:
    diagnostics = []
    for line in output.splitlines():
        match = DIAGNOSTIC_RE.match(line)
        if match is None:
            continue
        path = Path(match["path"])
        if path.is_absolute() and path.is_relative_to(tree):
            path = path.relative_to(tree)
        severity = "error" if match["severity"] == "fatal error" else match["severity"]
        diagnostics.append(Diagnostic(path.as_posix(), int(match["line"]), int(match["col"]),
                                      severity, match["message"], match["flag"] or ""))
    return diagnostics


def check_one(tree: Path, relpath: Path, toolchain: Toolchain) -> list[Diagnostic]:
    done = subprocess.run(compile_command(tree, relpath, toolchain), cwd=tree,
                          capture_output=True, text=True, check=False)
    diagnostics = parse_diagnostics(done.stdout + done.stderr, tree)
    if done.returncode != 0 and not any(d.severity == "error" for d in diagnostics):
        message = f"clang exited with status {done.returncode}: {done.stderr.strip()[-500:]}"
        diagnostics.append(Diagnostic(relpath.as_posix(), 0, 0, "error", message))
    return diagnostics


def check_files(tree: Path, files: Sequence[Path], jobs: int = 0,
                toolchain: Toolchain | None = None) -> CheckResult:
    """Check ``files`` (relative to ``tree``, or absolute inside it) in ``jobs`` processes.

    A diagnostic in a header shared by several files is counted once.
    """
    tree = tree.resolve()
    toolchain = toolchain or make_toolchain()
    relpaths = [_relative_to_tree(tree, f) for f in files]
    # Longest first (Module.cpp, then the .mm files, then headers): a shorter tail on few cores.
    schedule = sorted(relpaths, key=lambda p: SCHEDULE_ORDER[p.suffix])
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        per_file = list(pool.map(lambda p: check_one(tree, p, toolchain), schedule))
    unique = sorted({d for diagnostics in per_file for d in diagnostics})
    result = CheckResult(files=[p.as_posix() for p in relpaths])
    for diagnostic in unique:
        if diagnostic.severity == "error":
            result.errors.append(diagnostic)
        elif diagnostic.flag.removeprefix("-W") in SHIM_WARNINGS:
            result.shim_warnings.append(diagnostic)
        else:
            result.warnings.append(diagnostic)
    return result


def _relative_to_tree(tree: Path, path: Path) -> Path:
    absolute = path if path.is_absolute() else tree / path
    absolute = absolute.resolve()
    if not absolute.is_relative_to(tree):
        raise SetupError(f"{path} is not inside the tree {tree}")
    if not absolute.is_file():
        raise SetupError(f"{path} does not exist in the tree {tree}")
    if absolute.suffix not in LANGUAGE_BY_SUFFIX:
        raise SetupError(f"{path}: only {', '.join(LANGUAGE_BY_SUFFIX)} files can be checked")
    return absolute.relative_to(tree)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def report(result: CheckResult) -> list[str]:
    lines = [d.render() for d in result.errors]
    lines += [d.render() for d in result.warnings]
    if result.shim_warnings:
        lines.append(f"({len(result.shim_warnings)} warnings caused by the shim not shown; "
                     "see SHIM_WARNINGS in scripts/syntax_check.py)")
    if result.warnings:
        lines.append(f"{len(result.warnings)} warnings (reported, not counted as errors)")
    lines.append(result.summary())
    return lines


def run_check(tree: Path, files: Sequence[Path] | None, jobs: int,
              toolchain: Toolchain) -> CheckResult:
    if not tree.is_dir():
        raise SetupError(f"tree {tree} is not a directory; pass --tree DIR of a PyTorch tree")
    selected = list(files) if files else collect_files(tree)
    if not selected:
        raise SetupError(f"no .mm/.cpp/.h files under {', '.join(CHECKED_DIRS)} in {tree}")
    return check_files(tree, selected, jobs, toolchain)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=None,
                        help="PyTorch source tree to check (default: the reference tree with "
                             "patches/v2.9.1/series applied, in a scratch directory)")
    parser.add_argument("--files", type=Path, nargs="+", default=None,
                        help="check only these files (relative to the tree)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel clang processes (default: all cores)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"where the wheel's headers are kept (default: {default_cache_dir()})")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="use this torch 2.9.1 macOS arm64 wheel instead of downloading it")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        toolchain = make_toolchain(args.cache_dir, args.wheel)
        if args.tree is not None:
            result = run_check(args.tree, args.files, args.jobs, toolchain)
        else:
            sys.path.insert(0, str(PROJECT_ROOT))
            from mpsbuild.scratch import patched_reference_tree

            with tempfile.TemporaryDirectory(prefix="syntax-check-") as scratch:
                tree = patched_reference_tree(Path(scratch) / "tree")
                result = run_check(tree, args.files, args.jobs, toolchain)
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"error: building the patched reference tree failed: {error}\n"
              "Fix: run build.py's series check, or pass --tree DIR", file=sys.stderr)
        return 2
    lines = report(result)
    lines.insert(-1, f"({time.monotonic() - started:.0f} s with {args.jobs} jobs)")
    print("\n".join(lines), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
