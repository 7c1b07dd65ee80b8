"""Stream-semantics checks for devices with a stream API (child side).

The same checks run on CUDA (torch.cuda) and on MPS (torch.mps of our wheel); where the two
backends promise different things the check says so and tests each honestly:

* Both: every thread starts on the default stream (id 0) and uses another stream only when it
  opts in (`stream(s)`, `set_stream(s)`, a pool stream from `Stream()`). The current stream is
  thread-local.
* MPS (our wheel) also has a per-thread mode (`torch.mps.set_per_thread_streams(True)`, or
  PYTORCH_MPS_PER_THREAD_STREAMS=1): each new non-main thread gets its own worker stream. The
  per-thread check turns it on, and restores the previous mode, to test it. A torch.mps without
  that mode (stock torch, upstream 2.15) makes that one check not applicable (a failure under
  --require-patched; the parent decides, see test_streams.py).
* Hand-offs between streams: our MPS backend orders them itself; on CUDA the program must
  (wait_stream/events/record_stream). These checks always order explicitly, so they hold for
  both; cs_handoff.py tests the unordered hand-offs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from cs_report import Section

STREAM_API_NAMES = ("Stream", "current_stream", "default_stream", "set_stream", "stream")
PER_THREAD_API_NAMES = ("set_per_thread_streams", "per_thread_streams")
WORKER_THREADS = 16  # fewer than the 32 worker streams of an MPS or CUDA pool


def missing_stream_api(device: str) -> list[str]:
    """Names of the stream API that this torch lacks for `device` (empty: complete)."""
    module = torch.cuda if device == "cuda" else torch.mps
    missing = [name for name in STREAM_API_NAMES if not hasattr(module, name)]
    return missing


def missing_per_thread_api() -> list[str]:
    """Names of our MPS per-thread stream mode that torch.mps lacks (empty: present)."""
    return [name for name in PER_THREAD_API_NAMES if not hasattr(torch.mps, name)]


def mps_per_thread_mode(device: str) -> contextlib.AbstractContextManager[Any]:
    """MPS per-thread mode for a block where this torch has it, else nothing.

    With opt-in streams, MPS threads share the default stream; the checks that exist to load
    the stream pool (more threads than streams, thread-exit give-back, every workload on many
    streams) turn the mode on so that they still do.
    """
    backend = StreamBackend(device)
    if device == "mps" and backend.per_thread_mode_gap() is None:
        return backend.per_thread_mode()
    return contextlib.nullcontext()


class StreamBackend:
    """torch.cuda or torch.mps behind one set of names."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.module: Any = torch.cuda if device == "cuda" else torch.mps
        # Whose semantics apply (tests drive MPS's with CPU tensors and a model module).
        self.kind = device
        self.heavy_size = 2048 if device == "cuda" else 1024

    def per_thread_mode_gap(self) -> str | None:
        """Why this backend has no per-thread stream mode, or None when it has one."""
        if self.kind != "mps":
            return f"torch.{self.kind} has no per-thread stream mode"
        missing = [name for name in PER_THREAD_API_NAMES if not hasattr(self.module, name)]
        return f"torch.mps lacks the per-thread stream mode {missing}" if missing else None

    def per_thread_mode_enabled(self) -> bool:
        return bool(self.module.per_thread_streams())

    @contextlib.contextmanager
    def per_thread_mode(self, enabled: bool = True) -> Iterator[None]:
        """Per-thread mode on (or off) for the block; the previous mode afterwards."""
        previous = self.per_thread_mode_enabled()
        self.module.set_per_thread_streams(enabled)
        try:
            yield
        finally:
            self.module.set_per_thread_streams(previous)

    def current(self) -> Any:
        return self.module.current_stream()

    def default(self) -> Any:
        return self.module.default_stream()

    def new(self) -> Any:
        """A pool stream (torch.cuda.Stream() / torch.mps.Stream() take one from the pool)."""
        return self.module.Stream()

    def set(self, stream: Any) -> None:
        self.module.set_stream(stream)

    def scope(self, stream: Any) -> Any:
        return self.module.stream(stream)

    def synchronize(self) -> None:
        self.module.synchronize()

    def event(self) -> Any:
        return self.module.Event()

    @staticmethod
    def sid(stream: Any) -> int:
        return int(stream.stream_id)

    def heavy(self, x: torch.Tensor, steps: int = 24) -> torch.Tensor:
        """Enough queued GPU work that a stream is still busy when the host checks it."""
        if self.device == "cuda":
            torch.cuda._sleep(50_000_000)  # ~25 ms of GPU time on the current stream
        weight = torch.eye(x.shape[-1], device=x.device) * 0.5
        for _ in range(steps):
            x = torch.tanh(x @ weight + 0.25)
        return x

    def heavy_input(self) -> torch.Tensor:
        return torch.full((self.heavy_size, self.heavy_size), 0.5, device=self.device)

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None:
        tensor.record_stream(stream)


