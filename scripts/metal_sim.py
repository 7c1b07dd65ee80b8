#!/usr/bin/env python3
"""Run the patched MPS runtime files on a fake Metal device under ThreadSanitizer.

Usage: python scripts/metal_sim.py [--tree PATCHED_TREE] [--scenarios NAME ...]
                                   [--plant-bug NAME] [--scale PCT] [--jobs N]

Compiles the unmodified ``MPSStream.mm``, ``MPSStreamPool.cpp``, ``MPSEvent.mm``,
``MPSAllocator.mm`` and ``MPSGuardImpl.mm`` of the tree (default: the v2.9.1 reference tree with
``patches/v2.9.1/series`` applied) with ``clang++-16 -fsanitize=thread`` against the torch 2.9.1
macOS wheel's headers, our Apple-SDK shim, libobjc2 and libdispatch (built once from pinned
archives into ``.cache/metalsim/``), links them with the fake device and harness of
``tests/metalsim/`` and runs every scenario in its own process. A scenario is clean when it exits
0, its checks pass, the hazard checker found nothing and ThreadSanitizer reported nothing. The
last line is exactly ``metal sim: N scenarios, T threads, E events, H hazards, R tsan reports``;
the exit status is 0 iff every scenario is clean (1: a scenario failed, 2: setup error).

``--plant-bug`` builds a copy of the tree's runtime file with a known bug (or runs a scenario
that omits an ordering) and runs the scenario that must catch it; it then exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "scripts"))

SIM_DIR = PROJECT_ROOT / "tests" / "metalsim"
SHIM_DIR = PROJECT_ROOT / "ci" / "apple-sdk-shim"
CACHE_DIR = PROJECT_ROOT / ".cache" / "metalsim"
SHARED_THIRD_PARTY = PROJECT_ROOT.parent / "shared" / "third_party"
MPS_DIR = Path("aten/src/ATen/mps")
RUNTIME_FILES = ("MPSStream.mm", "MPSEvent.mm", "MPSAllocator.mm", "MPSGuardImpl.mm",
                 "MPSStreamPool.cpp")
# Linked when the tree has them (the series' hand-off ordering).
OPTIONAL_RUNTIME_FILES = ("MPSStreamOrdering.mm",)
TOOLS = {"clang++-16": "clang-16", "clang-16": "clang-16", "cmake": "cmake", "ninja": "ninja-build"}
APT_HINT = "apt-get install -y clang-16 cmake ninja-build (libstdc++-12-dev comes with clang-16)"
TSAN_EXITCODE = 66
TSAN_REPORT = "WARNING: ThreadSanitizer:"
# libobjc2's warning when a message's declared types differ from the method's (a shim or fake
# declaration out of step): the call's arguments are then garbage, so the run is not clean.
SIGNATURE_MISMATCH = "with incorrect signature"
SCENARIO_TIMEOUT_S = 120


@dataclass(frozen=True)
class Archive:
    """A pinned source archive: a ``git archive`` of ``commit`` (sha256 of that tarball)."""

    filename: str
    repo: str
    commit: str
    sha256: str


ARCHIVES = {
    "libobjc2": Archive(
        "libobjc2-ecef7f1ed1eabf2105995823ec6d6e4693710b0e.tar.gz", "gnustep/libobjc2",
        "ecef7f1ed1eabf2105995823ec6d6e4693710b0e",
        "1b0850c948a064b5e133ca4a7cd9d58528160529271c65b7775cf778301b64c9"),
    "robin-map": Archive(
        "robin-map-v1.4.0-4ec1bf19c6a96125ea22062f38c2cf5b958e448e.tar.gz", "Tessil/robin-map",
        "4ec1bf19c6a96125ea22062f38c2cf5b958e448e",
        "8166b688da85f3ca87c1483a047bb6eb9862dd9c700426775c0e24139de81683"),
    "libdispatch": Archive(
        "swift-corelibs-libdispatch-e85f6a0d5c9ea1f32f5013c3fa34e4fc146cd0eb.tar.gz",
        "apple/swift-corelibs-libdispatch", "e85f6a0d5c9ea1f32f5013c3fa34e4fc146cd0eb",
        "e57d9043910b6050209a49053ac8400645af91a1aa80d68634d0bd81842c2678"),
}

COMMON_FLAGS = ["-std=c++17", "-g", "-O1", "-fsanitize=thread", "-fblocks", "-DUSE_MPS",
                "-DAT_PER_OPERATOR_HEADERS", "-DNDEBUG",
                # libstdc++ (libobjc2 links it): MPSEvent.h relies on libc++'s transitive includes
                "-include", "condition_variable"]
OBJCXX_FLAGS = ["-x", "objective-c++", "-fobjc-runtime=gnustep-2.0", "-fno-objc-arc",
                "-fobjc-exceptions", "-Wno-unguarded-availability-new"]
# The fake implements protocols only as far as the runtime files use them.
FAKE_WARNINGS = ["-Wno-objc-property-implementation", "-Wno-incomplete-implementation",
                 "-Wno-protocol", "-Wno-objc-root-class", "-Wno-objc-protocol-property-synthesis"]


@dataclass(frozen=True)
class Scenario:
    name: str
    env: tuple[tuple[str, str], ...] = ()
    tsan_extra: str = ""  # TSan options for this scenario only, each with its reason below


TRACKING_OFF = (("PYTORCH_MPS_STREAM_TRACKING", "0"),)
SCENARIOS = (
    Scenario("streams-64"),
    Scenario("query"),
    Scenario("handoff-default"),
    Scenario("handoff-pool"),
    Scenario("handoff-per-thread", (("PYTORCH_MPS_PER_THREAD_STREAMS", "1"),)),
    Scenario("handoff-events", TRACKING_OFF),
    Scenario("handoff-explicit-default"),
    Scenario("events"),
    Scenario("write-handoff-default"),
    Scenario("write-handoff-pool"),
    Scenario("concurrent-slice-writes"),
    Scenario("guard"),
    Scenario("allocator", (("METALSIM_DEVICE_MEMORY_MB", "96"),)),
    Scenario("record-stream"),
    Scenario("record-stream-untracked", TRACKING_OFF),
    Scenario("sync-all-in-block"),
    Scenario("sync-all-in-blocks-concurrent", (("METALSIM_TIMEOUT_S", "30"),)),
    Scenario("thread-exit"),
    # detect_deadlocks=0: the series' fork prepare handler holds every hand-off stripe lock at
    # once (more than the 64 locks TSan's deadlock detector can track per thread: TSan's own
    # CHECK fails and the process hangs). Data races are still reported.
    Scenario("fork", tsan_extra="detect_deadlocks=0"),
    Scenario("exit-with-workers"),
    # elapsedTime() after synchronizeEvent(): v2.9.1 waited forever on one CPU-sync flag that
    # synchronize() had consumed; 0002 waits for the completion times instead.
    Scenario("event-timing", (("METALSIM_TIMEOUT_S", "30"),)),
    # synchronize() waited on a CPU-sync flag too: with several waiters the first consumed it
    # and the rest slept forever; a timing event's earlier listener left it set, so the wait
    # after a second record() returned at once. It now waits for the recorded value.
    Scenario("event-shared-waiters", (("METALSIM_TIMEOUT_S", "30"),)),
    Scenario("event-rerecord", (("METALSIM_TIMEOUT_S", "30"),)),
    # an event recorded again on an idle stream (after going back to the pool, or not) while
    # another stream's GPU wait for its last record is pending: that wait must not pass early
    # (tracking off: the event is the only ordering)
    Scenario("event-reuse-across-streams", (*TRACKING_OFF, ("METALSIM_TIMEOUT_S", "30"))),
    # elapsedTime() of timing events recorded again: a completion time from the previous record
    # was read when the new record's notification had not run yet (v2.9.1 too); notifications
    # arrive 10 ms late here, so it always is.
    Scenario("event-timing-rerecord",
             (("METALSIM_TIMEOUT_S", "30"), ("METALSIM_LISTENER_DELAY_US", "10000"))),
    # a notification that runs after exit() destroyed static objects: its event must still exist
    Scenario("event-notify-at-exit", (("METALSIM_LISTENER_DELAY_US", "100000"),)),
)

# Not in the default run (--scenarios NAME runs them).
EXTRA_SCENARIOS: tuple[Scenario, ...] = (
    # A known deadlock, kept to reproduce it until it is fixed (README, known limits): a worker
    # inside its queue waits for all of the default stream's work so far to read weights made
    # there, while the main thread, inside the default stream's queue, waits for all of the
    # worker's work so far to read its output; each asks the other's busy queue to commit. It
    # ends at the watchdog (TIMEOUT); on a Mac both ops would fail after 120 s.
    Scenario("weights-and-results", (("METALSIM_TIMEOUT_S", "30"),)),
)

PLANTED_QUERY = """bool MPSStream::query() {
  // planted bug (metal_sim.py): commit, then ask whether a signal committed just now arrived
  __block bool completed = false;
  dispatch_sync(_serialQueue, ^() {
    @autoreleasepool {
      synchronize(SyncType::COMMIT);
      id<MTLSharedEvent> event = [device() newSharedEvent];
      id<MTLCommandBuffer> marker = [_commandQueue commandBuffer];
      [marker encodeSignalEvent:event value:1];
      [marker commit];
      completed = event.signaledValue >= 1;
      [event release];
    }
  });
  return completed;
}"""


# synchronize()'s wait for its recorded value, and v2.9.1's wait for a flag in its place
PLANTED_FLAG_ANCHOR = """    waitForSignaledValue(m_cpu_sync_mutex, m_cpu_sync_cv, event, target);
    [event release];
    return true;"""
# (v2.9.1's flag, m_cpu_sync_completed, is gone: the event's recorded flag plays its part, set
# by the record and left set, as the listener of an earlier record left v2.9.1's)
PLANTED_FLAG_WAIT = """    // planted bug (metal_sim.py): wait for a flag, consume it (as v2.9.1)
    std::unique_lock<std::mutex> lock(m_cpu_sync_mutex);
    m_cpu_sync_cv.wait(lock, [&] { return m_recorded_since_reset; });
    m_recorded_since_reset = false;
    [event release];
    return true;"""


@dataclass(frozen=True)
class PlantedBug:
    scenario: str
    anchor: str  # text that starts the code to break ("" for none)
    files: tuple[str, ...]  # runtime files that may hold it; the first that does is edited
    description: str


PLANTED_BUGS = {
    "old-query": PlantedBug("query", "bool MPSStream::query() {",
                            ("MPSStream.mm", "MPSStreamOrdering.mm"),
                            "query() commits and checks a signal committed just now"),
    "unlocked-cache": PlantedBug(
        "allocator", "id<MTLBuffer> MPSHeapAllocatorImpl::malloc(size_t size, uint32_t usage) {",
        ("MPSAllocator.mm",),
        "MPSHeapAllocatorImpl::malloc searches the buffer cache without the allocator's lock"),
    "unordered-write": PlantedBug(
        "write-handoff-default", "detail::noteWriteOnStream(", ("MPSStream.mm",),
        "MPSStream's fill, copy and executeMPSGraph do not order their writes (in-place writes "
        "across streams)"),
    "missing-wait": PlantedBug("handoff-no-wait", "", (),
                               "hand-off across streams with tracking off and no event"),
    "stale-time": PlantedBug(
        "event-timing-rerecord", "// elapsedTime() waits for this record's completion time",
        ("MPSEvent.mm",),
        "MPSEvent::recordLocked() keeps the last record's completion time (v2.9.1), which "
        "elapsedTime() reads while the new record's notification has not run"),
    "destroyed-pool": PlantedBug(
        "event-notify-at-exit", "  static auto* event_pool = new std::shared_ptr<MPSEventPool>(",
        ("MPSEvent.mm",),
        "getMPSEventPool()'s pool is a static that exit() destroys (v2.9.1), with its events, "
        "while a notification block still has to run"),
    "reused-shared-event": PlantedBug(
        "event-reuse-across-streams", "void replaceSharedEventIfPending(", ("MPSEvent.mm",),
        "an event recorded again (or taken from the pool again) keeps its shared event while a "
        "GPU wait for its last record is pending (v2.9.1): a new record on an idle stream lets "
        "that wait pass early"),
    "consumed-flag": PlantedBug(
        "event-rerecord", PLANTED_FLAG_ANCHOR, ("MPSEvent.mm",),
        "MPSEvent::synchronize() waits for a flag an earlier record() left set and consumes it, "
        "as v2.9.1 waited for its CPU-sync flag"),
}


class SimError(Exception):
    """A setup problem, with what fixes it."""


# ---------------------------------------------------------------------------------------------
# Toolchain: libobjc2 and libdispatch from pinned archives
# ---------------------------------------------------------------------------------------------


def require_tools() -> dict[str, str]:
    found = {name: shutil.which(name) for name in TOOLS}
    missing = sorted({TOOLS[name] for name, path in found.items() if path is None})
    if missing:
        raise SimError(f"missing tools: {', '.join(n for n, p in found.items() if p is None)}. "
                       f"Install them: apt-get install -y {' '.join(missing)}")
    return {name: str(path) for name, path in found.items()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_archive(archive: Archive, downloads: Path) -> Path:
    """The archive from ../shared/third_party, or from GitHub's codeload (then verified)."""
    shared = SHARED_THIRD_PARTY / archive.filename
    if shared.is_file():
        return shared
    target = downloads / archive.filename
    if not target.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        url = f"https://codeload.github.com/{archive.repo}/tar.gz/{archive.commit}"
        print(f"downloading {url}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                target.with_suffix(".part").write_bytes(response.read())
        except OSError as error:
            raise SimError(f"cannot download {url} ({error}); put {archive.filename} into "
                           f"{SHARED_THIRD_PARTY} or {downloads}") from error
        target.with_suffix(".part").rename(target)
    return target


def verified_archive(archive: Archive, downloads: Path) -> Path:
    path = fetch_archive(archive, downloads)
    actual = sha256_of(path)
    if actual != archive.sha256:
        origin = "GitHub codeload" if path.parent == downloads else "the shared copy"
        raise SimError(
            f"{path}: sha256 {actual} differs from the pinned {archive.sha256} (a `git archive` "
            f"of {archive.repo}@{archive.commit}). Archives from {origin} can differ in bytes "
            "(compression, timestamps) while holding the same files: compare the unpacked trees "
            "of the commit yourself, then place the pinned archive in "
            f"{SHARED_THIRD_PARTY} (delete {path} to retry).")
    return path


def unpack(archive_path: Path, dest: Path) -> Path:
    """Unpack a single-top-directory tarball into ``dest``; returns that directory."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(archive_path) as tar:
        tar.extractall(dest, filter="data")
    entries = [p for p in dest.iterdir() if p.is_dir()]
    if len(entries) != 1:
        raise SimError(f"{archive_path}: expected one top-level directory, found {entries}")
    return entries[0]


def run_logged(command: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SimError(f"`{' '.join(command)}` failed (exit {done.returncode}); log {log}:\n{tail}")


def build_toolchain(tools: dict[str, str], cache: Path = CACHE_DIR) -> Path:
    """Install prefix of libobjc2 + libdispatch, built on first use, reused while unchanged."""
    prefix = cache / "prefix"
    jobs = str(os.cpu_count() or 1)
    compilers = [f"-DCMAKE_C_COMPILER={tools['clang-16']}",
                 f"-DCMAKE_CXX_COMPILER={tools['clang++-16']}",
                 "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-G", "Ninja",
                 f"-DCMAKE_MAKE_PROGRAM={tools['ninja']}", f"-DCMAKE_INSTALL_PREFIX={prefix}"]
    stamp_text = json.dumps({"archives": [a.sha256 for a in ARCHIVES.values()],
                             "flags": compilers, "version": 1})
    stamp = prefix / ".stamp"
    if stamp.is_file() and stamp.read_text() == stamp_text:
        return prefix
    started = time.monotonic()
    print("building libobjc2 and libdispatch (once) into " + str(prefix), file=sys.stderr)
    downloads = cache / "downloads"
    sources = cache / "src"
    log = cache / "toolchain-build.log"
    if prefix.exists():
        shutil.rmtree(prefix)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    paths = {name: verified_archive(a, downloads) for name, a in ARCHIVES.items()}
    robin_map = unpack(paths["robin-map"], sources / "robin-map")
    libobjc2 = unpack(paths["libobjc2"], sources / "libobjc2")
    libdispatch = unpack(paths["libdispatch"], sources / "libdispatch")
    objc_build = cache / "build" / "libobjc2"
    dispatch_build = cache / "build" / "libdispatch"
    for directory in (objc_build, dispatch_build):
        if directory.exists():
            shutil.rmtree(directory)
    cmake, ninja = tools["cmake"], tools["ninja"]
    # Without these, libobjc2 clones robin-map from GitHub, and installs into /usr/local when a
    # gnustep-config is on PATH.
    run_logged([cmake, "-S", str(libobjc2), "-B", str(objc_build), *compilers, "-DTESTS=OFF",
                "-DGNUSTEP_INSTALL_TYPE=NONE", "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
                f"-DFETCHCONTENT_SOURCE_DIR_ROBINMAP={robin_map}"], log)
    # libdispatch's Block.h goes elsewhere so that it does not overwrite libobjc2's.
    run_logged([cmake, "-S", str(libdispatch), "-B", str(dispatch_build), *compilers,
                "-DBUILD_TESTING=OFF", f"-DINSTALL_BLOCK_HEADERS_DIR={prefix / 'blocks-include'}"],
               log)
    run_logged([ninja, "-C", str(objc_build), "-j", jobs, "install"], log)
    run_logged([ninja, "-C", str(dispatch_build), "-j", jobs, "install"], log)
    # Only libdispatch's dispatch/ and os/ go ahead of the shim (libobjc2's objc/ must not: the
    # runtime files see the shim's <objc/objc.h>).
    sim_include = prefix / "sim-include"
    sim_include.mkdir()
    for name in ("dispatch", "os"):
        (sim_include / name).symlink_to(prefix / "include" / name)
    stamp.write_text(stamp_text)
    print(f"toolchain built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return prefix


# ---------------------------------------------------------------------------------------------
# Building the harness (object files cached by the content of everything they include)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildInputs:
    clang: str
    prefix: Path
    torch_include: Path
    tree: Path


def include_flags(inputs: BuildInputs, with_tree: bool) -> list[str]:
    flags = ["-I", str(SIM_DIR)]
    if with_tree:
        flags += ["-I", str(inputs.tree / "aten" / "src"), "-I", str(inputs.tree)]
    flags += ["-isystem", str(inputs.prefix / "sim-include")]
    if with_tree:
        flags += ["-isystem", str(inputs.torch_include),
                  "-isystem", str(inputs.torch_include / "torch" / "csrc" / "api" / "include")]
    return [*flags, "-isystem", str(SHIM_DIR)]


TREE_MARK = "<tree>"


def portable(text: str, tree: Path) -> str:
    """``text`` with the tree's path replaced by a mark: one cache slot wherever the tree is."""
    return text.replace(str(tree), TREE_MARK)


def dependency_digest(paths: Sequence[str], flags: Sequence[str], tree: Path) -> str | None:
    digest = hashlib.sha256(json.dumps([portable(f, tree) for f in flags]).encode())
    for path in paths:
        try:
            digest.update(Path(path.replace(TREE_MARK, str(tree))).read_bytes())
        except OSError:
            return None
    return digest.hexdigest()


def parse_depfile(text: str) -> list[str]:
    body = text.split(":", 1)[1] if ":" in text else ""
    return [p for p in body.replace("\\\n", " ").split() if p != "\\"]


def compile_cached(inputs: BuildInputs, source: Path, flags: list[str], out_dir: Path) -> Path:
    """Compile ``source``; reuse the cached object while its source, flags and headers match."""
    tree = inputs.tree
    key = portable(f"{source}\0{' '.join(flags)}", tree)
    slot = CACHE_DIR / "obj" / hashlib.sha256(key.encode()).hexdigest()[:20]
    manifest = slot / "manifest.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        if dependency_digest(recorded["deps"], flags, tree) == recorded["digest"]:
            return slot / "out.o"
    slot.mkdir(parents=True, exist_ok=True)
    depfile = out_dir / (source.name + ".d")
    partial = out_dir / (source.name + ".o")
    command = [inputs.clang, "-c", *flags, str(source), "-o", str(partial),
               "-MD", "-MF", str(depfile)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SimError(f"compiling {source} failed:\n{' '.join(command)}\n"
                       f"{done.stdout}{done.stderr[-6000:]}")
    deps = [portable(dep, tree) for dep in parse_depfile(depfile.read_text())]
    digest = dependency_digest(deps, flags, tree)
    shutil.move(partial, slot / "out.o")
    manifest.write_text(json.dumps({"deps": deps, "digest": digest}))
    return slot / "out.o"


def build_harness(inputs: BuildInputs, work: Path, planted: tuple[str, Path] | None,
                  jobs: int) -> Path:
    tree_flags = [*COMMON_FLAGS, *include_flags(inputs, with_tree=True)]
    units: list[tuple[Path, list[str]]] = [
        (SIM_DIR / "fake_metal.mm",
         [*COMMON_FLAGS, *OBJCXX_FLAGS, *FAKE_WARNINGS, *include_flags(inputs, with_tree=False)]),
        (SIM_DIR / "tsan_dispatch.mm",
         [*COMMON_FLAGS, *OBJCXX_FLAGS, *include_flags(inputs, with_tree=False)]),
        (SIM_DIR / "runtime_support.mm", [*tree_flags, *OBJCXX_FLAGS]),
        (SIM_DIR / "harness.mm", [*tree_flags, *OBJCXX_FLAGS]),
    ]
    optional = [n for n in OPTIONAL_RUNTIME_FILES if (inputs.tree / MPS_DIR / n).is_file()]
    for name in (*RUNTIME_FILES, *optional):
        source = inputs.tree / MPS_DIR / name
        if planted is not None and planted[0] == name:
            source = planted[1]
        mode = OBJCXX_FLAGS if name.endswith(".mm") else []
        units.append((source, [*tree_flags, *mode]))
    missing = [str(s) for s, _ in units if not s.is_file()]
    if missing:
        raise SimError(f"missing sources: {', '.join(missing)}; pass --tree with a patched "
                       "PyTorch tree (it needs the stream-pool patches)")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        objects = list(pool.map(lambda unit: compile_cached(inputs, unit[0], unit[1], work),
                                units))
    binary = work / "metalsim_harness"
    lib = inputs.prefix / "lib"
    command = [inputs.clang, "-fsanitize=thread", "-o", str(binary), *map(str, objects),
               f"-L{lib}", f"-Wl,-rpath,{lib}", "-lobjc", "-ldispatch", "-lpthread", "-ldl"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SimError(f"linking the harness failed:\n{' '.join(command)}\n{done.stderr[-6000:]}")
    return binary


def plant_bug(tree: Path, bug: PlantedBug, name: str) -> tuple[str, Path] | None:
    """(runtime file name, a copy of it with the bug planted); the tree is never touched."""
    if not bug.anchor:
        return None
    holder = next((f for f in bug.files
                   if bug.anchor in _read_if_exists(tree / MPS_DIR / f)), None)
    if holder is None:
        raise SimError(f"cannot plant {name}: `{bug.anchor}` is in none of "
                       f"{', '.join(bug.files)}; update PLANTED_BUGS in scripts/metal_sim.py")
    text = (tree / MPS_DIR / holder).read_text()
    start = text.index(bug.anchor)
    if name == "old-query":
        end = text.find("\n}\n", start)
        text = text[:start] + PLANTED_QUERY + text[end + 2:]
    elif name == "unlocked-cache":
        text = _cut_line(text, start, "  std::lock_guard<std::recursive_mutex> lock(m_mutex);\n",
                         f"cannot plant {name}: malloc() of {holder} takes no lock_guard")
    elif name == "stale-time":
        text = _cut_line(text, start, "      m_completion_time = 0;\n",
                         f"cannot plant {name}: recordLocked() of {holder} does not clear the "
                         "completion time")
    elif name == "destroyed-pool":
        end = text.index("\n", text.index("\n", start) + 1)  # the statement and its return
        text = (text[:start] + "  static std::shared_ptr<MPSEventPool> event_pool = "
                "std::make_shared<MPSEventPool>(getDefaultMPSStream());\n  return event_pool;"
                + text[end:])
    elif name == "consumed-flag":
        text = text[:start] + PLANTED_FLAG_WAIT + text[start + len(bug.anchor):]
    elif name == "reused-shared-event":  # the event keeps its one shared event (v2.9.1)
        end = text.find("\n}\n", start)
        body = text.index("{\n", start) + 2
        text = text[:body] + text[end + 1:]
    elif name == "unordered-write":
        hooks = (bug.anchor, "detail::noteGraphResults(")
        text = "".join(line for line in text.splitlines(keepends=True)
                       if not any(hook in line for hook in hooks))
    copy = CACHE_DIR / "planted" / name / holder  # a stable path keeps its object cached
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text)
    return holder, copy


def _cut_line(text: str, start: int, line: str, missing: str) -> str:
    """``text`` without ``line``: its first occurrence after ``start``, in the function that
    starts there; SimError(``missing``) when that function has no such line."""
    cut = text.find(line, start)
    if cut < 0 or cut > text.find("\n}\n", start):
        raise SimError(f"{missing}; update plant_bug() in scripts/metal_sim.py")
    return text[:cut] + text[cut + len(line):]


def _read_if_exists(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


# ---------------------------------------------------------------------------------------------
# Running scenarios
# ---------------------------------------------------------------------------------------------

SUMMARY_RE = re.compile(
    r"^scenario (?P<name>\S+): threads=(?P<threads>\d+) events=(?P<events>\d+) "
    r"hazards=(?P<hazards>\d+) failures=(?P<failures>\d+)$", re.MULTILINE)


@dataclass
class Outcome:
    name: str
    returncode: int
    output: str
    threads: int = 0
    events: int = 0
    hazards: int = 0
    failures: int = -1
    tsan_reports: int = 0
    signature_mismatches: int = 0

    @property
    def clean(self) -> bool:
        return (self.returncode == 0 and self.failures == 0 and self.hazards == 0
                and self.tsan_reports == 0 and self.signature_mismatches == 0)

    def line(self) -> str:
        status = "ok" if self.clean else f"FAIL (exit {self.returncode})"
        mismatches = (f", {self.signature_mismatches} ObjC signature mismatches"
                      if self.signature_mismatches else "")
        return (f"scenario {self.name}: {status}: {self.threads} threads, {self.events} events, "
                f"{self.hazards} hazards, {self.failures} failed checks, "
                f"{self.tsan_reports} tsan reports{mismatches}")


def tsan_options() -> str:
    return (f"suppressions={SIM_DIR / 'tsan.supp'} halt_on_error=0 exitcode={TSAN_EXITCODE} "
            "die_after_fork=0 second_deadlock_stack=1")


def run_scenario(binary: Path, scenario: Scenario, scale: int, expect_tracking: bool) -> Outcome:
    env = {**os.environ, "TSAN_OPTIONS": f"{tsan_options()} {scenario.tsan_extra}".strip(),
           "METALSIM_SCALE": str(scale)}
    for key in ("PYTORCH_MPS_STREAM_TRACKING", "PYTORCH_MPS_PER_THREAD_STREAMS",
                "METALSIM_EXPECT_TRACKING"):
        env.pop(key, None)
    if expect_tracking:
        env["METALSIM_EXPECT_TRACKING"] = "1"
    env.update(dict(scenario.env))
    try:
        done = subprocess.run([str(binary), scenario.name], env=env, capture_output=True,
                              text=True, timeout=SCENARIO_TIMEOUT_S)
        returncode, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = 124
        output = f"{expired.stdout or ''}{expired.stderr or ''}\nkilled after {expired.timeout} s"
    outcome = Outcome(scenario.name, returncode, output, tsan_reports=output.count(TSAN_REPORT),
                      signature_mismatches=output.count(SIGNATURE_MISMATCH))
    match = SUMMARY_RE.search(output)
    if match:
        outcome.threads = int(match["threads"])
        outcome.events = int(match["events"])
        outcome.hazards = int(match["hazards"])
        outcome.failures = int(match["failures"])
    return outcome


EXCERPT_KINDS = ("TIMEOUT", "metalsim:", "Calling [", "child:", "threads inside", "  thread ",
                 "  dispatch_async",
                 "HAZARD", "CHECK FAILED", "SUMMARY: ThreadSanitizer", "(")


def failure_excerpt(outcome: Outcome, per_kind: int = 6) -> str:
    """The telling lines of a failed scenario's output: a few of each kind."""
    kept: list[str] = []
    counts: dict[str, int] = {}
    for line in outcome.output.splitlines():
        kind = next((k for k in EXCERPT_KINDS if line.startswith(k)), None)
        if kind is None and "killed after" in line:
            kind = "killed"
        limit = 64 if kind in ("  thread ", "  dispatch_async") else per_kind  # all, for deadlocks
        if kind is None or counts.get(kind, 0) >= limit:
            continue
        counts[kind] = counts.get(kind, 0) + 1
        kept.append(line)
    if not kept:
        kept = outcome.output.splitlines()[-per_kind * 2:]
    return "\n".join("    " + line for line in kept)


def summary_line(outcomes: Sequence[Outcome]) -> str:
    return (f"metal sim: {len(outcomes)} scenarios, {sum(o.threads for o in outcomes)} threads, "
            f"{sum(o.events for o in outcomes)} events, {sum(o.hazards for o in outcomes)} "
            f"hazards, {sum(o.tsan_reports for o in outcomes)} tsan reports")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=None,
                        help="patched PyTorch tree (default: the reference tree with the series "
                             "applied, in a scratch directory)")
    parser.add_argument("--scenarios", nargs="+", default=None,
                        help="run only these scenarios (default: all but EXTRA_SCENARIOS)")
    parser.add_argument("--plant-bug", choices=sorted(PLANTED_BUGS), default=None,
                        help="build with a known bug and run the scenario that must catch it")
    parser.add_argument("--scale", type=int, default=100,
                        help="percent of each scenario's iterations (default 100)")
    parser.add_argument("--keep-binary", type=Path, default=None,
                        help="also copy the harness executable here (to run or debug a scenario "
                             "by hand: BINARY SCENARIO, with TSAN_OPTIONS as printed)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel compiles and scenarios (default: all cores)")
    return parser.parse_args(argv)


def selected_scenarios(args: argparse.Namespace) -> list[Scenario]:
    if args.plant_bug:
        name = PLANTED_BUGS[args.plant_bug].scenario
        base = {s.name: s for s in SCENARIOS}.get(name, Scenario(name))
        if args.plant_bug == "missing-wait":
            base = Scenario(name, TRACKING_OFF)
        return [base]
    if not args.scenarios:
        return list(SCENARIOS)
    known = {s.name: s for s in (*SCENARIOS, *EXTRA_SCENARIOS)}
    unknown = [n for n in args.scenarios if n not in known]
    if unknown:
        raise SimError(f"unknown scenarios: {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in args.scenarios]


def run(args: argparse.Namespace, tree: Path) -> int:
    from syntax_check import SetupError, ensure_torch_headers

    scenarios = selected_scenarios(args)
    tools = require_tools()
    try:
        torch_include = ensure_torch_headers()
    except SetupError as error:
        raise SimError(str(error)) from error
    prefix = build_toolchain(tools)
    inputs = BuildInputs(tools["clang++-16"], prefix, torch_include, tree.resolve())
    planted = PLANTED_BUGS[args.plant_bug] if args.plant_bug else None
    with tempfile.TemporaryDirectory(prefix="metalsim-") as scratch:
        work = Path(scratch)
        planted_copy = plant_bug(tree, planted, args.plant_bug) if planted else None
        started = time.monotonic()
        binary = build_harness(inputs, work, planted_copy, args.jobs)
        print(f"built the harness in {time.monotonic() - started:.0f} s", flush=True)
        if args.keep_binary is not None:
            shutil.copy2(binary, args.keep_binary)
            print(f"harness copied to {args.keep_binary}; TSAN_OPTIONS='{tsan_options()}'")
        expect_tracking = bool(re.search(r"\bnoteBufferUse\b",
                                         (tree / MPS_DIR / "MPSStream.h").read_text()))
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(
                lambda s: run_scenario(binary, s, args.scale, expect_tracking), scenarios))
    for outcome in outcomes:
        print(outcome.line())
        if not outcome.clean:
            print(failure_excerpt(outcome))
    if planted:
        print(f"planted bug {args.plant_bug}: {planted.description}")
    print(summary_line(outcomes), flush=True)
    return 0 if all(o.clean for o in outcomes) else 1


def default_tree() -> Path:
    """The reference tree with the series applied, rebuilt at a stable path (cached objects)."""
    tree = CACHE_DIR / "patched-tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from mpsbuild.scratch import patched_reference_tree; "
                           "patched_reference_tree(Path(sys.argv[1]))", str(tree)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SimError(f"applying the series to the reference tree failed:\n{done.stderr[-3000:]}"
                       "\nFix: run build.py's series check, or pass --tree DIR")
    return tree


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.tree is not None:
            if not (args.tree / MPS_DIR).is_dir():
                raise SimError(f"{args.tree} has no {MPS_DIR}: pass --tree with a PyTorch tree")
            return run(args, args.tree)
        return run(args, default_tree())
    except SimError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
