"""The suite's hand-off checks have teeth: proven on CPU with a fake asynchronous device.

FakeAsyncDevice behaves like a GPU where it matters here: every stream is an in-order queue run
by its own thread, an op returns before its work ran, and a read (`.cpu()`/`.item()`) waits
only for the reader's own stream unless the backend tracks the tensor's last stream (our MPS
series) or the program ordered the streams (wait_stream). The real case functions of
cs_handoff run against it unchanged: they must pass where the fake orders the hand-off and
report mismatches where it does not. The CUDA/MPS device paths themselves run on the GPU
machine and on a Mac; the CPU paths run end to end at the bottom of this file.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "concurrency_suite.py"
SUITE_DIR = ROOT / "tests" / "concurrency"
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(SUITE_DIR))

import cs_handoff  # noqa: E402
from cs_config import (  # noqa: E402
    HANDOFF_CASE_NAMES,
    HANDOFF_STREAM_CASES,
    MPS_NO_TRACKING_ENV,
    QUICK,
)
from cs_report import Section  # noqa: E402
from suite_helpers import suite_on  # noqa: E402
from test_handoff import child_env, handoff_gap  # noqa: E402

WORK_DELAY_S = 0.01  # how long the fake device takes per op: the reader is always earlier
PARAMS: dict[str, Any] = {"device": "fake", "profile": QUICK.as_dict()}


class FakeStream:
    """An in-order queue of work run by its own thread, like a GPU stream."""

    def __init__(self, stream_id: int, *, inline: bool = False) -> None:
        self.stream_id = stream_id
        self.inline = inline  # a device that secretly runs everything at once (no async)
        self.jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        if not inline:
            threading.Thread(
                target=self._serve, name=f"fake-stream-{stream_id}", daemon=True
            ).start()

    def _serve(self) -> None:
        while True:
            self.jobs.get()()

    def enqueue(self, job: Callable[[], None]) -> None:
        if self.inline:
            job()
        else:
            self.jobs.put(job)

    def synchronize(self) -> None:
        done = threading.Event()
        self.enqueue(done.set)
        assert done.wait(timeout=30), f"fake stream {self.stream_id} hung"


class FakeTensor:
    """Device memory of the fake: `data` is filled when the queued work runs."""

    def __init__(self, data: torch.Tensor, stream: FakeStream | None = None) -> None:
        self.data = data
        self.stream = stream  # the stream whose write readers wait for (see write_tracking)
        self.readers: set[FakeStream] = set()  # streams that queued reads since that write


class FakeAsyncDevice(cs_handoff.HandoffOps):
    """HandoffOps on the fake device.

    automatic_streams: every non-main thread gets its own stream without opting in (our first
    MPS design); per_thread_mode: whether set_per_thread_streams exists and works; tracking:
    a read waits for the tensor's producer (our MPS series); write_tracking (with tracking): an
    in-place write waits for the tensor's readers and last writer and becomes its producer,
    without it only a tensor's first writer is its producer (the series before writes were
    ordered); honest_wait: wait_stream works.
    """

    def __init__(
        self,
        *,
        automatic_streams: bool = False,
        tracking: bool = False,
        honest_wait: bool = True,
        inline: bool = False,
        mode_gives_streams: bool = True,
        write_tracking: bool = True,
    ) -> None:
        self.device = "fake"
        self.size = 8
        self.weight = torch.randn(8, 8, generator=torch.Generator().manual_seed(3)) / 3
        self.automatic_streams = automatic_streams
        self.tracking = tracking
        self.write_tracking = write_tracking
        self.honest_wait = honest_wait
        self.inline = inline
        self.mode_gives_streams = mode_gives_streams
        self.ids = itertools.count(1)
        self.default = FakeStream(0, inline=inline)
        self.streams = [self.default]
        self.local = threading.local()
        self.lock = threading.Lock()

    # -- streams
    def stream_api_gap(self) -> str | None:
        return None

    def per_thread_mode_gap(self) -> str | None:
        return None

    def program_orders_handoffs(self) -> bool:
        return not self.tracking

    @contextlib.contextmanager
    def per_thread_mode(self) -> Iterator[None]:
        previous = self.automatic_streams
        self.automatic_streams = self.mode_gives_streams
        try:
            yield
        finally:
            self.automatic_streams = previous

    def new_stream(self) -> FakeStream:
        with self.lock:
            stream = FakeStream(next(self.ids), inline=self.inline)
            self.streams.append(stream)
        return stream

    def current_stream(self) -> FakeStream:
        override = getattr(self.local, "override", None)
        if override is not None:
            return override
        if self.automatic_streams and threading.current_thread() is not threading.main_thread():
            if getattr(self.local, "own", None) is None:
                self.local.own = self.new_stream()
            return self.local.own
        return self.default

    @contextlib.contextmanager
    def stream_scope(self, stream: FakeStream) -> Iterator[FakeStream]:
        previous = getattr(self.local, "override", None)
        self.local.override = stream
        try:
            yield stream
        finally:
            self.local.override = previous

    def wait_stream(self, waiter: FakeStream, producer: FakeStream) -> None:
        if not self.honest_wait or waiter is producer:
            return
        reached = threading.Event()
        producer.enqueue(reached.set)
        waiter.enqueue(lambda: reached.wait(timeout=30))

    def record_stream(self, tensor: Any, stream: Any) -> None:
        pass  # the fake has no caching allocator

    def synchronize(self) -> None:
        for stream in list(self.streams):
            stream.synchronize()

    # -- tensors
    def input(self, k: int) -> FakeTensor:
        gen = torch.Generator().manual_seed(100 + k)
        return FakeTensor(torch.randn(8, 8, generator=gen))

    def _order_write(self, out: FakeTensor, stream: FakeStream) -> None:
        """Tracking of a write to `out` on `stream`: after its readers and producer, or not."""
        if self.tracking and self.write_tracking:
            for previous in {out.stream, *out.readers} - {None, stream}:
                self.wait_stream(stream, previous)
        if out.stream is None or not self.tracking or self.write_tracking:
            out.stream = stream
            out.readers = set()

    def _queue_write(self, out: FakeTensor, x: FakeTensor) -> None:
        stream = self.current_stream()
        if self.tracking and x.stream not in (None, stream):
            self.wait_stream(stream, x.stream)
        x.readers.add(stream)
        self._order_write(out, stream)

        def job() -> None:
            time.sleep(WORK_DELAY_S)
            value = x.data
            for _ in range(3):
                value = torch.tanh(value @ self.weight + 0.25)
            out.data.copy_(value)

        stream.enqueue(job)

    def overwrite(self, x: FakeTensor) -> None:
        stream = self.current_stream()
        self._order_write(x, stream)
        stream.enqueue(lambda: x.data.fill_(math.nan))

    def produce(self, x: FakeTensor) -> FakeTensor:
        out = FakeTensor(torch.full((8, 8), math.nan))
        self._queue_write(out, x)
        return out

    def produce_into(self, out: FakeTensor, x: FakeTensor) -> None:
        self._queue_write(out, x)

    def sentinel_like(self, x: FakeTensor) -> FakeTensor:
        # written (and finished) on the caller's stream, which becomes its producer
        return FakeTensor(torch.full_like(x.data, math.nan), self.current_stream())

    def consume(self, y: FakeTensor, k: int) -> tuple[torch.Tensor, ...]:
        reader = self.current_stream()
        if self.tracking and y.stream not in (None, reader):
            self.wait_stream(reader, y.stream)
        reader.synchronize()  # like copy_from_mps_/cudaMemcpy: waits for the reader's stream
        if k % 2 == 0:
            return (y.data.clone(),)
        return (torch.tensor(y.data[k % 8, -1].item()),)


def run_case(name: str, device: cs_handoff.HandoffOps) -> Section:
    section = Section()
    cs_handoff.HANDOFF_CASES[name](device, section, PARAMS)
    return section


def mismatch_reported(section: Section) -> bool:
    return any("differ from the golden output" in failure for failure in section.failures)


# --------------------------------------------------------------------------- worker -> main


def test_the_fake_device_really_is_asynchronous() -> None:
    device = FakeAsyncDevice()
    y = device.produce(device.input(0))
    assert torch.isnan(y.data).all()  # the op returned before its work ran
    device.synchronize()
    assert not torch.isnan(y.data).any()


def test_worker_to_main_on_a_shared_default_stream_passes() -> None:
    section = run_case("executor_result_to_main", FakeAsyncDevice())
    assert section.failures == []
    assert section.figures["handoffs_checked"] == 8 * QUICK.iterations
    assert section.figures["producer_stream_ids"] == [0]


def test_automatic_per_thread_streams_without_tracking_are_caught() -> None:
    """The bug the review found: producers on their own streams, main reads too early."""
    section = run_case("executor_result_to_main", FakeAsyncDevice(automatic_streams=True))
    assert mismatch_reported(section), section.failures
    assert section.figures["mismatches"] > 0 and 0 not in section.figures["producer_stream_ids"]


def test_automatic_per_thread_streams_with_tracking_pass() -> None:
    device = FakeAsyncDevice(automatic_streams=True, tracking=True)
    assert run_case("executor_result_to_main", device).failures == []


def test_per_thread_mode_needs_tracking() -> None:
    assert run_case("per_thread_mode_to_main", FakeAsyncDevice(tracking=True)).failures == []
    assert mismatch_reported(run_case("per_thread_mode_to_main", FakeAsyncDevice()))


def test_per_thread_mode_that_gives_no_streams_is_caught() -> None:
    section = run_case(
        "per_thread_mode_to_main", FakeAsyncDevice(tracking=True, mode_gives_streams=False)
    )
    assert any("no hand-off between streams was tested" in f for f in section.failures)


def test_explicit_streams_cuda_style_need_the_program_s_wait() -> None:
    section = run_case("explicit_stream_to_main", FakeAsyncDevice())  # wait + record_stream
    assert section.failures == [] and "wait_stream" in section.figures["ordering"]
    broken = run_case("explicit_stream_to_main", FakeAsyncDevice(honest_wait=False))
    assert mismatch_reported(broken)


def test_explicit_streams_mps_style_rely_on_tracking() -> None:
    section = run_case("explicit_stream_to_main", FakeAsyncDevice(tracking=True))
    assert section.failures == [] and section.figures["ordering"] == "backend tracking"


class ClaimsTracking(FakeAsyncDevice):
    """BUG: a backend that says it tracks hand-offs (so the program adds no waits) but does not."""

    def program_orders_handoffs(self) -> bool:
        return False


def test_a_backend_that_only_claims_tracking_is_caught() -> None:
    assert mismatch_reported(run_case("explicit_stream_to_main", ClaimsTracking()))


# --------------------------------------------------------------------------- in-place writes


def test_in_place_writes_on_a_shared_default_stream_pass() -> None:
    section = run_case("in_place_writes_across_threads", FakeAsyncDevice(tracking=True))
    assert section.failures == [], section.failures
    assert section.figures["handoffs_checked"] == 2 * 8 * QUICK.iterations
    assert 0 not in section.figures["writer_stream_ids"]  # the fake's mode gives streams


def test_in_place_writes_across_streams_need_write_tracking() -> None:
    """The series before writes were ordered: readers tracked, writes by non-producers not."""
    section = run_case(
        "in_place_writes_across_threads", FakeAsyncDevice(tracking=True, write_tracking=False)
    )
    assert mismatch_reported(section), section.failures
    assert section.figures["write_mismatches"] > 0 and section.figures["read_mismatches"] > 0
    assert any("in-place writes read on main" in f for f in section.failures), section.failures
    assert any("before main's in-place writes" in f for f in section.failures), section.failures


def test_in_place_writes_without_any_tracking_are_caught() -> None:
    section = run_case("in_place_writes_across_threads", FakeAsyncDevice())
    assert mismatch_reported(section), section.failures


def test_in_place_writes_with_a_mode_that_gives_no_streams_are_flagged() -> None:
    device = FakeAsyncDevice(tracking=True, mode_gives_streams=False)
    section = run_case("in_place_writes_across_threads", device)
    assert any("no write across streams was tested" in f for f in section.failures)


# --------------------------------------------------------------------------- unsafe control


def test_unsafe_control_catches_an_unordered_handoff() -> None:
    section = run_case("missing_wait_is_detected", FakeAsyncDevice())
    assert section.failures == []
    assert section.figures["mismatches_detected"] == section.figures["rounds"] >= 4
    assert section.figures["ordered_mismatches"] == 0


def test_unsafe_control_without_teeth_fails() -> None:
    """A device that runs everything at once cannot show the race: the control must fail."""
    section = run_case("missing_wait_is_detected", FakeAsyncDevice(inline=True))
    assert any("did NOT detect" in failure for failure in section.failures)


def test_unsafe_control_with_tracking_on_fails_and_says_how_to_run_it() -> None:
    section = run_case("missing_wait_is_detected", FakeAsyncDevice(tracking=True))
    assert any("PYTORCH_MPS_STREAM_TRACKING=0" in failure for failure in section.failures)


def test_unsafe_control_with_a_broken_wait_flags_the_ordered_half() -> None:
    section = run_case("missing_wait_is_detected", FakeAsyncDevice(honest_wait=False))
    assert any("WITH wait_stream differ" in failure for failure in section.failures)


def test_mps_tracking_switch_is_read_from_the_child_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ops = cs_handoff.HandoffOps.__new__(cs_handoff.HandoffOps)
    ops.device = "mps"
    monkeypatch.delenv("PYTORCH_MPS_STREAM_TRACKING", raising=False)
    assert not ops.program_orders_handoffs()
    monkeypatch.setenv("PYTORCH_MPS_STREAM_TRACKING", "0")
    assert ops.program_orders_handoffs()
    ops.device = "cuda"
    monkeypatch.delenv("PYTORCH_MPS_STREAM_TRACKING")
    assert ops.program_orders_handoffs()


# --------------------------------------------------------------------------- judging


def test_judge_fails_on_missing_comparisons_and_on_mismatches() -> None:
    tally, section = cs_handoff.Tally(), Section()
    gold = (torch.ones(3),)
    tally.add("fine", (torch.ones(3),), gold)
    tally.add("stale", (torch.full((3,), math.nan),), gold)
    cs_handoff.judge(section, tally, expected=3)
    assert any("compared 2, expected 3" in f for f in section.failures)
    assert any("1 of 2 differ" in f and "stale" in f for f in section.failures)
    assert section.figures["worst_abs_diff"] == "inf"


# --------------------------------------------------------------------------- parent side


def test_what_applies_where() -> None:
    cpu = suite_on("cpu")
    assert all(handoff_gap(cpu, case)[0] for case in HANDOFF_STREAM_CASES)
    assert handoff_gap(cpu, "executor_result_to_main") == (None, False)
    queue_gap, required = handoff_gap(cpu, "queue_input_from_async_op")
    assert queue_gap and required  # --require-patched turns a missing BatchQueue into a failure
    cuda = suite_on("cuda")
    assert handoff_gap(cuda, "per_thread_mode_to_main")[1] is False  # N/A, never required
    assert handoff_gap(cuda, "missing_wait_is_detected") == (None, False)
    stock_mps = suite_on("mps", mps_missing_stream_api=["Stream"])
    assert all(handoff_gap(stock_mps, case)[1] for case in HANDOFF_STREAM_CASES)
    no_mode = suite_on("mps", mps_missing_stream_api=[], mps_missing_per_thread_api=["x"])
    assert handoff_gap(no_mode, "per_thread_mode_to_main")[1] is True
    assert handoff_gap(no_mode, "explicit_stream_to_main") == (None, False)


def test_only_the_unsafe_control_on_mps_turns_tracking_off() -> None:
    assert child_env(suite_on("mps"), ["missing_wait_is_detected"]) == MPS_NO_TRACKING_ENV
    assert child_env(suite_on("mps"), ["explicit_stream_to_main"]) is None
    assert child_env(suite_on("cuda"), ["missing_wait_is_detected"]) is None


def test_case_names_match_their_code() -> None:
    assert tuple(cs_handoff.HANDOFF_CASES) == HANDOFF_CASE_NAMES


# --------------------------------------------------------------------------- end to end


def test_cpu_handoff_group_end_to_end(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--quick",
            "--select",
            "handoff",
            "--batch-queue-file",
            str(FIXTURES / "batch_queue_double.py"),
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        env=dict(os.environ),
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(report_path.read_text())
    results = {c["name"]: c for c in report["checks"]}
    for case in HANDOFF_CASE_NAMES:
        outcome = results[f"handoff/handoff[{case}]"]["outcome"]
        assert outcome == ("not_applicable" if case in HANDOFF_STREAM_CASES else "passed"), case
    executor = results["handoff/handoff[executor_result_to_main]"]["figures"]
    assert executor["handoffs_checked"] == 8 * QUICK.iterations and executor["mismatches"] == 0
    loader = results["handoff/handoff[dataloader_pin_memory]"]["figures"]
    assert loader["batches"] == 2 * QUICK.iterations
    grads = results["handoff/handoff[autograd_backward_on_worker]"]["figures"]
    assert grads["handoffs_checked"] == 3 * 8 * QUICK.iterations
