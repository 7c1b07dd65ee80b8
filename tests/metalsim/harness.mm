// Drives the unmodified MPS runtime files (MPSStream.mm, MPSStreamPool.cpp, MPSEvent.mm,
// MPSAllocator.mm, MPSGuardImpl.mm) on the fake Metal device from many threads.
//
// Usage: metalsim_harness SCENARIO     (one scenario per process: env and fork differ)
//        metalsim_harness --list
// Prints "scenario NAME: threads=T events=E hazards=H failures=F" last and exits 0 iff the
// scenario had no failed check and no hazard (3 on timeout). Ops are modelled on ATen's:
//  - graph op: noteBufferUse() for every buffer outside the queue, then dispatch_sync onto the
//    current stream's queue, commandEncoder(), encode, synchronize(COMMIT_ADAPTIVE-like COMMIT);
//  - Metal kernel op: dispatch_sync onto the queue, commandEncoder(), noteBufferUse() inside the
//    block, setBuffer, dispatch (no commit).
// noteBufferUse/setMPSPerThreadStreams are weak: on a tree without them the harness still runs.

#include "sim.h"

#include <ATen/mps/MPSAllocatorInterface.h>
#include <ATen/mps/MPSEvent.h>
#include <ATen/mps/MPSStream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace at::mps {
// Added by the series' opt-in streams and hand-off tracking; weak so that older trees (without
// them) still link.
__attribute__((weak)) void noteBufferUse(const void* buffer);
__attribute__((weak)) void noteBufferUseOnStream(const void* buffer, MPSStream* stream);
__attribute__((weak)) void setMPSPerThreadStreams(bool enabled);
__attribute__((weak)) void noteGraphTensorData(const void* tensorData, const void* buffer);
__attribute__((weak)) void noteBufferWrite(const void* buffer);
} // namespace at::mps

namespace c10::impl {
extern const DeviceGuardImplInterface* simMpsGuardImpl; // runtime_support.mm
}

using at::mps::MPSStream;
using at::mps::SyncType;

