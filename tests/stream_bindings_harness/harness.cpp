// Runs the patched tree's torch/csrc/mps/StreamBindings.h on Linux: the real binding code
// (the _MPSStreamBase type, the _mps_* functions, their GIL handling and error translation)
// on top of a plain-C++ stand-in for the MPS stream pool and the MPS device guard.
// Every call into the stand-in is logged, so that tests can see what the bindings passed down.

#include <ATen/mps/MPSStream.h> // the stand-in next to this file
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/mps/StreamBindings.h> // from the patched tree
#include <torch/extension.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Harness {
  std::mutex mutex;
  std::condition_variable released_cv;
  std::vector<std::string> log;
  std::array<std::unique_ptr<at::mps::MPSStream>, at::mps::kMPSStreamsPerPool> streams;
  std::thread::id main_thread = std::this_thread::get_id();
  int next_worker = 1; // also: 1 + the number of worker streams bound so far
  int next_from_pool = 0;
  bool query_result = true;
  std::atomic<bool> per_thread{false}; // per-thread mode: threads other than main get a worker
  bool block_next_call = false; // the next blocking-capable call waits for release()
  bool released = false;

  Harness() {
    for (int id = 0; id < at::mps::kMPSStreamsPerPool; ++id) {
      streams[id] = std::make_unique<at::mps::MPSStream>(
          c10::Stream(c10::Stream::UNSAFE, c10::Device(c10::DeviceType::MPS, 0), id));
    }
  }

  void record(const std::string& entry) {
    std::lock_guard<std::mutex> lock(mutex);
    log.push_back(entry);
  }

  // Stands for a pool call that may wait for another thread (a free stream, GPU work).
  // That other thread may need the GIL: the binding must have released it.
  void maybeBlock(const std::string& what) {
    std::unique_lock<std::mutex> lock(mutex);
    if (!block_next_call) {
      return;
    }
    block_next_call = false;
    log.push_back("blocked " + what);
    const bool ok = released_cv.wait_for(lock, std::chrono::seconds(5), [this] { return released; });
    log.push_back(ok ? "released " + what : "timed out " + what);
  }
};

Harness& harness() {
  static Harness instance;
  return instance;
}

thread_local at::mps::MPSStream* t_override = nullptr;
thread_local at::mps::MPSStream* t_worker = nullptr;

std::string idOf(const c10::Stream& stream) {
  return std::to_string(stream.id());
}

} // namespace

namespace at::mps {

MPSStream::MPSStream(c10::Stream stream) : _stream(stream) {}

void MPSStream::synchronize(SyncType syncType) {
  harness().maybeBlock("synchronize");
  TORCH_CHECK(syncType == SyncType::COMMIT_AND_WAIT, "synchronize must commit and wait");
  harness().record("synchronize " + idOf(_stream));
}

bool MPSStream::query() {
  harness().record("query " + idOf(_stream));
  return harness().query_result;
}

MPSStream* getStreamByID(c10::StreamId id) {
  TORCH_CHECK(id >= 0 && id < kMPSStreamsPerPool, "invalid MPS stream id ", id);
  return harness().streams[id].get();
}

MPSStream* getDefaultMPSStream() {
  return getStreamByID(0);
}

MPSStream* getCurrentMPSStream() {
  harness().maybeBlock("getCurrentMPSStream");
  if (t_override) {
    return t_override;
  }
  if (std::this_thread::get_id() == harness().main_thread || !harness().per_thread.load()) {
    return getDefaultMPSStream();
  }
  if (!t_worker) {
    std::lock_guard<std::mutex> lock(harness().mutex);
    TORCH_CHECK(harness().next_worker < kMPSStreamsPerPool, "harness: out of worker streams");
    t_worker = harness().streams[harness().next_worker++].get();
  }
  return t_worker;
}

void setCurrentMPSStream(MPSStream* stream) {
  harness().record("setCurrent " + (stream ? idOf(stream->unwrap()) : std::string("none")));
  t_override = stream;
}

void setMPSPerThreadStreams(bool enabled) {
  harness().record(std::string("perThread ") + (enabled ? "on" : "off"));
  harness().per_thread.store(enabled);
}

bool getMPSPerThreadStreams() {
  return harness().per_thread.load();
}

MPSStream* getStreamFromPool() {
  std::lock_guard<std::mutex> lock(harness().mutex);
  const int id = 1 + harness().next_from_pool++ % (kMPSStreamsPerPool - 1);
  return harness().streams[id].get();
}

} // namespace at::mps

