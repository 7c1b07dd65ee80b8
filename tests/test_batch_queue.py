"""BatchQueue (torch/mps/batch_queue.py of the patched tree), run on CPU with the installed torch.

The module is loaded by path from the PyTorch tree our patch series produces: the rest of that
torch package cannot be imported on Linux, but the module only uses the public torch API.
``MPSBUILD_PATCHED_TREE=DIR`` tests the module of another PyTorch tree (e.g. a patch repo) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import random
import signal
import sys
import threading
import time
from collections import Counter, deque, namedtuple
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

MODULE_PATH = Path("torch") / "mps" / "batch_queue.py"
WAIT = 30  # seconds; no result() in this file may block forever


@pytest.fixture(scope="session")
def bq(patched_tree: Path) -> ModuleType:
    source = patched_tree / MODULE_PATH
    if not source.is_file():
        pytest.fail(
            f"{source} does not exist: the patch series does not add {MODULE_PATH} yet; "
            "merge the BatchQueue patch, or set MPSBUILD_PATCHED_TREE to a PyTorch tree that has it"
        )
    spec = importlib.util.spec_from_file_location("patched_torch_mps_batch_queue", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# Who runs batches of CPU tensors: the worker thread (the default), or a blocking caller, as
# for accelerator tensors. Every test runs under both, so the callers' path, the one MPS
# batches take, is exercised on CPU too; @pytest.mark.runner_policy(NAME) pins one.
HOST_BATCHES_ON_WORKER = {"host-on-worker": True, "callers-run": False}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "runner_policy" in metafunc.fixturenames:
        pinned = metafunc.definition.get_closest_marker("runner_policy")
        if pinned and pinned.args[0] not in HOST_BATCHES_ON_WORKER:
            raise ValueError(
                f"runner_policy({pinned.args[0]!r}): use one of {list(HOST_BATCHES_ON_WORKER)}"
            )
        names = [pinned.args[0]] if pinned else list(HOST_BATCHES_ON_WORKER)
        metafunc.parametrize("runner_policy", names, indirect=True)


@pytest.fixture(autouse=True)
def runner_policy(request: pytest.FixtureRequest, bq: ModuleType, monkeypatch) -> str:
    on_worker = HOST_BATCHES_ON_WORKER[request.param]
    monkeypatch.setattr(bq.BatchQueue, "_host_batches_on_worker", on_worker)
    return request.param


def rows(*values: float, width: int = 3) -> torch.Tensor:
    """A request of len(values) rows; row i is filled with values[i]."""
    return torch.tensor(values, dtype=torch.float32).unsqueeze(1).repeat(1, width)


class Recorder:
    """fn for the queue: records each batch's first column, returns x * 2."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[float]] = []
        self.gate = gate

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        self.batches.append(x[:, 0].tolist())
        return x * 2


# ---------------------------------------------------------------- ordering and slicing


def test_each_caller_gets_its_rows_in_submission_order(bq):
    record = Recorder(gate=threading.Event())
    with bq.BatchQueue(record, max_batch_size=8, max_delay_ms=200) as queue:
        futures = [queue.submit(rows(float(i))) for i in range(20)]
        record.gate.set()
        results = [f.result(WAIT) for f in futures]
    for i, result in enumerate(results):
        assert torch.equal(result, rows(2.0 * i))
    flat = [v for batch in record.batches for v in batch]
    assert flat == [float(i) for i in range(20)]
    assert [len(b) for b in record.batches] == [8, 8, 4]


def test_threads_each_get_their_own_results(bq):
    with bq.BatchQueue(lambda x: x + 1, max_batch_size=16, max_delay_ms=1) as queue:

        def client(cid: int, out: list) -> None:
            for k in range(50):
                value = cid * 1000 + k
                out.append((value, queue(rows(value))[0, 0].item()))

        outputs: list[list] = [[] for _ in range(8)]
        threads = [
            threading.Thread(target=client, args=(c, outputs[c]), daemon=True) for c in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        stats = queue.stats()
    for out in outputs:
        assert len(out) == 50
        assert all(got == sent + 1 for sent, got in out)
    assert stats["requests"] == 400
    assert stats["mean_batch_size"] > 1.0  # 8 threads really shared batches


Pair = namedtuple("Pair", "left right")


@pytest.mark.parametrize(
    "make_output,check",
    [
        (
            lambda x: (x, x.sum(1)),
            lambda o, x: isinstance(o, tuple) and torch.equal(o[1], x.sum(1)),
        ),
        (lambda x: [x, x * 3], lambda o, x: isinstance(o, list) and torch.equal(o[1], x * 3)),
        (
            lambda x: {"y": x - 1, "n": x.norm(dim=1)},
            lambda o, x: list(o) == ["y", "n"] and torch.equal(o["y"], x - 1),
        ),
        (lambda x: Pair(x, None), lambda o, x: isinstance(o, Pair) and o.right is None),
        (lambda x: (x, {"deep": [x + 5]}), lambda o, x: torch.equal(o[1]["deep"][0], x + 5)),
    ],
    ids=["tuple", "list", "dict", "namedtuple-with-None", "nested"],
)
def test_outputs_are_sliced_per_caller_in_every_structure(bq, make_output, check):
    gate = threading.Event()

    def fn(x):
        assert gate.wait(WAIT)
        return make_output(x)

    requests = [rows(1.0), rows(2.0, 3.0, 4.0), rows(5.0, 6.0)]  # 1, 3 and 2 rows
    with bq.BatchQueue(fn, max_batch_size=64, max_delay_ms=50) as queue:
        futures = [queue.submit(x) for x in requests]
        gate.set()
        for x, future in zip(requests, futures, strict=True):
            out = future.result(WAIT)
            assert check(out, x)
            first = out[0] if not isinstance(out, dict) else out["y"]
            assert first.shape[0] == x.shape[0]
        assert queue.stats()["batches"] == 1


def test_structured_inputs_are_collated_leaf_by_leaf(bq):
    calls = []

    def fn(features, extra):
        calls.append((features["a"].shape[0], extra[0].shape[0]))
        return features["a"] + features["b"] * extra[0] + extra[1]

    def request(v: float, n: int):
        a = torch.full((n, 2), v)
        return {"a": a, "b": a * 10}, (torch.ones(n, 2), torch.full((n, 2), 0.5))

    gate_inputs = [request(1.0, 1), request(2.0, 2), request(3.0, 1)]
    with bq.BatchQueue(fn, max_batch_size=8, max_delay_ms=200) as queue:
        futures = [queue.submit(*args) for args in gate_inputs]
        results = [f.result(WAIT) for f in futures]
    assert calls == [(4, 4)]
    for (feats, extra), out in zip(gate_inputs, results, strict=True):
        assert torch.equal(out, feats["a"] + feats["b"] * extra[0] + extra[1])


def test_only_compatible_requests_share_a_batch(bq):
    seen = []
    gate = threading.Event()

    def fn(x):
        assert gate.wait(WAIT)
        seen.append((tuple(x.shape), x.dtype))
        return x

    shapes = [(1, 3), (1, 4), (2, 3), (1, 3)]
    with bq.BatchQueue(fn, max_batch_size=64, max_delay_ms=100) as queue:
        futures = [queue.submit(torch.zeros(s)) for s in shapes]
        futures.append(queue.submit(torch.zeros(1, 3, dtype=torch.float64)))
        futures.append(queue.submit(torch.zeros(1, 3, 1)))
        gate.set()
        outs = [f.result(WAIT) for f in futures]
    assert [tuple(o.shape) for o in outs] == [*shapes, (1, 3), (1, 3, 1)]
    assert outs[-2].dtype == torch.float64
    # (1,3)+(2,3)+(1,3) float32 -> one batch of 4 rows; the other three each alone. No padding.
    assert sorted(seen, key=str) == sorted(
        [((4, 3), torch.float32), ((1, 4), torch.float32), ((1, 3), torch.float64),
         ((1, 3, 1), torch.float32)],
        key=str,
    )  # fmt: skip


# ---------------------------------------------------------------- batch triggers


def test_full_batch_runs_without_waiting_for_the_delay(bq):
    record = Recorder()
    with bq.BatchQueue(record, max_batch_size=4, max_delay_ms=60_000) as queue:
        start = time.monotonic()
        futures = [queue.submit(rows(float(i))) for i in range(8)]
        for f in futures:
            f.result(WAIT)
        elapsed = time.monotonic() - start
        assert elapsed < 5.0
        assert record.batches == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
        late = queue.submit(rows(9.0))  # not full: waits for the (long) delay ...
        time.sleep(0.2)
        assert not late.done()
    assert late.result(WAIT)[0, 0].item() == 18.0  # ... until close() drains it


def test_partial_batch_runs_when_its_oldest_request_waited_max_delay(bq):
    record = Recorder()
    with bq.BatchQueue(record, max_batch_size=100, max_delay_ms=150) as queue:
        start = time.monotonic()
        futures = [queue.submit(rows(float(i))) for i in range(3)]
        assert not futures[0].done()
        for f in futures:
            f.result(WAIT)
        elapsed = time.monotonic() - start
    assert elapsed >= 0.14
    assert elapsed < 5.0
    assert record.batches == [[0.0, 1.0, 2.0]]


def test_zero_delay_runs_what_is_queued_at_once(bq):
    with bq.BatchQueue(lambda x: x, max_batch_size=100, max_delay_ms=0) as queue:
        start = time.monotonic()
        assert queue(rows(1.0))[0, 0].item() == 1.0
        assert time.monotonic() - start < 2.0


def test_oversized_request_runs_alone_and_whole(bq):
    record = Recorder()
    with bq.BatchQueue(record, max_batch_size=4, max_delay_ms=1) as queue:
        out = queue(rows(*range(10)))
    assert out.shape == (10, 3)
    assert record.batches == [[float(i) for i in range(10)]]


# ---------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    "inputs,error,message",
    [
        ((), TypeError, "at least one input tensor"),
        ((torch.tensor(1.0),), ValueError, "0-dim tensor"),
        ((torch.zeros(0, 3),), ValueError, "batch size 0"),
        (([1.0, 2.0],), TypeError, "input 0[0] is a float"),
        (({"a": torch.zeros(2, 1), "b": torch.zeros(3, 1)},), ValueError, "same batch size"),
        ((torch.zeros(2, 2).to_sparse(),), ValueError, "only dense tensors"),
        ((torch.zeros(1, 2), "text"), TypeError, "input 1 is a str"),
        ((torch.quantize_per_tensor(torch.ones(1, 2), 0.5, 0, torch.quint8),), ValueError,
         "input 0 is a quantized tensor"),
        ((torch.ones(1, 2), torch.quantize_per_tensor(torch.ones(1, 2), 0.5, 0, torch.quint8)),
         ValueError, "input 1 is a quantized tensor"),
    ],
    ids=["nothing", "scalar", "empty", "not-a-tensor", "mismatched", "sparse", "string",
         "quantized", "quantized-second"],
)
def test_invalid_input_fails_at_submit_with_a_clear_message(bq, inputs, error, message):
    with bq.BatchQueue(lambda x: x, max_delay_ms=1) as queue:
        with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
            queue.submit(*inputs)
        with pytest.raises(error):
            queue(*inputs)
        assert queue.stats()["pending"] == 0
        assert queue(rows(1.0))[0, 0].item() == 1.0  # the queue still works


