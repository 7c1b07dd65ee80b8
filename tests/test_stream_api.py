"""The patched ``torch.mps`` stream API (streams.py, event.py, __init__.py) on a non-MPS torch.

The Python files come from the PATCHED reference tree (the project's patch series applied with
``mpsbuild.scratch.patched_reference_tree``); ``MPSBUILD_PATCHED_TREE=DIR`` points at another
patched PyTorch tree instead (a patch repo, before the lead merges it into the series).

They are loaded as the package ``patched_torch_mps_N`` next to the installed torch, so their
relative imports (``.event``, ``.streams``, ``.profiler``) resolve inside the patched copy and the
installed ``torch.mps`` stays untouched. Two situations are exercised:

* the real CPU torch, which has none of the stream-pool bindings: the package must import, and
  every stream feature must fail with a clear error;
* stand-in bindings (``FakeStreamPool``) injected into ``torch._C``, with the contract's names and
  meanings (``coord/STREAM_API.md``): the Python layer's own logic (context managers, per-thread
  state, argument passing) is checked against them. The Metal behaviour is not checked here.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from driver_helpers import PATCHED_TREE_ENV

# Every torch._C name the patched Python layer may use that a stock build does not have.
STREAM_POOL_NAMES = (
    "_MPSStreamBase",
    "_mps_getCurrentStream",
    "_mps_getDefaultStream",
    "_mps_setStream",
    "_mps_exchangeStream",
    "_mps_synchronizeStream",
    "_mps_queryStream",
    "_mps_recordEventOnStream",
    "_mps_waitForEventOnStream",
    "_mps_setPerThreadStreams",
    "_mps_getPerThreadStreams",
)
STREAM_API = ("Stream", "StreamContext", "current_stream", "default_stream", "per_thread_streams",
              "set_per_thread_streams", "set_stream", "stream")
NO_POOL_ERROR = r"no MPS stream pool.*thread-safe MPS wheel"

_load_counter = itertools.count()


# --------------------------------------------------------------------------- the patched tree


@pytest.fixture(scope="session")
def mps_dir(patched_tree: Path) -> Path:
    directory = patched_tree / "torch" / "mps"
    if not (directory / "streams.py").is_file():
        pytest.fail(
            f"{directory / 'streams.py'} is missing: the patch series does not carry the "
            f"torch.mps stream API yet; add the pyapi patches to patches/v2.9.1/series, or set "
            f"{PATCHED_TREE_ENV} to a patched PyTorch tree (e.g. /work/patchrepos/pyapi)"
        )
    return directory


def load_patched_mps(mps_dir: Path) -> ModuleType:
    """Import ``mps_dir/__init__.py`` as a fresh package (reads torch._C as it is now)."""
    name = f"patched_torch_mps_{next(_load_counter)}"
    spec = importlib.util.spec_from_file_location(
        name, mps_dir / "__init__.py", submodule_search_locations=[str(mps_dir)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        _forget(name)
        raise
    return package


def _forget(package_name: str) -> None:
    for module_name in [n for n in sys.modules if n.split(".")[0] == package_name]:
        del sys.modules[module_name]


@pytest.fixture
def without_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed torch as a stock build: none of the stream-pool names on torch._C."""
    for name in STREAM_POOL_NAMES:
        monkeypatch.delattr(torch._C, name, raising=False)


@pytest.fixture
def stock_mps(mps_dir: Path, without_bindings: None) -> Iterator[ModuleType]:
    package = load_patched_mps(mps_dir)
    yield package
    _forget(package.__name__)


# --------------------------------------------------------------------- stand-in bindings


