"""Hand-off checks (child side): a tensor made by one thread or stream and read by another.

Every case compares what the reader got with a golden run of the same work on one thread, on
the same device. A reader that touches a tensor before its producer's work ran sees stale
memory (here: NaN, or the previous contents of a reused block), which differs from the golden
output by far more than any tolerance.

Why these exist: a device that gives threads their own queues (MPS streams, CUDA streams) orders
nothing between them unless the backend tracks hand-offs (our MPS series) or the program orders
them (CUDA: wait_stream/events/record_stream). Programs that are correct on a single-stream
torch (`future.result().cpu()` on the main thread, a DataLoader pin-memory thread, a BatchQueue
input made by an asynchronous op) must stay correct.

The device operations live behind HandoffOps so that the project's tests can run the same case
code against a fake asynchronous device whose reader does not wait for its producer, and prove
the cases catch that (tests/test_concurrency_handoff.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from cs_batch_queue import load_batch_queue
from cs_checker import as_cpu_tuple, compare, golden_outputs, run_parallel_check, summarize
from cs_config import BATCH_QUEUE_MAX_BATCH, BATCH_QUEUE_MAX_DELAY_MS, HANDOFF_CASE_NAMES
from cs_report import Section
from cs_streams import missing_per_thread_api, missing_stream_api, mps_per_thread_mode
from cs_workloads import build_workload, synchronize
from torch import nn

PRODUCER_THREADS = 4
HANDOFFS_PER_ITERATION = 8  # hand-offs per case = this x the profile's iterations
HEAVY_STEPS = 24
# Square size of the producers' work: big enough on a GPU that the reader arrives while the
# producer's queue is still busy; small on CPU, where every op finishes before it returns.
HEAVY_SIZE = {"cuda": 2048, "mps": 1024, "cpu": 96}
CUDA_SLEEP_CYCLES = 20_000_000  # ~10 ms of GPU time queued ahead of each producer's math
QUEUE_CLIENTS = 8
ROW_WIDTH = 64  # the BatchQueue and DataLoader models read rows this wide
RESULT_TIMEOUT_S = 120.0
DATALOADER_BATCH = 8


# --------------------------------------------------------------------------- judging


@dataclass
class Tally:
    """Hand-offs compared with their golden outputs (thread-safe: queue clients add too)."""

    checked: int = 0
    mismatches: int = 0
    identical: int = 0
    worst_abs_diff: float = 0.0
    first_mismatch: str | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(
        self, label: str, outputs: Sequence[torch.Tensor], goldens: Sequence[torch.Tensor]
    ) -> None:
        result = compare(outputs, goldens)
        with self._lock:
            self.checked += 1
            self.identical += result.identical
            self.worst_abs_diff = max(self.worst_abs_diff, result.max_abs_diff)
            if not result.matches:
                self.mismatches += 1
                self.first_mismatch = self.first_mismatch or label

    def figures(self) -> dict[str, Any]:
        worst = self.worst_abs_diff
        return {
            "handoffs_checked": self.checked,
            "mismatches": self.mismatches,
            "identical": self.identical,
            "worst_abs_diff": worst if math.isfinite(worst) else "inf",
        }


def judge(sec: Section, tally: Tally, expected: int, what: str = "hand-offs") -> None:
    """Fail the section on any mismatch or on fewer comparisons than planned."""
    figures = tally.figures()
    sec.figures.update(figures)
    sec.check(tally.checked == expected, f"{what}: compared {tally.checked}, expected {expected}")
    sec.check(
        tally.mismatches == 0,
        f"{what}: {tally.mismatches} of {tally.checked} differ from the golden output "
        f"(first: {tally.first_mismatch}, worst abs diff {figures['worst_abs_diff']}): "
        "a reader saw a tensor before its producer's work had run",
    )


# --------------------------------------------------------------------------- device ops


class HandoffOps:
    """What the cases do on the device; tests replace it with a fake asynchronous device."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.size = HEAVY_SIZE[device]
        gen = torch.Generator().manual_seed(2024)
        weight = torch.randn(self.size, self.size, generator=gen) / math.sqrt(self.size)
        self.weight = weight.to(device)
        self.module: Any = torch.cuda if device == "cuda" else torch.mps

    # -- tensors
    def input(self, k: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(100 + k)
        return torch.randn(self.size, self.size, generator=gen).to(self.device)

    def produce(self, x: torch.Tensor) -> torch.Tensor:
        """Queued work that takes a while on a GPU; the result depends on every step."""
        if self.device == "cuda":
            torch.cuda._sleep(CUDA_SLEEP_CYCLES)
        for _ in range(HEAVY_STEPS):
            x = torch.tanh(x @ self.weight + 0.25)
        return x

    def produce_into(self, out: torch.Tensor, x: torch.Tensor) -> None:
        out.copy_(self.produce(x))

    def overwrite(self, x: torch.Tensor) -> None:
        """An in-place write of the whole tensor (NaN), queued on the current stream."""
        x.fill_(math.nan)

    def sentinel_like(self, x: torch.Tensor) -> torch.Tensor:
        """A NaN-filled tensor, written before anything else is queued."""
        out = torch.full_like(x, math.nan)
        self.synchronize()
        return out

    def consume(self, y: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
        """The reader's first touch, no synchronize: `.cpu()` for even k, `.item()` for odd k."""
        if k % 2 == 0:
            return (y.cpu(),)
        return (torch.tensor(y[k % y.shape[0], -1].item(), dtype=y.dtype),)

    def golden(self, k: int) -> tuple[torch.Tensor, ...]:
        y = self.produce(self.input(k))
        self.synchronize()
        return self.consume(y, k)

    def synchronize(self) -> None:
        synchronize(self.device)

    # -- streams
    @property
    def has_streams(self) -> bool:
        return self.device != "cpu"

    def stream_api_gap(self) -> str | None:
        if not self.has_streams:
            return "the CPU device has no streams"
        missing = missing_stream_api(self.device)
        return f"torch.{self.device} lacks the stream API {missing}" if missing else None

    def program_orders_handoffs(self) -> bool:
        """CUDA semantics (the program orders hand-offs) vs MPS's tracking backend."""
        if self.device == "cuda":
            return True
        return os.environ.get("PYTORCH_MPS_STREAM_TRACKING") == "0"

    def new_stream(self) -> Any:
        return self.module.Stream()

    def current_stream(self) -> Any:
        return self.module.current_stream()

    def stream_scope(self, stream: Any) -> contextlib.AbstractContextManager[Any]:
        return self.module.stream(stream)

    @staticmethod
    def stream_id(stream: Any) -> int:
        return int(stream.stream_id)

    @staticmethod
    def wait_stream(waiter: Any, producer: Any) -> None:
        waiter.wait_stream(producer)

    @staticmethod
    def record_stream(tensor: torch.Tensor, stream: Any) -> None:
        tensor.record_stream(stream)

    def per_thread_mode_gap(self) -> str | None:
        if self.device != "mps":
            return f"{self.device} has no per-thread stream mode (threads set streams themselves)"
        missing = missing_per_thread_api()
        return f"torch.mps lacks the per-thread stream mode {missing}" if missing else None

    def per_thread_mode(self) -> contextlib.AbstractContextManager[Any]:
        """MPS per-thread mode on (each new non-main thread gets a worker stream), restored."""
        return mps_per_thread_mode(self.device)


# --------------------------------------------------------------------------- worker -> main

StreamScope = Callable[[], contextlib.AbstractContextManager[Any]]


class StreamIds:
    """The ids of the streams that worker threads ran on (thread-safe)."""

    def __init__(self, ops: HandoffOps) -> None:
        self.ops = ops
        self.ids: set[int] = set()
        self._lock = threading.Lock()

    def note_current(self) -> None:
        if self.ops.has_streams:
            with self._lock:
                self.ids.add(self.ops.stream_id(self.ops.current_stream()))

    def check_crossed(self, sec: Section, who: str, untested: str) -> None:
        """Per-thread mode must have put the workers on worker streams."""
        sec.check(
            bool(self.ids) and 0 not in self.ids,
            f"per-thread mode left {who} on the default stream (ids {sorted(self.ids)}): "
            f"no {untested} was tested",
        )


def produce_on_workers_consume_on_main(
    ops: HandoffOps,
    count: int,
    *,
    producer_scope: StreamScope | None = None,
    before_consume: Callable[[torch.Tensor, Any], None] | None = None,
) -> tuple[Tally, StreamIds]:
    """ThreadPoolExecutor producers; the main thread reads each result as soon as it is ready.

    producer_scope() wraps each producer's work and yields the stream it used (or None);
    before_consume(y, stream) is the ordering a program owes (CUDA), run on the main thread.
    Returns the tally and the streams the producers ran on.
    """
    goldens = [ops.golden(k) for k in range(count)]
    inputs = [ops.input(k) for k in range(count)]
    stream_ids = StreamIds(ops)
    scope = producer_scope or (lambda: contextlib.nullcontext(None))

    def produce(k: int) -> tuple[torch.Tensor, Any]:
        with scope() as stream:
            stream_ids.note_current()
            return ops.produce(inputs[k]), stream

    tally = Tally()
    with ThreadPoolExecutor(PRODUCER_THREADS, thread_name_prefix="handoff-producer") as pool:
        futures = [pool.submit(produce, k) for k in range(count)]
        for k, future in enumerate(futures):
            y, stream = future.result(timeout=RESULT_TIMEOUT_S)
            if before_consume is not None:
                before_consume(y, stream)
            tally.add(f"hand-off {k}", ops.consume(y, k), goldens[k])
    return tally, stream_ids


def _count(params: dict[str, Any]) -> int:
    return HANDOFFS_PER_ITERATION * int(params["profile"]["iterations"])


def executor_result_to_main(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """Threads on their default stream; main reads `future.result()` with .cpu()/.item()."""
    count = _count(params)
    tally, ids = produce_on_workers_consume_on_main(ops, count)
    sec.figures["producer_stream_ids"] = sorted(ids.ids)
    judge(sec, tally, count)


def per_thread_mode_to_main(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """MPS per-thread mode: producers on their own worker streams, no events; the backend
    tracks the hand-off, so main's reads must be correct."""
    gap = ops.per_thread_mode_gap()
    if gap:
        sec.mark_not_applicable(gap)
        return
    count = _count(params)
    with ops.per_thread_mode():
        tally, ids = produce_on_workers_consume_on_main(ops, count)
    sec.figures["producer_stream_ids"] = sorted(ids.ids)
    ids.check_crossed(sec, "producers", "hand-off between streams")
    judge(sec, tally, count)


def explicit_stream_to_main(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """Each producer opts into a pool stream. MPS: no events (the backend tracks). CUDA: the
    program orders the hand-off (wait_stream both ways, record_stream on the reader's stream)."""
    gap = ops.stream_api_gap()
    if gap:
        sec.mark_not_applicable(gap)
        return
    ordered = ops.program_orders_handoffs()

    @contextlib.contextmanager
    def own_stream() -> Iterator[Any]:
        stream = ops.new_stream()
        if ordered:  # the inputs were made on the default stream
            ops.wait_stream(stream, ops.current_stream())
        with ops.stream_scope(stream):
            yield stream

    def order_for_reader(y: torch.Tensor, stream: Any) -> None:
        reader = ops.current_stream()
        ops.wait_stream(reader, stream)
        ops.record_stream(y, reader)

    count = _count(params)
    tally, ids = produce_on_workers_consume_on_main(
        ops, count, producer_scope=own_stream, before_consume=order_for_reader if ordered else None
    )
    sec.figures.update(
        producer_stream_ids=sorted(ids.ids),
        ordering="wait_stream + record_stream by the program" if ordered else "backend tracking",
    )
    sec.check(0 not in ids.ids, f"a producer ran on the default stream (ids {sorted(ids.ids)})")
    judge(sec, tally, count)


def in_place_writes_across_threads(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """In-place writes to tensors another thread's stream uses, no events, no synchronize.

    Workers fill tensors made on main (`out.copy_(result)`; main must read the workers'
    values), then main overwrites, in place, inputs that workers are still reading (`fill_`;
    the workers must have read the old values). With per-thread streams where the device has
    them (MPS: the backend orders known writes), else threads on the default stream.
    """
    count = _count(params)
    goldens = [ops.golden(k) for k in range(count)]
    use_mode = ops.per_thread_mode_gap() is None
    mode = ops.per_thread_mode() if use_mode else contextlib.nullcontext()
    stream_ids = StreamIds(ops)

    writes, reads = Tally(), Tally()
    with mode, ThreadPoolExecutor(PRODUCER_THREADS, thread_name_prefix="handoff-writer") as pool:
        inputs = [ops.input(k) for k in range(count)]
        outs = [ops.sentinel_like(x) for x in inputs]  # made (and finished) on main

        def fill(k: int) -> None:
            stream_ids.note_current()
            ops.produce_into(outs[k], inputs[k])

        fills = [pool.submit(fill, k) for k in range(count)]
        for k, future in enumerate(fills):
            future.result(timeout=RESULT_TIMEOUT_S)
            writes.add(f"worker's write {k}", ops.consume(outs[k], k), goldens[k])

        inputs = [ops.input(k) for k in range(count)]
        queued = [threading.Event() for _ in range(count)]

        def read(k: int) -> Any:
            stream_ids.note_current()
            y = ops.produce(inputs[k])  # queued, still reading inputs[k]
            queued[k].set()
            return y

        futures = [pool.submit(read, k) for k in range(count)]
        for k in range(count):
            if not queued[k].wait(RESULT_TIMEOUT_S):
                raise TimeoutError(f"reader {k} did not queue its work within {RESULT_TIMEOUT_S} s")
            ops.overwrite(inputs[k])  # in place, while the reader's work may still run
        for k, future in enumerate(futures):
            y = future.result(timeout=RESULT_TIMEOUT_S)
            reads.add(f"read {k}", ops.consume(y, k), goldens[k])
    judge(sec, writes, count, "workers' in-place writes read on main")
    judge(sec, reads, count, "workers' reads before main's in-place writes")
    sec.figures.update(
        handoffs_checked=writes.checked + reads.checked,
        mismatches=writes.mismatches + reads.mismatches,
        write_mismatches=writes.mismatches,
        read_mismatches=reads.mismatches,
        writer_stream_ids=sorted(stream_ids.ids),
        per_thread_mode=use_mode,
    )
    if use_mode:
        stream_ids.check_crossed(sec, "writers", "write across streams")


# --------------------------------------------------------------------------- unsafe control


def missing_wait_is_detected(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """CONTROL: a hand-off between two explicit streams WITHOUT the wait the program owes.

    A producer thread queues heavy work writing into a NaN-filled tensor on stream A; the main
    thread reads it on stream B at once. On CUDA (and MPS with PYTORCH_MPS_STREAM_TRACKING=0)
    nothing orders B after A, so the reader must see stale values and the comparison must
    report mismatches; else the hand-off checks have no teeth. The same hand-off with the wait
    must match (else the check flags correct programs).
    """
    gap = ops.stream_api_gap()
    if gap:
        sec.mark_not_applicable(gap)
        return
    if not ops.program_orders_handoffs():
        sec.fail(
            "the MPS backend tracks hand-offs in this process, so an unordered hand-off "
            "cannot be shown: run this check with PYTORCH_MPS_STREAM_TRACKING=0 in the child"
        )
        return
    rounds = max(4, int(params["profile"]["iterations"]))
    unordered, ordered = Tally(), Tally()
    for k in range(rounds):
        x, golden = ops.input(k), ops.golden(k)
        unordered.add(f"round {k}", _handoff_between_streams(ops, x, k, wait=False), golden)
        ops.synchronize()
        ordered.add(f"round {k}", _handoff_between_streams(ops, x, k, wait=True), golden)
        ops.synchronize()
    sec.figures.update(
        rounds=rounds,
        mismatches_detected=unordered.mismatches,
        ordered_mismatches=ordered.mismatches,
    )
    sec.check(
        unordered.mismatches > 0,
        "the hand-off check did NOT detect a read on stream B of work still queued on "
        "stream A (0 mismatches): the hand-off checks have no teeth here",
    )
    sec.check(
        ordered.mismatches == 0,
        f"{ordered.mismatches} of {rounds} hand-offs WITH wait_stream differ: the check is wrong",
    )


def _handoff_between_streams(
    ops: HandoffOps, x: torch.Tensor, k: int, *, wait: bool
) -> tuple[torch.Tensor, ...]:
    out = ops.sentinel_like(x)
    producer_stream, reader_stream = ops.new_stream(), ops.new_stream()
    queued = threading.Event()
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            with ops.stream_scope(producer_stream):
                ops.produce_into(out, x)
        except BaseException as exc:  # re-raised on the main thread
            errors.append(exc)
        finally:
            queued.set()

    thread = threading.Thread(target=producer, name="handoff-unordered-producer", daemon=True)
    thread.start()
    if not queued.wait(timeout=RESULT_TIMEOUT_S):
        raise TimeoutError("the producer thread never queued its work")
    thread.join(timeout=RESULT_TIMEOUT_S)
    if errors:
        raise errors[0]
    with ops.stream_scope(reader_stream):
        if wait:
            ops.wait_stream(reader_stream, producer_stream)
        return ops.consume(out, k)


# --------------------------------------------------------------------------- BatchQueue


def _row_model(device: str) -> nn.Module:
    torch.manual_seed(31)
    model = nn.Sequential(nn.Linear(ROW_WIDTH, 128), nn.ReLU(), nn.Linear(128, 16))
    return model.to(device).eval()


def queue_input_from_async_op(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """Client threads submit a row that an asynchronous op of theirs is still computing; the
    queue's worker batches it and each client reads its slice."""
    queue_cls, source = load_batch_queue(params.get("batch_queue_file"))
    sec.figures["source"] = source
    if queue_cls is None:
        sec.mark_not_applicable(source)
        return
    model = _row_model(ops.device)
    inputs = [ops.input(k) for k in range(2 * QUEUE_CLIENTS)]

    def make_row(k: int) -> torch.Tensor:
        return ops.produce(inputs[k])[:1, :ROW_WIDTH]  # a view of queued work

    with torch.inference_mode():
        goldens = [(model(make_row(k)).cpu(),) for k in range(len(inputs))]
    ops.synchronize()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    per_client = int(params["profile"]["batch_queue_requests_per_client"])
    tally, errors = Tally(), []
    with queue_cls(
        forward, max_batch_size=BATCH_QUEUE_MAX_BATCH, max_delay_ms=BATCH_QUEUE_MAX_DELAY_MS
    ) as queue:

        def client(cid: int) -> None:
            try:
                for j in range(per_client):
                    k = (cid + j) % len(inputs)
                    with torch.inference_mode():
                        row = make_row(k)
                    out = queue.submit(row).result(timeout=RESULT_TIMEOUT_S)
                    tally.add(f"client {cid} request {j}", (out.cpu(),), goldens[k])
            except Exception as exc:
                errors.append(f"client {cid}: {type(exc).__name__}: {exc}")

        hung = _run_threads(QUEUE_CLIENTS, client)
    sec.check(not errors, f"{len(errors)} clients raised; first: {errors[:1]}")
    sec.check(hung == 0, f"{hung} clients never finished")
    judge(sec, tally, QUEUE_CLIENTS * per_client, "queue results")


def _run_threads(count: int, target: Callable[[int], None]) -> int:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RESULT_TIMEOUT_S)
    return sum(thread.is_alive() for thread in threads)


# --------------------------------------------------------------------------- DataLoader


class HandoffDataset(torch.utils.data.Dataset):
    """Deterministic rows; defined at module level so spawned workers can unpickle it."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(5000 + index)
        return torch.randn(ROW_WIDTH, generator=gen)


def dataloader_pin_memory(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """DataLoader(num_workers=2, spawn, pin_memory=True) feeding a model on the device; the
    batches cross the pin-memory thread and reach the device with non_blocking copies."""
    device = ops.device
    dataset = HandoffDataset(DATALOADER_BATCH * 2 * int(params["profile"]["iterations"]))
    model = _row_model(device)
    batches = [
        torch.stack([dataset[i] for i in range(start, start + DATALOADER_BATCH)])
        for start in range(0, len(dataset), DATALOADER_BATCH)
    ]
    with torch.inference_mode():
        goldens = [(model(batch.to(device)).cpu(),) for batch in batches]
    ops.synchronize()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=DATALOADER_BATCH,
        num_workers=2,
        multiprocessing_context="spawn",
        pin_memory=True,
    )
    outputs = []
    with torch.inference_mode():
        for batch in loader:
            outputs.append(model(batch.to(device, non_blocking=True)))
    tally = Tally()
    for index, output in enumerate(outputs):
        golden = goldens[index] if index < len(goldens) else ()
        tally.add(f"batch {index}", (output.cpu(),), golden)
    sec.figures["batches"] = len(outputs)
    judge(sec, tally, len(batches), "batches")


# --------------------------------------------------------------------------- global lock


def global_lock_program(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """What users do today: every thread runs the model under one lock, reads outside it."""
    workload = build_workload("mlp", ops.device)
    lock = threading.Lock()

    def locked_call(x: torch.Tensor) -> torch.Tensor:
        with lock:
            return workload.call(x)

    goldens = golden_outputs(workload.call, workload.inputs, torch.inference_mode)
    ops.synchronize()
    per_count = run_parallel_check(
        locked_call,
        workload.inputs,
        goldens,
        thread_counts=params["profile"]["thread_counts"],
        iterations=params["profile"]["iterations"],
        mode=torch.inference_mode,
    )
    totals = summarize(per_count)
    sec.figures.update(totals=totals, per_thread_count=per_count)
    for entry in per_count:
        label = f"{entry['threads']} threads"
        sec.check(entry["mismatches"] == 0, f"{label}: {entry['mismatches']} outputs differ")
        sec.check(entry["error_count"] == 0, f"{label}: raised: {entry['errors'][:1]}")
        sec.check(entry["hung_threads"] == 0, f"{label}: {entry['hung_threads']} threads hung")
        sec.check(
            entry["outputs_checked"] == entry["expected_outputs"],
            f"{label}: checked {entry['outputs_checked']} of {entry['expected_outputs']}",
        )


# --------------------------------------------------------------------------- autograd


def autograd_backward_on_worker(ops: HandoffOps, sec: Section, params: dict[str, Any]) -> None:
    """Backward started on worker threads; the main thread reads the gradients.

    Three ways: forward+grad on the worker; forward on main, grad on the worker; and
    `loss.backward()` on the worker into a private replica's `.grad`.
    """
    device = ops.device
    torch.manual_seed(55)
    model = nn.Sequential(nn.Linear(ROW_WIDTH, 256), nn.Tanh(), nn.Linear(256, 8)).to(device)
    params_list = list(model.parameters())
    count = _count(params)
    gen = torch.Generator().manual_seed(66)
    inputs = [torch.randn(32, ROW_WIDTH, generator=gen).to(device) for _ in range(count)]

    def loss_of(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return (net(x) ** 2).mean()

    def grads(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(loss_of(model, x), params_list)

    goldens = [as_cpu_tuple(grads(x)) for x in inputs]
    ops.synchronize()

    def backward_into_replica(x: torch.Tensor) -> list[torch.Tensor]:
        replica = copy.deepcopy(model)
        loss_of(replica, x).backward()
        return [p.grad for p in replica.parameters() if p.grad is not None]

    tally = Tally()
    with ThreadPoolExecutor(PRODUCER_THREADS, thread_name_prefix="handoff-backward") as pool:
        whole = [pool.submit(grads, x) for x in inputs]
        losses = [loss_of(model, x) for x in inputs]  # forward on main
        split = [pool.submit(torch.autograd.grad, loss, params_list) for loss in losses]
        replicas = [pool.submit(backward_into_replica, x) for x in inputs]
        for name, futures in (
            ("forward+grad on worker", whole),
            ("grad on worker of main's forward", split),
            ("backward() on worker", replicas),
        ):
            for k, future in enumerate(futures):
                result = future.result(timeout=RESULT_TIMEOUT_S)
                tally.add(f"{name}, input {k}", as_cpu_tuple(result), goldens[k])
    judge(sec, tally, 3 * count, "gradients")


# --------------------------------------------------------------------------- registry

HandoffCase = Callable[[HandoffOps, Section, dict[str, Any]], None]

HANDOFF_CASES: dict[str, HandoffCase] = {
    "executor_result_to_main": executor_result_to_main,
    "queue_input_from_async_op": queue_input_from_async_op,
    "dataloader_pin_memory": dataloader_pin_memory,
    "global_lock_program": global_lock_program,
    "autograd_backward_on_worker": autograd_backward_on_worker,
    "in_place_writes_across_threads": in_place_writes_across_threads,
    "per_thread_mode_to_main": per_thread_mode_to_main,
    "explicit_stream_to_main": explicit_stream_to_main,
    "missing_wait_is_detected": missing_wait_is_detected,
}
assert tuple(HANDOFF_CASES) == HANDOFF_CASE_NAMES, "cs_config.HANDOFF_CASE_NAMES is stale"
