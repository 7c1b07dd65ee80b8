"""The suite's stream checks, run here against small Python models of stream semantics.

No CUDA or MPS device exists on our CI machines, so these tests prove the stream checks' logic
on CPU: they pass on a faithful model of CUDA's semantics (thread-local current stream, pool
streams only when set) and of our MPS wheel's (the same, plus a per-thread mode that gives each
new non-main thread its own stream), and they fail on models with the bugs they exist to
catch. The device paths themselves run on the GPU machine (CUDA) and on a Mac (MPS).
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
from suite_helpers import suite_on
from test_streams import PER_THREAD_CHECK, stream_api_gap

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
    """Our MPS wheel: streams are opt-in as on CUDA; in per-thread mode a thread other than the
    main one gets its own worker stream the first time it asks."""

    def __init__(self) -> None:
        super().__init__()
        self.worker_ids = itertools.count(1)
        self.lock = threading.Lock()
        self.mode = False

    def set_per_thread_streams(self, enabled: bool) -> None:
        self.mode = bool(enabled)

    def per_thread_streams(self) -> bool:
        return self.mode

    def _automatic(self) -> FakeStream:
        if threading.current_thread() is threading.main_thread() or not self.mode:
            return self.DEFAULT
        if not hasattr(self.local, "own"):
            with self.lock:
                self.local.own = FakeStream(next(self.worker_ids))
        return self.local.own


class OldMPSWheel(FakeStreamModule):
    """A torch.mps with the stream API but no per-thread mode (stock 2.15, our old series)."""


class GlobalCurrentStream(FakeStreamModule):
    """BUG: the current stream is process-wide instead of per thread."""

    def __init__(self) -> None:
        super().__init__()
        self.local = type("Shared", (), {})()  # one namespace for every thread


class SharedWorkerStream(FakeMPSModule):
    """BUG: in per-thread mode every worker thread is bound to the same stream."""

    def _automatic(self) -> FakeStream:
        if threading.current_thread() is threading.main_thread() or not self.mode:
            return self.DEFAULT
        return FakeStream(1)


class AutomaticThreadStreams(FakeMPSModule):
    """BUG (our first design): every non-main thread gets its own stream without opting in,
    so a tensor handed to another thread is read before its producer's work ran."""

    def _automatic(self) -> FakeStream:
        self.mode = True
        return super()._automatic()


class ModeNeverTurnsOff(FakeMPSModule):
    """BUG: set_per_thread_streams(False) is ignored, so the check cannot restore the mode."""

    def set_per_thread_streams(self, enabled: bool) -> None:
        self.mode = self.mode or bool(enabled)


def backend(module: FakeStreamModule, kind: str) -> StreamBackend:
    b = StreamBackend("cpu")
    b.module = module
    b.kind = kind
    b.heavy_size = 32
    b.record_stream = lambda tensor, stream: None  # type: ignore[method-assign]
    return b


def run_check(b: StreamBackend, name: str) -> Section:
    section = Section()
    STREAM_CHECKS[name](b, section)
    return section


@pytest.mark.parametrize("name", MODELLED)
@pytest.mark.parametrize(
    ("module", "kind"), [(FakeStreamModule, "cuda"), (FakeMPSModule, "mps")], ids=["cuda", "mps"]
)
def test_check_passes_on_correct_semantics(module: Any, kind: str, name: str) -> None:
    section = run_check(backend(module(), kind), name)
    assert section.failures == []
    assert section.not_applicable is None


def test_per_thread_check_really_uses_the_mode_and_restores_it() -> None:
    module = FakeMPSModule()
    section = run_check(backend(module, "mps"), PER_THREAD_CHECK)
    assert section.failures == [] and module.mode is False
    assert 0 not in section.figures["stream_ids"] and len(section.figures["stream_ids"]) == 16
    assert section.figures["new_thread_stream_after_restore"] == [0]


def test_global_current_stream_is_caught() -> None:
    b = backend(GlobalCurrentStream(), "cuda")
    assert run_check(b, "per_thread_current_stream").failures
    scoping = run_check(backend(GlobalCurrentStream(), "cuda"), "set_stream_and_scoping")
    assert any("changed ours" in failure for failure in scoping.failures)


