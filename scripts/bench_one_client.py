#!/usr/bin/env python3
"""One client: a global lock against BatchQueue versions, in interleaved blocks of calls.

    python scripts/bench_one_client.py --device cuda --model mlp \
        --batch-queue-file OLD.py --batch-queue-file NEW.py [--stages]

With one client every BatchQueue request fills its batch alone and runs on the caller's
thread, so the queue's cost is pure per-request bookkeeping, a few percent of a fast model's
call. On a shared host that is less than the drift of the machine between two windows of
scripts/bench_batching.py. Here each version runs --calls calls in a block, the versions
take turns for --blocks blocks, and each block's throughput is divided by the lock's block
beside it; the median of those ratios is printed with its quartiles.

--stages then times the stages of the first version's requests with wrappers (each adds a
fraction of a microsecond): where the time over the lock goes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_batching

# the queue's methods and stream calls a solo request goes through (in this version or an
# earlier one: a version is timed in those it has)
STAGE_METHODS = ("_make_request", "_note_stream", "_take_solo_role", "_solo_output", "_call_fn",
                 "_outputs_for", "_ready", "_events_after", "_pass_role")  # fmt: skip
STAGE_STREAM_CALLS = ("other_stream", "default_stream", "current_stream", "record", "synchronize",
                      "copy")


def open_queue(module: Any, model: Callable, device: torch.device) -> Any:
    """The queue as bench_batching.py opens it for one client."""
    return module.BatchQueue(model, max_batch_size=1, inference_mode=True,
                             output_device=None if device.type == "cpu" else "cpu")  # fmt: skip


def warm_up(f: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int) -> None:
    """First-call costs (allocator, kernels, the queue's first batch) stay out of the timing."""
    for _ in range(min(calls, 200)):
        f(x)


def interleaved(
    variants: dict[str, Callable[[torch.Tensor], Any]], x: torch.Tensor, calls: int, blocks: int
) -> dict[str, list[float]]:
    """Microseconds per call of each variant, block by block, the variants taking turns."""
    per_call: dict[str, list[float]] = {name: [] for name in variants}
    for f in variants.values():
        warm_up(f, x, calls)
    for _ in range(blocks):
        for name, f in variants.items():
            started = time.perf_counter()
            for _ in range(calls):
                f(x)
            per_call[name].append((time.perf_counter() - started) / calls * 1e6)
    return per_call


def throughput_vs_first(per_call: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Each variant's throughput over the first variant's, block by block: median, quartiles."""
    base = next(iter(per_call.values()))
    table = {}
    for name, times in per_call.items():
        ratios = [b / t for b, t in zip(base, times, strict=True)]
        low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        table[name] = {"us_per_call": statistics.median(times),
                       "median": statistics.median(ratios), "q1": low, "q3": high}  # fmt: skip
    return table


def time_stages(module: Any, model: Callable, device: torch.device, x: torch.Tensor,
                calls: int) -> dict[str, float]:  # fmt: skip
    """Microseconds per request in each stage of a solo request, and in model itself."""
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, f: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return wrapper

    queue_class, streams = module.BatchQueue, module._streams
    saved = {name: vars(queue_class)[name] for name in STAGE_METHODS if name in vars(queue_class)}
    saved_streams = {name: getattr(streams, name) for name in STAGE_STREAM_CALLS
                     if hasattr(streams, name)}  # fmt: skip
    try:
        for name, member in saved.items():
            if isinstance(member, staticmethod):
                setattr(queue_class, name, staticmethod(timed(name, member.__func__)))
            else:
                setattr(queue_class, name, timed(name, member))
        for name, method in saved_streams.items():
            setattr(streams, name, timed(f"streams.{name}", method))
        queue = open_queue(module, timed("model", model), device)
        with queue:
            warm_up(queue, x, calls)
            spent.clear()
            started = time.perf_counter()
            for _ in range(calls):
                queue(x)
            per_call = (time.perf_counter() - started) / calls * 1e6
    finally:
        for name, member in saved.items():
            setattr(queue_class, name, member)
        for name in saved_streams:
            delattr(streams, name)  # back to the class's methods
    stages = {name: seconds / calls * 1e6 for name, seconds in spent.items()}
    return {"total": per_call, **stages}


def labelled(paths: list[Path]) -> dict[str, Path]:
    """A row label per file: its name, or its whole path where two files share a name (two
    versions of batch_queue.py from two trees)."""
    stems = [path.stem for path in paths]
    return {stem if stems.count(stem) == 1 else str(path): path
            for stem, path in zip(stems, paths, strict=True)}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu")
    parser.add_argument("--model", choices=list(bench_batching.MODELS), default="mlp")
    parser.add_argument("--batch-queue-file", type=Path, action="append", required=True,
                        help="a batch_queue.py to compare (repeat the flag for several)")
    parser.add_argument("--calls", type=int, default=400, help="calls per block")
    parser.add_argument("--blocks", type=int, default=40, help="blocks per variant")
    parser.add_argument("--stages", action="store_true",
                        help="also time the stages of the first version's requests")
    args = parser.parse_args(argv)  # fmt: skip
    if args.calls < 1 or args.blocks < 1:
        parser.error("--calls and --blocks must be >= 1")
    for path in args.batch_queue_file:
        if not path.is_file():
            parser.error(f"--batch-queue-file {path}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    make, shape = bench_batching.MODELS[args.model]
    torch.manual_seed(0)
    model = make().to(device).eval()
    x = torch.randn(1, *shape, device=device)
    files = labelled(args.batch_queue_file)
    modules = {label: bench_batching.load_module(path, f"bq_{i}")
               for i, (label, path) in enumerate(files.items())}  # fmt: skip
    with torch.inference_mode():
        queues = {name: open_queue(module, model, device) for name, module in modules.items()}
        try:
            variants = {"locked": bench_batching.make_locked(model, device), **queues}
            table = throughput_vs_first(interleaved(variants, x, args.calls, args.blocks))
        finally:
            for queue in queues.values():
                queue.close()
        print(f"{args.model} on {device}, one client, {args.blocks} blocks of {args.calls} calls:")
        for name, row in table.items():
            spread = f"quartiles {row['q1']:.3f}-{row['q3']:.3f}"
            print(f"  {name:20s} {row['us_per_call']:8.2f} us/call  throughput / locked: "
                  f"median {row['median']:.3f} ({spread})")  # fmt: skip
        if args.stages:
            name, module = next(iter(modules.items()))
            stages = time_stages(module, model, device, x, args.calls * args.blocks)
            print(f"stages of {name} (us per request, wrapped; nested stages count twice):")
            for stage, us in sorted(stages.items(), key=lambda item: -item[1]):
                print(f"  {stage:24s} {us:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