def test_constructor_rejects_bad_settings(bq):
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        bq.BatchQueue(lambda x: x, max_batch_size=0)
    with pytest.raises(TypeError, match="max_batch_size must be an int"):
        bq.BatchQueue(lambda x: x, max_batch_size=2.5)
    with pytest.raises(ValueError, match="max_delay_ms must be >= 0"):
        bq.BatchQueue(lambda x: x, max_delay_ms=-1)
    with pytest.raises(ValueError, match="max_delay_ms must be >= 0 and finite"):
        bq.BatchQueue(lambda x: x, max_delay_ms=float("inf"))  # overflowed the first wait
    with pytest.raises(TypeError, match="fn must be callable"):
        bq.BatchQueue(42)


# ---------------------------------------------------------------- errors


def poison_sensitive(x: torch.Tensor) -> torch.Tensor:
    """Fails on any batch holding a negative row, like a model that chokes on bad data."""
    if (x < 0).any():
        raise ValueError(f"negative input in a batch of {x.shape[0]}")
    return x * 2


def test_failing_requests_are_isolated_and_good_ones_succeed(bq):
    gate = threading.Event()

    def fn(x):
        assert gate.wait(WAIT)
        return poison_sensitive(x)

    values = [float(i) for i in range(16)]
    values[3] = values[11] = -1.0
    with bq.BatchQueue(fn, max_batch_size=16, max_delay_ms=100) as queue:
        futures = [queue.submit(rows(v)) for v in values]
        gate.set()
        for v, f in zip(values, futures, strict=True):
            if v < 0:
                with pytest.raises(ValueError, match=r"batch of 1$"):
                    f.result(WAIT)
            else:
                assert f.result(WAIT)[0, 0].item() == 2 * v
        stats = queue.stats()
    assert stats["failed_requests"] == 2
    assert stats["requests"] == 14
    assert stats["fn_errors"] >= 3  # the full batch, then halves down to the two culprits


def test_blocking_call_raises_the_requests_own_error(bq):
    with bq.BatchQueue(poison_sensitive, max_delay_ms=1) as queue:
        with pytest.raises(ValueError, match="negative input"):
            queue(rows(-5.0))
        assert queue(rows(5.0))[0, 0].item() == 10.0


def test_output_without_the_batch_dimension_fails_clearly(bq):
    with (
        bq.BatchQueue(lambda x: x.sum(), max_delay_ms=1) as queue,
        pytest.raises(ValueError, match="must have the batch as dim 0"),
    ):
        queue.submit(rows(1.0, 2.0)).result(WAIT)


def test_calling_the_queue_from_its_own_fn_raises_instead_of_deadlocking(bq):
    holder = {}

    def fn(x):
        return holder["queue"](x)

    with bq.BatchQueue(fn, max_delay_ms=1) as queue:
        holder["queue"] = queue
        with pytest.raises(RuntimeError, match="would wait for itself"):
            queue.submit(rows(1.0)).result(WAIT)


def test_cancelled_future_is_left_out_of_its_batch(bq):
    record = Recorder()
    with bq.BatchQueue(record, max_batch_size=8, max_delay_ms=300) as queue:
        futures = [queue.submit(rows(float(i))) for i in range(3)]
        assert futures[1].cancel()
    assert futures[0].result(WAIT)[0, 0].item() == 0.0
    assert futures[2].result(WAIT)[0, 0].item() == 4.0
    with pytest.raises(CancelledError):
        futures[1].result(WAIT)
    assert record.batches == [[0.0, 2.0]]


# ---------------------------------------------------------------- lifecycle


def test_close_with_drain_runs_everything_queued_without_waiting(bq):
    queue = bq.BatchQueue(lambda x: x + 1, max_batch_size=1000, max_delay_ms=60_000)
    futures = [queue.submit(rows(float(i))) for i in range(10)]
    start = time.monotonic()
    queue.close()
    assert time.monotonic() - start < 5.0
    assert [f.result(0)[0, 0].item() for f in futures] == [float(i + 1) for i in range(10)]
    assert queue.closed
    with pytest.raises(RuntimeError, match="closed"):
        queue.submit(rows(1.0))
    with pytest.raises(RuntimeError, match="closed"):
        queue(rows(1.0))
    queue.close()  # idempotent


def test_close_without_drain_fails_queued_requests_and_finishes_the_running_batch(bq):
    started, gate = threading.Event(), threading.Event()

    def fn(x):
        started.set()
        assert gate.wait(WAIT)
        return x

    queue = bq.BatchQueue(fn, max_batch_size=1, max_delay_ms=0)
    running = queue.submit(rows(1.0))
    assert started.wait(WAIT)
    queued = [queue.submit(rows(2.0)) for _ in range(5)]
    closer = threading.Thread(target=queue.close, kwargs={"drain": False}, daemon=True)
    closer.start()
    for f in queued:
        with pytest.raises(RuntimeError, match="closed \\(drain=False\\)"):
            f.result(WAIT)
    gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert running.result(WAIT)[0, 0].item() == 1.0


def test_context_manager_closes_and_drains(bq):
    with bq.BatchQueue(lambda x: x, max_batch_size=100, max_delay_ms=60_000) as queue:
        future = queue.submit(rows(3.0))
    assert queue.closed
    assert future.result(0)[0, 0].item() == 3.0


class WorkerKiller(BaseException):
    """Not an Exception: fn raising it is not a request's fault; it kills the worker."""


def test_worker_death_fails_every_pending_request_with_the_cause(bq):
    started, gate = threading.Event(), threading.Event()
    killer = WorkerKiller("boom")

    def fn(x):
        started.set()
        assert gate.wait(WAIT)
        raise killer

    queue = bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=0)
    running = queue.submit(rows(1.0))
    assert started.wait(WAIT)
    queued = [queue.submit(rows(float(i))) for i in range(6)]
    blocked: list[BaseException] = []

    def blocking_caller() -> None:
        try:
            queue(rows(9.0))
        except BaseException as exc:
            blocked.append(exc)

    caller = threading.Thread(target=blocking_caller, daemon=True)
    caller.start()
    time.sleep(0.05)
    gate.set()
    caller.join(WAIT)
    assert not caller.is_alive()
    for f in [running, *queued]:
        exc = f.exception(WAIT)
        assert isinstance(exc, RuntimeError)
        assert "worker thread died" in str(exc)
        assert exc.__cause__ is killer
    assert len(blocked) == 1
    assert blocked[0].__cause__ is killer
    with pytest.raises(RuntimeError, match="worker thread died") as info:
        queue.submit(rows(1.0))
    assert info.value.__cause__ is killer
    assert queue.closed
    queue.close()  # returns: the worker is gone


# ---------------------------------------------------------------- options and stats


def test_inference_mode_is_opt_in(bq):
    weight = torch.ones(3, 3, requires_grad=True)
    with bq.BatchQueue(lambda x: x @ weight, max_delay_ms=1) as plain:
        assert plain(rows(1.0)).requires_grad
    with bq.BatchQueue(lambda x: x @ weight, max_delay_ms=1, inference_mode=True) as inference:
        out = inference(rows(1.0))
    assert out.is_inference()
    assert not out.requires_grad


def test_output_device_copies_each_batch_once(bq):
    with bq.BatchQueue(lambda x: x * 2, max_delay_ms=1, output_device="cpu") as queue:
        assert queue(rows(2.0))[0, 0].item() == 4.0


def test_stats_report_batches_sizes_and_percentiles(bq):
    gate = threading.Event()

    def fn(x):
        assert gate.wait(WAIT)
        return x

    started = time.monotonic()
    with bq.BatchQueue(fn, max_batch_size=4, max_delay_ms=10_000) as queue:
        futures = [queue.submit(rows(1.0)) for _ in range(8)]
        assert queue.stats()["pending"] >= 4  # the first batch of 4 may be running
        time.sleep(0.05)
        gate.set()
        for f in futures:
            f.result(WAIT)
        stats = queue.stats()
    elapsed = time.monotonic() - started
    assert stats["batches"] == 2
    assert 0.04 <= stats["busy_seconds"] <= elapsed  # the first batch waited 0.05 s in fn
    assert stats["requests"] == 8
    assert stats["mean_batch_size"] == 4.0
    assert stats["pending"] == 0
    assert 0 <= stats["queue_wait_p50_ms"] <= stats["queue_wait_p99_ms"]
    assert stats["latency_p99_ms"] >= 50.0 >= 0  # all waited for the gate
    assert stats["latency_p50_ms"] <= stats["latency_p99_ms"]
    assert "max_batch_size=4" in repr(queue)


