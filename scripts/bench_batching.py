#!/usr/bin/env python3
"""Throughput of N client threads sharing one model: global lock, free threads, BatchQueue,
and the offline limit (one thread, batch N), measured side by side in one run.

    python scripts/bench_batching.py --device cpu --clients 1,8,32,64 --json OUT.json
        [--plot OUT.png] [--quick] [--batch-queue-file PATH | --tree DIR]

A request is one sample (batch dimension 1); it is complete when its output is on the host.
Modes, for each model and client count N:
  locked      N threads, one global lock around model(x) and the copy to the host
  threads     N threads, no lock (cpu/cuda only: MPS crashes without our patches)
  batchqueue  N threads calling one BatchQueue(model, max_batch_size=N)
  asyncio     N asyncio tasks on one event loop awaiting BatchQueue.submit_async
  offline     one thread, batch N, back to back: the limit for this model and device
It also measures the queue's own cost: microseconds per request with a no-op model, for
client threads and for asyncio clients, side by side with the floors: the same clients with
no queue at all (a baton passed around the client threads; futures resolved in batches on the
event loop, or by a helper thread), the least any queue could cost on this machine.

BatchQueue comes from --batch-queue-file, else the installed torch (torch.mps.BatchQueue),
else the patched reference tree of this project (--tree DIR, or the series applied to the
v2.9.1 reference files). With --batch-queue-file only torch is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODULE_IN_TREE = Path("torch") / "mps" / "batch_queue.py"
MODES = ("offline", "locked", "threads", "batchqueue", "asyncio")
QUEUE_MODES = ("batchqueue", "asyncio")
SEQ_LEN, D_MODEL = 64, 256
LARGE_D_MODEL = 1024
MLP_WIDTH = 1024


class UsageError(Exception):
    """Bad command line or environment: printed without a traceback, exit status 2."""


# ---------------------------------------------------------------- BatchQueue source


def load_module(path: Path, name: str = "bench_batch_queue") -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def find_batch_queue(file: Path | None, tree: Path | None) -> tuple[type, str]:
    """The BatchQueue class, and where it came from."""
    if file is not None:
        if not file.is_file():
            raise UsageError(f"--batch-queue-file {file}: no such file")
        return load_module(file).BatchQueue, str(file)
    if hasattr(torch.mps, "BatchQueue"):
        return torch.mps.BatchQueue, f"installed torch {torch.__version__}"
    if tree is None:
        sys.path.insert(0, str(PROJECT_ROOT))
        try:
            from mpsbuild.scratch import patched_reference_tree
        except ImportError as exc:
            raise UsageError(
                "this torch has no torch.mps.BatchQueue and the project's mpsbuild package is "
                "not importable; pass --batch-queue-file PATH/torch/mps/batch_queue.py"
            ) from exc
        with tempfile.TemporaryDirectory(prefix="bench-batching-") as scratch:
            tree = patched_reference_tree(Path(scratch) / "tree")
            return load_from_tree(tree), "the patched reference tree (patches/v2.9.1/series)"
    return load_from_tree(tree), str(tree / MODULE_IN_TREE)


def load_from_tree(tree: Path) -> type:
    source = tree / MODULE_IN_TREE
    if not source.is_file():
        raise UsageError(
            f"{source} does not exist (the patch series lacks BatchQueue?); pass --tree DIR "
            "of a PyTorch tree that has it, or --batch-queue-file"
        )
    return load_module(source).BatchQueue


# ---------------------------------------------------------------- models


def make_mlp() -> nn.Module:
    """The 3-layer MLP of the seed's measurements: 1024-1024-1024-10, about 2.1M params."""
    return nn.Sequential(
        nn.Linear(MLP_WIDTH, MLP_WIDTH),
        nn.ReLU(),
        nn.Linear(MLP_WIDTH, MLP_WIDTH),
        nn.ReLU(),
        nn.Linear(MLP_WIDTH, 10),
    )