namespace {

constexpr size_t kBytes = 4096;

std::atomic<uint64_t> g_threads{0};
std::atomic<uint64_t> g_failures{0};
std::string g_scenario;

#define CHECK_SIM(cond, ...)                                              \
  do {                                                                    \
    if (!(cond)) {                                                        \
      g_failures++;                                                       \
      std::fprintf(stderr, "CHECK FAILED (%s:%d): %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                  \
      std::fprintf(stderr, "\n");                                         \
    }                                                                     \
  } while (0)

uint64_t envNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  return text && *text ? std::strtoull(text, nullptr, 10) : fallback;
}

// Scale of every loop (percent): the Python driver lowers it for the planted-bug runs.
uint64_t scaled(uint64_t count) {
  return std::max<uint64_t>(1, count * envNumber("METALSIM_SCALE", 100) / 100);
}

void runThreads(size_t count, const std::function<void(size_t)>& body) {
  std::vector<std::thread> threads;
  threads.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    threads.emplace_back([&body, i] { body(i); });
  }
  g_threads += count;
  for (auto& thread : threads) {
    thread.join();
  }
}

// A buffer from the real MPS allocator, held the way a tensor's storage holds it.
struct Buffer {
  c10::DataPtr data;
  id<MTLBuffer> mtl() const {
    return (id<MTLBuffer>)data.get();
  }
};

Buffer allocate(size_t bytes = kBytes) {
  return Buffer{at::mps::getIMPSAllocator()->allocate(bytes)};
}

// Dispatch queue -> "stream N", for the timeout report.
std::mutex g_queue_names_mu;
std::map<void*, std::string>& queueNames() {
  static auto* names = new std::map<void*, std::string>();
  return *names;
}

const char* queueName(void* queue) {
  std::lock_guard<std::mutex> lock(g_queue_names_mu);
  auto found = queueNames().find(queue);
  return found == queueNames().end() ? "unnamed queue" : found->second.c_str();
}

MPSStream* current() {
  MPSStream* stream = at::mps::getCurrentMPSStream();
  const std::string name = "stream " + std::to_string(stream->unwrap().id());
  metalsim::nameQueue(stream->commandQueue(), name);
  std::lock_guard<std::mutex> lock(g_queue_names_mu);
  queueNames()[(__bridge void*)stream->queue()] = name;
  return stream;
}

void noteUse(id<MTLBuffer> buffer) {
  if (at::mps::noteBufferUse && buffer) {
    at::mps::noteBufferUse(buffer);
  }
}

void encodeKernel(MPSStream* stream, id<MTLBuffer> out, id<MTLBuffer> in) {
  id<MTLComputeCommandEncoder> encoder = stream->commandEncoder();
  [encoder setBuffer:out offset:0 atIndex:0];
  if (in) {
    [encoder setBuffer:in offset:0 atIndex:1];
  }
  [encoder dispatchThreads:MTLSizeMake(kBytes, 1, 1) threadsPerThreadgroup:MTLSizeMake(64, 1, 1)];
}

// out = in + 1 bytewise (out += 1 without in), as a graph op: the stream first (ATen's ops call
// getCurrentMPSStream() at their start), the buffers bound outside the queue (Placeholders),
// then encode on the queue and commit like MPSGraph does.
void graphOp(id<MTLBuffer> out, id<MTLBuffer> in = nil) {
  MPSStream* stream = current();
  noteUse(in);
  noteUse(out);
  dispatch_sync(stream->queue(), ^{
    @autoreleasepool {
      encodeKernel(stream, out, in);
      stream->synchronize(SyncType::COMMIT);
    }
  });
}

// The same as a Metal kernel op: buffers noted inside the block, nothing committed.
// `encoderFirst`: in the order ATen's kernels take, the compute encoder first (the stream's
// command buffer then holds work of this op), then the buffers bound to it.
void runKernelOp(id<MTLBuffer> out, id<MTLBuffer> in, bool encoderFirst) {
  MPSStream* stream = current();
  dispatch_sync(stream->queue(), ^{
    @autoreleasepool {
      if (encoderFirst) {
        stream->commandEncoder();
      }
      noteUse(in);
      noteUse(out);
      encodeKernel(stream, out, in);
    }
  });
}

void kernelOp(id<MTLBuffer> out, id<MTLBuffer> in = nil) {
  runKernelOp(out, in, /*encoderFirst=*/false);
}

void fillOp(id<MTLBuffer> buffer, uint8_t value) {
  MPSStream* stream = current();
  noteUse(buffer);
  stream->fill(buffer, value, kBytes, 0, SyncType::NONE);
}

// dst = src bytewise, as Copy.mm's copy_kernel_mps: both bound first, then MPSStream::copy (a blit,
// not committed).
void copyOp(id<MTLBuffer> dst, id<MTLBuffer> src) {
  MPSStream* stream = current();
  noteUse(src);
  noteUse(dst);
  stream->copy(src, dst, kBytes, 0, 0, 0, SyncType::NONE);
}

// out = in + 1 as ATen's MPSGraph ops run: Placeholders bind both buffers outside the queue and
// remember which buffer each MPSGraphTensorData wraps (OperationUtils.mm), then
// MPSStream::executeMPSGraph encodes the graph with its results dictionary (not committed unless
// COMMIT_ADAPTIVE decides to). `nested`: another graph op (on scratch buffers) runs between this
// op's Placeholders and its graph, as a cast inside an op does.
void graphResultOp(id<MTLBuffer> out, id<MTLBuffer> in, bool nested = false) {
  static MPSGraph* graph = [MPSGraph new];
  static MPSGraphTensor* input = [MPSGraphTensor new];
  static MPSGraphTensor* result = [MPSGraphTensor new];
  MPSStream* stream = current();
  @autoreleasepool {
    noteUse(in);
    noteUse(out);
    auto wrap = [](id<MTLBuffer> buffer) {
      MPSGraphTensorData* data =
          [[[MPSGraphTensorData alloc] initWithMTLBuffer:buffer shape:nil dataType:MPSDataTypeFloat32] autorelease];
      if (at::mps::noteGraphTensorData) {
        at::mps::noteGraphTensorData((__bridge const void*)data, (__bridge const void*)buffer);
      }
      return data;
    };
    MPSGraphTensorData* inData = wrap(in);
    MPSGraphTensorData* outData = wrap(out);
    if (nested) {
      Buffer scratchIn = allocate();
      Buffer scratchOut = allocate();
      graphResultOp(scratchOut.mtl(), scratchIn.mtl());
    }
    stream->executeMPSGraph(graph, @{input : inData}, @{result : outData}, SyncType::COMMIT_ADAPTIVE);
  }
}

// After the caller's stream synchronized: every byte must equal `expected`.
bool expectBytes(id<MTLBuffer> buffer, uint8_t expected, const std::string& what) {
  metalsim::cpuRead(buffer, what);
  const uint8_t* bytes = metalsim::contents(buffer);
  for (size_t i = 0; i < kBytes; ++i) {
    if (bytes[i] != expected) {
      CHECK_SIM(false, "%s: byte %zu is %u, expected %u", what.c_str(), i, bytes[i], expected);
      return false;
    }
  }
  return true;
}

void syncCurrent() {
  current()->synchronize(SyncType::COMMIT_AND_WAIT);
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

// 64 threads, half on the default stream, half on pool streams: fill, op, commit, sync, check.
void scenarioStreams64() {
  const uint64_t cycles = scaled(12);
  runThreads(64, [cycles](size_t t) {
    if (t % 2 == 1) {
      at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
    }
    for (uint64_t c = 0; c < cycles; ++c) {
      metalsim::setTag("streams64 t" + std::to_string(t) + " c" + std::to_string(c));
      Buffer buffer = allocate();
      const uint8_t value = uint8_t(t * 7 + c);
      fillOp(buffer.mtl(), value);
      (c % 2 ? graphOp : kernelOp)(buffer.mtl(), nil);
      syncCurrent();
      expectBytes(buffer.mtl(), uint8_t(value + 1), "streams64 result");
    }
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// query(): false while committed work waits on the GPU, true right after synchronize(), and a
// bounded `while (!query())` after a commit ends.
void scenarioQuery() {
  runThreads(1, [](size_t) {
    at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
    MPSStream* stream = current();
    Buffer buffer = allocate();
    CHECK_SIM(stream->query(), "query() of a fresh stream is false");

    id<MTLSharedEvent> gate = [metalsimDevice() newSharedEvent];
    dispatch_sync(stream->queue(), ^{
      stream->endKernelCoalescing();
      [stream->commandBuffer() encodeWaitForEvent:gate value:1];
    });
    graphOp(buffer.mtl()); // committed behind the closed gate
    CHECK_SIM(!stream->query(), "query() is true while committed work waits on the GPU");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK_SIM(!stream->query(), "query() is true while committed work waits on the GPU (later)");
    kernelOp(buffer.mtl()); // encoded, not committed
    CHECK_SIM(!stream->query(), "query() is true while work is encoded but not committed");
    gate.signaledValue = 1;

    stream->synchronize(SyncType::COMMIT_AND_WAIT);
    CHECK_SIM(stream->query(), "query() is false right after synchronize()");
    CHECK_SIM(stream->query(), "query() is false on the second call after synchronize()");

    // A polling loop must end, after committed work (graph op) and after work that is only
    // encoded (Metal kernel op): like CUDA's, the stream must get its queued work to the GPU.
    for (int round = 0; round < 3; ++round) {
      const bool committed = round != 1;
      (committed ? graphOp : kernelOp)(buffer.mtl(), nil);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      uint64_t polls = 0;
      while (!stream->query() && std::chrono::steady_clock::now() < deadline) {
        ++polls;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      CHECK_SIM(stream->query(), "while (!query()) after %s work did not end within 2 s (%llu polls)",
                committed ? "committed" : "encoded but uncommitted", (unsigned long long)polls);
    }
    stream->synchronize(SyncType::COMMIT_AND_WAIT);
    expectBytes(buffer.mtl(), 5, "query buffer"); // five ops on a zeroed buffer
    [gate release];
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// Hand-off: thread A produces a buffer and passes it to thread B, which reads it right away
// (a future's result used on another thread). Modes: "default" (no opt-in), "pool" (each thread
// on its own pool stream, tracking on), "per-thread" (setPerThreadStreams), "events" (tracking
// off, ordered with an MPS event, CUDA-style), "explicit-default" (both threads set the default
// stream), "no-wait" (tracking off, no event: must report).
void scenarioHandoff(const std::string& mode) {
  if (mode == "per-thread" && at::mps::setMPSPerThreadStreams) {
    at::mps::setMPSPerThreadStreams(true);
  }
  const uint64_t iterations = scaled(25);
  constexpr size_t kPairs = 6;
  runThreads(kPairs, [&](size_t pair) {
    const bool explicitStreams = mode == "pool" || mode == "events" || mode == "no-wait";
    const bool explicitDefault = mode == "explicit-default";
    auto chooseStream = [&] {
      if (explicitStreams) {
        at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
      } else if (explicitDefault) {
        at::mps::setCurrentMPSStream(at::mps::getDefaultMPSStream());
      }
    };
    struct Handoff {
      id<MTLBuffer> buffer;
      uint8_t expected;
      uint32_t event; // 0: none
    };
    for (uint64_t i = 0; i < iterations; ++i) {
      std::promise<Handoff> give;
      std::promise<void> done;
      std::future<Handoff> take = give.get_future();
      std::future<void> finished = done.get_future();
      std::thread reader([&, i] {
        chooseStream();
        metalsim::setTag("handoff consumer p" + std::to_string(pair) + " i" + std::to_string(i));
        Handoff h = take.get();
        if (h.event) {
          at::mps::getMPSEventPool()->waitForEvent(h.event, false, current());
        }
        Buffer out = allocate();
        (i % 2 ? graphOp : kernelOp)(out.mtl(), h.buffer);
        syncCurrent();
        expectBytes(out.mtl(), uint8_t(h.expected + 1), "hand-off result");
        done.set_value();
      });
      chooseStream();
      metalsim::setTag("handoff producer p" + std::to_string(pair) + " i" + std::to_string(i));
      Buffer produced = allocate();
      const uint8_t value = uint8_t(pair * 31 + i);
      fillOp(produced.mtl(), value);
      // value + 1: mostly a graph op (committed, not waited for); every third time a Metal kernel
      // op, so that the producer's work is not even committed when the consumer reads it
      (i % 3 == 2 ? kernelOp : graphOp)(produced.mtl(), nil);
      uint32_t event = 0;
      if (mode == "events") {
        event = at::mps::getMPSEventPool()->acquireEvent(false);
        at::mps::getMPSEventPool()->recordEvent(event, true, current());
      }
      give.set_value({produced.mtl(), uint8_t(value + 1), event});
      finished.wait();
      reader.join();
      g_threads++;
      if (event) {
        at::mps::getMPSEventPool()->releaseEvent(event);
      }
      syncCurrent();
      at::mps::setCurrentMPSStream(nullptr);
    }
  });
}

// In-place writes across streams, tracked without events: an owner thread (default stream, or
// a pool stream in mode "pool") makes X, a worker on its own pool stream reads it (not
// committed), the owner then overwrites X in place (WAR: the worker's read must still see the
// old value), the worker overwrites X with a copy (a write by a stream that is not X's producer,
// not committed), and the owner reads X (RAW: it must see the worker's copy). Writes go through
// MPSStream::fill and MPSStream::copy, as copy_/fill_/zero_ do, and every other iteration the
// worker's write is an MPSGraph op's result (an out= op on X; every fourth time with another
// graph run between the op's Placeholders and its own graph).
void scenarioWriteHandoff(const std::string& mode) {
  const uint64_t iterations = scaled(20);
  constexpr size_t kPairs = 4;
  runThreads(kPairs, [&](size_t pair) {
    for (uint64_t i = 0; i < iterations; ++i) {
      if (mode == "pool") {
        at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
      }
      const uint8_t a = uint8_t(pair * 40 + i), b = uint8_t(a + 100), c = uint8_t(a + 50);
      Buffer x = allocate();
      std::promise<void> made, readEncoded, ownerWrote, workerWrote, ownerRead;
      Buffer readResult;
      std::thread worker([&] {
        at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
        metalsim::setTag("write-handoff worker p" + std::to_string(pair) + " i" + std::to_string(i));
        readResult = allocate();
        made.get_future().wait();
        kernelOp(readResult.mtl(), x.mtl()); // readResult = X + 1, not committed
        readEncoded.set_value();
        ownerWrote.get_future().wait();
        Buffer source = allocate();
        fillOp(source.mtl(), c);
        if (i % 2) {
          graphResultOp(x.mtl(), source.mtl(), /*nested=*/i % 4 == 3); // X = c + 1
        } else {
          copyOp(x.mtl(), source.mtl()); // X = c, not committed
        }
        workerWrote.set_value();
        ownerRead.get_future().wait();
        syncCurrent();
        expectBytes(readResult.mtl(), uint8_t(a + 2), "read before the owner's in-place write");
        at::mps::setCurrentMPSStream(nullptr);
      });
      metalsim::setTag("write-handoff owner p" + std::to_string(pair) + " i" + std::to_string(i));
      fillOp(x.mtl(), a);
      kernelOp(x.mtl()); // X = a + 1, not committed
      made.set_value();
      readEncoded.get_future().wait();
      fillOp(x.mtl(), b); // in place, after the worker's read
      ownerWrote.set_value();
      workerWrote.get_future().wait();
      Buffer out = allocate();
      (i % 2 ? graphOp : kernelOp)(out.mtl(), x.mtl()); // out = X + 1 = c + 1
      ownerRead.set_value();
      worker.join();
      g_threads++;
      syncCurrent();
      expectBytes(out.mtl(), uint8_t(c + 1 + i % 2), "read after another stream's in-place write");
      at::mps::setCurrentMPSStream(nullptr);
    }
  });
}

// Slices of one buffer written at the same time by several streams (threads filling parts of a
// tensor made on the main thread, as copy_kernel_mps does it: the write hook at the start, the
// blit later), then read as a whole on the owner's stream: the read must wait for every writer,
// not only for the last one whose hook ran.
void scenarioConcurrentSliceWrites() {
  const uint64_t iterations = scaled(20);
  constexpr size_t kWriters = 4;
  constexpr size_t kSlice = kBytes / kWriters;
  runThreads(2, [&](size_t owner) {
    for (uint64_t i = 0; i < iterations; ++i) {
      metalsim::setTag("slices owner o" + std::to_string(owner) + " i" + std::to_string(i));
      Buffer x = allocate();
      fillOp(x.mtl(), 0);
      std::atomic<size_t> arrived{0};
      std::vector<std::thread> writers;
      for (size_t w = 0; w < kWriters; ++w) {
        writers.emplace_back([&, w] {
          at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
          metalsim::setTag("slices writer o" + std::to_string(owner) + " w" + std::to_string(w) +
                           " i" + std::to_string(i));
          MPSStream* stream = current();
          Buffer source = allocate();
          fillOp(source.mtl(), uint8_t(10 * w + i + 1));
          arrived++;
          while (arrived.load() < kWriters) {
            std::this_thread::yield();
          }
          noteUse(source.mtl());
          noteUse(x.mtl());
          if (at::mps::noteBufferWrite) {
            at::mps::noteBufferWrite((__bridge const void*)x.mtl());
          }
          std::this_thread::sleep_for(std::chrono::microseconds(50 * ((w + i) % kWriters)));
          stream->copy(source.mtl(), x.mtl(), kSlice, 0, w * kSlice, 0, SyncType::NONE);
          at::mps::setCurrentMPSStream(nullptr);
        });
      }
      for (auto& writer : writers) {
        writer.join();
      }
      g_threads += kWriters;
      Buffer out = allocate();
      (i % 2 ? graphOp : kernelOp)(out.mtl(), x.mtl());
      syncCurrent();
      metalsim::cpuRead(out.mtl(), "slices result");
      const uint8_t* bytes = metalsim::contents(out.mtl());
      for (size_t w = 0; w < kWriters; ++w) {
        const uint8_t expected = uint8_t(10 * w + i + 2);
        CHECK_SIM(bytes[w * kSlice] == expected && bytes[(w + 1) * kSlice - 1] == expected,
                  "slice %zu read as %u, expected %u (writer %zu's write was missed)", w,
                  bytes[w * kSlice], expected, w);
      }
    }
  });
}

// Workers read weights the main thread made before the first worker stream existed (so the
// ordering counts them as written by the default stream), while the main thread, on the default
// stream, keeps reading the workers' fresh outputs. Both read inside their streams' queues (Metal
// kernel ops), and neither needs the other's current work: the weights were complete long before,
// and each output the main thread reads was made by an op that returned. A reader that waits for
// all of the default stream's work so far asks the main thread's queue to commit while the main
// thread, inside that queue, asked the worker's queue to commit: each waits for the other
// (a known deadlock of the series, not in the default run: scripts/metal_sim.py's
// EXTRA_SCENARIOS). Between phases the main thread overwrites the weights (a fill, not
// committed) and starts the next worker: its reads must wait for that write.
void scenarioWeightsAndResults() {
  constexpr uint64_t kPhases = 4;
  const uint64_t readsPerPhase = scaled(15);
  Buffer weights = allocate();
  for (uint64_t phase = 0; phase < kPhases; ++phase) {
    const uint8_t value = uint8_t(40 + 10 * phase);
    metalsim::setTag("weights main p" + std::to_string(phase));
    fillOp(weights.mtl(), value);
    if (phase == 0) {
      syncCurrent(); // made before any worker stream exists
    }
    std::mutex publishedMu;
    std::shared_ptr<Buffer> published;
    std::atomic<bool> stop{false};
    std::thread worker([&] {
      at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
      metalsim::setTag("weights worker p" + std::to_string(phase));
      while (!stop.load()) {
        auto out = std::make_shared<Buffer>(allocate());
        runKernelOp(out->mtl(), weights.mtl(), /*encoderFirst=*/true); // value + 1, not committed
        std::lock_guard<std::mutex> lock(publishedMu);
        published = out;
      }
      syncCurrent();
      at::mps::setCurrentMPSStream(nullptr);
    });
    for (uint64_t reads = 0; reads < readsPerPhase;) {
      std::shared_ptr<Buffer> latest;
      {
        std::lock_guard<std::mutex> lock(publishedMu);
        latest = published;
      }
      if (!latest) {
        std::this_thread::yield();
        continue;
      }
      Buffer result = allocate();
      runKernelOp(result.mtl(), latest->mtl(), /*encoderFirst=*/true); // value + 2, default queue
      syncCurrent();
      expectBytes(result.mtl(), uint8_t(value + 2), "result of a worker's output");
      ++reads;
    }
    stop = true;
    worker.join();
    g_threads += 1;
  }
}

// Events recorded on one stream and waited on another, many pairs at once; plus a CPU-side
// MPSEvent synchronize() and query() on the recording stream.
void scenarioEvents() {
  const uint64_t iterations = scaled(20);
  runThreads(8, [iterations](size_t t) {
    MPSStream* producer = at::mps::getStreamFromPool();
    MPSStream* consumer = at::mps::getStreamFromPool();
    for (uint64_t i = 0; i < iterations; ++i) {
      metalsim::setTag("events t" + std::to_string(t) + " i" + std::to_string(i));
      Buffer in = allocate();
      Buffer out = allocate();
      at::mps::setCurrentMPSStream(producer);
      fillOp(in.mtl(), uint8_t(i));
      kernelOp(in.mtl());
      auto pool = at::mps::getMPSEventPool();
      const uint32_t event = pool->acquireEvent(false);
      pool->recordEvent(event, true, producer);
      at::mps::setCurrentMPSStream(consumer);
      pool->waitForEvent(event, false, consumer);
      kernelOp(out.mtl(), in.mtl());
      if (i % 4 == 0) {
        pool->synchronizeEvent(event);
        CHECK_SIM(pool->queryEvent(event), "queryEvent is false after synchronizeEvent");
      }
      syncCurrent();
      expectBytes(out.mtl(), uint8_t(i + 2), "event-ordered result");
      pool->releaseEvent(event);
      at::mps::setCurrentMPSStream(producer);
      syncCurrent(); // the producer's own work, before its buffer goes back to the allocator
    }
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// Timing events (torch.mps.Event(enable_timing=True)): record start and end around work on a
// pool stream, synchronize the end event, then elapsedTime() (which waits for the end event's
// completion time) must return a positive time.
void scenarioEventTiming() {
  const uint64_t iterations = scaled(10);
  runThreads(4, [iterations](size_t t) {
    at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
    auto pool = at::mps::getMPSEventPool();
    for (uint64_t i = 0; i < iterations; ++i) {
      metalsim::setTag("timing t" + std::to_string(t) + " i" + std::to_string(i));
      Buffer buffer = allocate();
      const uint32_t start = pool->acquireEvent(true);
      const uint32_t end = pool->acquireEvent(true);
      pool->recordEvent(start, true, current());
      fillOp(buffer.mtl(), 1);
      graphOp(buffer.mtl());
      pool->recordEvent(end, true, current());
      if (i % 2 == 0) {
        pool->synchronizeEvent(end);
      }
      const double ms = pool->elapsedTime(start, end);
      CHECK_SIM(ms > 0, "elapsedTime returned %f ms", ms);
      pool->releaseEvent(start);
      pool->releaseEvent(end);
      syncCurrent();
    }
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// Several threads synchronize one event at once (torch.mps.Event.synchronize() and the generic
// torch.Event wait without the GIL): every one must return once the event's work completed and
// see its result. A flag that the first waiter consumes left the others waiting forever.
void scenarioEventSharedWaiters() {
  const uint64_t iterations = scaled(20);
  runThreads(1, [iterations](size_t) {
    at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
    auto pool = at::mps::getMPSEventPool();
    for (uint64_t i = 0; i < iterations; ++i) {
      metalsim::setTag("shared waiters i" + std::to_string(i));
      Buffer buffer = allocate();
      fillOp(buffer.mtl(), uint8_t(i));
      graphOp(buffer.mtl());
      const uint32_t event = pool->acquireEvent(i % 2 == 1); // timing events too
      pool->recordEvent(event, true, current());
      id<MTLBuffer> mtl = buffer.mtl();
      runThreads(4, [&pool, event, mtl, i](size_t) {
        pool->synchronizeEvent(event);
        expectBytes(mtl, uint8_t(i + 1), "result after synchronizeEvent from one of 4 threads");
      });
      pool->releaseEvent(event);
      syncCurrent();
    }
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// A wait for a new shared event, encoded into `stream`'s command buffer: the stream's later work
// runs only after the caller opens the gate (gate.signaledValue = 1) and then releases it.
id<MTLSharedEvent> closedGate(MPSStream* stream) {
  id<MTLSharedEvent> gate = [metalsimDevice() newSharedEvent];
  dispatch_sync(stream->queue(), ^{
    stream->endKernelCoalescing();
    [stream->commandBuffer() encodeWaitForEvent:gate value:1];
  });
  return gate;
}

// A timing event recorded and completed (its completion listener ran), then recorded again
// behind work held back by a closed gate: synchronizeEvent must wait for the second record. The
// first record's listener left a flag set that let the wait return at once.
void scenarioEventRerecord() {
  const uint64_t iterations = scaled(5);
  runThreads(1, [iterations](size_t) {
    at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
    MPSStream* stream = current();
    auto pool = at::mps::getMPSEventPool();
    for (uint64_t i = 0; i < iterations; ++i) {
      metalsim::setTag("rerecord i" + std::to_string(i));
      Buffer buffer = allocate();
      at::mps::MPSEventPtr event = pool->acquireEvent(true, stream);
      event->record(/*needsLock=*/true, /*syncEvent=*/true);
      syncCurrent();
      event->waitForCompletionTime(); // the first record's listener has run
      fillOp(buffer.mtl(), 0);
      id<MTLSharedEvent> gate = closedGate(stream);
      graphOp(buffer.mtl()); // committed behind the closed gate
      event->record(/*needsLock=*/true, /*syncEvent=*/true);
      std::atomic<bool> returned{false};
      std::thread waiter([&] {
        event->synchronize();
        returned = true;
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      CHECK_SIM(!returned, "synchronize() returned while the recorded work waits on the GPU");
      gate.signaledValue = 1;
      waiter.join();
      expectBytes(buffer.mtl(), 1, "result after synchronize() of a re-recorded event");
      [gate release];
      syncCurrent();
    }
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// An event recorded on a stream held back by a closed gate and waited for by a second stream is
// recorded again on an idle third stream while that wait is still pending: in even iterations
// after it was released to the pool and handed out again, in odd ones without leaving its owner
// (CUDA's semantics: a wait is for the record current when it was made). The second stream must
// still wait for the first stream's work (tracking off: the event is the only ordering). The
// event kept its shared event, whose next value the idle stream signalled at once, letting the
// pending wait pass.
void scenarioEventReuseAcrossStreams() {
  const uint64_t iterations = scaled(5);
  auto pool = at::mps::getMPSEventPool();
  MPSStream* producer = at::mps::getStreamFromPool();
  MPSStream* consumer = at::mps::getStreamFromPool();
  MPSStream* idle = at::mps::getStreamFromPool();
  for (uint64_t i = 0; i < iterations; ++i) {
    metalsim::setTag("event reuse i" + std::to_string(i));
    Buffer x = allocate();
    Buffer out = allocate();
    at::mps::setCurrentMPSStream(producer);
    fillOp(x.mtl(), 0);
    id<MTLSharedEvent> gate = closedGate(producer);
    graphOp(x.mtl()); // x = 1, committed behind the closed gate
    const auto first = pool->acquireEvent(false);
    pool->recordEvent(first, /*syncEvent=*/true, producer);
    pool->waitForEvent(first, /*syncEvent=*/false, consumer);
    at::mps::setCurrentMPSStream(consumer);
    graphOp(out.mtl(), x.mtl()); // out = x + 1, committed, waits for the event on the GPU
    const bool reused = i % 2 == 0;
    if (reused) {
      pool->releaseEvent(first);
    }
    const auto second = reused ? pool->acquireEvent(false) : first; // the same event
    CHECK_SIM(second == first, "the pool handed out another event: nothing was reused");
    pool->recordEvent(second, /*syncEvent=*/true, idle);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gate.signaledValue = 1;
    syncCurrent();
    expectBytes(out.mtl(), 2, reused ? "a read ordered by an event that was released and reused"
                                     : "a read ordered by an event recorded again elsewhere");
    pool->releaseEvent(second);
    [gate release];
    at::mps::setCurrentMPSStream(producer);
    syncCurrent();
  }
  at::mps::setCurrentMPSStream(nullptr);
  g_threads += 1;
}

// A timing loop that reuses its two events (torch.mps.Event(enable_timing=True) recorded again
// every iteration): elapsedTime() must measure the latest records, and raise for events taken
// from the pool again and not recorded. Odd iterations are held back 100 ms on the GPU, even ones
// take about a millisecond. The listener delivers notifications late here
// (METALSIM_LISTENER_DELAY_US), as a dispatch queue may, so when elapsedTime() has synchronized
// the streams the previous record's completion time is still in the event.
void scenarioEventTimingRerecord() {
  const uint64_t iterations = std::max<uint64_t>(4, scaled(6));
  runThreads(1, [iterations](size_t) {
    at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
    MPSStream* stream = current();
    auto pool = at::mps::getMPSEventPool();
    const uint32_t start = pool->acquireEvent(true);
    const uint32_t end = pool->acquireEvent(true);
    for (uint64_t i = 0; i < iterations; ++i) {
      metalsim::setTag("timing-rerecord i" + std::to_string(i));
      const bool held = i % 2 == 1;
      Buffer buffer = allocate();
      pool->recordEvent(start, true, stream);
      id<MTLSharedEvent> gate = held ? closedGate(stream) : nil;
      fillOp(buffer.mtl(), 0);
      graphOp(buffer.mtl());
      pool->recordEvent(end, true, stream);
      stream->synchronize(SyncType::COMMIT);
      if (held) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        gate.signaledValue = 1;
      }
      try {
        const double ms = pool->elapsedTime(start, end);
        CHECK_SIM(held ? ms >= 50 : ms < 50,
                  "iteration %llu: elapsedTime() is %.3f ms for work %s on the GPU: the completion "
                  "time of an earlier record",
                  (unsigned long long)i, ms, held ? "held back 100 ms" : "of about 1 ms");
      } catch (const c10::Error& error) {
        CHECK_SIM(false, "iteration %llu: elapsedTime() failed: %s", (unsigned long long)i,
                  error.what());
      }
      [gate release];
      syncCurrent();
    }
    pool->releaseEvent(start);
    pool->releaseEvent(end);
    // The same two events again from the pool (their signal counters kept), only the end one
    // recorded: elapsedTime() must raise, not wait for a completion time that never comes.
    const uint32_t unrecorded = pool->acquireEvent(true);
    const uint32_t recorded = pool->acquireEvent(true);
    pool->recordEvent(recorded, true, stream);
    syncCurrent();
    bool raised = false;
    try {
      pool->elapsedTime(unrecorded, recorded);
    } catch (const c10::Error&) {
      raised = true;
    }
    CHECK_SIM(raised, "elapsedTime() of a reused timing event that was not recorded returned");
    pool->releaseEvent(unrecorded);
    pool->releaseEvent(recorded);
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// A notification may run after exit() began: Metal's listener runs its blocks on a dispatch
// queue, whose threads exit() does not stop. A timing event's notification is still queued here
// (delivered 100 ms late) when the scenario returns; a handler registered before the event pool
// existed runs after the static destructors and lets the notification run. Its block writes into
// its event, which must still exist (v2.9.1 destroyed the pool and its events at exit).
void scenarioEventNotifyAtExit() {
  std::atexit(metalsim::waitListenerIdle); // runs after the destructors of later statics
  runThreads(1, [](size_t) {
    auto pool = at::mps::getMPSEventPool();
    const uint32_t event = pool->acquireEvent(true);
    pool->recordEvent(event, true, current());
    syncCurrent(); // signalled: its notification is queued
    pool->releaseEvent(event);
  });
}

// The device guard (what torch.Stream / torch.accelerator and autograd use): streams from
// getNewStream, exchangeStream, events recorded and blocked on through the guard,
// synchronizeStream then queryStream.
void scenarioGuard() {
  const c10::impl::DeviceGuardImplInterface* guard = c10::impl::simMpsGuardImpl;
  CHECK_SIM(guard != nullptr, "MPSGuardImpl did not register itself (C10_REGISTER_GUARD_IMPL)");
  if (guard == nullptr) {
    return;
  }
  const uint64_t iterations = scaled(10);
  runThreads(8, [guard, iterations](size_t t) {
    const c10::Device device(c10::DeviceType::MPS, 0);
    // 16 streams taken once from the round-robin pool of 32: no other thread uses these two,
    // so queryStream() after synchronizeStream() must be true.
    const c10::Stream producer = guard->getNewStream(device);
    const c10::Stream consumer = guard->getNewStream(device);
    for (uint64_t i = 0; i < iterations; ++i) {
      metalsim::setTag("guard t" + std::to_string(t) + " i" + std::to_string(i));
      const c10::Stream previous = guard->exchangeStream(producer);
      CHECK_SIM(guard->getStream(device) == producer, "exchangeStream did not set the stream");
      Buffer in = allocate();
      fillOp(in.mtl(), uint8_t(i));
      kernelOp(in.mtl());
      void* event = nullptr;
      guard->record(&event, producer, 0, c10::EventFlag::PYTORCH_DEFAULT);
      guard->exchangeStream(consumer);
      guard->block(event, consumer);
      Buffer out = allocate();
      kernelOp(out.mtl(), in.mtl());
      guard->synchronizeStream(consumer);
      CHECK_SIM(guard->queryStream(consumer), "queryStream is false after synchronizeStream");
      expectBytes(out.mtl(), uint8_t(i + 2), "guard-ordered result");
      guard->synchronizeStream(producer);
      guard->destroyEvent(event, 0);
      guard->exchangeStream(previous);
    }
  });
}

// Tensor.record_stream (CUDA's pattern): a buffer allocated on stream P is read on stream C,
// record_stream(C) is called, the buffer is freed on P while C's read may still be pending, and
// P's next allocation (which may get the same buffer) is written at once. The write must be
// ordered after C's read. Run with tracking on, and with PYTORCH_MPS_STREAM_TRACKING=0 (where
// record_stream is the program's only way to order the reuse, as on CUDA).
void scenarioRecordStream() {
  if (!at::mps::noteBufferUseOnStream) {
    CHECK_SIM(false, "the tree has no at::mps::noteBufferUseOnStream (Tensor.record_stream)");
    return;
  }
  const uint64_t iterations = scaled(30);
  runThreads(4, [iterations](size_t t) {
    MPSStream* producer = at::mps::getStreamFromPool();
    MPSStream* consumer = at::mps::getStreamFromPool();
    for (uint64_t i = 0; i < iterations; ++i) {
      metalsim::setTag("record-stream t" + std::to_string(t) + " i" + std::to_string(i));
      at::mps::setCurrentMPSStream(producer);
      Buffer x = allocate();
      fillOp(x.mtl(), uint8_t(i));
      auto pool = at::mps::getMPSEventPool();
      const uint32_t event = pool->acquireEvent(false);
      pool->recordEvent(event, true, producer);
      at::mps::setCurrentMPSStream(consumer);
      pool->waitForEvent(event, false, consumer);
      Buffer out = allocate();
      graphOp(out.mtl(), x.mtl()); // C reads x (committed, not waited for)
      at::mps::noteBufferUseOnStream(x.mtl(), consumer);
      at::mps::setCurrentMPSStream(producer);
      x = Buffer{}; // freed on P while C may still read it
      Buffer y = allocate();
      fillOp(y.mtl(), 0xEE); // P writes its next buffer at once
      producer->synchronize(SyncType::COMMIT);
      consumer->synchronize(SyncType::COMMIT_AND_WAIT);
      expectBytes(out.mtl(), uint8_t(i + 1), "record-stream result");
      pool->releaseEvent(event);
      producer->synchronize(SyncType::COMMIT_AND_WAIT);
    }
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// Allocator: buffers allocated, used and freed without waiting, on many streams at once (a freed
// buffer still used by its stream must not be handed to another stream unordered); then memory
// pressure: allocate until the allocator's out-of-memory error, empty the cache, allocate again.
void scenarioAllocator() {
  const uint64_t cycles = scaled(30);
  runThreads(16, [cycles](size_t t) {
    if (t % 4 != 0) {
      at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
    }
    for (uint64_t c = 0; c < cycles; ++c) {
      metalsim::setTag("alloc t" + std::to_string(t) + " c" + std::to_string(c));
      Buffer scratch = allocate(kBytes * (1 + c % 3));
      fillOp(scratch.mtl(), uint8_t(c));
      kernelOp(scratch.mtl()); // pending when the buffer is freed below
      Buffer kept = allocate();
      fillOp(kept.mtl(), 9);
      scratch = Buffer{}; // free while the stream still uses it
      if (c % 5 == 4) {
        syncCurrent();
        expectBytes(kept.mtl(), 9, "kept buffer");
      } else {
        current()->synchronize(SyncType::COMMIT);
      }
    }
    syncCurrent();
    at::mps::setCurrentMPSStream(nullptr);
  });
  at::mps::synchronizeAllMPSStreams();

  // memory pressure (the device has METALSIM_DEVICE_MEMORY_MB, set small by the driver)
  std::vector<Buffer> held;
  bool oom = false;
  for (int i = 0; i < 10000 && !oom; ++i) {
    try {
      held.push_back(allocate(4 << 20));
      fillOp(held.back().mtl(), 1);
    } catch (const c10::Error& error) {
      oom = std::strstr(error.what(), "out of memory") != nullptr;
      CHECK_SIM(oom, "allocation failed without an out-of-memory error: %s", error.what());
      break;
    }
  }
  CHECK_SIM(oom, "no out-of-memory error after %zu buffers", held.size());
  syncCurrent();
  held.clear();
  at::mps::getIMPSAllocator()->emptyCache();
  Buffer again = allocate(4 << 20);
  fillOp(again.mtl(), 5);
  syncCurrent();
  metalsim::cpuRead(again.mtl(), "after empty_cache");
  CHECK_SIM(metalsim::contents(again.mtl())[0] == 5, "allocation after empty_cache unusable");
}

// synchronizeAllMPSStreams() called from inside a stream's block (MPSAllocator does so under
// memory pressure, and allocations happen inside ops' blocks) while other threads work. With
// `concurrent`, every thread does it, on different streams at once.
void scenarioSyncAllInBlock(bool concurrent) {
  const uint64_t cycles = scaled(10);
  runThreads(8, [cycles, concurrent](size_t t) {
    at::mps::setCurrentMPSStream(t % 2 ? at::mps::getStreamFromPool() : at::mps::getDefaultMPSStream());
    for (uint64_t c = 0; c < cycles; ++c) {
      metalsim::setTag("sync-all t" + std::to_string(t));
      Buffer buffer = allocate();
      fillOp(buffer.mtl(), uint8_t(c));
      MPSStream* stream = current();
      id<MTLBuffer> mtl = buffer.mtl();
      const bool syncAll = concurrent || t == 1;
      dispatch_sync(stream->queue(), ^{
        encodeKernel(stream, mtl, nil);
        if (syncAll) {
          at::mps::synchronizeAllMPSStreams(SyncType::COMMIT_AND_WAIT);
        }
      });
      if (!syncAll) {
        syncCurrent();
      }
      expectBytes(mtl, uint8_t(c + 1), "sync-all result");
    }
    at::mps::setCurrentMPSStream(nullptr);
  });
}

// Threads that commit work and exit without waiting; the main thread syncs all and checks.
void scenarioThreadExit() {
  std::mutex mu;
  std::vector<std::pair<Buffer, uint8_t>> left;
  runThreads(24, [&](size_t t) {
    if (t % 3 == 1) {
      at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
    }
    metalsim::setTag("thread-exit t" + std::to_string(t));
    Buffer buffer = allocate();
    fillOp(buffer.mtl(), uint8_t(t));
    graphOp(buffer.mtl());
    std::lock_guard<std::mutex> lock(mu);
    left.emplace_back(std::move(buffer), uint8_t(t + 1));
  });
  at::mps::synchronizeAllMPSStreams();
  for (auto& [buffer, expected] : left) {
    expectBytes(buffer.mtl(), expected, "work of an exited thread");
  }
}

// fork() while worker threads are busy: the child must get a clear error for worker streams.
void scenarioFork() {
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (size_t t = 0; t < 4; ++t) {
    workers.emplace_back([&stop, t] {
      at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
      metalsim::setTag("fork worker " + std::to_string(t));
      Buffer buffer = allocate();
      while (!stop.load()) {
        kernelOp(buffer.mtl());
        syncCurrent();
      }
      at::mps::setCurrentMPSStream(nullptr);
    });
  }
  g_threads += workers.size();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const pid_t child = fork();
  if (child == 0) {
    alarm(20);
    int code = 1;
    try {
      at::mps::getStreamFromPool();
      std::fprintf(stderr, "child: getStreamFromPool() worked after fork (no error)\n");
    } catch (const c10::Error& error) {
      code = std::strstr(error.what(), "fork") ? 0 : 1;
      std::fprintf(stderr, "child: %s\n", error.what());
    }
    _exit(code);
  }
  int status = 0;
  waitpid(child, &status, 0);
  CHECK_SIM(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "forked child did not get a clear error (status %d)", status);
  stop = true;
  for (auto& worker : workers) {
    worker.join();
  }
}

// The process exits (static destructors run) while threads still hold streams and encode work.
void scenarioExitWithWorkers() {
  for (size_t t = 0; t < 8; ++t) {
    std::thread([t] {
      if (t % 2) {
        at::mps::setCurrentMPSStream(at::mps::getStreamFromPool());
      }
      metalsim::setTag("exit worker " + std::to_string(t));
      Buffer buffer = allocate();
      for (;;) {
        kernelOp(buffer.mtl());
        current()->synchronize(SyncType::COMMIT);
      }
    }).detach();
  }
  g_threads += 8;
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
}

const std::map<std::string, std::function<void()>>& scenarios() {
  static const std::map<std::string, std::function<void()>> table = {
      {"streams-64", scenarioStreams64},
      {"query", scenarioQuery},
      {"handoff-default", [] { scenarioHandoff("default"); }},
      {"handoff-pool", [] { scenarioHandoff("pool"); }},
      {"handoff-per-thread", [] { scenarioHandoff("per-thread"); }},
      {"handoff-events", [] { scenarioHandoff("events"); }},
      {"handoff-explicit-default", [] { scenarioHandoff("explicit-default"); }},
      {"handoff-no-wait", [] { scenarioHandoff("no-wait"); }},
      {"events", scenarioEvents},
      {"write-handoff-default", [] { scenarioWriteHandoff("default"); }},
      {"write-handoff-pool", [] { scenarioWriteHandoff("pool"); }},
      {"concurrent-slice-writes", scenarioConcurrentSliceWrites},
      {"weights-and-results", scenarioWeightsAndResults},
      {"guard", scenarioGuard},
      {"event-timing", scenarioEventTiming},
      {"event-shared-waiters", scenarioEventSharedWaiters},
      {"event-rerecord", scenarioEventRerecord},
      {"event-reuse-across-streams", scenarioEventReuseAcrossStreams},
      {"event-timing-rerecord", scenarioEventTimingRerecord},
      {"event-notify-at-exit", scenarioEventNotifyAtExit},
      {"allocator", scenarioAllocator},
      {"record-stream", scenarioRecordStream},
      {"record-stream-untracked", scenarioRecordStream},
      {"sync-all-in-block", [] { scenarioSyncAllInBlock(false); }},
      {"sync-all-in-blocks-concurrent", [] { scenarioSyncAllInBlock(true); }},
      {"thread-exit", scenarioThreadExit},
      {"fork", scenarioFork},
      {"exit-with-workers", scenarioExitWithWorkers},
  };
  return table;
}

void startWatchdog() {
  const uint64_t seconds = envNumber("METALSIM_TIMEOUT_S", 60);
  std::thread([seconds] {
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    std::fprintf(stderr, "TIMEOUT: scenario %s did not finish within %llu s (deadlock or a wait "
                 "that never ends)\n", g_scenario.c_str(), (unsigned long long)seconds);
    std::fprintf(stderr, "threads inside or waiting for stream queues:\n");
    metalsim::printDispatchState(queueName);
    metalsim::printHazards(20);
    std::fflush(stderr);
    _exit(3);
  }).detach();
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SCENARIO | --list\n", argv[0]);
    return 2;
  }
  if (std::strcmp(argv[1], "--list") == 0) {
    for (const auto& [name, run] : scenarios()) {
      std::printf("%s\n", name.c_str());
    }
    return 0;
  }
  const auto found = scenarios().find(argv[1]);
  if (found == scenarios().end()) {
    std::fprintf(stderr, "unknown scenario %s (see --list)\n", argv[1]);
    return 2;
  }
  if (std::getenv("METALSIM_EXPECT_TRACKING") && !at::mps::noteBufferUse) {
    std::fprintf(stderr, "the tree declares at::mps::noteBufferUse but the harness did not link it: "
                 "its signature changed (update the weak declaration in harness.mm)\n");
    return 2;
  }
  g_scenario = argv[1];
  startWatchdog();
  try {
    found->second();
  } catch (const std::exception& error) {
    CHECK_SIM(false, "uncaught exception: %s", error.what());
  }
  if (g_scenario != "exit-with-workers" && !metalsim::waitIdle(20000)) {
    CHECK_SIM(false, "GPU work still pending 20 s after the scenario ended");
  }
  const uint64_t hazards = metalsim::printHazards(20);
  const metalsim::Stats stats = metalsim::stats();
  std::printf("scenario %s: threads=%llu events=%llu hazards=%llu failures=%llu\n", g_scenario.c_str(),
              (unsigned long long)g_threads.load(), (unsigned long long)stats.signals,
              (unsigned long long)hazards, (unsigned long long)g_failures.load());
  std::fflush(stdout);
  return (hazards == 0 && g_failures == 0) ? 0 : 1;
}