def test_batch_inference_serves_a_model_to_threads(bq):
    model = torch.nn.Linear(3, 2)
    inputs = [torch.randn(1, 3) for _ in range(32)]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    results: dict[int, torch.Tensor] = {}
    with bq.batch_inference(model, max_batch_size=8) as infer:
        threads = [
            threading.Thread(
                target=lambda i=i: results.__setitem__(i, infer(inputs[i])), daemon=True
            )
            for i in range(32)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
    assert infer.closed
    for i in range(32):
        assert torch.allclose(results[i], expected[i])
        assert results[i].is_inference()


# ---------------------------------------------------------------- stress


@pytest.mark.parametrize("drain", [False, True], ids=["close-drop", "close-drain"])
def test_stress_every_request_completes_exactly_once(bq, drain):
    """64 threads, 100,000 requests (futures and blocking calls), 1% poison, close midway."""
    total, threads_n = (100_000, 64) if not drain else (30_000, 64)
    per_thread = total // threads_n
    queue = bq.BatchQueue(poison_sensitive, max_batch_size=32, max_delay_ms=1)
    completions: Counter[int] = Counter()
    outcomes: dict[int, str] = {}
    submitted: list[int] = []
    rejected = Counter()
    lock = threading.Lock()
    close_at = total // 2
    closed_by: list[int] = []

    def settle(rid: int, value: float, result: torch.Tensor | None, exc: BaseException | None):
        if exc is None:
            assert result is not None
            kind = "ok" if result[0, 0].item() == 2 * value and value >= 0 else "WRONG"
        elif isinstance(exc, ValueError):
            kind = "poison" if value < 0 else "WRONG"
        elif isinstance(exc, RuntimeError) and "drain=False" in str(exc):
            kind = "dropped"
        else:
            kind = f"WRONG {exc!r}"
        with lock:
            completions[rid] += 1
            outcomes[rid] = kind

    def maybe_close() -> None:
        with lock:
            due = len(submitted) >= close_at and not closed_by
            if due:
                closed_by.append(threading.get_ident())
        if due:
            queue.close(drain=drain)

    def future_client(cid: int, rng: random.Random) -> None:
        for k in range(0, per_thread, 8):
            pending: list[tuple[int, float, Future]] = []
            for j in range(k, min(k + 8, per_thread)):
                rid = cid * per_thread + j
                value = -1.0 if rng.random() < 0.01 else float(rid)
                try:
                    future = queue.submit(rows(value))
                except RuntimeError:
                    rejected[cid] += 1
                    return
                with lock:
                    submitted.append(rid)
                future.add_done_callback(
                    lambda f, rid=rid, value=value: settle(
                        rid, value, None if f.exception() else f.result(), f.exception()
                    )
                )
                pending.append((rid, value, future))
            for _, _, future in pending:
                future.exception(WAIT)  # completed (either way) in time
            maybe_close()

    def blocking_client(cid: int, rng: random.Random) -> None:
        for j in range(per_thread):
            rid = cid * per_thread + j
            value = -1.0 if rng.random() < 0.01 else float(rid)
            with lock:
                submitted.append(rid)
            try:
                result = queue(rows(value))
            except RuntimeError as exc:
                if "closed; it accepts no more" in str(exc):
                    with lock:
                        submitted.remove(rid)
                    rejected[cid] += 1
                    return
                settle(rid, value, None, exc)
            except ValueError as exc:
                settle(rid, value, None, exc)
            else:
                settle(rid, value, result, None)
            maybe_close()

    threads = [
        threading.Thread(
            target=future_client if cid % 2 else blocking_client,
            args=(cid, random.Random(cid)),
            daemon=True,  # a stuck client must fail the test, not hang the interpreter's exit
        )
        for cid in range(threads_n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    queue.close()
    assert not any(t.is_alive() for t in threads), "a client is stuck: a request never completed"

    assert closed_by, "the queue was never closed midway"
    assert len(submitted) == len(set(submitted))
    assert set(completions) == set(submitted)
    assert all(n == 1 for n in completions.values()), "a request completed more than once"
    kinds = Counter(outcomes.values())
    assert not [k for k in kinds if k.startswith("WRONG")], kinds
    assert kinds["ok"] > 0.4 * total
    assert kinds["poison"] > 0
    assert sum(rejected.values()) > 0  # submits after close() were refused
    if drain:
        assert kinds["dropped"] == 0
    stats = queue.stats()
    assert stats["requests"] == kinds["ok"]
    assert stats["failed_requests"] == kinds["poison"]
    assert stats["mean_batch_size"] > 2


# ---------------------------------------------------------------- the idle fast path


def wait_until(condition, what: str) -> None:
    if not happens_within(condition, WAIT):
        pytest.fail(f"timed out waiting until {what}")


def happens_within(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_idle_queue_runs_the_batch_on_the_calling_thread(bq):
    threads_seen = []

    def fn(x):
        threads_seen.append(threading.current_thread())
        return x * 2

    with bq.BatchQueue(fn, max_batch_size=1, max_delay_ms=0) as queue:
        assert queue(rows(3.0))[0, 0].item() == 6.0
        assert queue(rows(4.0))[0, 0].item() == 8.0
    assert threads_seen == [threading.current_thread()] * 2  # no hand-off to the worker


@pytest.mark.runner_policy("callers-run")
def test_requests_arriving_during_a_callers_batch_join_the_next_in_order_and_isolated(bq):
    """The first caller runs its batch; later ones queue, in order, and one of them runs
    the next batch on its own thread, where the poisoned request fails alone."""
    gate, started = threading.Event(), threading.Event()
    batches: list[tuple[list[float], threading.Thread]] = []

    def fn(x):
        if not started.is_set():
            started.set()
            assert gate.wait(WAIT)
        batches.append((x[:, 0].tolist(), threading.current_thread()))
        return poison_sensitive(x)

    values = [1.0, 2.0, -1.0, 4.0, 5.0]
    results: dict[float, Any] = {}

    def client(value: float) -> None:
        try:
            results[value] = queue(rows(value))[0, 0].item()
        except ValueError as exc:
            results[value] = exc

    with bq.BatchQueue(fn, max_batch_size=64, max_delay_ms=0) as queue:
        first = threading.Thread(target=client, args=(0.5,), name="first-caller", daemon=True)
        first.start()
        assert started.wait(WAIT)
        callers = []
        for i, value in enumerate(values):  # one at a time: submission order is known
            callers.append(threading.Thread(target=client, args=(value,), daemon=True))
            callers[-1].start()
            wait_until(lambda i=i: queue.stats()["pending"] == i + 1, f"{i + 1} are queued")
        gate.set()
        for t in [first, *callers]:
            t.join(WAIT)
            assert not t.is_alive()
    assert batches[0] == ([0.5], first)  # ran on the caller that found the queue idle
    assert batches[1][0] == values  # one batch, in submission order
    assert batches[1][1] in callers  # run by a waiting caller, not by the worker
    assert results[0.5] == 1.0
    for value in values:
        if value < 0:
            assert isinstance(results[value], ValueError)
        else:
            assert results[value] == 2 * value


@pytest.mark.runner_policy("host-on-worker")
def test_host_batches_of_several_callers_run_on_the_worker_thread(bq):
    """CPU batches keep to one thread, so a CPU model keeps one intra-op thread team: no
    blocking caller runs a batch of several requests, and each caller gets its own rows."""
    batches: list[tuple[int, threading.Thread]] = []

    def fn(x):
        batches.append((x.shape[0], threading.current_thread()))
        return x * 2

    results: list[tuple[float, Any]] = []

    def client(value: float) -> None:
        try:
            results.append((value, queue(rows(value))[0, 0].item()))
        except Exception as exc:
            results.append((value, exc))

    values = [1.0, 2.0, 3.0, 4.0] * 5
    callers = [threading.Thread(target=client, args=(v,), daemon=True) for v in values]
    with bq.BatchQueue(fn, max_batch_size=4, max_delay_ms=50, name="host-runner") as queue:
        for t in callers:
            t.start()
        for t in callers:
            t.join(WAIT)
            assert not t.is_alive()
    assert not [r for r in results if isinstance(r[1], Exception)], results
    assert sorted(results) == sorted((v, 2 * v) for v in values), results
    assert sum(size for size, _ in batches) == 20
    assert any(size > 1 for size, _ in batches), "no batch of several requests formed"
    assert {thread.name for _, thread in batches} == {"host-runner"}, batches


@pytest.mark.runner_policy("host-on-worker")
def test_a_device_runner_hands_host_batches_to_the_worker(bq):
    """A runner whose own request is done passes the role on: to the worker when only host
    callers wait. float64 requests stand in for accelerator tensors here."""

    class DeviceAsDouble(bq.BatchQueue):
        def _may_run_batches(self, req):
            return req.waiter is not None and req.leaves[0].dtype == torch.float64

    gate, started = threading.Event(), threading.Event()
    batches: list[tuple[torch.dtype, int, str]] = []

    def fn(x):
        if not started.is_set():
            started.set()
            assert gate.wait(WAIT)
        batches.append((x.dtype, x.shape[0], threading.current_thread().name))
        return x * 2

    results: list[float] = []
    with DeviceAsDouble(fn, max_batch_size=8, max_delay_ms=0, name="worker") as queue:
        device_caller = threading.Thread(
            target=lambda: results.append(queue(rows(0.5).double())[0, 0].item()),
            name="device-caller", daemon=True,
        )  # fmt: skip
        device_caller.start()
        assert started.wait(WAIT)
        hosts = [
            threading.Thread(target=lambda v=v: results.append(queue(rows(v))[0, 0].item()))
            for v in (1.0, 2.0, 3.0)
        ]
        for i, t in enumerate(hosts):
            t.start()
            wait_until(lambda i=i: queue.stats()["pending"] == i + 1, f"{i + 1} are queued")
        gate.set()
        for t in [device_caller, *hosts]:
            t.join(WAIT)
            assert not t.is_alive()
    assert sorted(results) == [1.0, 2.0, 4.0, 6.0]
    assert batches == [(torch.float64, 1, "device-caller"), (torch.float32, 3, "worker")]


def test_a_request_that_fills_an_idle_queue_runs_at_once_on_its_caller(bq):
    """The solo path: no queueing, no wait for max_delay; errors and stats as for a batch."""
    threads_seen = []

    def fn(x):
        threads_seen.append(threading.current_thread())
        return poison_sensitive(x)

    with bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=60_000) as queue:
        started = time.monotonic()
        assert queue(rows(1.0, 2.0))[:, 0].tolist() == [2.0, 4.0]
        with pytest.raises(ValueError, match="negative input in a batch of 2"):
            queue(rows(3.0, -1.0))
        assert queue(rows(5.0, 6.0))[:, 0].tolist() == [10.0, 12.0]
        assert time.monotonic() - started < 30  # none waited the 60 s delay
        stats = queue.stats()
    assert threads_seen == [threading.current_thread()] * 3
    assert (stats["batches"], stats["requests"], stats["failed_requests"]) == (2, 2, 1)
    assert stats["fn_errors"] == 1 and stats["mean_batch_size"] == 2.0
    assert stats["queue_wait_p99_ms"] == 0.0 and stats["pending"] == 0


@pytest.mark.parametrize("output_device", [None, "cpu"])
def test_a_solo_request_keeps_the_structure_of_its_inputs_and_outputs(bq, output_device):
    """The solo path's own output handling: fn gets the request's structure, the caller gets
    fn's (None leaves included), and a wrong batch dim is refused as for a batch."""
    threads_seen = []

    def fn(pair, extra):
        threads_seen.append(threading.current_thread())
        a, b = pair
        if extra["short"]:
            return {"sum": (a + b)[:1]}
        return {"sum": a + b, "parts": [a, None, extra["w"] * 2]}

    with bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=60_000,
                       output_device=output_device) as queue:  # fmt: skip
        out = queue((rows(1.0, 2.0), rows(3.0, 4.0)), {"w": rows(5.0, 6.0), "short": []})
        with pytest.raises(ValueError, match=r"output\['sum'\] of shape \(1, 3\) for a batch of 2"):
            queue((rows(1.0, 2.0), rows(3.0, 4.0)), {"w": rows(5.0, 6.0), "short": [rows(1, 2)]})
        stats = queue.stats()
    assert threads_seen == [threading.current_thread()] * 2  # both ran solo, on the caller
    assert set(out) == {"sum", "parts"} and out["sum"][:, 0].tolist() == [4.0, 6.0]
    assert out["parts"][0][:, 0].tolist() == [1.0, 2.0] and out["parts"][1] is None
    assert out["parts"][2][:, 0].tolist() == [10.0, 12.0]
    assert (stats["batches"], stats["requests"], stats["failed_requests"]) == (1, 1, 1)


def test_requests_arriving_during_a_solo_batch_are_served_in_order(bq):
    gate, started = threading.Event(), threading.Event()
    batches: list[list[float]] = []

    def fn(x):
        if not started.is_set():
            started.set()
            assert gate.wait(WAIT)
        batches.append(x[:, 0].tolist())
        return x * 2

    results: dict[float, float] = {}

    def client(value: float) -> None:
        results[value] = queue(rows(value))[0, 0].item()

    with bq.BatchQueue(fn, max_batch_size=1, max_delay_ms=0) as queue:
        first = threading.Thread(target=client, args=(0.5,), daemon=True)
        first.start()
        assert started.wait(WAIT)
        later = []
        for i, value in enumerate([1.0, 2.0, 3.0]):  # queued behind the solo batch, in order
            later.append(threading.Thread(target=client, args=(value,), daemon=True))
            later[-1].start()
            wait_until(lambda i=i: queue.stats()["pending"] == i + 1, f"{i + 1} are queued")
        gate.set()
        for t in [first, *later]:
            t.join(WAIT)
            assert not t.is_alive()
    assert batches == [[0.5], [1.0], [2.0], [3.0]]
    assert results == {0.5: 1.0, 1.0: 2.0, 2.0: 4.0, 3.0: 6.0}


class InterruptOnce(deque):
    """A stats deque whose first append raises KeyboardInterrupt, as a Ctrl-C landing on the
    runner's bookkeeping after fn returned."""

    def append(self, value) -> None:
        if not getattr(self, "fired", False):
            self.fired = True
            raise KeyboardInterrupt
        super().append(value)


def test_solo_runner_interrupted_outside_fn_gives_the_role_back(bq):
    queue = bq.BatchQueue(lambda x: x * 2, max_batch_size=1, max_delay_ms=0)
    queue._waits = InterruptOnce(maxlen=16)
    with pytest.raises(KeyboardInterrupt):
        queue(rows(1.0))
    results = {}
    caller = threading.Thread(target=lambda: results.update(value=queue(rows(2.0))[0, 0].item()))
    caller.start()
    caller.join(WAIT)
    assert not caller.is_alive(), "the role stayed with the interrupted runner: the queue hangs"
    assert results["value"] == 4.0
    assert queue.submit(rows(3.0)).result(WAIT)[0, 0].item() == 6.0
    queue.close()


@pytest.mark.parametrize("drain", [True, False])
def test_close_from_another_thread_waits_for_a_running_solo_call(bq, drain):
    gate, started = threading.Event(), threading.Event()

    def fn(x):
        started.set()
        assert gate.wait(WAIT)
        return x * 2

    queue = bq.BatchQueue(fn, max_batch_size=1, max_delay_ms=0)
    result = {}
    caller = threading.Thread(target=lambda: result.update(value=queue(rows(1.0))[0, 0].item()))
    caller.start()
    assert started.wait(WAIT)
    closer = threading.Thread(target=queue.close, kwargs={"drain": drain})
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() returned while a solo batch was still running"
    gate.set()
    for t in (caller, closer):
        t.join(WAIT)
        assert not t.is_alive()
    assert result == {"value": 2.0}  # the running solo call keeps its result
    assert not queue._worker.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        queue(rows(2.0))


def interrupt_right_after(queue, step: str, monkeypatch, takes_role: bool = True) -> None:
    """Call ``queue`` once with a Ctrl-C landing right after ``step`` returned (gave the caller
    the runner role, or queued its request without it), before the caller ran or waited for
    anything; then the next caller must still be served, and close() must return."""
    original = getattr(queue, step)

    def step_then_interrupt(*args):
        assert original(*args) is takes_role, f"{step} did not return {takes_role}"
        raise KeyboardInterrupt

    monkeypatch.setattr(queue, step, step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        queue(rows(1.0))
    monkeypatch.delattr(queue, step)  # the class's method again
    results = {}
    caller = threading.Thread(
        target=lambda: results.update(value=queue(rows(2.0))[0, 0].item()), daemon=True
    )
    caller.start()
    caller.join(WAIT)
    assert not caller.is_alive(), "the next caller was never served: the queue hangs"
    assert results == {"value": 4.0}
    closer = threading.Thread(target=queue.close, daemon=True)
    closer.start()
    closer.join(WAIT)
    assert not closer.is_alive()


def test_an_interrupt_right_after_taking_the_solo_role_hands_it_on(bq, monkeypatch):
    queue = bq.BatchQueue(lambda x: x * 2, max_batch_size=1, max_delay_ms=0)
    interrupt_right_after(queue, "_take_solo_role", monkeypatch)


@pytest.mark.runner_policy("callers-run")  # a blocking caller is handed the role by _enqueue
def test_an_interrupt_right_after_taking_the_role_for_a_batch_hands_it_on(bq, monkeypatch):
    queue = bq.BatchQueue(lambda x: x * 2, max_batch_size=2, max_delay_ms=0)
    interrupt_right_after(queue, "_enqueue", monkeypatch)


@pytest.mark.runner_policy("host-on-worker")  # _enqueue queues it for the worker: no role
def test_an_interrupt_right_after_queueing_drops_the_request(bq, monkeypatch):
    """The request must leave the queue, or its batch wakes it first and nobody wakes the
    callers behind it."""
    queue = bq.BatchQueue(lambda x: x * 2, max_batch_size=2, max_delay_ms=200)
    interrupt_right_after(queue, "_enqueue", monkeypatch, takes_role=False)


def test_solo_path_is_refused_once_closed(bq):
    queue = bq.BatchQueue(lambda x: x, max_batch_size=1, max_delay_ms=0)
    queue.close()
    with pytest.raises(RuntimeError, match="closed"):
        queue(rows(1.0))


# ---------------------------------------------------------------- asyncio clients


def run_loop_in_thread(coroutine) -> tuple[threading.Thread, dict]:
    """Run ``coroutine`` with asyncio.run on a new thread; the outcome lands in the dict."""
    box: dict[str, Any] = {}

    def main() -> None:
        try:
            box["result"] = asyncio.run(coroutine)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, box


def test_submit_async_returns_each_clients_rows(bq):
    async def main(queue):
        outs = await asyncio.gather(*(queue.submit_async(rows(float(i))) for i in range(20)))
        return [o[0, 0].item() for o in outs]

    with bq.BatchQueue(lambda x: x * 2, max_batch_size=8, max_delay_ms=5) as queue:
        assert asyncio.run(main(queue)) == [2.0 * i for i in range(20)]
        stats = queue.stats()
    assert stats["requests"] == 20
    assert stats["mean_batch_size"] > 1.0


def test_thread_future_and_asyncio_clients_share_batches_across_event_loops(bq):
    gate, started = threading.Event(), threading.Event()
    batches: list[list[float]] = []

    def fn(x):
        if not started.is_set():
            started.set()
            assert gate.wait(WAIT)
        batches.append(x[:, 0].tolist())
        return x * 2

    async def loop_client(queue, values):
        outs = await asyncio.gather(*(queue.submit_async(rows(v)) for v in values))
        return [o[0, 0].item() for o in outs]

    with bq.BatchQueue(fn, max_batch_size=64, max_delay_ms=0) as queue:
        holder = queue.submit(rows(0.0))
        assert started.wait(WAIT)  # the first batch holds the queue: the others all queue
        thread_results: dict[float, float] = {}
        threads = [
            threading.Thread(
                target=lambda v=v: thread_results.__setitem__(v, queue(rows(v))[0, 0].item()),
                daemon=True,
            )
            for v in (1.0, 2.0, 3.0)
        ]
        for t in threads:
            t.start()
        futures = {v: queue.submit(rows(v)) for v in (4.0, 5.0)}
        loops = [
            run_loop_in_thread(loop_client(queue, [10.0 + k, 20.0 + k, 30.0 + k]))
            for k in (0.0, 1.0)
        ]
        wait_until(lambda: queue.stats()["pending"] == 11, "all 11 requests are queued")
        gate.set()
        for t in threads:
            t.join(WAIT)
        for t, _ in loops:
            t.join(WAIT)
        assert holder.result(WAIT)[0, 0].item() == 0.0
    assert thread_results == {1.0: 2.0, 2.0: 4.0, 3.0: 6.0}
    assert {v: f.result(0)[0, 0].item() for v, f in futures.items()} == {4.0: 8.0, 5.0: 10.0}
    assert [box.get("result") for _, box in loops] == [[20.0, 40.0, 60.0], [22.0, 42.0, 62.0]]
    assert len(batches) == 2  # threads, futures and both event loops in one batch
    assert sorted(batches[1]) == [1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0, 20.0, 21.0, 30.0, 31.0]


def test_asyncio_client_cancelled_mid_batch_loses_only_its_result(bq):
    gate, started = threading.Event(), threading.Event()

    def fn(x):
        started.set()
        assert gate.wait(WAIT)
        return x * 2

    loop_errors: list[dict] = []

    async def main(queue):
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        doomed = asyncio.ensure_future(queue.submit_async(rows(1.0)))
        kept = asyncio.ensure_future(queue.submit_async(rows(2.0)))
        await asyncio.to_thread(started.wait, WAIT)  # both are in the running batch now
        doomed.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        kept_value = (await kept)[0, 0].item()
        after = (await queue.submit_async(rows(3.0)))[0, 0].item()
        return kept_value, after

    with bq.BatchQueue(fn, max_batch_size=8, max_delay_ms=20) as queue:
        assert asyncio.run(main(queue)) == (4.0, 6.0)
        stats = queue.stats()
    assert stats["batches"] == 2
    assert loop_errors == []  # no "InvalidStateError" or other error reached the loop


def test_asyncio_client_cancelled_while_queued_is_left_out_of_its_batch(bq):
    record = Recorder()

    async def main(queue):
        tasks = [asyncio.ensure_future(queue.submit_async(rows(float(i)))) for i in range(3)]
        await asyncio.sleep(0)  # every task has queued its request
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    with bq.BatchQueue(record, max_batch_size=8, max_delay_ms=100) as queue:
        outs = asyncio.run(main(queue))
    assert isinstance(outs[1], asyncio.CancelledError)
    assert outs[0][0, 0].item() == 0.0 and outs[2][0, 0].item() == 4.0
    assert record.batches == [[0.0, 2.0]]


def test_close_without_drain_fails_waiting_asyncio_clients(bq):
    gate, started = threading.Event(), threading.Event()

    def fn(x):
        started.set()
        assert gate.wait(WAIT)
        return x

    async def main(queue):
        return await asyncio.gather(
            *(queue.submit_async(rows(float(i))) for i in range(4)), return_exceptions=True
        )

    queue = bq.BatchQueue(fn, max_batch_size=1, max_delay_ms=0)
    running = queue.submit(rows(9.0))
    assert started.wait(WAIT)
    loop_thread, box = run_loop_in_thread(main(queue))
    wait_until(lambda: queue.stats()["pending"] == 4, "the asyncio clients are queued")
    closer = threading.Thread(target=queue.close, kwargs={"drain": False}, daemon=True)
    closer.start()
    loop_thread.join(WAIT)
    assert not loop_thread.is_alive()
    assert len(box["result"]) == 4
    for exc in box["result"]:
        assert isinstance(exc, RuntimeError) and "closed (drain=False)" in str(exc)
    gate.set()
    closer.join(WAIT)
    assert running.result(WAIT)[0, 0].item() == 9.0


def test_async_with_drains_waiting_asyncio_clients_and_then_refuses(bq):
    async def main():
        queue = bq.BatchQueue(lambda x: x + 1, max_batch_size=100, max_delay_ms=60_000)
        async with queue:
            tasks = [asyncio.ensure_future(queue.submit_async(rows(float(i)))) for i in range(5)]
            await asyncio.sleep(0.01)
            assert not any(t.done() for t in tasks)  # waiting for the (long) delay
        outs = [t.result()[0, 0].item() for t in tasks]  # aclose() drained them
        with pytest.raises(RuntimeError, match="closed"):
            await queue.submit_async(rows(1.0))
        return outs, queue.closed

    assert asyncio.run(main()) == ([1.0, 2.0, 3.0, 4.0, 5.0], True)


# ---------------------------------------------------------------- stream ordering


class StandInStream:
    """A stream whose queued work runs only when an event recorded after it is waited for."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id, self.device_index = stream_id, 0
        self.pending: list = []

    def __eq__(self, other: object) -> bool:  # as torch.Stream: the same id and device
        return isinstance(other, StandInStream) and (self.stream_id, self.device_index) == (
            other.stream_id,
            other.device_index,
        )


class StandInEvent:
    def __init__(self, stream: StandInStream) -> None:
        self.stream, self.work = stream, list(stream.pending)

    def complete(self) -> None:
        for op in self.work:
            if op in self.stream.pending:
                self.stream.pending.remove(op)
                op()


class StandInStreams:
    """Replaces batch_queue._streams: CPU tensors get streams; every call is logged."""

    on_cpu = True

    def __init__(self, keep_waits: bool = True) -> None:
        self.default = StandInStream(0)
        self.local = threading.local()
        self.log: list[tuple[str, int]] = []
        self.kept: list[tuple[int, torch.Tensor]] = []  # (stream id, tensor) of keep_for()
        self.keep_waits = keep_waits

    def default_stream(self, x):
        return self.default

    def current_stream(self, x=None):
        return getattr(self.local, "stream", self.default)

    def other_stream(self, x, index):
        current = self.current_stream(x)
        return None if current == self.default else current

    def waiting_stream(self, event, batch_stream):
        return batch_stream if batch_stream is not None else self.current_stream()

    def set_stream(self, stream) -> None:
        self.local.stream = stream

    def record(self, stream):
        self.log.append(("record", stream.stream_id))
        return StandInEvent(stream)

    def wait(self, stream, event) -> None:
        self.log.append(("wait", event.stream.stream_id))
        if self.keep_waits:  # the stream runs nothing of its own before the event's work
            event.complete()

    def synchronize(self, event) -> None:
        self.log.append(("synchronize", event.stream.stream_id))
        event.complete()

    def keep_for(self, x, stream) -> None:
        self.kept.append((stream.stream_id, x))

    def query(self, event) -> bool:
        return True  # the stand-in runs a stream's work when it is waited for

    def copy(self, x, device, defer=True):
        return x.to(device), False


class CudaLikeStream(torch.Stream):
    """Compares as torch.cuda.Stream does: its Python __eq__ is False for a plain torch.Stream."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CudaLikeStream) and super().__eq__(other)

    __hash__ = torch.Stream.__hash__


class CudaTensorStandIn:
    """What the stream lookups read of a CUDA tensor (none can be made on a CPU torch)."""

    device = torch.device("cuda", 0)

    def get_device(self) -> int:
        return 0


def test_a_caller_on_the_default_stream_needs_no_event(bq, monkeypatch) -> None:
    # torch.cuda.default_stream gives a torch.cuda.Stream, torch.accelerator.current_stream a
    # plain torch.Stream: compared with == (as a first version of this check did), the default
    # stream never matched itself, and every request recorded an event and took the slow path
    # (0.75x of a lock, H200 MLP).
    cuda = 1  # c10::DeviceType::CUDA
    monkeypatch.setattr(
        torch.cuda,
        "default_stream",
        lambda device: CudaLikeStream(stream_id=0, device_index=0, device_type=cuda),
    )
    streams = bq._DeviceStreams()
    for current_id, expected in ((0, None), (3, 3), (0, None)):

        def current_stream(index: int, stream_id: int = current_id) -> torch.Stream:
            return torch.Stream(stream_id=stream_id, device_index=index, device_type=cuda)

        monkeypatch.setattr(torch._C, "_accelerator_getStream", current_stream, raising=False)
        other = streams.other_stream(CudaTensorStandIn(), 0)
        assert (None if other is None else other.stream_id) == expected


class SlowIdStream(torch.Stream):
    """A default stream whose id takes a while to read: other threads run meanwhile."""

    @property
    def stream_id(self) -> int:
        time.sleep(0.01)
        return super().stream_id


def test_concurrent_first_lookups_of_the_default_stream_all_see_it(bq, monkeypatch):
    # Threads looking up a device's default stream for the first time at once: a cache of the
    # stream and a second one of its id, written one after the other, let a thread find the
    # stream without its id, and submit() raised KeyError.
    monkeypatch.setattr(
        torch.cuda,
        "default_stream",
        lambda device: SlowIdStream(stream_id=0, device_index=0, device_type=1),
    )
    monkeypatch.setattr(
        torch._C,
        "_accelerator_getStream",
        lambda index: torch.Stream(stream_id=0, device_index=index, device_type=1),
        raising=False,
    )
    streams = bq._DeviceStreams()
    start = threading.Barrier(8)
    seen: list[Any] = []

    def look_up() -> None:
        start.wait(WAIT)
        try:
            seen.append(streams.other_stream(CudaTensorStandIn(), 0))
        except Exception as exc:  # the failure under test, kept to compare
            seen.append(exc)

    threads = [threading.Thread(target=look_up, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert seen == [None] * 8


def stream_ordering_run(
    bq, monkeypatch, streams: StandInStreams, solo: bool = False
) -> tuple[float, float]:
    """A caller on side stream 7 submits an input its stream has not written yet; fn's output
    is written by work queued on the batch's stream. Returns (value seen, value expected).
    solo: a blocking request that fills an idle queue, run on the caller's own thread."""
    monkeypatch.setattr(bq, "_streams", streams)
    gate = threading.Event()

    def fn(x):
        assert gate.wait(WAIT)
        assert streams.current_stream() is streams.default  # the batch runs on its stream
        out = torch.zeros_like(x)
        streams.current_stream().pending.append(lambda: out.copy_(x * 2))
        return out

    side = StandInStream(7)
    streams.set_stream(side)
    try:
        x = torch.zeros(1, 3)
        side.pending.append(lambda: x.fill_(5.0))  # the caller's "kernel", not yet run
        with bq.BatchQueue(fn, max_batch_size=1 if solo else 4, max_delay_ms=0) as queue:
            if solo:
                gate.set()
                result = queue(x)[0, 0].item()
                assert streams.current_stream() is side  # the caller's stream is restored
            else:
                future = queue.submit(x)
                assert streams.log == [("record", 7)]  # recorded at submit, before the batch
                gate.set()
                result = future.result(WAIT)[0, 0].item()
    finally:
        streams.set_stream(streams.default)
    return result, 10.0


def test_batch_waits_for_the_callers_stream_and_outputs_are_complete(bq, monkeypatch):
    streams = StandInStreams()
    seen, expected = stream_ordering_run(bq, monkeypatch, streams)
    assert seen == expected
    assert streams.log == [("record", 7), ("wait", 7), ("record", 0), ("synchronize", 0)]


class HostFirstStreams(StandInStreams):
    """Stand-in streams in which float64 tensors are host tensors (no streams)."""

    def default_stream(self, x):
        return None if x.dtype == torch.float64 else self.default

    def other_stream(self, x, index):
        return None if x.dtype == torch.float64 else super().other_stream(x, index)


def test_a_device_input_behind_a_host_input_is_waited_for(bq, monkeypatch):
    # The first input decides the batch stream; with it on the host, the events of the
    # device inputs behind it were never waited for, and fn read them unwritten.
    streams = HostFirstStreams()
    monkeypatch.setattr(bq, "_streams", streams)
    side = StandInStream(7)
    streams.set_stream(side)
    try:
        host = torch.ones(1, 3, dtype=torch.float64)
        x = torch.zeros(1, 3)
        side.pending.append(lambda: x.fill_(5.0))  # the caller's "kernel", not yet run
        with bq.BatchQueue(lambda h, d: d * 2, max_batch_size=4, max_delay_ms=0) as queue:
            result = queue.submit(host, x).result(WAIT)
    finally:
        streams.set_stream(streams.default)
    assert result[0, 0].item() == 10.0
    assert streams.log[:2] == [("record", 7), ("wait", 7)]


def test_stream_ordering_check_fails_when_the_wait_is_removed(bq, monkeypatch):
    """Planted bug: the batch stream does not wait; the batch reads the unwritten input."""
    seen, expected = stream_ordering_run(bq, monkeypatch, StandInStreams(keep_waits=False))
    assert seen != expected


def test_caller_on_the_batch_stream_records_and_waits_nothing(bq, monkeypatch):
    streams = StandInStreams()
    monkeypatch.setattr(bq, "_streams", streams)
    with bq.BatchQueue(lambda x: x * 2, max_batch_size=4, max_delay_ms=0) as queue:
        assert queue(rows(1.0))[0, 0].item() == 2.0
        assert queue.submit(rows(2.0)).result(WAIT)[0, 0].item() == 4.0
    assert streams.log == []


@pytest.mark.parametrize("keep_waits", [True, False])
def test_solo_call_from_a_side_stream_is_ordered_both_ways(bq, monkeypatch, keep_waits):
    """A blocking request that fills an idle queue runs on its caller's thread: from a side
    stream it still waits for the caller's stream and completes before the caller gets it.
    keep_waits=False plants the bug (the wait does nothing): the input is read unwritten."""
    streams = StandInStreams(keep_waits=keep_waits)
    seen, expected = stream_ordering_run(bq, monkeypatch, streams, solo=True)
    assert streams.log == [("record", 7), ("wait", 7), ("record", 0), ("synchronize", 0)]
    assert (seen == expected) is keep_waits


def test_outputs_handed_to_side_stream_callers_are_kept_for_their_streams(bq, monkeypatch):
    """CUDA's caching allocator gives memory to the next batch as soon as a caller drops its
    rows unless the stream still reading them was recorded (Tensor.record_stream): on an H200
    19 of 20 side-stream results read the next batch's values. Each side-stream caller's
    output tensors are recorded for its stream; a default-stream caller's for none."""
    streams = StandInStreams()
    monkeypatch.setattr(bq, "_streams", streams)

    def fn(x):
        return x * 2, {"y": x + 10}

    with bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=10_000) as queue:
        with on_side_stream(streams):
            side = queue.submit(rows(1.0))
        plain = queue.submit(rows(2.0))
        side_out, plain_out = side.result(WAIT), plain.result(WAIT)
    assert plain_out[0][0, 0].item() == 4.0
    assert [stream_id for stream_id, _ in streams.kept] == [7, 7]
    assert streams.kept[0][1] is side_out[0] and streams.kept[1][1] is side_out[1]["y"]


def test_solo_call_on_the_batch_stream_records_and_waits_nothing(bq, monkeypatch):
    streams = StandInStreams()
    monkeypatch.setattr(bq, "_streams", streams)
    with bq.BatchQueue(lambda x: x * 2, max_batch_size=1, max_delay_ms=0) as queue:
        assert queue(rows(1.0))[0, 0].item() == 2.0
    assert streams.log == []


class DeferringCopies(StandInStreams):
    """Copies to output_device may stay in flight whenever the queue lets them (as large
    CUDA-to-host copies do), and the stand-in logs whether it let them."""

    def copy(self, x, device, defer=True):
        self.log.append(("copy", "deferred" if defer else "blocking"))
        return x.to(device), defer


@pytest.mark.parametrize("case", ["solo", "solo-side-stream", "batch"])
def test_a_solo_call_copies_its_output_at_once_and_a_batch_defers_it(bq, monkeypatch, case):
    """A request run alone on its caller's stream is waited for at once: its copy blocks,
    with no event to record and wait for. A batch of several callers defers the copy and
    records one event, which is waited for before any caller gets its rows; so does a solo
    request from a side stream, whose batch needs an event anyway."""
    streams = DeferringCopies()
    monkeypatch.setattr(bq, "_streams", streams)
    solo = case != "batch"
    queue = bq.BatchQueue(lambda x: x * 2, max_batch_size=1 if solo else 2,
                          max_delay_ms=60_000, output_device="cpu")  # fmt: skip
    with queue:
        if case == "solo":
            outputs = [queue(rows(1.0))]
        elif case == "solo-side-stream":
            with on_side_stream(streams):
                outputs = [queue(rows(1.0))]
        else:  # one batch of two: it runs once full
            outputs = [f.result(WAIT) for f in [queue.submit(rows(1.0)), queue.submit(rows(2.0))]]
    assert [out[0, 0].item() for out in outputs] == ([2.0] if solo else [2.0, 4.0])
    expected = {
        "solo": [("copy", "blocking")],
        "solo-side-stream": [("record", 7), ("wait", 7), ("copy", "deferred"), ("record", 0),
                             ("synchronize", 0)],
        "batch": [("copy", "deferred"), ("record", 0), ("synchronize", 0)],
    }  # fmt: skip
    assert streams.log == expected[case]


# ---------------------------------------------------------------- runners: death, interrupts


def test_fn_killing_a_calling_thread_that_runs_the_batch_fails_the_queue_with_the_cause(bq):
    killer = WorkerKiller("boom on a caller")
    started, gate = threading.Event(), threading.Event()

    def fn(x):
        if x[0, 0].item() == 1.0:
            started.set()
            assert gate.wait(WAIT)
            raise killer
        return x

    queue = bq.BatchQueue(fn, max_batch_size=1, max_delay_ms=0)
    raised: list[BaseException] = []

    def runner_caller() -> None:
        try:
            queue(rows(1.0))  # the queue is idle: this thread runs the batch
        except BaseException as exc:
            raised.append(exc)

    caller = threading.Thread(target=runner_caller, daemon=True)
    caller.start()
    assert started.wait(WAIT)
    queued = [queue.submit(rows(2.0)) for _ in range(3)]
    gate.set()
    caller.join(WAIT)
    assert raised == [killer]  # the calling thread gets the BaseException itself
    for future in queued:
        exc = future.exception(WAIT)
        assert isinstance(exc, RuntimeError) and exc.__cause__ is killer
        assert "thread running a batch" in str(exc)
    with pytest.raises(RuntimeError, match="died") as info:
        queue(rows(2.0))
    assert info.value.__cause__ is killer
    queue.close()


def main_thread_for_sigint() -> threading.Thread:
    """The thread SIGINT reaches; these tests must run on it to interrupt a blocked call."""
    main = threading.main_thread()
    assert threading.current_thread() is main, "SIGINT reaches the main thread only"
    return main


def test_interrupted_blocking_caller_leaves_nothing_stuck(bq):
    """SIGINT while the main thread waits in queue(x): it raises KeyboardInterrupt, its
    request is dropped, and the queue keeps serving."""
    started, gate = threading.Event(), threading.Event()
    seen: list[float] = []

    def fn(x):
        seen.extend(x[:, 0].tolist())
        if not started.is_set():
            started.set()
            assert gate.wait(WAIT)
        return x * 2

    main = main_thread_for_sigint()
    with bq.BatchQueue(fn, max_batch_size=8, max_delay_ms=0) as queue:
        holder = queue.submit(rows(1.0))
        assert started.wait(WAIT)

        def interrupt() -> None:
            wait_until(lambda: queue.stats()["pending"] == 1, "the main thread's request queued")
            time.sleep(0.05)  # the main thread is blocked in acquire() by now
            signal.pthread_kill(main.ident, signal.SIGINT)

        sender = threading.Thread(target=interrupt, daemon=True)
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            queue(rows(5.0))
        sender.join(WAIT)
        assert queue.stats()["pending"] == 0  # dropped, not left for a batch
        gate.set()
        assert holder.result(WAIT)[0, 0].item() == 2.0
        assert queue(rows(3.0))[0, 0].item() == 6.0  # the queue still serves
    assert seen == [1.0, 3.0]


@pytest.mark.runner_policy("host-on-worker")  # the worker runs the batch: a chain of callers
def test_an_interrupt_right_after_a_callers_wake_up_still_wakes_the_callers_after_it(
    bq, monkeypatch
):
    """Ctrl-C handled right after a blocking caller took its wake-up (its waiter acquired,
    the interrupt raised before it woke the next caller of its batch): that caller leaves with
    KeyboardInterrupt, and the callers after it in the chain still get their results."""
    real_lock = threading.Lock

    class WaiterInterruptedAfterWakeUp:
        """A waiter (threading.Lock) whose first wake-up is followed by KeyboardInterrupt."""

        armed = True

        def __init__(self) -> None:
            self._lock = real_lock()
            self._acquires = 0

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            acquired = self._lock.acquire(blocking, timeout)
            self._acquires += 1
            if acquired and self._acquires == 2 and WaiterInterruptedAfterWakeUp.armed:
                WaiterInterruptedAfterWakeUp.armed = False
                raise KeyboardInterrupt
            return acquired

        def release(self) -> None:
            self._lock.release()

    gate = threading.Event()

    def fn(x):
        assert gate.wait(WAIT)
        return x * 2

    with bq.BatchQueue(fn, max_batch_size=8, max_delay_ms=0) as queue:
        holder = queue.submit(rows(1.0))  # the batch runs while the next one forms
        wait_until(lambda: queue.stats()["pending"] == 0, "the first batch running")
        threading_with_waiters = SimpleNamespace(**{**vars(threading),
                                                    "Lock": WaiterInterruptedAfterWakeUp})
        monkeypatch.setattr(bq, "threading", threading_with_waiters)
        outcomes: dict[float, Any] = {}

        def caller(value: float) -> None:
            try:
                outcomes[value] = queue(rows(value))[0, 0].item()
            except KeyboardInterrupt:
                outcomes[value] = "interrupted"

        callers = []
        for count, value in enumerate((3.0, 4.0, 5.0), start=1):
            callers.append(threading.Thread(target=caller, args=(value,), daemon=True))
            callers[-1].start()
            wait_until(lambda count=count: queue.stats()["pending"] == count, "callers queued")
        gate.set()
        for thread in callers:
            thread.join(10)
        assert not any(thread.is_alive() for thread in callers), (
            f"callers after the interrupted one were never woken: {outcomes}")
        assert outcomes == {3.0: "interrupted", 4.0: 8.0, 5.0: 10.0}
        assert holder.result(WAIT)[0, 0].item() == 2.0


@pytest.mark.runner_policy("host-on-worker")  # the batch must run on the worker, not on main
def test_caller_interrupted_while_its_batch_runs_does_not_stall_the_callers_after_it(bq):
    """SIGINT reaches the main thread while its request runs in a batch shared with another
    blocking caller that comes after it in the chain of wake-ups. The main thread leaves with
    KeyboardInterrupt; the other caller still gets its result (the chain skips the main
    thread instead of waiting for it to pass the wake-up on)."""
    first_batch, second_batch = threading.Event(), threading.Event()
    release_first, release_second = threading.Event(), threading.Event()

    def fn(x):
        if x[0, 0].item() == 1.0:
            first_batch.set()
            assert release_first.wait(WAIT)
        else:
            second_batch.set()
            assert release_second.wait(WAIT)
        return x * 2

    main = main_thread_for_sigint()
    with bq.BatchQueue(fn, max_batch_size=8, max_delay_ms=0) as queue:
        holder = queue.submit(rows(1.0))  # keeps the worker busy while the next batch forms
        assert first_batch.wait(WAIT)
        results: list[float] = []

        def after_main() -> None:
            wait_until(lambda: queue.stats()["pending"] == 1, "the main thread's request queued")
            results.append(queue(rows(7.0))[0, 0].item())

        def interrupt() -> None:
            wait_until(lambda: queue.stats()["pending"] == 2, "both requests queued")
            release_first.set()
            assert second_batch.wait(WAIT)  # the main thread's request is running now
            time.sleep(0.05)
            signal.pthread_kill(main.ident, signal.SIGINT)
            time.sleep(0.05)
            release_second.set()

        other = threading.Thread(target=after_main, daemon=True)
        sender = threading.Thread(target=interrupt, daemon=True)
        other.start()
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            queue(rows(5.0))
        sender.join(WAIT)
        other.join(5)
        assert not other.is_alive(), "the caller after the interrupted one was never woken"
        assert results == [14.0]
        assert holder.result(WAIT)[0, 0].item() == 2.0


# ---------------------------------------------------------------- batches in flight


class GatedStreams(StandInStreams):
    """Stand-in streams whose batch-stream events complete only when the test (or a timer)
    opens their gate: a device still computing a launched batch."""

    def __init__(self, open_after: float | None = None) -> None:
        super().__init__()
        self.gates: list[threading.Event] = []  # one per event on the batch stream, in order
        self.open_after = open_after  # seconds after which a gate opens by itself

    def record(self, stream):
        event = super().record(stream)
        event.gate = threading.Event()
        if stream is not self.default:
            event.gate.set()  # a caller's stream: its work is not what the test holds back
        else:
            self.gates.append(event.gate)
            if self.open_after is not None:
                threading.Timer(self.open_after, event.gate.set).start()
        return event

    def query(self, event) -> bool:
        return event.gate.is_set()

    def synchronize(self, event) -> None:
        assert event.gate.wait(WAIT)
        super().synchronize(event)


@contextlib.contextmanager
def on_side_stream(streams: StandInStreams) -> Iterator[None]:
    """This thread's requests are made on side stream 7, so their batches record events."""
    streams.set_stream(StandInStream(7))
    try:
        yield
    finally:
        streams.set_stream(streams.default)


def long_batches(queue, seconds: float = WAIT):
    """The queue has seen its batches take ``seconds`` on the device (by default long, as
    the gated stand-ins make them): while one computes, the runner waits for the next to
    become due, not for the device."""
    queue._device_seconds = seconds
    return queue


def launched_while_first_computes(
    bq, monkeypatch, device_seconds: float = WAIT
) -> tuple[int, int, list[float]]:
    """Three full batches from a side stream, on a device whose batches took
    ``device_seconds``; the second is queued while fn runs on the first. Returns how many
    had been launched while the first still computed, how many once the second was launched
    too (before any completed), and every result once the gates are open."""
    streams = GatedStreams()
    monkeypatch.setattr(bq, "_streams", streams)
    hold = threading.Event()
    fn = Recorder(hold)
    launched = fn.batches
    with on_side_stream(streams):
        queue = bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=60_000)
        with long_batches(queue, device_seconds):
            futures = [queue.submit(rows(1.0)), queue.submit(rows(2.0))]
            handed_out: list[Future] = []
            wait_until(lambda: queue.stats()["pending"] == 0, "fn runs on the first batch")
            futures += [queue.submit(rows(3.0)), queue.submit(rows(4.0))]
            hold.set()
            wait_until(lambda: len(streams.gates) >= 1, "the first batch launched")
            happens_within(lambda: len(launched) == 2, 2)  # or not: the planted bug
            during_first = len(launched)
            futures += [queue.submit(rows(5.0)), queue.submit(rows(6.0))]
            for future in futures:
                future.add_done_callback(handed_out.append)
            time.sleep(0.2)
            before_any_completed = len(launched)
            assert not any(f.done() for f in futures)  # nothing is handed out unfinished

            def device_finishes_all() -> bool:
                for gate in list(streams.gates):
                    gate.set()
                return all(f.done() for f in futures)

            wait_until(device_finishes_all, "every batch was handed out")
            results = [f.result(0)[0, 0].item() for f in futures]
    assert handed_out == futures  # in batch order, though the batches overlapped
    assert launched == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    return during_first, before_any_completed, results


def test_next_batch_launches_while_the_previous_one_still_computes(bq, monkeypatch):
    """At most two batches are in flight: the second is launched behind the first while
    the device computes it, the third waits until the first is handed out."""
    during_first, before_any_completed, results = launched_while_first_computes(bq, monkeypatch)
    assert (during_first, before_any_completed) == (2, 2)
    assert results == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]


def test_in_flight_check_fails_for_a_runner_that_waits_for_each_batch(bq, monkeypatch):
    """Planted bug: one batch in flight at most, the runner waits before launching another."""
    monkeypatch.setattr(bq, "_MAX_IN_FLIGHT", 1)
    during_first, _, results = launched_while_first_computes(bq, monkeypatch)
    assert during_first == 1
    assert results == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]


def test_short_batches_are_waited_for_before_the_next_is_launched(bq, monkeypatch):
    """Batches that took less than _OVERLAP_MIN_SECONDS: watching the device would cost
    more than the overlap gains, so the runner waits for each batch first."""
    during_first, _, results = launched_while_first_computes(
        bq, monkeypatch, device_seconds=bq._OVERLAP_MIN_SECONDS / 2
    )
    assert during_first == 1
    assert results == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]