def test_workers_sharing_one_stream_are_caught() -> None:
    section = run_check(backend(SharedWorkerStream(), "mps"), PER_THREAD_CHECK)
    assert any("threads share streams" in failure for failure in section.failures)


def test_automatic_thread_streams_are_caught() -> None:
    section = run_check(backend(AutomaticThreadStreams(), "mps"), "new_thread_default_stream")
    assert any("expected only 0" in failure for failure in section.failures)


def test_a_mode_that_is_not_restored_is_caught() -> None:
    section = run_check(backend(ModeNeverTurnsOff(), "mps"), PER_THREAD_CHECK)
    assert any("not restored" in failure for failure in section.failures)


def test_main_thread_off_the_default_stream_is_caught() -> None:
    module = FakeStreamModule()
    module.set_stream(FakeStream(5))
    section = run_check(backend(module, "cuda"), "main_thread_default_stream")
    assert any("not the default" in failure for failure in section.failures)


def test_per_thread_check_without_the_mode_is_not_applicable_on_the_child_side() -> None:
    section = run_check(backend(OldMPSWheel(), "mps"), PER_THREAD_CHECK)
    assert section.failures == []
    assert section.not_applicable and "set_per_thread_streams" in section.not_applicable


def test_parent_marks_only_the_per_thread_check_when_the_mode_is_missing() -> None:
    old = suite_on("mps", mps_missing_stream_api=[], mps_missing_per_thread_api=["x"])
    gap = stream_api_gap(old, PER_THREAD_CHECK)
    assert gap is not None and "per-thread stream mode" in gap
    assert stream_api_gap(old, "record_stream") is None
    assert stream_api_gap(old) is None  # the stream child still runs the other checks
    assert (
        stream_api_gap(suite_on("cuda", mps_missing_per_thread_api=["x"]), PER_THREAD_CHECK) is None
    )
    assert stream_api_gap(suite_on("mps", mps_missing_per_thread_api=[]), PER_THREAD_CHECK) is None


def test_mps_checks_that_load_the_stream_pool_turn_the_mode_on_and_restore_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cs_streams
    import torch

    calls: list[bool] = []
    monkeypatch.setattr(torch.mps, "per_thread_streams", lambda: False, raising=False)
    monkeypatch.setattr(torch.mps, "set_per_thread_streams", calls.append, raising=False)
    with cs_streams.mps_per_thread_mode("mps"):
        assert calls == [True]
    assert calls == [True, False]
    with cs_streams.mps_per_thread_mode("cuda"):
        pass
    assert calls == [True, False]  # only MPS has the mode


def test_mps_correctness_runs_on_own_streams_and_in_per_thread_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cs_scenarios

    monkeypatch.setattr(cs_scenarios, "missing_stream_api", lambda device: [])
    monkeypatch.setattr(cs_scenarios, "missing_per_thread_api", lambda: [])
    assert set(cs_scenarios._variants("mps")) == {
        "eval",
        "inference_mode",
        "inference_mode+own_stream",
        "inference_mode+per_thread_mode",
    }
    assert "inference_mode+per_thread_mode" not in cs_scenarios._variants("cuda")
    monkeypatch.setattr(cs_scenarios, "missing_stream_api", lambda device: ["Stream"])
    monkeypatch.setattr(cs_scenarios, "missing_per_thread_api", lambda: ["x"])
    assert set(cs_scenarios._variants("mps")) == {"eval", "inference_mode"}  # stock torch


def test_default_stream_check_ignores_a_user_s_per_thread_mode_and_restores_it() -> None:
    module = FakeMPSModule()
    module.set_per_thread_streams(True)  # as PYTORCH_MPS_PER_THREAD_STREAMS=1 would
    section = run_check(backend(module, "mps"), "new_thread_default_stream")
    assert section.failures == [] and section.figures["per_thread_mode_at_start"] is True
    assert module.mode is True
