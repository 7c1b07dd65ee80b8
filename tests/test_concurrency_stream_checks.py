"""The suite's stream checks, run here against small Python models of stream semantics.

No CUDA or MPS device exists on our CI machines, so these tests prove the stream checks' logic
on CPU: they pass on a faithful model of CUDA's semantics (thread-local current stream, pool
streams only when set) and of our MPS wheel's (each thread automatically on its own stream),
and they fail on models with the bugs they exist to catch. The device paths themselves run on
the GPU machine (CUDA) and on a Mac (MPS).
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "concurrency"))

from cs_report import Section
from cs_streams import STREAM_CHECKS, StreamBackend

# torch.accelerator and torch.Stream need a real accelerator: not modelled here.
MODELLED = [
    name for name in STREAM_CHECKS if name not in ("accelerator_route", "torch_stream_route")
]


class FakeStream:
    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id

    def query(self) -> bool:
        return True  # CPU work is done when the op returns

    def synchronize(self) -> None:
        pass

    def wait_event(self, event: FakeEvent) -> None:
        pass

    def wait_stream(self, stream: FakeStream) -> None:
        pass

    def record_event(self) -> FakeEvent:
        event = FakeEvent()
        event.record(self)
        return event


class FakeEvent:
    def record(self, stream: FakeStream | None = None) -> None:
        pass

    def wait(self, stream: FakeStream | None = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass


class FakeStreamModule:
    """torch.cuda-like: thread-local current stream, default id 0, a round-robin pool."""

    DEFAULT = FakeStream(0)

    def __init__(self) -> None:
        self.local = threading.local()
        self.pool_ids = itertools.cycle(range(1, 33))

    def _automatic(self) -> FakeStream:
        return self.DEFAULT

    def current_stream(self) -> FakeStream:
        override = getattr(self.local, "stream", None)
        return override if override is not None else self._automatic()

    def default_stream(self) -> FakeStream:
        return self.DEFAULT

    def Stream(self) -> FakeStream:
        return FakeStream(next(self.pool_ids))

    def set_stream(self, stream: FakeStream | None) -> None:
        if stream is not None:
            self.local.stream = stream

    @contextmanager
    def stream(self, stream: FakeStream | None) -> Iterator[None]:
        previous = getattr(self.local, "stream", None)
        if stream is not None:
            self.local.stream = stream
        try:
            yield
        finally:
            self.local.stream = previous

    def synchronize(self) -> None:
        pass

    def Event(self) -> FakeEvent:
        return FakeEvent()


class FakeMPSModule(FakeStreamModule):
    """Our MPS wheel: a thread other than the main one gets its own stream automatically."""

    def __init__(self) -> None:
        super().__init__()
        self.worker_ids = itertools.count(1)
        self.lock = threading.Lock()

    def _automatic(self) -> FakeStream:
        if threading.current_thread() is threading.main_thread():
            return self.DEFAULT
        if not hasattr(self.local, "own"):
            with self.lock:
                self.local.own = FakeStream(next(self.worker_ids))
        return self.local.own


class GlobalCurrentStream(FakeStreamModule):
    """BUG: the current stream is process-wide instead of per thread."""

    def __init__(self) -> None:
        super().__init__()
        self.local = type("Shared", (), {})()  # one namespace for every thread


class SharedWorkerStream(FakeMPSModule):
    """BUG: every worker thread is bound to the same stream."""

    def _automatic(self) -> FakeStream:
        if threading.current_thread() is threading.main_thread():
            return self.DEFAULT
        return FakeStream(1)


def backend(module: FakeStreamModule, automatic: bool) -> StreamBackend:
    b = StreamBackend("cpu")
    b.module = module
    b.automatic_thread_streams = automatic
    b.heavy_size = 32
    b.record_stream = lambda tensor, stream: None  # type: ignore[method-assign]
    return b


def run_check(b: StreamBackend, name: str) -> Section:
    section = Section()
    STREAM_CHECKS[name](b, section)
    return section


@pytest.mark.parametrize("name", MODELLED)
@pytest.mark.parametrize(
    ("module", "automatic"), [(FakeStreamModule, False), (FakeMPSModule, True)], ids=["cuda", "mps"]
)
def test_check_passes_on_correct_semantics(module: Any, automatic: bool, name: str) -> None:
    section = run_check(backend(module(), automatic), name)
    assert section.failures == []


def test_global_current_stream_is_caught() -> None:
    b = backend(GlobalCurrentStream(), automatic=False)
    assert run_check(b, "per_thread_current_stream").failures
    scoping = run_check(backend(GlobalCurrentStream(), automatic=False), "set_stream_and_scoping")
    assert any("changed ours" in failure for failure in scoping.failures)


def test_workers_sharing_one_stream_are_caught() -> None:
    section = run_check(backend(SharedWorkerStream(), automatic=True), "per_thread_current_stream")
    assert any("threads share streams" in failure for failure in section.failures)


def test_main_thread_off_the_default_stream_is_caught() -> None:
    module = FakeStreamModule()
    module.set_stream(FakeStream(5))
    section = run_check(backend(module, automatic=False), "main_thread_default_stream")
    assert any("not the default" in failure for failure in section.failures)