@pytest.mark.parametrize("front", ["blocking", "future"])
def test_with_nothing_queued_the_runner_waits_for_the_device(bq, monkeypatch, front):
    """A long batch in flight and nothing queued: there is nothing to launch behind it, so
    the runner blocks on the batch's event (synchronize) instead of checking the device
    again and again, and a blocking runner leaves only with its result."""
    streams = GatedStreams(open_after=0.05)
    queries: list[bool] = []
    query = streams.query
    streams.query = lambda event: queries.append(query(event)) or queries[-1]
    monkeypatch.setattr(bq, "_streams", streams)
    outcome: list[Any] = []

    def client() -> None:
        with on_side_stream(streams):
            queue = long_batches(bq.BatchQueue(lambda x: x * 2, max_batch_size=4, max_delay_ms=0))
            with queue:
                request = rows(1.0)
                outcome.append(queue(request) if front == "blocking" else queue.submit(request))
            if front == "future":
                outcome[0] = outcome[0].result(0)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the request or close() never finished"
    got = outcome[0]
    assert got is not None, "the runner left before its own request was done"
    assert got[0, 0].item() == 2.0
    assert len(streams.gates) == 1  # launched once, on a stream the test held back 50 ms
    assert len(queries) <= 2, f"the device was checked {len(queries)} times"


