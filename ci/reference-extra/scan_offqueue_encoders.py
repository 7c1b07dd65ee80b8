#!/usr/bin/env python3
"""List the places in the official torch 2.9.1 binary that reach an MPS stream's encoder or
command buffer outside the stream's serial queue.

Why a binary: we hold only part of the v2.9.1 .mm sources, but the official macOS arm64 wheel
holds every MPS op compiled from exactly v2.9.1. ``MPSStream::commandEncoder()``,
``commandBuffer()`` and ``endKernelCoalescing()`` live in MPSStream.mm and the wheel is built
without LTO, so every use from another file is a visible ``bl``/``b`` to that symbol. An op that
encodes on the queue does it inside a block (``..._block_invoke``) handed to ``dispatch_sync``;
a call from any other function runs on the caller's thread, off the queue.

Prints two sections and exits 0; exits 2 with the reason when a tool or input is missing:
  OFF-QUEUE   functions (not blocks) that call an accessor directly;
  BLOCK-CHECK blocks that call an accessor, and whether a function that takes the block's
              address also calls dispatch_sync / dispatch_sync_with_rethrow ("unverified" = no).

Usage: scan_offqueue_encoders.py [--wheel torch-2.9.1-...-macosx_11_0_arm64.whl]
Without --wheel it runs ``pip download torch==2.9.1`` for macOS arm64 into a temporary folder.
Needs llvm-objdump and llvm-cxxfilt (LLVM 14 or newer); a run takes 5-10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

DYLIB = "torch/lib/libtorch_cpu.dylib"
ACCESSORS = {
    "__ZN2at3mps9MPSStream14commandEncoderEv": "commandEncoder()",
    "__ZN2at3mps9MPSStream13commandBufferEv": "commandBuffer()",
    "__ZN2at3mps9MPSStream19endKernelCoalescingEv": "endKernelCoalescing()",
}
RETHROW = "dispatch_sync_with_rethrow"
FUNC_LINE = re.compile(r"^([0-9a-f]+) <(.*)>:$")
INSN_LINE = re.compile(r"^\s*[0-9a-f]+:\s+(\S+)\s+(.*)$")
WANTED_OPCODES = ("\tbl\t", "\tb\t", "\tadrp\t", "\tadr\t", "\tadd\t")
BLOCK_SUFFIX = re.compile(r"(_block_invoke.*)$")


def fail(message: str) -> None:
    print(f"scan_offqueue_encoders: {message}", file=sys.stderr)
    sys.exit(2)


def find_tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    fail(f"none of {', '.join(names)} is on PATH; install LLVM (apt-get install llvm-16)")
    return ""  # unreachable: fail() exits


def download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "torch==2.9.1", "--platform",
           "macosx_11_0_arm64", "--python-version", "3.11", "--only-binary=:all:", "--no-deps",
           "-d", str(dest)]
    if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
        fail("pip download of torch==2.9.1 (macosx_11_0_arm64) failed; pass --wheel PATH")
    wheels = sorted(dest.glob("torch-2.9.1-*-macosx_11_0_arm64.whl"))
    if not wheels:
        fail(f"pip download left no torch-2.9.1 macOS arm64 wheel in {dest}")
    return wheels[0]


def check_wheel(wheel: Path) -> None:
    if not wheel.is_file():
        fail(f"{wheel} does not exist; pass the path of the downloaded wheel")
    if not re.fullmatch(r"torch-2\.9\.1-cp3\d+-none-macosx_11_0_arm64\.whl", wheel.name):
        fail(f"{wheel.name} is not an official torch 2.9.1 macOS arm64 wheel name")


def extract_dylib(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(DYLIB, dest)
    return dest / DYLIB


def dispatch_sync_stubs(objdump: str, dylib: Path) -> set[int]:
    """Addresses of the stubs through which the dylib calls libdispatch's dispatch_sync."""
    out = subprocess.run([objdump, "--macho", "--indirect-symbols", str(dylib)],
                         capture_output=True, text=True, check=True).stdout
    return {int(f[0], 16) for f in (line.split() for line in out.splitlines())
            if len(f) == 3 and f[2] == "_dispatch_sync" and f[0].startswith("0x")}


