"""Static checks of the kernel and shader-library locks in the patched v2.9.1 MPS sources.

No Mac is available, so these tests read the patched Objective-C++ sources and check the lock
rules the patches promise (aten/src/ATen/native/mps/MPSKernelLocks.h):

- each Apple kernel class has its own lock, used exactly where that class encodes;
- a kernel lock is held only around the encode call: no dispatch_sync, no other lock, no cache
  or shader-library call, no encoder fetch inside its scope (so no lock order exists), and it is
  taken inside the stream's serial-queue block wherever the encode runs in one;
- MetalShaderLibrary's caches are checked, compiled and filled under one file-level lock, and
  MetalShaderLibrary.h (the class layout extensions compile against) is unchanged;
- every ``commandEncoder()`` call in the whole files we hold runs on the stream's serial queue;
  the unpatched tree fails this check (negative control).

The lock file itself is compiled with clang and exercised from threads under ThreadSanitizer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mpsbuild.reference import reference_tree

MPS = Path("aten/src/ATen/native/mps")
OPS = MPS / "operations"
LOCKS_HEADER = MPS / "MPSKernelLocks.h"
LOCKS_SOURCE = MPS / "MPSKernelLocks.cpp"

# lock name -> {file: number of critical sections}; and whether the encode runs on a stream queue
EXPECTED_KERNEL_LOCKS: dict[str, dict[Path, int]] = {
    "ndarray_matrix_multiplication": {OPS / "Linear.mm": 2, OPS / "LinearAlgebra.mm": 1},
    "ndarray_identity": {MPS / "OperationUtils.mm": 2},
    "matrix_decomposition_lu": {OPS / "LinearAlgebra.mm": 2},
    "matrix_solve_lu": {OPS / "LinearAlgebra.mm": 1},
    "matrix_solve_triangular": {OPS / "LinearAlgebra.mm": 1},
    "layer_norm": {OPS / "Normalization.mm": 1},
}
# MPSNDArrayIdentity reshapes run while Placeholders are built, outside any stream queue.
LOCKS_OUTSIDE_QUEUES = {"ndarray_identity"}

ENCODE_CALLS = (
    "encodeToCommandEncoder:",
    "encodeToCommandBuffer:",
    "reshapeWithCommandBuffer:",
    "dispatchThreadgroups:",
)
FORBIDDEN_UNDER_KERNEL_LOCK = (
    "dispatch_sync",
    "kernel_locks::",
    "shader_library_mutex",
    "getPipelineStateForFunc",
    "LookUpOrCreate",
    "commandEncoder()",
    "commandBuffer()",
    "endKernelCoalescing",
    "getMPSProfiler",
)
WHOLE_FILES_WITH_ENCODERS = (
    MPS / "OperationUtils.mm",
    OPS / "Attention.mm",
    OPS / "Copy.mm",
    OPS / "Indexing.mm",
    OPS / "Linear.mm",
    OPS / "LinearAlgebra.mm",
    OPS / "Normalization.mm",
    OPS / "MultiTensorApply.h",
)


@pytest.fixture(scope="module")
def tree(patched_tree: Path) -> Path:
    return patched_tree


# --- a small scanner for C-family sources -------------------------------------------------------


def blank_comments_and_strings(text: str) -> str:
    """``text`` with comments and string/char literals replaced by spaces (offsets preserved)."""
    pattern = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def matching_brace(code: str, open_index: int) -> int:
    """Index of the ``}`` that closes the ``{`` at ``open_index``."""
    depth = 0
    for index in range(open_index, len(code)):
        if code[index] == "{":
            depth += 1
        elif code[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError(f"unbalanced braces after offset {open_index}")


def enclosing_block_end(code: str, start: int) -> int:
    """Index of the ``}`` that closes the block in which ``start`` lies (a scope's end)."""
    depth = 0
    for index in range(start, len(code)):
        if code[index] == "{":
            depth += 1
        elif code[index] == "}":
            if depth == 0:
                return index
            depth -= 1
    raise ValueError(f"no enclosing block after offset {start}")


def queue_blocks(code: str) -> list[tuple[int, int]]:
    """(start, end) of each block passed to dispatch_sync / dispatch_sync_with_rethrow."""
    blocks = []
    for match in re.finditer(r"\bdispatch_sync(?:_with_rethrow)?\s*\(", code):
        caret = code.index("^", match.end())
        brace = code.index("{", caret)
        blocks.append((brace, matching_brace(code, brace)))
    return blocks


def inside_any(position: int, blocks: list[tuple[int, int]]) -> bool:
    return any(start < position < end for start, end in blocks)


def line_of(code: str, position: int) -> int:
    return code.count("\n", 0, position) + 1


@dataclass(frozen=True)
class CriticalSection:
    path: Path
    lock: str
    line: int
    body: str
    on_queue: bool


def kernel_critical_sections(tree: Path, path: Path) -> list[CriticalSection]:
    code = blank_comments_and_strings((tree / path).read_text())
    blocks = queue_blocks(code)
    sections = []
    pattern = r"std::lock_guard<std::mutex>\s+\w+\(\s*(?:mps::)?kernel_locks::(\w+)\(\)\);"
    for match in re.finditer(pattern, code):
        end = enclosing_block_end(code, match.end())
        sections.append(
            CriticalSection(
                path=path,
                lock=match.group(1),
                line=line_of(code, match.start()),
                body=code[match.end() : end],
                on_queue=inside_any(match.start(), blocks),
            )
        )
    return sections


def all_kernel_sections(tree: Path) -> list[CriticalSection]:
    files = sorted({path for uses in EXPECTED_KERNEL_LOCKS.values() for path in uses})
    return [section for path in files for section in kernel_critical_sections(tree, path)]


def function_body(code: str, signature: str) -> tuple[int, int]:
    """(start, end) offsets of the body of the function whose definition starts ``signature``."""
    start = code.index(signature)
    brace = code.index("{", start)
    return brace, matching_brace(code, brace)


# --- kernel locks -------------------------------------------------------------------------------


def test_every_apple_class_has_its_own_lock(tree: Path):
    header = (tree / LOCKS_HEADER).read_text()
    declared = re.findall(r"TORCH_API std::mutex& (\w+)\(\);", header)
    source = (tree / LOCKS_SOURCE).read_text()
    defined = re.findall(r"^DEFINE_MPS_KERNEL_LOCK\((\w+)\)$", source, re.M)
    assert sorted(declared) == sorted(EXPECTED_KERNEL_LOCKS)
    assert sorted(defined) == sorted(EXPECTED_KERNEL_LOCKS)
    for apple_class in (
        "MPSNDArrayMatrixMultiplication",
        "MPSNDArrayIdentity",
        "MPSMatrixDecompositionLU",
        "MPSMatrixSolveLU",
        "MPSMatrixSolveTriangular",
        "LayerNorm",
    ):
        assert apple_class in header, f"no comment names {apple_class}"


def test_kernel_locks_are_used_where_their_classes_encode(tree: Path):
    used: dict[str, dict[Path, int]] = {}
    for section in all_kernel_sections(tree):
        per_file = used.setdefault(section.lock, {})
        per_file[section.path] = per_file.get(section.path, 0) + 1
    assert used == EXPECTED_KERNEL_LOCKS


def test_kernel_locks_cover_exactly_one_encode_and_nothing_else(tree: Path):
    sections = all_kernel_sections(tree)
    assert sections
    for section in sections:
        where = f"{section.path}:{section.line} ({section.lock})"
        encodes = sum(section.body.count(call) for call in ENCODE_CALLS)
        assert encodes == 1, f"{where}: the lock must cover exactly one encode call"
        for forbidden in FORBIDDEN_UNDER_KERNEL_LOCK:
            assert forbidden not in section.body, f"{where}: {forbidden} under a kernel lock"


def test_kernel_locks_are_taken_inside_the_stream_queue(tree: Path):
    for section in all_kernel_sections(tree):
        expected = section.lock not in LOCKS_OUTSIDE_QUEUES
        assert section.on_queue == expected, f"{section.path}:{section.line} ({section.lock})"


BINDING_CALLS = ("getMTLBufferStorage(", "mtl_setArgs", "mtl_setBuffer(", "Placeholder(",
                 "getMPSNDArray(", "noteTensorWrite(", "noteBufferUse(")


def held_part(snippet: str) -> str:
    """The code of ``snippet`` after its layer_norm lock, to the end of the lock's scope."""
    code = blank_comments_and_strings(snippet)
    match = re.search(r"kernel_locks::layer_norm\(\)\);", code)
    assert match is not None
    return code[match.end() : enclosing_block_end(code, match.end())]


def test_no_buffer_is_bound_under_a_kernel_lock(tree: Path):
    """Binding a buffer may wait for another stream (hand-off ordering, 0002): a kernel lock held
    meanwhile would make every stream that needs the lock wait for that other stream's GPU work,
    and a stream queued for the lock could never commit what the binding waits for."""
    for section in all_kernel_sections(tree):
        for call in BINDING_CALLS:
            assert call not in section.body, (
                f"{section.path}:{section.line} ({section.lock}) binds a buffer ({call}) under "
                "the kernel lock; bind before taking it"
            )


def test_binding_scanner_sees_a_violation():
    """Negative control: the old LayerNorm order (lock, then mtl_setArgs) is flagged."""
    bad = (
        "void f() {\n"
        "  std::lock_guard<std::mutex> lock(kernel_locks::layer_norm());\n"
        "  mps::mtl_setArgs(computeEncoder, *X, out);\n"
        "}\n"
    )
    assert any(call in held_part(bad) for call in BINDING_CALLS)


def test_kernel_lock_scanner_sees_a_violation():
    """Negative control: the scanner flags a lock held across dispatch_sync."""
    bad = (
        "void f() {\n"
        "  std::lock_guard<std::mutex> lock(kernel_locks::layer_norm());\n"
        "  dispatch_sync(q, ^() { [e dispatchThreadgroups:a threadsPerThreadgroup:b]; });\n"
        "}\n"
    )
    assert "dispatch_sync" in held_part(bad)


# --- shader library and caches ------------------------------------------------------------------


def test_shader_library_header_keeps_its_layout(tree: Path):
    header = MPS / "MetalShaderLibrary.h"
    assert (tree / header).read_bytes() == (reference_tree() / header).read_bytes()


@pytest.mark.parametrize(
    ("signature", "must_cover"),
    [
        ("id<MTLLibrary> MetalShaderLibrary::getLibrary() {", ["library = compileLibrary("]),
        (
            "id<MTLLibrary> MetalShaderLibrary::getLibrary(const std::initializer_list",
            ["libMap[key];", "compileLibrary(", "return libMap[key] = lib;"],
        ),
        (
            "std::pair<id<MTLComputePipelineState>, id<MTLFunction>> "
            "MetalShaderLibrary::getLibraryPipelineState(",
            ["cplMap.find(key)", "newComputePipelineStateWithFunction", "cplMap[key] ="],
        ),
        ("  id<MTLLibrary> getLibrary() override {", ["newLibraryWithData"]),
    ],
)
def test_shader_library_checks_compiles_and_inserts_under_one_lock(tree, signature, must_cover):
    code = blank_comments_and_strings((tree / MPS / "OperationUtils.mm").read_text())
    start, end = function_body(code, signature)
    body = code[start:end]
    lock = body.find("std::lock_guard<std::recursive_mutex> lock(shader_library_mutex());")
    assert lock >= 0, f"{signature}: no shader_library_mutex"
    for needle in must_cover:
        position = body.find(needle)
        assert position > lock, f"{signature}: {needle!r} is not under the lock"
    for forbidden in ("dispatch_sync", "kernel_locks::"):
        assert forbidden not in body[lock:], f"{signature}: {forbidden} under the library lock"


def test_shader_library_lock_is_file_level_and_outlives_exit(tree: Path):
    text = (tree / MPS / "OperationUtils.mm").read_text()
    assert "static std::recursive_mutex& shader_library_mutex() {" in text
    assert "static auto* mutex = new std::recursive_mutex();" in text


def without_buffer_storage(header: str) -> str:
    """The header without the body of getMTLBufferStorage() and without noteTensorWrite()."""
    signature = "static inline id<MTLBuffer> getMTLBufferStorage(const TensorBase& tensor) {"
    start = header.index(signature)
    header = header[:start] + header[header.index("\n}\n", start):]
    hook = header.find("\n// An op is about to write `t`")
    if hook >= 0:
        end = header.index("\n}\n", header.index("static inline void noteTensorWrite(", hook))
        header = header[:hook - 1] + header[end + len("\n}"):]  # with its blank line before
    return header


def test_graph_and_kernel_caches_are_serial_and_created_at_load(tree: Path):
    header = (tree / MPS / "OperationUtils.h").read_text()
    # The series changes only getMTLBufferStorage() in this header and adds noteTensorWrite()
    # (hand-off ordering, 0003).
    assert without_buffer_storage(header) == without_buffer_storage(
        (reference_tree() / MPS / "OperationUtils.h").read_text())
    # v2.9.1 already serializes lookups and insertions on one serial queue per cache.
    assert header.count("dispatch_queue_create(") == 2
    assert header.count("DISPATCH_QUEUE_SERIAL") == 2
    code = blank_comments_and_strings(header)
    for signature in (
        "MPSCachedKernel* CreateCachedKernel(",
        "MPSCachedKernel* LookUp(",
        "MPSCachedGraph* CreateCachedGraph(",
        "MPSCachedGraph* LookUp(",
    ):
        start, end = function_body(code, signature)
        assert "(serialQueue_," in code[start:end], signature
    source = (tree / MPS / "OperationUtils.mm").read_text()
    initializer = re.search(
        r"static const bool mps_caches_created = \[\] \{(.*?)\}\(\);", source, re.S
    )
    assert initializer is not None, "the caches are not created at load"
    assert "MPSGraphCache::getInstance();" in initializer.group(1)
    assert "MPSKernelCache::getInstance();" in initializer.group(1)


# --- encoders on the stream's queue -------------------------------------------------------------


def encoders_fetched_off_queue(tree: Path) -> list[str]:
    """``file:line`` of every commandEncoder() call outside a stream-queue block."""
    off_queue = []
    for path in WHOLE_FILES_WITH_ENCODERS:
        code = blank_comments_and_strings((tree / path).read_text())
        blocks = queue_blocks(code)
        allowed: list[tuple[int, int]] = []
        if "MetalKernelFunction::startEncoding()" in code:
            # Documented to run inside runCommandBlock(), i.e. on the current stream's queue.
            allowed.append(function_body(code, "void MetalKernelFunction::startEncoding()"))
        for match in re.finditer(r"commandEncoder\(\)", code):
            if not inside_any(match.start(), blocks + allowed):
                off_queue.append(f"{path}:{line_of(code, match.start())}")
    return off_queue


def test_encoders_are_fetched_on_the_stream_queue(tree: Path):
    assert encoders_fetched_off_queue(tree) == []


def test_unpatched_tree_fetches_the_tiled_bmm_encoder_off_queue():
    """Negative control: v2.9.1's tiled bmm fetched its encoder outside the queue."""
    assert encoders_fetched_off_queue(reference_tree()) == [f"{OPS / 'LinearAlgebra.mm'}:804"]


# --- the lock file, compiled and run under ThreadSanitizer ---------------------------------------

TSAN_DRIVER = r"""
#include <ATen/native/mps/MPSKernelLocks.h>

#include <cstdio>
#include <set>
#include <thread>
#include <vector>

using namespace at::native::mps::kernel_locks;
using Accessor = std::mutex& (*)();

int main() {
  const std::vector<Accessor> accessors = {ndarray_matrix_multiplication, ndarray_identity,
      matrix_decomposition_lu, matrix_solve_lu, matrix_solve_triangular, layer_norm};
  constexpr int kThreads = 8, kRounds = 2000;
  std::vector<long> counters(accessors.size(), 0);
  std::vector<std::thread> threads;
  // Threads race on first use of every accessor, then on the counters each lock guards.
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < kRounds; ++round) {
        for (size_t i = 0; i < accessors.size(); ++i) {
#ifndef SKIP_LOCK
          std::lock_guard<std::mutex> lock(accessors[i]());
#endif
          ++counters[i];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::set<std::mutex*> distinct;
  for (size_t i = 0; i < accessors.size(); ++i) {
    distinct.insert(&accessors[i]());
    if (&accessors[i]() != &accessors[i]()) return 2;
    if (counters[i] != long(kThreads) * kRounds) return 3;
  }
  if (distinct.size() != accessors.size()) return 4;
  std::puts("kernel locks OK");
  return 0;
}
"""


def clang() -> str:
    compiler = shutil.which("clang++-16") or shutil.which("clang++")
    if compiler is None:  # reported as skipped; CI (MPSBUILD_REQUIRE_ALL) turns that into a fail
        pytest.skip("clang++ not found: install clang++-16 (apt-get install clang-16)")
    return compiler


def build_and_run(tree: Path, workdir: Path, *defines: str) -> subprocess.CompletedProcess[str]:
    driver = workdir / "driver.cpp"
    driver.write_text(TSAN_DRIVER)
    binary = workdir / ("driver" + "".join(defines))
    include = Path(torch.__file__).parent / "include"
    compile_command = [
        clang(), "-std=c++17", "-O1", "-g", "-fsanitize=thread", *[f"-D{d}" for d in defines],
        "-I", str(tree / "aten/src"), "-I", str(include),
        str(driver), str(tree / LOCKS_SOURCE), "-o", str(binary),
    ]  # fmt: skip
    subprocess.run(compile_command, check=True, capture_output=True, text=True)
    return subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)


def test_kernel_locks_under_thread_sanitizer(tree: Path, tmp_path: Path):
    result = build_and_run(tree, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ThreadSanitizer" not in result.stderr
    assert "kernel locks OK" in result.stdout


def test_thread_sanitizer_catches_the_unlocked_driver(tree: Path, tmp_path: Path):
    """Negative control: without the locks the same driver is reported as racy."""
    result = build_and_run(tree, tmp_path, "SKIP_LOCK")
    assert result.returncode != 0
    assert "ThreadSanitizer: data race" in result.stderr