def test_a_runner_stall_is_not_counted_as_device_time(bq, monkeypatch):
    """Batches took 10 ms; the first batch completes on the device at once, but the runner
    only finds it done 0.6 s later, after fn ran long on the second batch. It completed
    somewhere between the runner's last check and then, which 10 ms fits: the estimate stays
    (before, it became 0.9 x the whole stall, 0.54 s)."""
    streams = GatedStreams()
    monkeypatch.setattr(bq, "_streams", streams)
    first_batch, second_batch, stall_over = threading.Event(), threading.Event(), threading.Event()

    def fn(x):
        if x[0, 0].item() == 1.0:
            assert first_batch.wait(WAIT)
        else:
            second_batch.set()
            assert stall_over.wait(WAIT)
        return x * 2

    with on_side_stream(streams):
        queue = long_batches(bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=60_000), 0.01)
        futures = [queue.submit(rows(1.0)), queue.submit(rows(2.0))]
        wait_until(lambda: queue.stats()["pending"] == 0, "fn runs on the first batch")
        futures += [queue.submit(rows(3.0)), queue.submit(rows(4.0))]
        first_batch.set()  # launched; the runner checks it (still computing), takes the second
        assert second_batch.wait(WAIT)
        streams.gates[0].set()  # the device finishes the first batch now
        time.sleep(0.6)
        stall_over.set()
        wait_until(lambda: futures[1].done(), "the first batch was handed out")
        estimate = queue._device_seconds
        for gate in streams.gates:
            gate.set()
        queue.close()
    assert [f.result(0)[0, 0].item() for f in futures] == [2.0, 4.0, 6.0, 8.0]
    assert estimate < 0.05, estimate