namespace {

// Only what StreamBindings.h reaches through the guard: event record/block on a stream.
struct FakeMPSGuard final : public c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override {
    return c10::DeviceType::MPS;
  }
  c10::Device exchangeDevice(c10::Device) const override {
    return c10::Device(c10::DeviceType::MPS, 0);
  }
  c10::Device getDevice() const override {
    return c10::Device(c10::DeviceType::MPS, 0);
  }
  void setDevice(c10::Device) const override {}
  void uncheckedSetDevice(c10::Device) const noexcept override {}
  c10::Stream getStream(c10::Device) const override {
    return at::mps::getCurrentMPSStream()->unwrap();
  }
  // Like the pool's guard: the previous stream is the thread's real current stream.
  c10::Stream exchangeStream(c10::Stream stream) const override {
    at::mps::MPSStream* next = at::mps::getStreamByID(stream.id());
    const c10::StreamId previous = at::mps::getCurrentMPSStream()->unwrap().id();
    harness().record("exchange " + idOf(stream) + " was " + std::to_string(previous));
    at::mps::setCurrentMPSStream(next);
    return c10::Stream(c10::Stream::UNSAFE, stream.device(), previous);
  }
  c10::DeviceIndex deviceCount() const noexcept override {
    return 1;
  }
  void record(void** event, const c10::Stream& stream, const c10::DeviceIndex device_index,
              const c10::EventFlag) const override {
    TORCH_CHECK(device_index == stream.device_index(), "record: device index mismatch");
    const auto event_id = reinterpret_cast<intptr_t>(*event);
    harness().record("record " + std::to_string(event_id) + " on " + idOf(stream));
  }
  void block(void* event, const c10::Stream& stream) const override {
    const auto event_id = reinterpret_cast<intptr_t>(event);
    harness().record("wait " + std::to_string(event_id) + " on " + idOf(stream));
  }
};

FakeMPSGuard fake_guard;
const c10::impl::DeviceGuardImplInterface* saved_guard = nullptr;

std::atomic<const c10::impl::DeviceGuardImplInterface*>& mpsGuardSlot() {
  return c10::impl::device_guard_impl_registry[static_cast<size_t>(c10::DeviceType::MPS)];
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  harness(); // the importing thread plays the main thread
  torch::mps::initStreamBindings(m.ptr());
  m.def("harness_log", [] {
    std::lock_guard<std::mutex> lock(harness().mutex);
    return harness().log;
  });
  m.def("harness_clear", [] {
    std::lock_guard<std::mutex> lock(harness().mutex);
    harness().log.clear();
    harness().block_next_call = false;
    harness().released = false;
    harness().query_result = true;
  });
  m.def("harness_set_query_result", [](bool result) { harness().query_result = result; });
  m.def("harness_block_next_call", [] {
    std::lock_guard<std::mutex> lock(harness().mutex);
    harness().block_next_call = true;
    harness().released = false;
  });
  m.def("harness_release", [] {
    {
      std::lock_guard<std::mutex> lock(harness().mutex);
      harness().released = true;
    }
    harness().released_cv.notify_all();
  });
  m.def("harness_clear_thread_override", [] { t_override = nullptr; });
  m.def("harness_workers_bound", [] {
    std::lock_guard<std::mutex> lock(harness().mutex);
    return harness().next_worker - 1;
  });
  // The CPU build registers no MPS guard; install ours for a test, then put back what was there.
  m.def("harness_install_guard", [] { saved_guard = mpsGuardSlot().exchange(&fake_guard); });
  m.def("harness_remove_guard", [] { mpsGuardSlot().store(saved_guard); });
}