class FakeStreamPool:
    """Stand-in for the C++ side of the contract (coord/STREAM_API.md), in plain Python.

    Every thread: stream 0 unless it set one; in per-thread mode a thread other than the main
    thread gets a worker stream of its own (ids 1..32), bound on first use. ``setStream``
    overrides the calling thread's stream; ``exchangeStream`` works like
    MPSGuardImpl::exchangeStream and reports the thread's real current stream.
    Every call is logged so that tests can check what the Python layer passed down.
    """

    streams_per_pool = 33

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.query_results: dict[int, bool] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._next_worker = 1
        self._next_from_pool = itertools.cycle(range(1, self.streams_per_pool))
        self._next_event = itertools.count(1)
        self.workers_bound = 0
        self.per_thread = False
        self.base = self._make_base_type()

    def _make_base_type(self) -> type:
        pool = self

        class FakeMPSStreamBase:
            """Plays torch._C._MPSStreamBase: THPStream's read-only fields and its constructor."""

            __slots__ = ("device_index", "device_type", "stream_id")

            def __new__(cls, stream_id: int | None = None) -> Any:
                self = object.__new__(cls)
                # Like THPStream's tp_new: fill the C fields, past any subclass property.
                fields = FakeMPSStreamBase.__dict__
                chosen = pool.from_pool() if stream_id is None else pool.check_id(stream_id)
                fields["stream_id"].__set__(self, chosen)
                fields["device_index"].__set__(self, 0)
                fields["device_type"].__set__(self, 13)  # c10::DeviceType::MPS
                return self

            @property
            def device(self) -> torch.device:
                return torch.device("mps", 0)

            def __eq__(self, other: object) -> bool:
                return isinstance(other, FakeMPSStreamBase) and other.stream_id == self.stream_id

            def __hash__(self) -> int:
                return hash(self.stream_id)

            def wait_event(self, event: Any) -> None:  # torch.Stream's generic path
                pool.calls.append(("generic_wait_event", self.stream_id, event))

            def record_event(self, event: Any = None) -> Any:
                pool.calls.append(("generic_record_event", self.stream_id, event))
                return GenericEvent() if event is None else event

        return FakeMPSStreamBase

    # the C++ pool
    def check_id(self, stream_id: int) -> int:
        if not 0 <= stream_id < self.streams_per_pool:
            raise RuntimeError(f"invalid MPS stream id {stream_id}")
        return stream_id

    def from_pool(self) -> int:
        with self._lock:
            return next(self._next_from_pool)

    def current_id(self) -> int:
        override = getattr(self._local, "override", None)
        if override is not None:
            return override
        if threading.current_thread() is threading.main_thread() or not self.per_thread:
            return 0
        if not hasattr(self._local, "worker"):
            with self._lock:
                self._local.worker = self._next_worker
                self._next_worker += 1
                self.workers_bound += 1
        return self._local.worker

    def wrap(self, stream_id: int) -> Any:
        """A base-type object for an id, like the C++ wrapStream."""
        stream = object.__new__(self.base)
        self.base.__dict__["stream_id"].__set__(stream, stream_id)
        self.base.__dict__["device_index"].__set__(stream, 0)
        self.base.__dict__["device_type"].__set__(stream, 13)
        return stream

    # the torch._C functions
    def bindings(self) -> dict[str, Any]:
        def get_current_stream() -> Any:
            self.calls.append(("getCurrentStream",))
            return self.base(stream_id=self.current_id())

        def set_stream(stream: Any) -> None:
            if not isinstance(stream, self.base):
                raise RuntimeError(f"expected a torch.mps.Stream, got {type(stream).__name__}")
            self.calls.append(("setStream", stream.stream_id))
            self._local.override = stream.stream_id

        def exchange_stream(stream: Any) -> Any:
            if not isinstance(stream, self.base):
                raise RuntimeError(f"expected a torch.mps.Stream, got {type(stream).__name__}")
            previous = self.current_id()
            self.calls.append(("exchangeStream", stream.stream_id, previous))
            self._local.override = self.check_id(stream.stream_id)
            return self.wrap(previous)

        def synchronize_stream(stream_id: int) -> None:
            self.calls.append(("synchronizeStream", self.check_id(stream_id)))

        def query_stream(stream_id: int) -> bool:
            self.calls.append(("queryStream", self.check_id(stream_id)))
            return self.query_results.get(stream_id, True)

        def record_on_stream(event_id: int, stream_id: int | None = None) -> None:
            self.calls.append(("recordEventOnStream", event_id, stream_id))

        def wait_on_stream(event_id: int, stream_id: int | None = None) -> None:
            self.calls.append(("waitForEventOnStream", event_id, stream_id))

        return {
            "_MPSStreamBase": self.base,
            "_mps_getCurrentStream": get_current_stream,
            "_mps_getDefaultStream": lambda: self.base(stream_id=0),
            "_mps_setStream": set_stream,
            "_mps_exchangeStream": exchange_stream,
            "_mps_synchronizeStream": synchronize_stream,
            "_mps_queryStream": query_stream,
            "_mps_recordEventOnStream": record_on_stream,
            "_mps_waitForEventOnStream": wait_on_stream,
            "_mps_setPerThreadStreams": self.set_per_thread,
            "_mps_getPerThreadStreams": lambda: self.per_thread,
        }

    def set_per_thread(self, enabled: bool) -> None:
        self.calls.append(("setPerThreadStreams", enabled))
        self.per_thread = enabled

    def event_bindings(self) -> dict[str, Any]:
        """torch.mps.Event's existing bindings (a CPU torch raises in them)."""
        return {
            "_mps_acquireEvent": lambda enable_timing: next(self._next_event),
            "_mps_releaseEvent": lambda event_id: None,
            "_mps_recordEvent": lambda event_id: self.calls.append(("recordEvent", event_id)),
            "_mps_waitForEvent": lambda event_id: self.calls.append(("waitForEvent", event_id)),
        }


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> FakeStreamPool:
    fake = FakeStreamPool()
    for name, value in {**fake.bindings(), **fake.event_bindings()}.items():
        monkeypatch.setattr(torch._C, name, value, raising=False)
    return fake