def test_blocking_callers_get_their_rows_through_batches_in_flight(
    bq, monkeypatch, runner_policy
):
    """Threads on a side stream, batches of 4 ms on the device: every caller gets its rows.
    Under callers-run the runner launches ahead and leaves with batches in flight, handing
    them on with the role to a caller waiting in one (the worker, which runs CPU batches
    otherwise, keeps the role until nothing is in flight)."""
    streams = GatedStreams(open_after=0.004)
    monkeypatch.setattr(bq, "_streams", streams)
    handed_on: list[Any] = []  # the new runner, each time the role left with batches in flight
    pass_role = bq.BatchQueue._pass_role

    def recording_pass_role(queue) -> None:
        in_flight = bool(queue._inflight)
        pass_role(queue)
        if in_flight:
            handed_on.append(queue._runner)

    monkeypatch.setattr(bq.BatchQueue, "_pass_role", recording_pass_role)
    errors: list[str] = []

    def client(index: int, queue) -> None:
        with on_side_stream(streams):
            for k in range(15):
                value = float(index * 100 + k)
                got = queue(rows(value))[0, 0].item()
                if got != 2 * value:
                    errors.append(f"client {index} request {k}: {got} instead of {2 * value}")

    queue = long_batches(bq.BatchQueue(lambda x: x * 2, max_batch_size=3, max_delay_ms=1), 0.005)
    with queue:
        threads = [threading.Thread(target=client, args=(i, queue)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not any(t.is_alive() for t in threads), "a caller was never woken"
        stats = queue.stats()
    assert errors == []
    assert stats["requests"] == 8 * 15 and stats["pending"] == 0
    if runner_policy == "callers-run":
        assert any(isinstance(r, bq._Request) for r in handed_on), handed_on


def test_runner_death_fails_the_batch_in_flight_too(bq, monkeypatch):
    streams = GatedStreams()
    monkeypatch.setattr(bq, "_streams", streams)
    killer = WorkerKiller("boom while a batch computes")
    hold = threading.Event()

    def fn(x):
        assert hold.wait(WAIT)
        if x[0, 0].item() == 3.0:
            raise killer
        return x * 2

    with on_side_stream(streams):
        queue = long_batches(bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=60_000))
        first = [queue.submit(rows(1.0)), queue.submit(rows(2.0))]
        wait_until(lambda: queue.stats()["pending"] == 0, "fn runs on the first batch")
        second = [queue.submit(rows(3.0)), queue.submit(rows(4.0))]
        hold.set()
        for future in first + second:
            with pytest.raises(RuntimeError, match="died") as info:
                future.result(WAIT)
            assert info.value.__cause__ is killer
        queue.close()


def test_close_drains_batches_in_flight(bq, monkeypatch):
    streams = GatedStreams()
    monkeypatch.setattr(bq, "_streams", streams)
    hold = threading.Event()
    with on_side_stream(streams):
        queue = long_batches(bq.BatchQueue(Recorder(hold), max_batch_size=2, max_delay_ms=60_000))
        futures = [queue.submit(rows(1.0)), queue.submit(rows(2.0))]
        wait_until(lambda: queue.stats()["pending"] == 0, "fn runs on the first batch")
        futures.append(queue.submit(rows(3.0)))  # queued, not due: it waits for its deadline
        hold.set()
        wait_until(lambda: len(streams.gates) == 1, "the first batch launched")
        closer = threading.Thread(target=queue.close)
        closer.start()
        wait_until(lambda: len(streams.gates) == 2, "close() launched the partial batch")
        assert closer.is_alive()  # close() waits for the batches in flight
        for gate in streams.gates:
            gate.set()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert [f.result(0)[0, 0].item() for f in futures] == [2.0, 4.0, 6.0]


def test_error_reported_when_waiting_for_a_batch_reruns_it_and_isolates_requests(
    bq, monkeypatch
):
    """The device reports a failure only when the batch is waited for: the batch is run
    again, bisected as for an error raised by fn, and good requests get their rows."""
    streams = GatedStreams(open_after=0.0)
    failed_once: list[bool] = []
    synchronize = streams.synchronize

    def failing_synchronize(event) -> None:
        if not failed_once:
            failed_once.append(True)
            raise RuntimeError("device error reported late")
        synchronize(event)

    streams.synchronize = failing_synchronize
    monkeypatch.setattr(bq, "_streams", streams)
    fn = Recorder()
    with on_side_stream(streams), bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=60_000) as queue:
        futures = [queue.submit(rows(1.0)), queue.submit(rows(2.0))]
        assert [f.result(WAIT)[0, 0].item() for f in futures] == [2.0, 4.0]
    assert fn.batches[0] == [1.0, 2.0] and len(fn.batches) >= 2  # launched, then run again