def _run_threads(count: int, target: Callable[[int], None]) -> list[str]:
    """Run target(tid) in `count` threads; return the exceptions they raised, as text."""
    errors: list[str] = []

    def wrapper(tid: int) -> None:
        try:
            target(tid)
        except Exception as exc:
            errors.append(f"thread {tid}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=wrapper, args=(t,), daemon=True) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    errors.extend(f"thread {i} hung" for i, t in enumerate(threads) if t.is_alive())
    return errors


def check_main_thread_default_stream(b: StreamBackend, sec: Section) -> None:
    current, default = b.current(), b.default()
    sec.figures.update(main_current_id=b.sid(current), default_id=b.sid(default))
    sec.check(b.sid(default) == 0, f"default stream has id {b.sid(default)}, expected 0")
    sec.check(b.sid(current) == b.sid(default), "main thread's current stream is not the default")
    x = torch.arange(8.0, device=b.device) * 2
    sec.check(torch.equal(x.cpu(), torch.arange(8.0) * 2), "work on the default stream is wrong")


def check_new_thread_default_stream(b: StreamBackend, sec: Section) -> None:
    """A thread that sets no stream runs on the default stream (MPS and CUDA alike).

    On MPS this is what keeps hand-offs between threads ordered for programs that never heard
    of streams; a torch that gives every thread its own stream automatically fails here.
    """
    seen: dict[int, tuple[int, float]] = {}
    all_alive = threading.Barrier(WORKER_THREADS, timeout=60)

    def worker(tid: int) -> None:
        y = torch.full((64, 64), float(tid), device=b.device) @ torch.eye(64, device=b.device)
        all_alive.wait()  # every thread alive at once: a per-thread stream would show here
        seen[tid] = (b.sid(b.current()), float(y.sum().cpu()))

    # A user's PYTORCH_MPS_PER_THREAD_STREAMS=1 must not fail this check: it tests the default.
    has_mode = b.kind == "mps" and b.per_thread_mode_gap() is None
    if has_mode:
        sec.figures["per_thread_mode_at_start"] = b.per_thread_mode_enabled()
    with b.per_thread_mode(False) if has_mode else contextlib.nullcontext():
        _collect(sec, _run_threads(WORKER_THREADS, worker))
    ids = sorted({sid for sid, _ in seen.values()})
    sec.figures.update(threads=WORKER_THREADS, stream_ids=ids)
    sec.check(len(seen) == WORKER_THREADS, f"{len(seen)} of {WORKER_THREADS} threads reported")
    sec.check(ids == [0], f"threads that set no stream run on streams {ids}, expected only 0")
    wrong = [tid for tid, (_, total) in seen.items() if total != tid * 64 * 64]
    sec.check(not wrong, f"threads {wrong} computed wrong results on the default stream")


def check_per_thread_streams(b: StreamBackend, sec: Section) -> None:
    """Every live thread can have its own current stream; the main thread's is untouched.

    CUDA: each thread sets a pool stream. MPS: per-thread mode gives each new thread a worker
    stream by itself; the check turns the mode on and restores it.
    """
    if b.kind == "mps":
        gap = b.per_thread_mode_gap()
        if gap:
            sec.mark_not_applicable(gap)
            return
        before = b.per_thread_mode_enabled()
        with b.per_thread_mode():
            sec.check(b.per_thread_mode_enabled(), "set_per_thread_streams(True) did not stick")
            _distinct_thread_streams(b, sec, set_own=False)
        sec.check(
            b.per_thread_mode_enabled() == before,
            f"the per-thread mode was not restored to {before}",
        )
        after: list[int] = []
        _collect(sec, _run_threads(1, lambda _: after.append(b.sid(b.current()))))
        sec.figures["new_thread_stream_after_restore"] = after
        if not before:
            sec.check(after == [0], f"after the mode was turned off a new thread got {after}")
        sec.figures["semantics"] = "MPS per-thread mode: each new thread gets its own stream"
    else:
        _distinct_thread_streams(b, sec, set_own=True)
        sec.figures["semantics"] = "explicit: each thread sets a pool stream"
    sec.check(b.sid(b.current()) == 0, "the workers changed the main thread's current stream")


def _distinct_thread_streams(b: StreamBackend, sec: Section, *, set_own: bool) -> None:
    ids: dict[int, int] = {}
    start_ids: dict[int, int] = {}
    all_alive = threading.Barrier(WORKER_THREADS, timeout=60)
    lock = threading.Lock()

    def worker(tid: int) -> None:
        start = b.sid(b.current())
        if set_own:
            b.set(b.new())
        x = torch.full((64, 64), float(tid), device=b.device)
        y = (x @ torch.eye(64, device=b.device)).sum()
        mine = b.sid(b.current())
        all_alive.wait()  # every thread holds its stream at the same time
        if float(y.cpu()) != tid * 64 * 64:
            raise AssertionError(f"wrong result {float(y.cpu())} on stream {mine}")
        if b.sid(b.current()) != mine:
            raise AssertionError("current stream changed within the thread")
        with lock:
            ids[tid], start_ids[tid] = mine, start

    _collect(sec, _run_threads(WORKER_THREADS, worker))
    values = list(ids.values())
    sec.figures.update(threads=WORKER_THREADS, stream_ids=sorted(values))
    sec.check(len(values) == WORKER_THREADS, f"{len(values)} of {WORKER_THREADS} threads reported")
    sec.check(len(set(values)) == len(values), f"threads share streams: ids {sorted(values)}")
    sec.check(0 not in values, "a worker thread runs on the default stream (id 0)")
    if set_own:
        starts = set(start_ids.values())
        sec.check(starts <= {0}, f"new threads did not start on the default stream: {starts}")


def check_set_stream_and_scoping(b: StreamBackend, sec: Section) -> None:
    before = b.sid(b.current())
    s1, s2 = b.new(), b.new()
    sec.figures.update(s1=b.sid(s1), s2=b.sid(s2))
    sec.check(b.sid(s1) != b.sid(s2), "two pool streams in a row are the same stream")
    with b.scope(s1):
        sec.check(b.sid(b.current()) == b.sid(s1), "stream(s1) did not make s1 current")
        with b.scope(s2):
            sec.check(b.sid(b.current()) == b.sid(s2), "nested stream(s2) did not make s2 current")
        sec.check(b.sid(b.current()) == b.sid(s1), "leaving nested stream(s2) did not restore s1")
    sec.check(b.sid(b.current()) == before, "leaving stream(s1) did not restore the stream")
    with b.scope(None):
        sec.check(b.sid(b.current()) == before, "stream(None) is not a no-op")
    try:
        with b.scope(s1):
            raise KeyError("probe")
    except KeyError:
        pass
    sec.check(b.sid(b.current()) == before, "an exception inside stream(s1) left s1 current")
    b.set(s1)
    try:
        sec.check(b.sid(b.current()) == b.sid(s1), "set_stream(s1) did not make s1 current")
        b.set(None)
        sec.check(b.sid(b.current()) == b.sid(s1), "set_stream(None) is not a no-op")
        seen_in_thread: list[int] = []

        def other_thread(_: int) -> None:
            b.set(s2)
            seen_in_thread.append(b.sid(b.current()))

        for error in _run_threads(1, other_thread):
            sec.fail(error)
        sec.check(seen_in_thread == [b.sid(s2)], "set_stream(s2) in a thread did not take effect")
        sec.check(b.sid(b.current()) == b.sid(s1), "set_stream in another thread changed ours")
    finally:
        b.set(b.default())
    sec.check(b.sid(b.current()) == 0, "set_stream(default_stream()) did not restore the default")


def check_device_synchronize(b: StreamBackend, sec: Section) -> None:
    """torch.<device>.synchronize() waits for the work of every stream, not just the current."""
    x = b.heavy_input()
    b.synchronize()
    expected = b.heavy(x).cpu()
    streams = [b.new() for _ in range(4)]
    outputs = []
    for stream in streams:
        stream.wait_stream(b.current())
        with b.scope(stream):
            outputs.append(b.heavy(x))
    busy = [not stream.query() for stream in streams]
    b.synchronize()
    done = [stream.query() for stream in streams]
    sec.figures.update(streams=len(streams), busy_before_sync=sum(busy), done_after_sync=sum(done))
    sec.check(all(done), f"after synchronize() streams still busy: {done}")
    # Same with work queued by threads on their own streams, which outlive the sync.
    queued = threading.Barrier(5, timeout=60)
    synced = threading.Event()
    thread_done: list[bool] = []

    def worker(_: int) -> None:
        stream = b.new()
        with b.scope(stream):
            out = b.heavy(x)
        queued.wait()
        synced.wait(timeout=60)
        thread_done.append(stream.query())
        outputs.append(out)

    runner = threading.Thread(target=lambda: _collect(sec, _run_threads(4, worker)), daemon=True)
    runner.start()
    queued.wait()
    b.synchronize()
    synced.set()
    runner.join(timeout=120)
    sec.figures["thread_streams_done_after_sync"] = sum(thread_done)
    sec.check(
        thread_done == [True] * 4, f"threads' streams busy after synchronize(): {thread_done}"
    )
    for out in outputs:
        sec.check(torch.equal(out.cpu(), expected), "a stream computed a different result")


def _collect(sec: Section, errors: list[str]) -> None:
    for error in errors:
        sec.fail(error)


def check_events_across_streams(b: StreamBackend, sec: Section) -> None:
    x = b.heavy_input()
    b.synchronize()
    expected = b.heavy(x).cpu() + 1
    producer, consumer = b.new(), b.new()
    # 1. Event.record(stream) / Stream.wait_event(event).
    with b.scope(producer):
        y = b.heavy(x)
    event = b.event()
    event.record(producer)
    consumer.wait_event(event)
    with b.scope(consumer):
        z = y + 1
    consumer.synchronize()
    sec.check(torch.equal(z.cpu(), expected), "consumer read before producer's event completed")
    event.synchronize()
    sec.check(event.query(), "event not complete after Event.synchronize()")
    # 2. Stream.record_event() / Event.wait(stream) / Stream.wait_stream(stream).
    with b.scope(producer):
        y2 = b.heavy(x)
    event2 = producer.record_event()
    event2.wait(consumer)
    with b.scope(consumer):
        z2 = y2 + 1
    consumer.synchronize()  # .cpu() below copies on the main thread's stream
    sec.check(torch.equal(z2.cpu(), expected), "Event.wait(stream) did not order the streams")
    with b.scope(producer):
        y3 = b.heavy(x)
    consumer.wait_stream(producer)
    with b.scope(consumer):
        z3 = y3 + 1
    consumer.synchronize()
    sec.check(torch.equal(z3.cpu(), expected), "Stream.wait_stream did not order the streams")
    # 3. Across threads: a producer thread's event orders a consumer thread's stream.
    handoff: dict[str, Any] = {}
    ready = threading.Event()

    def producer_thread() -> None:
        b.set(b.new())
        handoff["y"] = b.heavy(x)
        handoff["event"] = b.current().record_event()
        ready.set()

    def consumer_thread() -> None:
        b.set(b.new())
        if not ready.wait(timeout=60):
            raise TimeoutError("producer never recorded its event")
        b.current().wait_event(handoff["event"])
        handoff["z"] = (handoff["y"] + 1).cpu()

    errors = _run_threads(2, lambda tid: (producer_thread if tid == 0 else consumer_thread)())
    _collect(sec, errors)
    sec.check(
        "z" in handoff and torch.equal(handoff["z"], expected),
        "an event recorded in one thread did not order another thread's stream",
    )
    sec.figures["orderings_checked"] = 4


def check_record_stream(b: StreamBackend, sec: Section) -> None:
    """A block used on another stream is not reused until that stream's work is done."""
    main = b.current()
    side = b.new()
    x = torch.full((1 << 20,), 3.0, device=b.device)
    ptr = x.data_ptr()
    side.wait_stream(main)
    with b.scope(side):
        delay = b.heavy(b.heavy_input(), steps=12)
        y = x * 2 + delay[0, 0] * 0
    b.record_stream(x, side)
    del x
    reused = torch.full((1 << 20,), -1.0, device=b.device)  # allocated on the main stream
    sec.figures["block_reused_while_side_busy"] = reused.data_ptr() == ptr and not side.query()
    b.synchronize()
    sec.check(bool((y.cpu() == 6.0).all()), "side stream read memory the allocator gave away")


def check_accelerator_route(b: StreamBackend, sec: Section) -> None:
    acc = torch.accelerator
    sec.check(acc.is_available(), "torch.accelerator.is_available() is False")
    kind = acc.current_accelerator()
    sec.check(kind is not None and kind.type == b.device, f"current_accelerator() is {kind}")
    sec.check(
        acc.current_stream().stream_id == b.sid(b.current()),
        "torch.accelerator.current_stream() differs from the device's current stream",
    )
    stream = torch.Stream(device=b.device)
    acc.set_stream(stream)
    try:
        sec.check(
            b.sid(b.current()) == stream.stream_id,
            "torch.accelerator.set_stream() did not change the device's current stream",
        )
        x = b.heavy(b.heavy_input(), steps=8)
        acc.synchronize()
        sec.check(stream.query(), "torch.accelerator.synchronize() left the stream busy")
        sec.check(x.shape[0] > 0, "no output")
    finally:
        b.set(b.default())
    seen: dict[int, tuple[int, int]] = {}

    def worker(tid: int) -> None:
        torch.ones(4, device=b.device).sum().item()
        seen[tid] = (acc.current_stream().stream_id, b.sid(b.current()))

    _collect(sec, _run_threads(4, worker))
    sec.figures["thread_stream_ids"] = sorted(v[0] for v in seen.values())
    sec.check(
        all(a == d for a, d in seen.values()),
        f"torch.accelerator and torch.{b.device} disagree in threads: {seen}",
    )


def check_torch_stream_route(b: StreamBackend, sec: Section) -> None:
    producer, consumer = torch.Stream(device=b.device), torch.Stream(device=b.device)
    # device_type is the DeviceType enum's int; .device is the torch.device to compare.
    kind = torch.device(producer.device).type
    sec.check(kind == b.device, f"torch.Stream device is {kind}, not {b.device}")
    sec.check(producer.stream_id != consumer.stream_id, "two torch.Stream() share an id")
    x = b.heavy_input()
    b.synchronize()
    expected = b.heavy(x).cpu() + 1
    producer.wait_stream(torch.accelerator.current_stream())
    torch.accelerator.set_stream(producer)
    try:
        y = b.heavy(x)
        event = torch.Event(device=b.device)
        event.record(producer)
        consumer.wait_event(event)
        torch.accelerator.set_stream(consumer)
        z = y + 1
    finally:
        b.set(b.default())
    consumer.synchronize()
    sec.check(consumer.query(), "torch.Stream.query() False after synchronize()")
    sec.check(torch.equal(z.cpu(), expected), "torch.Event did not order two torch.Streams")
    event.synchronize()
    sec.check(event.query(), "torch.Event.query() False after synchronize()")
    if hasattr(torch.Stream, "__enter__"):
        with consumer:
            sec.check(b.sid(b.current()) == consumer.stream_id, "`with torch.Stream` not applied")
        sec.check(b.sid(b.current()) == 0, "leaving `with torch.Stream` did not restore")
        sec.figures["context_manager_checked"] = True


STREAM_CHECKS: dict[str, Callable[[StreamBackend, Section], None]] = {
    "main_thread_default_stream": check_main_thread_default_stream,
    "new_thread_default_stream": check_new_thread_default_stream,
    "per_thread_current_stream": check_per_thread_streams,
    "set_stream_and_scoping": check_set_stream_and_scoping,
    "device_synchronize_all_streams": check_device_synchronize,
    "events_across_streams": check_events_across_streams,
    "record_stream": check_record_stream,
    "accelerator_route": check_accelerator_route,
    "torch_stream_route": check_torch_stream_route,
}