@pytest.fixture
def mps(mps_dir: Path, pool: FakeStreamPool) -> Iterator[ModuleType]:
    package = load_patched_mps(mps_dir)
    yield package
    gc.collect()  # release the tests' Events while the stand-in _mps_releaseEvent is in place
    _forget(package.__name__)


def current_id(mps: ModuleType) -> int:
    return mps.current_stream().stream_id


# ------------------------------------------------------------------ a build without bindings


def test_cpu_torch_really_lacks_the_stream_pool(without_bindings: None) -> None:
    # Guards the premise of the "stock build" tests below.
    assert not any(hasattr(torch._C, name) for name in STREAM_POOL_NAMES)


def test_imports_and_exports_without_bindings(stock_mps: ModuleType) -> None:
    for name in STREAM_API:
        assert name in stock_mps.__all__, name
        assert getattr(stock_mps, name) is getattr(stock_mps.streams, name)
    assert stock_mps.Event is stock_mps.event.Event
    assert stock_mps.Stream.__mro__[1].__name__ == "_MissingStreamBase"


@pytest.mark.parametrize(
    ("feature", "use"),
    [
        ("Stream()", lambda m: m.Stream()),
        ("Stream(stream_id=3)", lambda m: m.Stream(stream_id=3)),
        ("default_stream()", lambda m: m.default_stream()),
        ("current_stream()", lambda m: m.current_stream()),
        ("set_stream(s)", lambda m: m.set_stream(object())),
        ("stream(s) context", lambda m: m.stream(object()).__enter__()),
    ],
)
def test_stream_feature_without_bindings_raises_clear_error(
    stock_mps: ModuleType, feature: str, use: Any
) -> None:
    with pytest.raises(RuntimeError, match=NO_POOL_ERROR):
        use(stock_mps)


def test_none_stream_is_a_noop_without_bindings(stock_mps: ModuleType) -> None:
    assert stock_mps.set_stream(None) is None
    with stock_mps.stream(None):
        pass