def test_device_error_seen_while_checking_a_batch_in_flight_reruns_it(bq, monkeypatch):
    """The device reports an error when the runner checks a batch in flight (on CUDA,
    Event.query() raises a sticky error): the batch is run again, bisected as any failed
    batch, and the queue goes on and closes."""
    streams = GatedStreams()
    raised: list[bool] = []
    query = streams.query

    def failing_query(event) -> bool:
        if event.gate is streams.gates[0]:  # the first batch's event: a sticky error
            raised.append(True)
            raise RuntimeError("device error reported by query")
        return query(event)

    streams.query = failing_query
    monkeypatch.setattr(bq, "_streams", streams)
    hold = threading.Event()
    fn = Recorder(hold)
    with on_side_stream(streams):
        queue = long_batches(bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=60_000))
        futures = [queue.submit(rows(1.0)), queue.submit(rows(2.0))]
        wait_until(lambda: queue.stats()["pending"] == 0, "fn runs on the first batch")
        futures.append(queue.submit(rows(3.0)))  # queued, not due: the runner checks the device
        hold.set()
        wait_until(lambda: bool(raised), "the runner checked the batch in flight")

        def open_gates() -> bool:
            for gate in list(streams.gates):
                gate.set()
            return futures[0].done() and futures[1].done()

        wait_until(open_gates, "the first batch was handed out")
        closer = threading.Thread(target=queue.close)  # drains the partial batch
        closer.start()
        wait_until(lambda: open_gates() and not closer.is_alive(), "close() returned")
    assert [f.result(0)[0, 0].item() for f in futures] == [2.0, 4.0, 6.0]
    assert fn.batches[:2] == [[1.0, 2.0], [1.0, 2.0]]  # launched, then run again