def make_transformer() -> nn.Module:
    layer = nn.TransformerEncoderLayer(
        d_model=D_MODEL, nhead=4, dim_feedforward=1024, batch_first=True
    )
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def make_large_transformer() -> nn.Module:
    """Six wide layers: on a GPU the device time of a batch dwarfs the host time to launch
    it, the case where launching the next batch while one computes pays off."""
    layer = nn.TransformerEncoderLayer(
        d_model=LARGE_D_MODEL, nhead=8, dim_feedforward=4 * LARGE_D_MODEL, batch_first=True
    )
    return nn.TransformerEncoder(layer, num_layers=6, enable_nested_tensor=False)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (make_mlp, (MLP_WIDTH,)),
    "transformer": (make_transformer, (SEQ_LEN, D_MODEL)),
    "large-transformer": (make_large_transformer, (SEQ_LEN, LARGE_D_MODEL)),
}
DEFAULT_MODELS = ("mlp", "transformer")


# ---------------------------------------------------------------- measurement


class Sample:
    """Work done and latencies seen by a set of client threads during measured windows."""

    def __init__(self) -> None:
        self.work = 0.0  # requests completed, counting partial calls in proportion
        self.seconds = 0.0
        self.latencies: list[float] = []

    def add(self, other: Sample) -> None:
        self.work += other.work
        self.seconds += other.seconds
        self.latencies += other.latencies

    def summary(self) -> dict[str, float]:
        if not self.latencies:
            raise RuntimeError("no request completed in the measured windows: the model is far "
                               "too slow for this device; raise --seconds")  # fmt: skip
        ordered = sorted(self.latencies)
        return {
            "throughput_rps": self.work / self.seconds,
            "p50_ms": ordered[round(0.50 * (len(ordered) - 1))] * 1e3,
            "p99_ms": ordered[round(0.99 * (len(ordered) - 1))] * 1e3,
        }


class Window:
    """The measured part of a closed-loop run: after ``warmup``, for ``seconds`` or longer.

    Each call counts its rows in proportion to how much of its duration lies inside the
    window. A client's calls follow each other back to back, so this counts exactly the work
    done inside the window, even when a call takes longer than the window (a slow model) or
    when an unfair lock gives one thread several turns in a row. The window grows until
    MIN_COMPLETIONS calls have finished inside it.
    """

    MIN_COMPLETIONS = 4
    MAX_STRETCH = 40  # the window never grows past this many times ``seconds``

    def __init__(self, warmup: float, seconds: float) -> None:
        self.warmup, self.seconds = warmup, seconds
        self.stop = threading.Event()
        self.begin = self.end = 0.0

    def run(self, records: list[list[tuple[float, float, int]]]) -> None:
        """Wait out the warm-up and the window (grown as needed), then tell clients to stop."""
        self.begin = time.perf_counter() + self.warmup
        self.end = self.begin + self.seconds
        while True:
            time.sleep(max(0.0, self.end - time.perf_counter()))
            inside = sum(1 for per in records for r in list(per) if r[0] >= self.begin)
            limit = self.begin + self.MAX_STRETCH * self.seconds
            if inside >= self.MIN_COMPLETIONS or self.end >= limit:
                break
            self.end = min(limit, self.end + self.seconds / 2)
        self.stop.set()

    def sample(self, records: list[list[tuple[float, float, int]]]) -> Sample:
        """records: per thread, (finished_at, duration_s, rows) of each call."""
        sample = Sample()
        sample.seconds = self.end - self.begin
        for finished, duration, rows in (r for per_thread in records for r in per_thread):
            overlap = min(finished, self.end) - max(finished - duration, self.begin)
            if overlap > 0:
                sample.work += rows * overlap / duration
            if self.begin <= finished <= self.end:
                sample.latencies += [duration] * rows
        return sample


def run_clients(
    request: Callable[[Any], Any], inputs: list[Any], window: Window, rows: int
) -> Sample:
    """One thread per input calls request(input) in a closed loop until the window ends."""
    records: list[list[tuple[float, float, int]]] = [[] for _ in inputs]
    ready = threading.Barrier(len(inputs) + 1)

    def client(x: torch.Tensor, out: list[tuple[float, float, int]]) -> None:
        with torch.inference_mode():
            ready.wait()
            now = time.perf_counter
            while not window.stop.is_set():
                started = now()
                request(x)
                finished = now()
                out.append((finished, finished - started, rows))

    threads = [
        threading.Thread(target=client, args=(x, out), daemon=True)
        for x, out in zip(inputs, records, strict=True)
    ]
    for t in threads:
        t.start()
    ready.wait()
    window.run(records)
    for t in threads:
        t.join()
    return window.sample(records)