def test_event_without_stream_pool_keeps_the_old_path(
    mps_dir: Path, without_bindings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeStreamPool()
    for name, value in fake.event_bindings().items():
        monkeypatch.setattr(torch._C, name, value)
    stock = load_patched_mps(mps_dir)
    try:
        event = stock.Event()
        event.record()
        event.wait()
        assert [call[0] for call in fake.calls] == ["recordEvent", "waitForEvent"]
        for method in (event.record, event.wait):
            with pytest.raises(RuntimeError, match=NO_POOL_ERROR):
                method(fake.base(stream_id=0))
    finally:
        _forget(stock.__name__)


# --------------------------------------------------------------------- with stand-in bindings


def test_stream_derives_from_the_binding_base(mps: ModuleType, pool: FakeStreamPool) -> None:
    assert issubclass(mps.Stream, pool.base)


def test_default_stream_is_id_zero(mps: ModuleType) -> None:
    default = mps.default_stream()
    assert type(default) is mps.Stream
    assert default.stream_id == 0
    assert repr(default) == "<torch.mps.Stream stream_id=0>"


def test_stream_ids_and_repr(mps: ModuleType, pool: FakeStreamPool) -> None:
    assert mps.Stream(stream_id=5).stream_id == 5
    assert repr(mps.Stream(stream_id=7)) == "<torch.mps.Stream stream_id=7>"
    assert mps.Stream().stream_id != 0  # a worker stream from the pool
    assert mps.Stream(stream_id=32).stream_id == 32
    assert mps.Stream(device="mps", stream_id=3).stream_id == 3
    assert mps.Stream(device=torch.device("mps")).stream_id in range(1, 33)
    for bad in (33, -1, -7):
        with pytest.raises(ValueError, match="invalid MPS stream id"):
            mps.Stream(stream_id=bad)
    with pytest.raises(ValueError, match="expected an mps device"):
        mps.Stream(device="cpu")
    with pytest.raises(TypeError, match="unexpected keyword"):
        mps.Stream(stream=3)
    assert {mps.Stream().stream_id for _ in range(32)} == set(range(1, 33))


def test_current_stream_wraps_the_binding_result(mps: ModuleType, pool: FakeStreamPool) -> None:
    current = mps.current_stream()
    assert type(current) is mps.Stream
    assert current.stream_id == 0

    def id_on_a_new_thread() -> int:
        ids: list[int] = []
        thread = threading.Thread(target=lambda: ids.append(current_id(mps)))
        thread.start()
        thread.join()
        return ids[0]

    assert id_on_a_new_thread() == 0  # threads share the default stream unless they opt in
    assert mps.per_thread_streams() is False
    mps.set_per_thread_streams(True)
    assert mps.per_thread_streams() is True
    assert id_on_a_new_thread() != 0
    assert ("setPerThreadStreams", True) in pool.calls


def test_set_stream_and_none_noop(mps: ModuleType, pool: FakeStreamPool) -> None:
    mps.set_stream(mps.Stream(stream_id=4))
    assert current_id(mps) == 4
    calls_before = len(pool.calls)
    mps.set_stream(None)
    assert len(pool.calls) == calls_before  # None reaches no binding
    assert current_id(mps) == 4


def test_stream_context_restores_previous_stream(mps: ModuleType) -> None:
    mps.set_stream(mps.Stream(stream_id=2))
    context = mps.stream(mps.Stream(stream_id=6))
    assert isinstance(context, mps.StreamContext)
    with context:
        assert current_id(mps) == 6
    assert current_id(mps) == 2
    assert context.prev_stream == mps.Stream(stream_id=2)


def test_stream_context_none_touches_nothing(mps: ModuleType, pool: FakeStreamPool) -> None:
    with mps.stream(None):
        pass
    assert pool.calls == []


def test_stream_contexts_nest(mps: ModuleType) -> None:
    a, b = mps.Stream(stream_id=8), mps.Stream(stream_id=9)
    with mps.stream(a):
        with mps.stream(b):
            assert current_id(mps) == 9
            with mps.stream(None):
                assert current_id(mps) == 9
        assert current_id(mps) == 8
    assert current_id(mps) == 0


def test_one_context_object_entered_twice_nests(mps: ModuleType) -> None:
    context = mps.StreamContext(mps.Stream(stream_id=3))
    with context:
        mps.set_stream(mps.Stream(stream_id=11))
        with context:
            assert current_id(mps) == 3
        assert current_id(mps) == 11
    assert current_id(mps) == 0


def test_one_context_object_shared_by_two_threads_restores_each_threads_stream(
    mps: ModuleType,
) -> None:
    """Two threads inside one StreamContext object at once (a context made once and used by a
    pool's tasks), the first to enter leaving first: each gets its own stream back."""
    context = mps.StreamContext(mps.Stream(stream_id=5))
    a_in, b_in, a_left = threading.Event(), threading.Event(), threading.Event()
    after: dict[str, int] = {}

    def first() -> None:
        mps.set_stream(mps.Stream(stream_id=1))
        with context:
            a_in.set()
            assert b_in.wait(30)
        after["a"] = current_id(mps)
        a_left.set()

    def second() -> None:
        assert a_in.wait(30)
        mps.set_stream(mps.Stream(stream_id=2))
        with context:
            b_in.set()
            assert a_left.wait(30)
        after["b"] = current_id(mps)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert after == {"a": 1, "b": 2}


def test_a_context_left_on_another_thread_restores_its_previous_stream(mps: ModuleType) -> None:
    """Entered on one thread, left on another (a generator resumed by a thread pool): the
    leaving thread gets the stream the entry replaced, as upstream's StreamContext does."""
    context = mps.stream(mps.Stream(stream_id=6))
    after: dict[str, int] = {}

    def enter() -> None:
        mps.set_stream(mps.Stream(stream_id=2))
        context.__enter__()

    def leave() -> None:
        context.__exit__(None, None, None)
        after["left"] = current_id(mps)

    for target in (enter, leave):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join(30)
    assert after == {"left": 2}


def test_stream_context_restores_after_exception(mps: ModuleType) -> None:
    with pytest.raises(KeyError, match="boom"), mps.stream(mps.Stream(stream_id=12)):
        raise KeyError("boom")
    assert current_id(mps) == 0


def test_failed_enter_leaves_no_state(mps: ModuleType, pool: FakeStreamPool) -> None:
    context = mps.stream(object())  # rejected by _mps_exchangeStream
    with pytest.raises(RuntimeError, match=r"expected a torch\.mps\.Stream"):
        context.__enter__()
    assert current_id(mps) == 0
    with mps.stream(mps.Stream(stream_id=1)):
        assert current_id(mps) == 1
    assert current_id(mps) == 0


def test_stream_context_on_a_fresh_thread_restores_its_real_stream(
    mps: ModuleType, pool: FakeStreamPool
) -> None:
    # The context remembers the thread's real current stream (the default stream here), never
    # a placeholder id, and puts it back on exit.
    seen: dict[str, Any] = {}

    def fresh_thread() -> None:
        with mps.stream(mps.Stream(stream_id=9)):
            seen["inside"] = pool.current_id()
        seen["after"] = current_id(mps)

    thread = threading.Thread(target=fresh_thread)
    thread.start()
    thread.join(timeout=30)
    assert seen == {"inside": 9, "after": 0}
    assert pool.workers_bound == 0
    assert [c for c in pool.calls if c[0] == "exchangeStream"] == [
        ("exchangeStream", 9, 0), ("exchangeStream", 0, 9)]


def test_with_stream_object_enters_and_restores(mps: ModuleType) -> None:
    s = mps.Stream(stream_id=10)
    with s as entered:
        assert entered is s
        assert current_id(mps) == 10
        with s:
            assert current_id(mps) == 10
        assert current_id(mps) == 10
    assert current_id(mps) == 0


def test_one_stream_object_entered_from_two_threads(mps: ModuleType) -> None:
    # torch.Stream keeps one saved context per object; torch.mps.Stream must keep one per thread.
    shared = mps.Stream(stream_id=20)
    both_inside = threading.Barrier(2)
    first_left = threading.Event()
    results: dict[str, tuple[int, int, int]] = {}
    errors: list[BaseException] = []

    def run(name: str, own_stream: int, leave_first: bool) -> None:
        try:
            mps.set_stream(mps.Stream(stream_id=own_stream))
            with shared:
                inside = current_id(mps)
                both_inside.wait(timeout=10)
                if not leave_first:
                    assert first_left.wait(timeout=10)
            after = current_id(mps)
            if leave_first:
                first_left.set()
            results[name] = (own_stream, inside, after)
        except BaseException as error:  # surfaced below
            errors.append(error)
            first_left.set()

    threads = [threading.Thread(target=run, args=("t1", 21, True)),
               threading.Thread(target=run, args=("t2", 22, False))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert results == {"t1": (21, 20, 21), "t2": (22, 20, 22)}


def test_synchronize_and_query_pass_the_stream_id(mps: ModuleType, pool: FakeStreamPool) -> None:
    s = mps.Stream(stream_id=14)
    s.synchronize()
    pool.query_results[14] = False
    assert s.query() is False
    pool.query_results[14] = True
    assert s.query() is True
    assert pool.calls[-3:] == [("synchronizeStream", 14), ("queryStream", 14),
                               ("queryStream", 14)]


def test_event_record_and_wait_pass_the_stream(mps: ModuleType, pool: FakeStreamPool) -> None:
    event = mps.Event()
    s = mps.Stream(stream_id=15)
    event.record(s)
    event.wait(s)
    event.record()
    event.wait()
    event_id = pool.calls[-1][1]
    assert pool.calls[-4:] == [
        ("recordEventOnStream", event_id, 15),
        ("waitForEventOnStream", event_id, 15),
        ("recordEventOnStream", event_id, None),  # None: the calling thread's current stream
        ("waitForEventOnStream", event_id, None),
    ]


def test_event_rejects_a_stream_of_another_device(mps: ModuleType) -> None:
    cpu_stream = torch.Stream(device="cpu")
    with pytest.raises(ValueError, match="expected an MPS stream"):
        mps.Event().record(cpu_stream)


class GenericEvent:
    """The torch.Event that the stand-in's torch.Stream.record_event() makes."""


def test_record_event_makes_a_torch_event_as_upstream(
    mps: ModuleType, pool: FakeStreamPool
) -> None:
    """Upstream's torch.mps.Stream inherits record_event(): a new event is a torch.Event, the
    only type torch.Stream.wait_event() (torch.accelerator's streams) reads; a torch.mps.Event
    there would be read as garbage memory."""
    producer, consumer = mps.Stream(stream_id=16), mps.Stream(stream_id=17)
    event = producer.record_event()
    assert isinstance(event, GenericEvent)
    consumer.wait_event(event)
    assert pool.calls == [("generic_record_event", 16, None), ("generic_wait_event", 17, event)]


def test_a_torch_mps_event_is_recorded_and_waited_on_the_given_streams(
    mps: ModuleType, pool: FakeStreamPool
) -> None:
    producer, consumer = mps.Stream(stream_id=16), mps.Stream(stream_id=17)
    mine = mps.Event()
    assert producer.record_event(mine) is mine
    consumer.wait_event(mine)
    consumer.wait_stream(producer)  # records and waits for a torch.mps.Event of its own
    recorded = [c for c in pool.calls if c[0] == "recordEventOnStream"]
    waited = [c for c in pool.calls if c[0] == "waitForEventOnStream"]
    assert [c[2] for c in recorded] == [16, 16]
    assert [c[2] for c in waited] == [17, 17]
    assert [c[1] for c in waited] == [c[1] for c in recorded]


def test_wait_stream_takes_a_plain_torch_stream(mps: ModuleType, pool: FakeStreamPool) -> None:
    """torch.accelerator.current_stream() returns a plain torch.Stream: wait_stream() records
    its event through the pool's calls, not through that stream's record_event() (which reads
    only a torch.Event)."""
    mps_type = mps.Stream(stream_id=1).device_type
    plain = torch.Stream(stream_id=16, device_index=0, device_type=mps_type)
    mps.Stream(stream_id=17).wait_stream(plain)
    recorded = [c for c in pool.calls if c[0] == "recordEventOnStream"]
    waited = [c for c in pool.calls if c[0] == "waitForEventOnStream"]
    assert [c[2] for c in recorded] == [16] and [c[2] for c in waited] == [17]
    assert not any(c[0].startswith("generic") for c in pool.calls)


def test_a_positional_stream_id_is_refused(mps: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"stream_id=5"):
        mps.Stream(5)


def test_generic_events_go_to_torch_stream(mps: ModuleType, pool: FakeStreamPool) -> None:
    s = mps.Stream(stream_id=18)
    generic = object()
    s.wait_event(generic)
    s.record_event(generic)
    assert pool.calls[-2:] == [("generic_wait_event", 18, generic),
                               ("generic_record_event", 18, generic)]


# ------------------------------------------------------------ BatchQueue on the MPS stream API


class MPSTensorStandIn:
    """What BatchQueue's stream lookups read of an MPS tensor (none can be made here)."""

    device = torch.device("mps", 0)

    def get_device(self) -> int:
        return 0


def test_batch_queue_tells_mps_side_streams_from_the_default_stream(
    mps: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch.mps.default_stream() takes no device, unlike torch.cuda's: BatchQueue once called
    # it with one, which raised TypeError for every MPS request on this build.
    monkeypatch.setattr(torch, "mps", mps)
    def current_stream(index: int) -> torch.Stream:  # a plain torch.Stream, as the binding's
        return torch.Stream(stream_id=current_id(mps), device_index=index, device_type=13)

    monkeypatch.setattr(torch._C, "_accelerator_getStream", current_stream, raising=False)
    streams = mps.batch_queue._DeviceStreams()
    x = MPSTensorStandIn()
    assert streams.default_stream(x).stream_id == 0
    assert streams.other_stream(x, 0) is None  # on the batch stream: no event needed
    with mps.stream(mps.Stream(stream_id=5)):
        side = streams.other_stream(x, 0)
    assert side is not None and side.stream_id == 5  # the batch must wait for this one


# ------------------------------------------------------------- Python and C++ agree on names


def _python_binding_names(mps_dir: Path) -> set[str]:
    text = (mps_dir / "streams.py").read_text() + (mps_dir / "event.py").read_text()
    return set(re.findall(r"\b(_mps_\w+OnStream|_mps_\w+Stream|_MPSStreamBase)\b", text))


def test_python_uses_only_names_the_bindings_register(patched_tree: Path, mps_dir: Path) -> None:
    used = _python_binding_names(mps_dir)
    assert "_mps_getCurrentStream" in used and "_MPSStreamBase" in used
    csrc = patched_tree / "torch" / "csrc" / "mps"
    cpp = "".join(p.read_text() for p in sorted(csrc.glob("*.h")) + sorted(csrc.glob("*.cpp")))
    registered = set(re.findall(r'm\.def\(\s*"(_mps_\w+)"', cpp))
    registered |= set(re.findall(r'PyModule_AddObject\(\s*module,\s*"(\w+)"', cpp))
    assert used - registered == set(), f"used from Python but never registered: {used - registered}"
    assert used <= set(STREAM_POOL_NAMES), "update STREAM_POOL_NAMES (the stock-build tests)"


@pytest.mark.parametrize(
    "function",
    ["MPSModule_deviceSynchronize", "MPSModule_synchronizeEvent", "MPSModule_elapsedTimeOfEvents"],
)
def test_bindings_that_wait_for_the_gpu_release_the_gil(patched_tree: Path, function: str) -> None:
    # Other Python threads must run while one waits (torch.mps.synchronize(), Event.synchronize()
    # and elapsed_time(), which synchronizes every stream), as CUDA's events let them.
    text = (patched_tree / "torch" / "csrc" / "mps" / "Module.cpp").read_text()
    found = re.search(rf"static PyObject\* {function}\(.*?\n}}\n", text, re.S)
    assert found, f"{function} is not in Module.cpp"
    body = found.group(0)
    release, wait = body.find("gil_scoped_release"), body.find("getMPSHooks()")
    assert 0 <= release < wait, f"{function} waits for the GPU holding the GIL"


# ------------------------------------------- the real C++ bindings on a stand-in stream pool

HARNESS_DIR = Path(__file__).resolve().parent / "stream_bindings_harness"


@pytest.fixture(scope="session")
def cpp_bindings(patched_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The patched tree's torch/csrc/mps/StreamBindings.h compiled against the installed torch,
    with harness.cpp standing in for the MPS stream pool and the MPS device guard."""
    header = patched_tree / "torch" / "csrc" / "mps" / "StreamBindings.h"
    if not header.is_file():
        pytest.fail(f"{header} is missing: the patched tree has no MPS stream bindings")
    from torch.utils import cpp_extension

    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler to build the bindings harness (apt-get install g++)")
    return cpp_extension.load(
        name="mps_stream_bindings_harness",
        sources=[str(HARNESS_DIR / "harness.cpp")],
        # The stand-in ATen/mps/MPSStream.h must win over the installed torch's header.
        extra_include_paths=[str(HARNESS_DIR), str(patched_tree)],
        build_directory=str(tmp_path_factory.mktemp("stream-bindings-build")),
        verbose=False,
    )


@pytest.fixture
def real(cpp_bindings: ModuleType, mps_dir: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The patched torch.mps package on the compiled bindings (their names put on torch._C)."""
    for name in STREAM_POOL_NAMES:
        monkeypatch.setattr(torch._C, name, getattr(cpp_bindings, name), raising=False)
    for name, value in FakeStreamPool().event_bindings().items():
        monkeypatch.setattr(torch._C, name, value)
    cpp_bindings.harness_clear()
    cpp_bindings.harness_clear_thread_override()
    cpp_bindings.harness_install_guard()
    package = load_patched_mps(mps_dir)
    try:
        yield package
    finally:
        gc.collect()
        cpp_bindings.harness_remove_guard()
        cpp_bindings.harness_clear_thread_override()
        _forget(package.__name__)


def harness_log(cpp_bindings: ModuleType) -> list[str]:
    return list(cpp_bindings.harness_log())


def test_binding_type_is_a_torch_stream(cpp_bindings: ModuleType) -> None:
    base = cpp_bindings._MPSStreamBase
    assert issubclass(base, torch.Stream)
    assert f"{base.__module__}.{base.__name__}" == "torch._C._MPSStreamBase"
    stream = base(stream_id=5)
    assert (stream.stream_id, stream.device) == (5, torch.device("mps", 0))
    assert stream == torch.Stream(stream_id=5, device_index=0, device_type=stream.device_type)
    assert base(stream_id=32).stream_id == 32  # ids 1..32 are the pool's, as upstream
    for bad in (33, -1):  # a negative id is an error, not a pool stream
        with pytest.raises(RuntimeError, match=f"invalid MPS stream id {bad}"):
            base(stream_id=bad)


def test_real_stream_objects(real: ModuleType) -> None:
    default = real.default_stream()
    assert isinstance(default, torch.Stream) and type(default) is real.Stream
    assert (default.stream_id, repr(default)) == (0, "<torch.mps.Stream stream_id=0>")
    assert real.current_stream() == default
    from_pool = [real.Stream().stream_id for _ in range(3)]
    assert 0 not in from_pool and len(set(from_pool)) == 3
    with pytest.raises(ValueError, match="invalid MPS stream id 99"):
        real.Stream(stream_id=99)


def test_real_current_stream_per_thread(real: ModuleType) -> None:
    def id_on_a_new_thread() -> int:
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(current_id(real)))
        thread.start()
        thread.join()
        return seen[0]

    assert id_on_a_new_thread() == 0
    real.set_per_thread_streams(True)
    try:
        assert real.per_thread_streams() is True
        assert id_on_a_new_thread() != 0
    finally:
        real.set_per_thread_streams(False)
    assert current_id(real) == 0


def test_real_set_stream_and_context(real: ModuleType, cpp_bindings: ModuleType) -> None:
    with real.stream(real.Stream(stream_id=6)):
        assert current_id(real) == 6
        with real.Stream(stream_id=7):
            assert current_id(real) == 7
        assert current_id(real) == 6
    assert current_id(real) == 0
    assert [e for e in harness_log(cpp_bindings) if e.startswith("exchange")] == [
        "exchange 6 was 0", "exchange 7 was 6", "exchange 6 was 7", "exchange 0 was 6"]
    mps_type = real.default_stream().device_type
    generic = torch.Stream(stream_id=9, device_index=0, device_type=mps_type)
    real.set_stream(generic)  # a torch.Stream on mps is accepted too
    assert current_id(real) == 9
    negative = torch.Stream(stream_id=-1, device_index=0, device_type=mps_type)
    with pytest.raises(RuntimeError, match="invalid MPS stream id -1"):
        real.set_stream(negative)
    assert current_id(real) == 9
    real.set_stream(real.default_stream())
    assert current_id(real) == 0


def test_real_stream_context_on_a_fresh_thread(real: ModuleType, cpp_bindings: ModuleType) -> None:
    workers_before = cpp_bindings.harness_workers_bound()
    seen: dict[str, Any] = {}

    def fresh_thread() -> None:
        context = real.stream(real.Stream(stream_id=6))
        with context:
            seen["inside"] = current_id(real)
        seen["prev"] = context.prev_stream.stream_id
        seen["workers"] = cpp_bindings.harness_workers_bound()

    thread = threading.Thread(target=fresh_thread)
    thread.start()
    thread.join(timeout=30)
    assert seen == {"inside": 6, "prev": 0, "workers": workers_before}
    assert [e for e in harness_log(cpp_bindings) if e.startswith(("exchange", "setCurrent"))] == [
        "exchange 6 was 0", "setCurrent 6", "exchange 0 was 6", "setCurrent 0"]


def test_real_set_stream_rejects_other_objects(real: ModuleType) -> None:
    with pytest.raises(RuntimeError, match=r"expected a stream on the mps device, got .*cpu"):
        real.set_stream(torch.Stream(device="cpu"))
    with pytest.raises(RuntimeError, match=r"expected a torch\.mps\.Stream, got object"):
        real.set_stream(object())
    assert current_id(real) == 0


def test_real_synchronize_and_query(real: ModuleType, cpp_bindings: ModuleType) -> None:
    stream = real.Stream(stream_id=11)
    stream.synchronize()
    cpp_bindings.harness_set_query_result(False)
    assert stream.query() is False
    assert harness_log(cpp_bindings)[-2:] == ["synchronize 11", "query 11"]


def test_real_events_on_streams(real: ModuleType, cpp_bindings: ModuleType) -> None:
    event = real.Event()
    event_id = event._Event__eventId
    producer, consumer = real.Stream(stream_id=12), real.Stream(stream_id=13)
    event.record(producer)
    event.wait(consumer)
    event.record()  # the calling thread's current stream: the main thread's is 0
    event.wait()
    consumer.wait_stream(producer)
    log = [e for e in harness_log(cpp_bindings) if e.startswith(("record", "wait"))]
    assert log[:4] == [f"record {event_id} on 12", f"wait {event_id} on 13",
                       f"record {event_id} on 0", f"wait {event_id} on 0"]
    assert re.fullmatch(r"record (\d+) on 12", log[4]) and log[5] == log[4].replace(
        "record", "wait").replace("on 12", "on 13")
    negative = torch.Stream(stream_id=-1, device_index=0, device_type=producer.device_type)
    with pytest.raises(RuntimeError, match="invalid MPS stream id -1"):
        event.record(negative)


def _blocking_call_releases_gil(cpp_bindings: ModuleType, call: Any) -> list[str]:
    """Run ``call`` in a thread while the stand-in pool makes it wait for harness_release(),
    which this (Python) thread can only call if the binding released the GIL."""
    cpp_bindings.harness_block_next_call()
    worker = threading.Thread(target=call)
    worker.start()
    for _ in range(500):
        if any(e.startswith("blocked") for e in harness_log(cpp_bindings)):
            break
        threading.Event().wait(0.01)
    cpp_bindings.harness_release()
    worker.join(timeout=30)
    assert not worker.is_alive()
    outcomes = ("blocked", "released", "timed")
    return [e for e in harness_log(cpp_bindings) if e.split()[0] in outcomes]


def test_synchronize_releases_the_gil(real: ModuleType, cpp_bindings: ModuleType) -> None:
    stream = real.Stream(stream_id=14)
    assert _blocking_call_releases_gil(cpp_bindings, stream.synchronize) == [
        "blocked synchronize", "released synchronize"]


def test_current_stream_releases_the_gil(real: ModuleType, cpp_bindings: ModuleType) -> None:
    assert _blocking_call_releases_gil(cpp_bindings, real.current_stream) == [
        "blocked getCurrentMPSStream", "released getCurrentMPSStream"]


def test_device_synchronize_releases_the_gil(patched_tree: Path) -> None:
    # torch.mps.synchronize() waits for every stream; a block on a stream's queue may need the
    # GIL (review finding), so the binding must release it around the wait. Module.cpp needs a
    # Mac to compile, so this reads the patched function instead of running it.
    text = (patched_tree / "torch" / "csrc" / "mps" / "Module.cpp").read_text()
    start = text.index("static PyObject* MPSModule_deviceSynchronize(")
    body = text[start:text.index("END_HANDLE_TH_ERRORS", start)]
    release = body.find("pybind11::gil_scoped_release")
    wait = body.find("getMPSHooks().deviceSynchronize()")
    assert 0 <= release < wait, body
    # in an inner scope, so that the GIL is taken again before the function returns
    assert body.index("{", body.index("HANDLE_TH_ERRORS")) < release