@pytest.mark.runner_policy("callers-run")  # the blocking caller must be the runner
def test_close_without_drain_fails_a_runners_own_queued_request(bq, monkeypatch):
    """A blocking caller that runs batches waits for its own request's deadline; close(
    drain=False) drops that request. The caller must raise, not return None: its failure is
    set under the lock, before the runner can see its request done and leave."""
    fail_all = bq.BatchQueue._fail_all

    def slow_fail_all(queue, requests, error) -> None:
        time.sleep(0.2)  # widen the window between dropping and failing the requests
        fail_all(queue, requests, error)

    monkeypatch.setattr(bq.BatchQueue, "_fail_all", slow_fail_all)
    queue = bq.BatchQueue(lambda x: x * 2, max_batch_size=4, max_delay_ms=60_000)
    outcome: list[Any] = []

    def caller() -> None:
        try:
            outcome.append(queue(rows(1.0)))
        except RuntimeError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    wait_until(lambda: queue._runner is not None and queue.stats()["pending"] == 1,
               "the caller runs the queue and waits for its deadline")  # fmt: skip
    queue.close(drain=False)
    thread.join(WAIT)
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError), outcome
    assert "closed (drain=False)" in str(outcome[0])


def test_a_failing_batch_hands_out_the_batch_in_flight_before_it(bq, monkeypatch):
    """fn raises on the second batch while the first is still on the device: the first is
    handed out first, then the second is bisected (results stay in batch order)."""
    streams = GatedStreams()
    monkeypatch.setattr(bq, "_streams", streams)
    hold = threading.Event()

    def fn(x):
        assert hold.wait(WAIT)
        if 3.0 in x[:, 0].tolist():
            raise ValueError("bad request")
        return x * 2

    handed_out: list[Future] = []
    with on_side_stream(streams):
        queue = long_batches(bq.BatchQueue(fn, max_batch_size=2, max_delay_ms=60_000))
        futures = [queue.submit(rows(1.0)), queue.submit(rows(2.0))]
        wait_until(lambda: queue.stats()["pending"] == 0, "fn runs on the first batch")
        futures += [queue.submit(rows(3.0)), queue.submit(rows(4.0))]
        for future in futures:
            future.add_done_callback(handed_out.append)
        hold.set()

        def open_gates() -> bool:
            for gate in list(streams.gates):
                gate.set()
            return all(f.done() for f in futures)

        wait_until(open_gates, "every request was handed out")
        queue.close()
    assert handed_out[:2] == futures[:2]  # the batch in flight first
    assert [f.result(0)[0, 0].item() for f in futures[:2]] == [2.0, 4.0]
    with pytest.raises(ValueError, match="bad request"):
        futures[2].result(0)
    assert futures[3].result(0)[0, 0].item() == 8.0  # bisected: only the bad request fails