class Disassembly:
    """Per function: the symbols it calls and the code addresses it materializes."""

    def __init__(self) -> None:
        self.address: dict[str, int] = {}
        self.calls: dict[str, set[str]] = defaultdict(set)
        self.takers: dict[int, set[str]] = defaultdict(set)

    def read(self, lines: Iterable[str], stubs: set[int]) -> None:
        current, adrp = "", {}
        for line in lines:
            # Only headers and the four opcodes below matter; skip the rest before any regex.
            if not line.endswith(">:\n") and not any(k in line for k in WANTED_OPCODES):
                continue
            head = FUNC_LINE.match(line)
            if head:
                # Local symbols repeat across files (e.g. one block name in FusedAdam and
                # FusedAdamW), so a function is keyed by name and address.
                current, adrp = f"{head.group(2)}@{head.group(1)}", {}
                self.address[current] = int(head.group(1), 16)
                continue
            insn = INSN_LINE.match(line)
            if insn and current:
                self._instruction(current, insn.group(1), insn.group(2), adrp, stubs)

    def _instruction(self, fn: str, op: str, args: str, adrp: dict[str, int],
                     stubs: set[int]) -> None:
        parts = [p.strip() for p in args.split(",")]
        if op in ("bl", "b"):
            target = args.split()[0]
            self.calls[fn].add(args.split("<")[-1].rstrip(">") if "<" in args else target)
            if target.startswith("0x") and int(target, 16) in stubs:
                self.calls[fn].add("_dispatch_sync")
        elif op == "adrp" and len(parts) >= 2:
            adrp[parts[0]] = int(parts[1].split()[0], 16)
        elif op == "add" and len(parts) >= 3 and parts[1] in adrp and parts[2].startswith("#"):
            self.takers[adrp[parts[1]] + int(parts[2][1:].split()[0], 0)].add(fn)
        elif op == "adr" and len(parts) >= 2 and parts[1].startswith("0x"):
            self.takers[int(parts[1].split()[0], 16)].add(fn)

    def accessor_calls(self, fn: str) -> list[str]:
        return sorted(ACCESSORS[c] for c in self.calls[fn] if c in ACCESSORS)

    def dispatches(self, fn: str) -> bool:
        return "_dispatch_sync" in self.calls[fn] or any(RETHROW in c for c in self.calls[fn])


def demangle(cxxfilt: str, names: list[str]) -> list[str]:
    # Mach-O symbols carry one extra leading underscore, blocks three or four and a suffix
    # that c++filt does not know: demangle the enclosing function and put the suffix back.
    names = [n.rsplit("@", 1)[0] for n in names]
    bases = [re.sub(r"^_+(_Z)", r"\1", BLOCK_SUFFIX.sub("", n)) for n in names]
    out = subprocess.run([cxxfilt], input="\n".join(bases), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    if len(out) != len(names):
        return names
    return [o + (f" [{m.group(1)}]" if (m := BLOCK_SUFFIX.search(n)) else "")
            for o, n in zip(out, names, strict=True)]


def report(dis: Disassembly, cxxfilt: str) -> None:
    users = sorted(fn for fn in dis.calls if dis.accessor_calls(fn))
    direct = [fn for fn in users if "_block_invoke" not in fn]
    blocks = [fn for fn in users if "_block_invoke" in fn]
    print("OFF-QUEUE\tfunction\tcalls")
    for fn, name in zip(direct, demangle(cxxfilt, direct), strict=True):
        print(f"OFF-QUEUE\t{name}\t{', '.join(dis.accessor_calls(fn))}")
    print("BLOCK-CHECK\tstatus\tblock\tcalls")
    for fn, name in zip(blocks, demangle(cxxfilt, blocks), strict=True):
        takers = dis.takers.get(dis.address[fn], set())
        status = "dispatched" if any(dis.dispatches(t) for t in takers) else "unverified"
        print(f"BLOCK-CHECK\t{status}\t{name}\t{', '.join(dis.accessor_calls(fn))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="official torch 2.9.1 macOS arm64 wheel")
    args = parser.parse_args()
    objdump = find_tool("llvm-objdump-16", "llvm-objdump")
    cxxfilt = find_tool("llvm-cxxfilt-16", "llvm-cxxfilt", "c++filt")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        check_wheel(wheel)
        print(f"# wheel {wheel.name} sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}")
        dylib = extract_dylib(wheel, Path(tmp))
        stubs = dispatch_sync_stubs(objdump, dylib)
        if not stubs:
            fail(f"no _dispatch_sync stub found in {DYLIB}: is this a macOS arm64 build?")
        dis = Disassembly()
        with subprocess.Popen([objdump, "-d", "--no-show-raw-insn", str(dylib)],
                              stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None  # stdout=PIPE above
            dis.read(proc.stdout, stubs)
        if proc.returncode != 0:
            fail(f"llvm-objdump failed on {DYLIB} (exit {proc.returncode})")
        report(dis, cxxfilt)


if __name__ == "__main__":
    main()
