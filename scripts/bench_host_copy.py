#!/usr/bin/env python3
"""Cost of handing a batch output to the host: a blocking copy against a non-blocking one
waited for by an event, by output size, measured side by side in one run.

BatchQueue copies batch outputs to ``output_device="cpu"`` without blocking only from the
size where this script finds the non-blocking copy cheaper (``_ASYNC_COPY_MIN_BYTES`` in
``torch/mps/batch_queue.py``). Each copy follows a small kernel that writes its source, as a
batch's output would be. Needs a CUDA device: on MPS, BatchQueue's copies to the host stay
blocking.

    python scripts/bench_host_copy.py [--sizes 2560,32768,262144,1048576,4194304]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch

DEFAULT_SIZES = "2560,32768,262144,1048576,4194304"


def blocking(y: torch.Tensor) -> torch.Tensor:
    return y.to("cpu")


def non_blocking_with_event(y: torch.Tensor) -> torch.Tensor:
    """What BatchQueue does: copy into pinned memory, record an event, check it, wait."""
    out = y.to("cpu", non_blocking=True)
    event = torch.Event(device=y.device)
    event.record(torch.cuda.current_stream(y.device))
    event.query()
    event.synchronize()
    return out


def microseconds_per_copy(copy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          repeats: int) -> float:  # fmt: skip
    for _ in range(20):  # warm the caching allocators
        copy(x * 2)
    torch.cuda.synchronize(x.device)
    started = time.perf_counter()
    for _ in range(repeats):
        copy(x * 2)
    return (time.perf_counter() - started) / repeats * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated bytes")
    parser.add_argument("--repeats", type=int, default=300, help="copies per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternations; the best counts")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        print(f"error: --sizes {args.sizes!r}: give byte counts like 2560,32768", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: no CUDA device; this compares CUDA copies to the host", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    for nbytes in sizes:
        x = torch.randn(max(1, nbytes // 4), device=device)
        copies = {"blocking": blocking, "non-blocking": non_blocking_with_event}
        best = dict.fromkeys(copies, float("inf"))
        for _ in range(args.rounds):  # alternate, so both see the same machine state
            for name, copy in copies.items():
                best[name] = min(best[name], microseconds_per_copy(copy, x, args.repeats))
        ratio = best["non-blocking"] / best["blocking"]
        print(f"{nbytes:>9} B: blocking {best['blocking']:7.1f} us  non-blocking+event "
              f"{best['non-blocking']:7.1f} us  ratio {ratio:4.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