def run_async_clients(
    submit_async: Callable[[torch.Tensor], Any],
    inputs: list[torch.Tensor],
    window: Window,
    rows: int,
    on_leave: Callable[[], None] | None = None,
) -> Sample:
    """One asyncio task per input awaits submit_async(input) in a closed loop until the window
    ends; all tasks share one event loop on one thread. ``on_leave`` runs on the loop as each
    task leaves (a batcher resolves the requests of the tasks still waiting)."""
    records: list[list[tuple[float, float, int]]] = [[] for _ in inputs]
    ready = threading.Barrier(2)

    async def client(x: torch.Tensor, out: list[tuple[float, float, int]]) -> None:
        now = time.perf_counter
        while not window.stop.is_set():
            started = now()
            await submit_async(x)
            finished = now()
            out.append((finished, finished - started, rows))
        if on_leave is not None:
            on_leave()

    async def serve() -> None:
        ready.wait()
        await asyncio.gather(*(client(x, out) for x, out in zip(inputs, records, strict=True)))

    loop_thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    loop_thread.start()
    ready.wait()
    window.run(records)
    loop_thread.join()
    return window.sample(records)


def to_host(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The last step of every request: the output on the host (a no-op on CPU)."""
    if device.type == "cpu":
        return lambda y: y
    return lambda y: y.cpu()


def make_locked(
    model: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The locked mode's request: one global lock around model(x) and the copy to the host."""
    lock = threading.Lock()
    host = to_host(device)

    def locked(x: torch.Tensor) -> torch.Tensor:
        with lock:
            return host(model(x))

    return locked


def measure_mode(
    mode: str,
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: list[torch.Tensor],
    device: torch.device,
    batch_queue: type,
    args: argparse.Namespace,
) -> tuple[Sample, dict[str, Any] | None]:
    """One measured window of ``mode`` with len(inputs) clients; queue stats for batchqueue."""
    window = Window(args.warmup, args.seconds / args.rounds)
    host = to_host(device)
    clients = len(inputs)
    if mode == "offline":
        batch = torch.cat(inputs)
        return run_clients(lambda x: host(model(x)), [batch], window, rows=clients), None
    if mode == "threads":
        return run_clients(lambda x: host(model(x)), inputs, window, rows=1), None
    if mode == "locked":
        return run_clients(make_locked(model, device), inputs, window, rows=1), None
    queue = batch_queue(
        model,
        max_batch_size=args.max_batch_size or clients,
        max_delay_ms=args.max_delay_ms,
        inference_mode=True,
        output_device=None if device.type == "cpu" else "cpu",
        name="bench-batchqueue",
    )
    opened = time.perf_counter()
    with queue:
        if mode == "asyncio":
            sample = run_async_clients(queue.submit_async, inputs, window, rows=1)
        else:
            sample = run_clients(queue, inputs, window, rows=1)
    return sample, {**queue.stats(), "open_seconds": time.perf_counter() - opened}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def warm_up(model: nn.Module, shape: tuple[int, ...], device: torch.device, sizes: list[int]):
    """Run every batch size twice so first-call costs stay out of the windows."""
    with torch.inference_mode():
        for size in sorted(set(sizes)):
            for _ in range(2):
                model(torch.randn(size, *shape, device=device)).cpu()
    synchronize(device)


def bench_model(
    name: str, device: torch.device, batch_queue: type, args: argparse.Namespace
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Every mode at every client count; returns (parameter count, rows, queue stats).

    The modes of one client count take turns in ``args.rounds`` rounds, so a change in the
    machine's load during the run (other processes) affects them all alike.
    """
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().to(device).eval()
    warm_up(model, shape, device, [1, *args.clients, args.max_batch_size or 1])
    results, queue_stats = [], []
    for clients in args.clients:
        inputs = [torch.randn(1, *shape, device=device) for _ in range(clients)]
        samples = {mode: Sample() for mode in args.modes}
        per_round: dict[str, list[float]] = {mode: [] for mode in args.modes}
        totals = {
            mode: dict.fromkeys(("batches", "rows", "busy", "open"), 0.0) for mode in args.modes
        }
        for _ in range(args.rounds):
            for mode in args.modes:
                sample, stats = measure_mode(mode, model, inputs, device, batch_queue, args)
                samples[mode].add(sample)
                per_round[mode].append(sample.work / sample.seconds)
                if stats is not None:
                    total = totals[mode]
                    total["batches"] += stats["batches"]
                    total["rows"] += stats["batches"] * stats["mean_batch_size"]
                    total["busy"] += stats["busy_seconds"]
                    total["open"] += stats["open_seconds"]
        for mode in args.modes:
            summary = samples[mode].summary()
            results.append({"model": name, "mode": mode, "clients": clients, **summary,
                            "round_rps": per_round[mode]})  # fmt: skip
            note = ""
            if mode in QUEUE_MODES:
                total = totals[mode]
                mean_batch = total["rows"] / total["batches"] if total["batches"] else 0.0
                busy = total["busy"] / total["open"]
                queue_stats.append({"model": name, "mode": mode, "clients": clients,
                                    "batches": int(total["batches"]),
                                    "mean_batch_size": mean_batch,
                                    "runner_busy_fraction": busy})  # fmt: skip
                note = f"  mean batch {mean_batch:.1f}, runner busy {busy:.0%}"
            print(
                f"{name:12s} {mode:10s} clients={clients:3d}  {summary['throughput_rps']:10.1f} "
                f"req/s  p50 {summary['p50_ms']:8.2f} ms  p99 {summary['p99_ms']:8.2f} ms{note}",
                flush=True,
            )
    return sum(p.numel() for p in model.parameters()), results, queue_stats


def noop_run(batch_queue: type, kind: str, inputs: list[torch.Tensor], args: argparse.Namespace):
    """One no-op window: (us per request, process CPU us per request, context switches per
    request). CPU time and switches (getrusage: all threads of this process) cover the whole
    queue lifetime, divided by the requests it completed."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    queue = batch_queue(lambda x: x, max_batch_size=len(inputs), max_delay_ms=args.max_delay_ms)
    with queue:
        window = Window(args.warmup, args.seconds)
        if kind == "asyncio":
            sample = run_async_clients(queue.submit_async, inputs, window, rows=1)
        else:
            sample = run_clients(queue, inputs, window, rows=1)
    after = resource.getrusage(resource.RUSAGE_SELF)
    done = max(1, queue.stats()["requests"])
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / done
    switches = (after.ru_nvcsw + after.ru_nivcsw - before.ru_nvcsw - before.ru_nivcsw) / done
    return 1e6 / sample.summary()["throughput_rps"], cpu * 1e6, switches


# ---------------------------------------------------------------- floors: no queue at all


def floor_threads_run(clients: int, args: argparse.Namespace) -> float:
    """Microseconds per request of the cheapest closed loop of ``clients`` threads: no queue.

    A request of client i waits for a baton on its own lock and passes it to client i + 1
    (one baton goes round the ring). A blocking queue must wake each caller once per request
    to hand it its result, so under the GIL no such queue costs less than this. When the
    window ends the baton goes round once more, and each client leaves after passing it.
    """
    locks = [threading.Lock() for _ in range(clients)]
    for lock in locks:
        lock.acquire()

    def request(index: int) -> None:
        locks[index].acquire()
        locks[(index + 1) % clients].release()

    locks[0].release()  # the baton
    window = Window(args.warmup, args.seconds)
    sample = run_clients(request, list(range(clients)), window, rows=1)
    return 1e6 / sample.summary()["throughput_rps"]


def floor_asyncio_run(clients: int, args: argparse.Namespace, off_loop: bool) -> float:
    """Microseconds per request of the cheapest batching of ``clients`` asyncio tasks on one
    event loop: no queue. Each request is a future; once every client waits, one torch.cat
    of the inputs and one split into rows resolve them all, as any batching queue must.

    ``off_loop`` False: the batch runs on the event loop itself (the absolute floor, but a
    model would block the loop). True: a helper thread runs it and posts the results with one
    call_soon_threadsafe per batch, as a queue that never blocks the loop must: the floor for
    ``submit_async``. The difference is the price of two thread wake-ups per batch.
    """
    window = Window(args.warmup, args.seconds)
    pending: list[tuple[asyncio.Future, torch.Tensor]] = []
    cond = threading.Condition()  # guards pending when off_loop
    served = threading.Event()  # every client left: the helper thread may stop

    def take() -> list[tuple[asyncio.Future, torch.Tensor]]:
        batch = pending[:]
        pending.clear()
        return batch

    def results(batch: list[tuple[asyncio.Future, torch.Tensor]]) -> list[tuple[Any, Any]]:
        """Each future of ``batch`` with its row of the batch output (a batch of one is its
        own output, as in BatchQueue)."""
        if len(batch) == 1:
            return batch
        rows = torch.cat([x for _, x in batch]).split([1] * len(batch))
        return list(zip((future for future, _ in batch), rows, strict=True))

    def settle(items: list[tuple[asyncio.Future, torch.Tensor]]) -> None:
        for future, row in items:
            future.set_result(row)

    def helper() -> None:
        while True:
            with cond:
                while len(pending) < clients and not served.is_set():
                    if window.stop.is_set() and pending:
                        break  # the last, partial batch: its clients leave after it
                    cond.wait(0.01)
                if served.is_set():
                    return
                batch = take()
            batch[0][0].get_loop().call_soon_threadsafe(settle, results(batch))

    def submit(x: torch.Tensor) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if off_loop:
            with cond:
                pending.append((future, x))
                if len(pending) == clients:
                    cond.notify()
        else:
            pending.append((future, x))
            if len(pending) == clients:
                settle(results(take()))
        return future

    def flush() -> None:  # a client left: the others' last, partial batch
        if pending:
            settle(results(take()))

    inputs = [torch.zeros(1, 16) for _ in range(clients)]
    if not off_loop:
        sample = run_async_clients(submit, inputs, window, rows=1, on_leave=flush)
        return 1e6 / sample.summary()["throughput_rps"]
    worker = threading.Thread(target=helper, daemon=True)
    worker.start()
    try:
        sample = run_async_clients(submit, inputs, window, rows=1)
    finally:
        served.set()
        worker.join()
    return 1e6 / sample.summary()["throughput_rps"]


# Each floor: how it is measured, and which no-op queue figure it bounds from below.
FLOORS: dict[str, tuple[Callable[[int, argparse.Namespace], float], str]] = {
    "threads": (floor_threads_run, "threads"),
    "asyncio_off_loop": (lambda n, args: floor_asyncio_run(n, args, off_loop=True), "asyncio"),
    "asyncio_in_loop": (lambda n, args: floor_asyncio_run(n, args, off_loop=False), "asyncio"),
}


def bench_noop_overhead(batch_queue: type, args: argparse.Namespace) -> dict[str, Any]:
    """The queue's own cost with a no-op fn, in microseconds per request.

    closed_loop: N client threads each calling queue(x), so every request also pays for a
    thread wake-up; asyncio: N asyncio tasks on one event loop awaiting submit_async(x);
    pipelined: one thread submits bursts of 64 futures, then waits for them. For the first
    two it also reports the process CPU time and the context switches per request: what
    the time is spent on (Python work, or threads waking). Next to them, with the same
    client counts: the floors (FLOORS), what the same clients cost with no queue at all.
    """
    inputs = [torch.zeros(1, 16) for _ in range(max(args.clients))]
    per_request: dict[str, dict[str, float]] = {"threads": {}, "asyncio": {}}
    detail: dict[str, dict[str, dict[str, float]]] = {"threads": {}, "asyncio": {}}
    floors: dict[str, dict[str, float]] = {name: {} for name in FLOORS}
    for clients in args.clients:
        for kind in ("threads", "asyncio"):  # side by side, so both see the same load
            us, cpu_us, switches = noop_run(batch_queue, kind, inputs[:clients], args)
            per_request[kind][str(clients)] = us
            detail[kind][str(clients)] = {"cpu_us_per_request": cpu_us,
                                          "switches_per_request": switches}  # fmt: skip
            print(
                f"no-op        {kind:8s} clients={clients:3d}  {us:6.1f} us/request  "
                f"(process CPU {cpu_us:5.1f} us, {switches:4.2f} context switches per request)",
                flush=True,
            )
        for name, (measure, queue_kind) in FLOORS.items():
            floor = floors[name][str(clients)] = measure(clients, args)
            ratio = per_request[queue_kind][str(clients)] / floor
            print(f"floor        {name:16s} clients={clients:3d}  {floor:6.1f} us/request  "
                  f"(BatchQueue {queue_kind}: {ratio:4.2f}x this floor)", flush=True)  # fmt: skip

    burst = 64
    queue = batch_queue(lambda x: x, max_batch_size=burst, max_delay_ms=args.max_delay_ms)

    def submit_burst(x: torch.Tensor) -> None:
        for future in [queue.submit(x) for _ in range(burst)]:
            future.result()

    with queue:
        window = Window(args.warmup, args.seconds)
        summary = run_clients(submit_burst, inputs[:1], window, burst).summary()
    pipelined = 1e6 / summary["throughput_rps"]
    print(f"{'no-op':12s} pipelined submit, bursts of {burst}: {pipelined:6.1f} us/request")
    return {
        "closed_loop_us_per_request": per_request["threads"],
        "asyncio_us_per_request": per_request["asyncio"],
        "floor_us_per_request": floors,
        "closed_loop_detail": detail["threads"],
        "asyncio_detail": detail["asyncio"],
        "pipelined_us_per_request": pipelined,
    }


def bench_noop_baseline(batch_queue: type, args: argparse.Namespace) -> dict[str, Any]:
    """No-op cost of the baseline queue and of the one under test, client threads, taking
    turns per client count (so both see the same load); ratio < 1: the one under test is
    cheaper."""
    path = args.baseline_batch_queue_file
    baseline = load_module(path, "bench_baseline_batch_queue").BatchQueue
    inputs = [torch.zeros(1, 16) for _ in range(max(args.clients))]
    table: dict[str, dict[str, float]] = {}
    for clients in args.clients:
        runs: dict[str, list[float]] = {"tested": [], "baseline": []}
        for _ in range(2):  # alternating, best of two each
            runs["tested"].append(noop_run(batch_queue, "threads", inputs[:clients], args)[0])
            runs["baseline"].append(noop_run(baseline, "threads", inputs[:clients], args)[0])
        tested, base = min(runs["tested"]), min(runs["baseline"])
        table[str(clients)] = {"tested_us": tested, "baseline_us": base, "ratio": tested / base}
        print(
            f"no-op        threads  clients={clients:3d}  {tested:6.1f} us/request, baseline "
            f"{base:6.1f}: {tested / base:4.2f}x",
            flush=True,
        )
    return {"file": str(path), "threads_us_per_request": table}


def check_side_stream_callers(batch_queue: type, device: torch.device) -> dict[str, Any]:
    """Correctness on an accelerator with streams: callers whose inputs are still being
    written on a side stream (behind a chain of large matmuls) get the right outputs, from
    the blocking call (the caller runs the batch) and from submit (the worker runs it)."""
    if device.type == "cpu":
        return {"checked": False, "reason": "the host has no streams"}
    side = torch.Stream(device=device)
    big = torch.randn(2048, 2048, device=device)
    # `big` is written on the default stream and read on `side`: finish it first (unordered,
    # garbage in it could be NaN, and NaN * 0 would fail the check spuriously)
    torch.accelerator.synchronize()
    ok = True
    with batch_queue(lambda x: x * 2, max_batch_size=8, max_delay_ms=1) as queue:
        for k in range(8):
            with torch.inference_mode(), side:  # the caller's current stream is `side`
                delay = big
                for _ in range(8):
                    delay = delay @ big * 1e-3
                x = (delay[:1, :16] * 0 + k).contiguous()  # written last, on `side`
                out = queue(x) if k % 2 else queue.submit(x).result(timeout=60)
                ok &= bool((out.cpu() == 2 * k).all())
    print(f"side-stream callers: {'correct' if ok else 'WRONG OUTPUTS'}", flush=True)
    return {"checked": True, "correct": ok}


def check_host_outputs(batch_queue: type, device: torch.device) -> dict[str, Any]:
    """Correctness of outputs copied to the host (``output_device="cpu"``) while the runner
    launches later batches: thread and asyncio clients share a queue of small batches, fn
    writes its output last on the device (behind a chain of matmuls), and every row must come
    back exactly as sent, doubled."""
    if device.type == "cpu":
        return {"checked": False, "reason": "outputs are on the host already"}
    big = torch.randn(2048, 2048, device=device)

    def late_output(x: torch.Tensor) -> torch.Tensor:
        delay = big
        for _ in range(16):  # milliseconds of device work: a copy read early reads stale rows
            delay = delay @ big * 1e-3
        return x * 2 + delay.sum() * 0  # written after the chain

    clients, requests = 16, 40
    width = 16384  # 64 KiB per row: every batch output is copied to the host without blocking
    wrong = []

    def check(value: float, out: torch.Tensor) -> None:
        if out.device.type != "cpu" or not bool((out == 2 * value).all()):
            wrong.append(value)

    def thread_client(index: int) -> None:
        with torch.inference_mode():
            for k in range(requests):
                value = float(index * 1000 + k)
                check(value, queue(torch.full((1, width), value, device=device)))

    async def async_client(index: int) -> None:
        for k in range(requests):
            value = float(-index * 1000 - k - 1)
            x = torch.full((1, width), value, device=device)
            check(value, await queue.submit_async(x))

    async def async_clients() -> None:
        with torch.inference_mode():
            await asyncio.gather(*(async_client(i) for i in range(clients)))

    with batch_queue(late_output, max_batch_size=8, max_delay_ms=1, output_device="cpu") as queue:
        threads = [threading.Thread(target=thread_client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        asyncio.run(async_clients())
        for t in threads:
            t.join()
    checked = 2 * clients * requests
    verdict = "correct" if not wrong else f"WRONG OUTPUTS for {len(wrong)} requests"
    print(f"host outputs of batches in flight: {verdict} ({checked} requests)", flush=True)
    return {"checked": True, "correct": not wrong, "requests": checked, "wrong": len(wrong)}


def _queue_pairs(results: list[dict[str, Any]], field: str) -> Iterator[tuple[Any, ...]]:
    """(model, clients, "<queue mode>_vs_<other>", queue's field, other's field) for each
    queue mode row and the locked and offline rows beside it."""
    by_key = {(r["model"], r["mode"], r["clients"]): r[field] for r in results}
    for (model, mode, clients), value in by_key.items():
        if mode not in QUEUE_MODES:
            continue
        for other in ("locked", "offline"):
            beside = by_key.get((model, other, clients))
            if beside is not None:
                yield model, str(clients), f"{mode}_vs_{other}", value, beside


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Throughput of each queue mode over locked and offline, pooled over the rounds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, clients, name, rps, other_rps in _queue_pairs(results, "throughput_rps"):
        out.setdefault(model, {}).setdefault(clients, {})[name] = rps / other_rps
    return out


def round_ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The same ratios round by round: each round runs the modes back to back, so a round's
    ratio compares windows a second or two apart. Their median resists a machine whose speed
    drifts during the run (the one-client rows on a shared host moved by 0.66-1.12x between
    runs), and their spread shows how far one window can be trusted."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model, clients, name, rounds, other_rounds in _queue_pairs(results, "round_rps"):
        paired = [a / b for a, b in zip(rounds, other_rounds, strict=True) if b > 0]
        out.setdefault(model, {}).setdefault(clients, {})[name] = {
            "median": statistics.median(paired),
            "min": min(paired),
            "max": max(paired),
            "rounds": paired,
        }
    return out


# ---------------------------------------------------------------- output


def plot(path: Path, results: list[dict[str, Any]], device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for mode in MODES:
            rows = [r for r in results if r["model"] == model and r["mode"] == mode]
            if rows:
                ax.plot([r["clients"] for r in rows], [r["throughput_rps"] for r in rows],
                        marker="o", label=mode)  # fmt: skip
        ax.set(title=f"{model} on {device}", xlabel="clients", ylabel="requests/s")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_ratios(
    table: dict[str, dict[str, dict[str, float]]],
    by_round: dict[str, dict[str, dict[str, Any]]],
) -> None:
    print("\nratios (throughput of batchqueue (threads) or asyncio / other mode, same run;")
    print("        pooled over the rounds, then the median and range of the per-round ratios):")
    for model, per_clients in table.items():
        for clients, entry in per_clients.items():
            parts = []
            for name, value in entry.items():
                spread = by_round[model][clients][name]
                parts.append(f"{name} {value:5.2f}x (median {spread['median']:.2f}x, "
                             f"{spread['min']:.2f}-{spread['max']:.2f}x)")  # fmt: skip
            print(f"  {model:12s} clients={clients:>3s}  " + "  ".join(parts))


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu")
    parser.add_argument("--clients", default="1,8,32,64", help="comma-separated thread counts")
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--plot", type=Path, help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="short windows (smoke test)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)}")  # fmt: skip
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument("--seconds", type=float, help="measured time per mode (default 2)")
    parser.add_argument("--rounds", type=int,
                        help="modes take turns this often, splitting --seconds (default 3); "
                             "more rounds steady the per-round median on a noisy host")  # fmt: skip
    parser.add_argument("--warmup", type=float, help="unmeasured seconds first (default 0.5)")
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--max-batch-size", type=int, help="default: the client count")
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="sys.setswitchinterval for the run (default: Python's, 5 ms); a "
        "probe of how much GIL hand-offs between threads cost",
    )
    parser.add_argument("--no-overhead", action="store_true", help="skip the no-op overhead")
    parser.add_argument("--batch-queue-file", type=Path, help="path of batch_queue.py to use")
    parser.add_argument("--baseline-batch-queue-file", type=Path,
                        help="another batch_queue.py (e.g. an older version) whose no-op cost "
                             "is measured side by side with the one under test")  # fmt: skip
    parser.add_argument("--tree", type=Path, help="patched PyTorch tree holding BatchQueue")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (0.6 if args.quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 0.3)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        raise UsageError("--seconds must be > 0, --warmup >= 0 and --rounds >= 1")
    try:
        args.clients = [int(c) for c in args.clients.split(",")]
    except ValueError:
        raise UsageError(f"--clients {args.clients!r}: give integers like 1,8,32,64") from None
    if not args.clients or min(args.clients) < 1:
        raise UsageError("--clients: every client count must be >= 1")
    if args.baseline_batch_queue_file and not args.baseline_batch_queue_file.is_file():
        raise UsageError(
            f"--baseline-batch-queue-file {args.baseline_batch_queue_file}: no such file"
        )
    args.models = split_choices("--models", args.models, MODELS)
    args.modes = split_choices("--modes", args.modes, MODES)
    return args


def split_choices(flag: str, text: str, allowed: Any) -> list[str]:
    chosen = [c for c in text.split(",") if c]
    unknown = [c for c in chosen if c not in allowed]
    if unknown or not chosen:
        raise UsageError(f"{flag}: unknown {unknown or text!r}; choose from {', '.join(allowed)}")
    return chosen


def check_environment(args: argparse.Namespace) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch.cuda.is_available() is False on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: torch.backends.mps.is_available() is False here")
    if device.type == "mps" and "threads" in args.modes:
        print("note: mode 'threads' is skipped on mps (unlocked threads crash stock MPS)")
        args.modes = [m for m in args.modes if m != "threads"]
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib, "
            "or leave out --plot (the JSON has every figure)"
        )
    return device


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        device = check_environment(args)
        batch_queue, source = find_batch_queue(args.batch_queue_file, args.tree)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} intra-op "
          f"threads, BatchQueue from {source}", flush=True)  # fmt: skip
    started = time.perf_counter()
    streams_check = check_side_stream_callers(batch_queue, device)
    host_check = check_host_outputs(batch_queue, device)
    results: list[dict[str, Any]] = []
    queue_stats: list[dict[str, Any]] = []
    parameters: dict[str, int] = {}
    for name in args.models:
        parameters[name], rows, stats = bench_model(name, device, batch_queue, args)
        results += rows
        queue_stats += stats
    overhead = None if args.no_overhead else bench_noop_overhead(batch_queue, args)
    if overhead is not None and args.baseline_batch_queue_file is not None:
        overhead["baseline"] = bench_noop_baseline(batch_queue, args)
    table = ratios(results)
    by_round = round_ratios(results)
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "intra_op_threads": torch.get_num_threads(),
        "batch_queue_source": source,
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "max_delay_ms": args.max_delay_ms,
            "max_batch_size": args.max_batch_size or "clients",
            "switch_interval_ms": sys.getswitchinterval() * 1000,
            "quick": args.quick,
        },
        "model_parameters": parameters,
        "results": results,
        "ratios": table,
        "round_ratios": by_round,
        "batchqueue_stats": queue_stats,
        "noop_overhead": overhead,
        "side_stream_check": streams_check,
        "host_output_check": host_check,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_ratios(table, by_round)
    print(f"wrote {args.json} ({report['wall_seconds']} s)")
    if streams_check.get("correct") is False or host_check.get("correct") is False:
        print("error: BatchQueue handed out wrong outputs (see above)", file=sys.stderr)
        return 1
    if args.plot is not None:
        plot(args.plot, results, str(device))
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
