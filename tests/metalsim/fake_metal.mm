// A fake Metal device for running PyTorch's MPS runtime files on Linux (see README.md).
//
// Classes are declared by the same Apple-SDK shim headers the runtime files are compiled
// against (ci/apple-sdk-shim), so every selector has the types the callers use. Execution model:
// each command queue has one "GPU" thread that runs its committed command buffers in order,
// after a random delay; a command buffer runs its commands in order (event waits block the
// queue until the value is signalled). The hazard checker keeps a vector clock per queue and
// one for the CPU side and reports every pair of conflicting buffer accesses that no clock
// orders (see README.md for the happens-before rules).

#include "sim.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <Foundation/Foundation.h>
#include <Metal/Metal.h>
#include <MetalPerformanceShaders/MetalPerformanceShaders.h>
#include <MetalPerformanceShadersGraph/MetalPerformanceShadersGraph.h>

extern "C" {
// libobjc2's runtime functions (declared here: its <objc/runtime.h> clashes with the shim's BOOL).
id class_createInstance(Class cls, size_t extraBytes);
id object_dispose(id obj);
id objc_autorelease(id obj);
void* _Block_copy(const void* block);
void _Block_release(const void* block);
const char* sel_getName(SEL sel);
const char* object_getClassName(id obj);
typedef id (*SimIMP)(id, SEL, ...); // libobjc2's IMP (the shim's <objc/objc.h> has none)
extern SimIMP (*__objc_msg_forward2)(id, SEL);
}

namespace {
// libobjc2 answers a message nobody implements with a silent nil/0: here it stops the run instead,
// so that a runtime file using Metal API the fake lacks cannot pass unnoticed.
SimIMP unimplementedSelector(id receiver, SEL selector) {
  std::fprintf(stderr,
               "metalsim: -[%s %s] is not implemented by the fake Metal device; add it to "
               "tests/metalsim/fake_metal.mm\n",
               object_getClassName(receiver), sel_getName(selector));
  std::abort();
}

__attribute__((constructor)) void installForwardHook() {
  __objc_msg_forward2 = unimplementedSelector;
}
} // namespace

// The private MPSGraph property that MPSStream.mm declares and sets.
@interface MPSGraphExecutionDescriptor ()
@property(readwrite, atomic) BOOL enableCommitAndContinue;
@end

namespace metalsim {
namespace {

constexpr size_t kMaxAgents = 128; // agent 0 is the CPU side, agent q + 1 is command queue q

struct Clock {
  std::array<uint64_t, kMaxAgents> t{};
  void join(const Clock& other) {
    for (size_t i = 0; i < kMaxAgents; ++i) {
      t[i] = std::max(t[i], other.t[i]);
    }
  }
};

struct Origin {
  std::string queue; // queue name, or "CPU"
  uint64_t seq = 0; // command buffer number on that queue
  std::string tag;
  std::string render() const {
    std::string text = queue + (seq ? " cb#" + std::to_string(seq) : std::string());
    return tag.empty() ? text : text + " [" + tag + "]";
  }
};

// Bytes [begin, end) of a buffer; kernels and graphs touch all of it, blits their ranges.
struct ByteRange {
  size_t begin = 0;
  size_t end = SIZE_MAX;
  bool overlaps(const ByteRange& other) const {
    return begin < other.end && other.begin < end;
  }
  bool covers(const ByteRange& other) const {
    return begin <= other.begin && other.end <= end;
  }
};

struct Access {
  size_t agent = 0;
  uint64_t epoch = 0; // 0: none
  Origin origin;
  ByteRange range;
};

struct BufferHistory {
  uint64_t id = 0;
  std::vector<Access> writes; // the last write of every byte range still visible
  std::vector<Access> reads; // since the writes of their bytes
};

struct Command {
  enum Kind { kWait, kSignal, kKernel } kind = kKernel;
  id event = nil; // retained, for kWait / kSignal
  uint64_t value = 0;
  std::vector<id> reads; // retained buffers
  std::vector<id> writes;
  std::vector<ByteRange> read_ranges; // per buffer of `reads`; empty: whole buffers
  std::vector<ByteRange> write_ranges;
  std::function<void()> body; // moves bytes; runs under the engine lock
  std::string tag;
};

struct Engine;
Engine& engine();

} // namespace
} // namespace metalsim

// ------------------------------------------------------------------------------------------
// Root class and the Foundation bits the runtime files need
// ------------------------------------------------------------------------------------------

@implementation NSObject {
  long _simExtraRefs; // retain count - 1, so that zeroed memory means "one reference"
}
+ (instancetype)alloc {
  return class_createInstance(self, 0);
}
+ (instancetype)new {
  return [[self alloc] init];
}
- (instancetype)init {
  return self;
}
- (void)dealloc {
  object_dispose(self);
}
- (instancetype)retain {
  __atomic_add_fetch(&_simExtraRefs, 1, __ATOMIC_RELAXED);
  return self;
}
- (oneway void)release {
  if (__atomic_sub_fetch(&_simExtraRefs, 1, __ATOMIC_ACQ_REL) < 0) {
    [self dealloc];
  }
}
- (instancetype)autorelease {
  return objc_autorelease(self);
}
- (NSUInteger)retainCount {
  return (NSUInteger)(__atomic_load_n(&_simExtraRefs, __ATOMIC_ACQUIRE) + 1);
}
- (BOOL)isEqual:(id)object {
  return self == object;
}
- (NSUInteger)hash {
  return (NSUInteger)(uintptr_t)self;
}
- (Class)class {
  return *(Class*)self;
}
- (BOOL)isKindOfClass:(Class)aClass {
  return NO;
}
- (BOOL)respondsToSelector:(SEL)aSelector {
  return NO;
}
- (NSString*)description {
  return nil;
}
- (id)copy {
  return [self retain];
}
- (id)mutableCopy {
  return [self retain];
}
@end

@interface SimBuffer : NSObject <MTLBuffer> {
 @public
  uint8_t* _bytes;
  NSUInteger _length;
  NSUInteger _allocated;
  MTLResourceOptions _options;
  id<MTLHeap> _heap; // retained; nil for a device buffer
  metalsim::BufferHistory* _history;
  metalsim::Clock* _releaseClock; // end clocks of the command buffers that released it
}
@end

@interface SimHeap : NSObject <MTLHeap> {
 @public
  NSUInteger _size;
  NSUInteger _used;
  MTLStorageMode _storage;
  MTLPurgeableState _purgeable;
}
@end

@interface SimSharedEvent : NSObject <MTLSharedEvent> {
 @public
  uint64_t _value;
  metalsim::Clock* _clock; // join of the clocks of every signal so far
}
@end

@interface SimCommandQueue : NSObject <MTLCommandQueue> {
 @public
  size_t _index;
}
@end

@interface SimCommandBuffer : NSObject <MTLCommandBuffer> {
 @public
  SimCommandQueue* _queue; // retained
  MTLCommandBufferStatus _status;
  uint64_t _seq;
  std::vector<metalsim::Command>* _commands;
  std::vector<MTLCommandBufferHandler>* _scheduledHandlers; // copied blocks
  std::vector<MTLCommandBufferHandler>* _completedHandlers;
  metalsim::Clock* _commitClock; // what the CPU side had observed at commit
  metalsim::Clock* _endClock;
}
@end

@interface SimComputeEncoder : NSObject <MTLComputeCommandEncoder> {
 @public
  SimCommandBuffer* _buffer; // not retained (the command buffer outlives its encoders)
  std::map<NSUInteger, id>* _bound; // index -> buffer
}
@end

@interface SimBlitEncoder : NSObject <MTLBlitCommandEncoder> {
 @public
  SimCommandBuffer* _buffer;
}
@end

@interface SimDevice : NSObject <MTLDevice>
@end

namespace metalsim {
namespace {

thread_local std::string t_tag;

uint64_t envNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  return text && *text ? std::strtoull(text, nullptr, 10) : fallback;
}

Clock cpuStart() {
  Clock clock;
  clock.t[0] = 1; // epoch 0 means "no access"
  return clock;
}

// All fake-GPU state is guarded by one lock: the simulator favours simple, checkable code over
// speed. Callbacks into the runtime (handlers, notification blocks) always run without it.
struct Engine {
  std::mutex mu;
  std::condition_variable cv; // any state change: commit, completion, signal
  Clock cpu = cpuStart(); // what the CPU side has observed; t[0] is the CPU's own epoch
  std::vector<std::string> queue_names;
  std::vector<std::deque<SimCommandBuffer*>> pending; // per queue, committed, not yet run
  std::vector<Clock> queue_clock; // per queue, clock at the end of its last command buffer
  std::vector<uint64_t> next_seq;
  std::vector<bool> worker_started;
  std::vector<std::string> hazards;
  Stats stats;
  uint64_t in_flight = 0; // committed and not completed
  uint64_t next_buffer_id = 0;
  uint64_t max_delay_us = envNumber("METALSIM_MAX_DELAY_US", 200);
  uint64_t memory_limit = envNumber("METALSIM_DEVICE_MEMORY_MB", 1024) << 20;
  uint64_t heap_bytes = 0;
  // how long the listener thread holds each notification before running it: a dispatch queue
  // delivers them when it gets to them, after the GPU signalled and after waitUntilCompleted
  uint64_t listener_delay_us = envNumber("METALSIM_LISTENER_DELAY_US", 0);
  // listener thread: notification blocks, in signal order
  std::deque<std::function<void()>> notifications;
  uint64_t notifications_queued = 0; // for waitListenerIdle
  uint64_t notifications_run = 0; // blocks that returned
  bool listener_started = false;
};

Engine& engine() {
  static Engine* instance = new Engine(); // never destroyed: GPU threads outlive main()
  return *instance;
}

uint64_t randomDelayUs() {
  thread_local std::mt19937_64 rng(envNumber("METALSIM_SEED", 1) ^
                                   std::hash<std::thread::id>()(std::this_thread::get_id()));
  const uint64_t max_delay = engine().max_delay_us;
  return max_delay ? rng() % (max_delay + 1) : 0;
}

Access accessNow(size_t agent, uint64_t epoch, const Origin& origin) {
  Access access;
  access.agent = agent;
  access.epoch = epoch;
  access.origin = origin;
  return access;
}

void reportHazard(Engine& e, const char* kind, BufferHistory& history, const Access& earlier,
                  const Access& later) {
  e.stats.hazards++;
  e.hazards.push_back(std::string("HAZARD ") + kind + " on buffer #" + std::to_string(history.id) +
                      ": " + later.origin.render() + " is not ordered after " +
                      earlier.origin.render());
}

bool unordered(const Access& earlier, size_t agent, const Clock& clock) {
  return earlier.epoch != 0 && earlier.agent != agent && earlier.epoch > clock.t[earlier.agent];
}

template <typename Predicate>
void eraseIf(std::vector<Access>& accesses, Predicate predicate) {
  accesses.erase(std::remove_if(accesses.begin(), accesses.end(), predicate), accesses.end());
}

// One access of `agent` (at epoch, knowing `clock`) to bytes `range` of a buffer; called with the
// lock held. Accesses of disjoint byte ranges (slices written by different queues) never conflict.
void checkAccess(Engine& e, BufferHistory& history, bool write, size_t agent, uint64_t epoch,
                 const Clock& clock, const Origin& origin, ByteRange range = {}) {
  Access now = accessNow(agent, epoch, origin);
  now.range = range;
  for (const Access& earlier : history.writes) {
    if (earlier.range.overlaps(range) && unordered(earlier, agent, clock)) {
      reportHazard(e, write ? "write-after-write" : "read-after-write", history, earlier, now);
    }
  }
  auto coveredBy = [&](const Access& access) { return range.covers(access.range); };
  if (write) {
    for (const Access& read : history.reads) {
      if (read.range.overlaps(range) && unordered(read, agent, clock)) {
        reportHazard(e, "write-after-read", history, read, now);
      }
    }
    eraseIf(history.reads, coveredBy);
    eraseIf(history.writes, coveredBy);
    history.writes.push_back(now);
    return;
  }
  eraseIf(history.reads, [&](const Access& read) { return read.agent == agent && coveredBy(read); });
  history.reads.push_back(now);
}

void observe(Engine& e, const Clock& clock) { // the CPU side learns of GPU progress
  e.cpu.join(clock);
}

void listenerLoop() {
  Engine& e = engine();
  std::unique_lock<std::mutex> lock(e.mu);
  for (;;) {
    e.cv.wait(lock, [&] { return !e.notifications.empty(); });
    std::function<void()> callback = std::move(e.notifications.front());
    e.notifications.pop_front();
    lock.unlock();
    if (e.listener_delay_us != 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(e.listener_delay_us));
    }
    callback();
    lock.lock();
    e.notifications_run++;
    e.cv.notify_all();
  }
}

// Called with the lock held: queue notification blocks whose value `event` reached.
void queueNotifications(Engine& e, SimSharedEvent* event);

struct PendingNotify {
  SimSharedEvent* event;
  uint64_t value;
  MTLSharedEventNotificationBlock block; // copied
};
std::vector<PendingNotify>& pendingNotifies() {
  static auto* list = new std::vector<PendingNotify>();
  return *list;
}

void queueNotifications(Engine& e, SimSharedEvent* event) {
  auto& list = pendingNotifies();
  for (auto it = list.begin(); it != list.end();) {
    if (it->event == event && event->_value >= it->value) {
      PendingNotify note = *it;
      const Clock clock = *event->_clock;
      const uint64_t value = event->_value;
      e.notifications_queued++;
      e.notifications.push_back([note, clock, value] {
        {
          std::lock_guard<std::mutex> lock(engine().mu);
          observe(engine(), clock);
        }
        note.block(note.event, value);
        _Block_release(note.block);
        [note.event release];
      });
      it = list.erase(it);
    } else {
      ++it;
    }
  }
  if (!e.listener_started && !e.notifications.empty()) {
    e.listener_started = true;
    std::thread(listenerLoop).detach();
  }
  e.cv.notify_all();
}

void signalLocked(Engine& e, SimSharedEvent* event, uint64_t value, const Clock& clock) {
  event->_value = value;
  event->_clock->join(clock);
  e.stats.signals++;
  queueNotifications(e, event);
}

void runCommandBuffer(Engine& e, SimCommandBuffer* cb, std::unique_lock<std::mutex>& lock) {
  const size_t q = cb->_queue->_index;
  const size_t agent = q + 1;
  Clock clock = e.queue_clock[q];
  clock.join(*cb->_commitClock);
  clock.t[agent] = cb->_seq;
  Origin origin{e.queue_names[q], cb->_seq, ""};
  cb->_status = MTLCommandBufferStatusScheduled;
  for (Command& command : *cb->_commands) {
    origin.tag = command.tag;
    switch (command.kind) {
      case Command::kWait: {
        auto* event = (SimSharedEvent*)command.event;
        e.cv.wait(lock, [&] { return event->_value >= command.value; });
        clock.join(*event->_clock);
        e.stats.waits++;
        break;
      }
      case Command::kSignal:
        signalLocked(e, (SimSharedEvent*)command.event, command.value, clock);
        break;
      case Command::kKernel:
        for (size_t i = 0; i < command.reads.size(); ++i) {
          checkAccess(e, *((SimBuffer*)command.reads[i])->_history, false, agent, cb->_seq, clock,
                      origin, command.read_ranges.empty() ? ByteRange{} : command.read_ranges[i]);
        }
        for (size_t i = 0; i < command.writes.size(); ++i) {
          checkAccess(e, *((SimBuffer*)command.writes[i])->_history, true, agent, cb->_seq, clock,
                      origin, command.write_ranges.empty() ? ByteRange{} : command.write_ranges[i]);
        }
        if (command.body) {
          command.body();
        }
        e.stats.kernels++;
        break;
    }
  }
  *cb->_endClock = clock;
  e.queue_clock[q] = clock;
}

void releaseCommandResources(SimCommandBuffer* cb) {
  {
    // A buffer whose retain count dropped is no longer used by this command buffer: whoever
    // reads the lower count (MPSAllocator does, before reusing it) is ordered after its work.
    std::lock_guard<std::mutex> lock(engine().mu);
    for (Command& command : *cb->_commands) {
      for (const auto* list : {&command.reads, &command.writes}) {
        for (id buffer : *list) {
          ((SimBuffer*)buffer)->_releaseClock->join(*cb->_endClock);
        }
      }
    }
  }
  for (Command& command : *cb->_commands) {
    [command.event release];
    for (id buffer : command.reads) {
      [buffer release];
    }
    for (id buffer : command.writes) {
      [buffer release];
    }
    command.body = nullptr;
  }
  cb->_commands->clear();
}

void runHandlers(std::vector<MTLCommandBufferHandler>& handlers, SimCommandBuffer* cb) {
  for (MTLCommandBufferHandler handler : handlers) {
    handler(cb);
    _Block_release(handler);
  }
  handlers.clear();
}

void queueWorker(size_t q) {
  Engine& e = engine();
  std::unique_lock<std::mutex> lock(e.mu);
  for (;;) {
    e.cv.wait(lock, [&] { return !e.pending[q].empty(); });
    SimCommandBuffer* cb = e.pending[q].front();
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::microseconds(randomDelayUs()));
    std::vector<MTLCommandBufferHandler> scheduled;
    lock.lock();
    scheduled.swap(*cb->_scheduledHandlers);
    lock.unlock();
    runHandlers(scheduled, cb);
    lock.lock();
    runCommandBuffer(e, cb, lock);
    lock.unlock();
    // Metal releases the resources a command buffer references once it completed, before its
    // completed handlers run (MPSAllocator reads retainCount in them).
    releaseCommandResources(cb);
    std::vector<MTLCommandBufferHandler> completed;
    lock.lock();
    completed.swap(*cb->_completedHandlers);
    if (!completed.empty()) {
      observe(e, *cb->_endClock); // handler code runs after the GPU work it is told about
    }
    lock.unlock();
    runHandlers(completed, cb);
    lock.lock();
    cb->_status = MTLCommandBufferStatusCompleted;
    e.pending[q].pop_front();
    e.in_flight--;
    e.stats.command_buffers++;
    e.cv.notify_all();
    lock.unlock();
    [cb release]; // the queue's reference, taken at commit
    lock.lock();
  }
}

void commitLocked(Engine& e, SimCommandBuffer* cb) {
  if (cb->_status >= MTLCommandBufferStatusCommitted) {
    std::fprintf(stderr, "metalsim: command buffer committed twice (Metal asserts here)\n");
    std::abort();
  }
  const size_t q = cb->_queue->_index;
  cb->_status = MTLCommandBufferStatusCommitted;
  cb->_seq = ++e.next_seq[q];
  *cb->_commitClock = e.cpu;
  e.cpu.t[0]++; // CPU accesses from now on are not ordered before this command buffer
  [cb retain];
  e.pending[q].push_back(cb);
  e.in_flight++;
  if (!e.worker_started[q]) {
    e.worker_started[q] = true;
    std::thread(queueWorker, q).detach();
  }
  e.cv.notify_all();
}

void addCommand(SimCommandBuffer* cb, Command command) {
  command.tag = t_tag;
  std::lock_guard<std::mutex> lock(engine().mu);
  if (cb->_status >= MTLCommandBufferStatusCommitted) {
    std::fprintf(stderr, "metalsim: encoding into a committed command buffer (Metal asserts here)\n");
    std::abort();
  }
  cb->_commands->push_back(std::move(command));
}

void cpuAccess(void* buffer, bool write, const std::string& what) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  Origin origin{"CPU", 0, what};
  checkAccess(e, *((__bridge SimBuffer*)buffer)->_history, write, 0, e.cpu.t[0], e.cpu, origin);
}

} // namespace

void setTag(const std::string& tag) {
  t_tag = tag;
}

void nameQueue(void* commandQueue, const std::string& name) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  e.queue_names[((__bridge SimCommandQueue*)commandQueue)->_index] = name;
}

void cpuRead(void* buffer, const std::string& what) {
  cpuAccess(buffer, false, what);
}

void cpuWrite(void* buffer, const std::string& what) {
  cpuAccess(buffer, true, what);
}

uint8_t* contents(void* buffer) {
  return ((__bridge SimBuffer*)buffer)->_bytes;
}

size_t length(void* buffer) {
  return ((__bridge SimBuffer*)buffer)->_length;
}

Stats stats() {
  std::lock_guard<std::mutex> lock(engine().mu);
  return engine().stats;
}

uint64_t printHazards(size_t max) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  for (size_t i = 0; i < e.hazards.size() && i < max; ++i) {
    std::fprintf(stderr, "%s\n", e.hazards[i].c_str());
  }
  if (e.hazards.size() > max) {
    std::fprintf(stderr, "(%zu more hazards not shown)\n", e.hazards.size() - max);
  }
  return e.hazards.size();
}

bool waitIdle(uint64_t timeout_ms) {
  Engine& e = engine();
  std::unique_lock<std::mutex> lock(e.mu);
  return e.cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return e.in_flight == 0; });
}

void waitListenerIdle() {
  Engine& e = engine();
  std::unique_lock<std::mutex> lock(e.mu);
  const uint64_t queued = e.notifications_queued;
  e.cv.wait(lock, [&] { return e.notifications_run >= queued; });
}

} // namespace metalsim

using metalsim::Command;
using metalsim::engine;

// ------------------------------------------------------------------------------------------
// Resources
// ------------------------------------------------------------------------------------------

@implementation SimBuffer
- (instancetype)initWithLength:(NSUInteger)length options:(MTLResourceOptions)options heap:(id<MTLHeap>)heap {
  _length = length;
  _allocated = (length + 255) & ~NSUInteger(255);
  _bytes = (uint8_t*)std::calloc(_allocated ? _allocated : 1, 1);
  _options = options;
  _heap = [heap retain];
  _history = new metalsim::BufferHistory();
  _releaseClock = new metalsim::Clock();
  std::lock_guard<std::mutex> lock(engine().mu);
  _history->id = ++engine().next_buffer_id;
  return self;
}
- (void)dealloc {
  if (_heap) {
    std::lock_guard<std::mutex> lock(engine().mu);
    ((SimHeap*)_heap)->_used -= _allocated;
  }
  [_heap release];
  std::free(_bytes);
  delete _history;
  delete _releaseClock;
  [super dealloc];
}
- (NSUInteger)retainCount {
  const NSUInteger count = [super retainCount];
  auto& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  metalsim::observe(e, *_releaseClock);
  return count;
}
- (NSUInteger)length {
  return _length;
}
- (void*)contents {
  return _bytes;
}
- (void)didModifyRange:(NSRange)range {
}
- (uint64_t)gpuAddress {
  return (uint64_t)(uintptr_t)_bytes;
}
- (id<MTLDevice>)device {
  return metalsimDevice();
}
- (MTLStorageMode)storageMode {
  return (MTLStorageMode)((_options >> MTLResourceStorageModeShift) & 0xf);
}
- (MTLResourceOptions)resourceOptions {
  return _options;
}
- (id<MTLHeap>)heap {
  return _heap;
}
- (NSUInteger)allocatedSize {
  return _allocated;
}
- (MTLPurgeableState)setPurgeableState:(MTLPurgeableState)state {
  return MTLPurgeableStateNonVolatile;
}
@end

@implementation SimHeap
- (NSUInteger)size {
  return _size;
}
- (NSUInteger)usedSize {
  std::lock_guard<std::mutex> lock(engine().mu);
  return _used;
}
- (NSUInteger)currentAllocatedSize {
  return _size;
}
- (MTLStorageMode)storageMode {
  return _storage;
}
- (NSUInteger)maxAvailableSizeWithAlignment:(NSUInteger)alignment {
  std::lock_guard<std::mutex> lock(engine().mu);
  const NSUInteger free_bytes = _size - _used;
  return free_bytes - free_bytes % (alignment ? alignment : 1);
}
- (id<MTLBuffer>)newBufferWithLength:(NSUInteger)length options:(MTLResourceOptions)options {
  const NSUInteger allocated = (length + 255) & ~NSUInteger(255);
  {
    std::lock_guard<std::mutex> lock(engine().mu);
    if (_purgeable == MTLPurgeableStateEmpty || _used + allocated > _size) {
      return nil;
    }
    _used += allocated;
  }
  return [[SimBuffer alloc] initWithLength:length options:options heap:self];
}
- (MTLPurgeableState)setPurgeableState:(MTLPurgeableState)state {
  const MTLPurgeableState previous = _purgeable;
  if (state != MTLPurgeableStateKeepCurrent) {
    _purgeable = state;
  }
  return previous;
}
- (void)dealloc {
  {
    std::lock_guard<std::mutex> lock(engine().mu);
    engine().heap_bytes -= _size;
  }
  [super dealloc];
}
- (id<MTLDevice>)device {
  return metalsimDevice();
}
@end

@implementation MTLHeapDescriptor {
  NSUInteger _size;
  MTLStorageMode _storageMode;
  MTLCPUCacheMode _cpuCacheMode;
  MTLHazardTrackingMode _hazardTrackingMode;
  MTLResourceOptions _resourceOptions;
  MTLHeapType _type;
}
- (NSUInteger)size {
  return _size;
}
- (void)setSize:(NSUInteger)size {
  _size = size;
}
- (MTLStorageMode)storageMode {
  return _storageMode;
}
- (void)setStorageMode:(MTLStorageMode)mode {
  _storageMode = mode;
}
- (MTLCPUCacheMode)cpuCacheMode {
  return _cpuCacheMode;
}
- (void)setCpuCacheMode:(MTLCPUCacheMode)mode {
  _cpuCacheMode = mode;
}
- (MTLHazardTrackingMode)hazardTrackingMode {
  return _hazardTrackingMode;
}
- (void)setHazardTrackingMode:(MTLHazardTrackingMode)mode {
  _hazardTrackingMode = mode;
}
- (MTLResourceOptions)resourceOptions {
  return _resourceOptions;
}
- (void)setResourceOptions:(MTLResourceOptions)options {
  _resourceOptions = options;
}
- (MTLHeapType)type {
  return _type;
}
- (void)setType:(MTLHeapType)type {
  _type = type;
}
@end

// ------------------------------------------------------------------------------------------
// Shared events
// ------------------------------------------------------------------------------------------

@implementation SimSharedEvent
- (instancetype)init {
  _clock = new metalsim::Clock();
  return self;
}
- (void)dealloc {
  delete _clock;
  [super dealloc];
}
- (id<MTLDevice>)device {
  return metalsimDevice();
}
- (uint64_t)signaledValue {
  auto& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  metalsim::observe(e, *_clock); // the CPU side now knows every signal up to this value
  return _value;
}
- (void)setSignaledValue:(uint64_t)value {
  auto& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  metalsim::signalLocked(e, self, value, e.cpu);
  e.cpu.t[0]++; // like a commit: later CPU accesses are not ordered before the waiters
}
- (BOOL)waitUntilSignaledValue:(uint64_t)value timeoutMS:(uint64_t)milliseconds {
  auto& e = engine();
  std::unique_lock<std::mutex> lock(e.mu);
  const bool reached = e.cv.wait_for(lock, std::chrono::milliseconds(milliseconds),
                                     [&] { return _value >= value; });
  if (reached) {
    metalsim::observe(e, *_clock);
  }
  return reached;
}
- (void)notifyListener:(MTLSharedEventListener*)listener
               atValue:(uint64_t)value
                 block:(MTLSharedEventNotificationBlock)block {
  auto& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  metalsim::pendingNotifies().push_back(
      {[self retain], value, (MTLSharedEventNotificationBlock)_Block_copy(block)});
  metalsim::queueNotifications(e, self);
}
@end

@implementation MTLSharedEventListener
+ (MTLSharedEventListener*)sharedListener {
  static MTLSharedEventListener* shared = [[MTLSharedEventListener alloc] init];
  return shared;
}
- (instancetype)init {
  return self;
}
@end

// ------------------------------------------------------------------------------------------
// Encoders
// ------------------------------------------------------------------------------------------

// The simulated kernel's arithmetic: out[i] = in[i] + 1, or out[i] += 1 without an input.
static void addOne(SimBuffer* out, SimBuffer* in) {
  const NSUInteger n = in ? std::min(in->_length, out->_length) : out->_length;
  for (NSUInteger i = 0; i < n; ++i) {
    out->_bytes[i] = (uint8_t)((in ? in->_bytes[i] : out->_bytes[i]) + 1);
  }
}

@implementation SimComputeEncoder
- (instancetype)initWithBuffer:(SimCommandBuffer*)buffer {
  _buffer = buffer;
  _bound = new std::map<NSUInteger, id>();
  return self;
}
- (void)dealloc {
  for (auto& [index, buffer] : *_bound) {
    [buffer release];
  }
  delete _bound;
  [super dealloc];
}
- (void)setComputePipelineState:(id<MTLComputePipelineState>)state {
}
- (void)setBytes:(const void*)bytes length:(NSUInteger)length atIndex:(NSUInteger)index {
}
- (void)setBuffer:(id<MTLBuffer>)buffer offset:(NSUInteger)offset atIndex:(NSUInteger)index {
  [buffer retain];
  auto found = _bound->find(index);
  if (found != _bound->end()) {
    [found->second release];
  }
  (*_bound)[index] = buffer;
}
- (void)setThreadgroupMemoryLength:(NSUInteger)length atIndex:(NSUInteger)index {
}
- (void)useResource:(id<MTLResource>)resource usage:(MTLResourceUsage)usage {
}
// The simulated kernel: the buffer at index 0 is written, every other bound buffer is read.
// With an input at index 1: out[i] = in[i] + 1; without: out[i] += 1 (bytes, wrapping).
// A dispatch uses the buffers bound since the encoder's previous dispatch (ATen's kernels bind
// all theirs for each dispatch; an encoder is shared by the ops coalesced into it, and a stale
// binding must not count as a read of the next op).
- (void)dispatch {
  Command command;
  SimBuffer* out = nil;
  SimBuffer* in = nil;
  for (auto& [index, buffer] : *_bound) {
    (index == 0 ? command.writes : command.reads).push_back([buffer retain]);
    if (index == 0) {
      out = (SimBuffer*)buffer;
    } else if (index == 1) {
      in = (SimBuffer*)buffer;
    }
  }
  if (out) {
    command.body = [out, in] { addOne(out, in); };
  }
  for (auto& [index, buffer] : *_bound) {
    [buffer release];
  }
  _bound->clear();
  metalsim::addCommand(_buffer, std::move(command));
}
- (void)dispatchThreadgroups:(MTLSize)threadgroupsPerGrid threadsPerThreadgroup:(MTLSize)threadsPerThreadgroup {
  [self dispatch];
}
- (void)dispatchThreads:(MTLSize)threadsPerGrid threadsPerThreadgroup:(MTLSize)threadsPerThreadgroup {
  [self dispatch];
}
- (void)endEncoding {
}
- (id<MTLDevice>)device {
  return metalsimDevice();
}
@end

@implementation SimBlitEncoder
- (void)copyFromBuffer:(id<MTLBuffer>)sourceBuffer
           sourceOffset:(NSUInteger)sourceOffset
               toBuffer:(id<MTLBuffer>)destinationBuffer
      destinationOffset:(NSUInteger)destinationOffset
                   size:(NSUInteger)size {
  auto* src = (SimBuffer*)[sourceBuffer retain];
  auto* dst = (SimBuffer*)[destinationBuffer retain];
  if (sourceOffset + size > src->_length || destinationOffset + size > dst->_length) {
    std::fprintf(stderr, "metalsim: blit copy out of bounds (Metal's validation layer fails here)\n");
    std::abort();
  }
  Command command;
  command.reads.push_back(src);
  command.writes.push_back(dst);
  command.read_ranges.push_back({sourceOffset, sourceOffset + size});
  command.write_ranges.push_back({destinationOffset, destinationOffset + size});
  command.body = [=] { std::memmove(dst->_bytes + destinationOffset, src->_bytes + sourceOffset, size); };
  metalsim::addCommand(_buffer, std::move(command));
}
- (void)fillBuffer:(id<MTLBuffer>)buffer range:(NSRange)range value:(uint8_t)value {
  auto* dst = (SimBuffer*)[buffer retain];
  if (range.location + range.length > dst->_length) {
    std::fprintf(stderr, "metalsim: blit fill out of bounds (Metal's validation layer fails here)\n");
    std::abort();
  }
  Command command;
  command.writes.push_back(dst);
  command.write_ranges.push_back({range.location, range.location + range.length});
  command.body = [=] { std::memset(dst->_bytes + range.location, value, range.length); };
  metalsim::addCommand(_buffer, std::move(command));
}
- (void)endEncoding {
}
- (id<MTLDevice>)device {
  return metalsimDevice();
}
@end

// ------------------------------------------------------------------------------------------
// Command buffers and queues
// ------------------------------------------------------------------------------------------

@implementation SimCommandBuffer
- (instancetype)initWithQueue:(SimCommandQueue*)queue {
  _queue = [queue retain];
  _status = MTLCommandBufferStatusNotEnqueued;
  _commands = new std::vector<Command>();
  _scheduledHandlers = new std::vector<MTLCommandBufferHandler>();
  _completedHandlers = new std::vector<MTLCommandBufferHandler>();
  _commitClock = new metalsim::Clock();
  _endClock = new metalsim::Clock();
  return self;
}
- (void)dealloc {
  metalsim::releaseCommandResources(self); // never committed: nothing ran
  for (auto handler : *_scheduledHandlers) {
    _Block_release(handler);
  }
  for (auto handler : *_completedHandlers) {
    _Block_release(handler);
  }
  delete _commands;
  delete _scheduledHandlers;
  delete _completedHandlers;
  delete _commitClock;
  delete _endClock;
  [_queue release];
  [super dealloc];
}
- (id<MTLDevice>)device {
  return metalsimDevice();
}
- (id<MTLCommandQueue>)commandQueue {
  return _queue;
}
- (MTLCommandBufferStatus)status {
  std::lock_guard<std::mutex> lock(engine().mu);
  if (_status == MTLCommandBufferStatusCompleted) {
    metalsim::observe(engine(), *_endClock);
  }
  return _status;
}
- (NSError*)error {
  return nil;
}
- (void)enqueue {
}
- (void)commit {
  std::lock_guard<std::mutex> lock(engine().mu);
  metalsim::commitLocked(engine(), self);
}
- (void)addScheduledHandler:(MTLCommandBufferHandler)block {
  std::lock_guard<std::mutex> lock(engine().mu);
  _scheduledHandlers->push_back((MTLCommandBufferHandler)_Block_copy(block));
}
- (void)addCompletedHandler:(MTLCommandBufferHandler)block {
  std::lock_guard<std::mutex> lock(engine().mu);
  if (_status >= MTLCommandBufferStatusCommitted) {
    std::fprintf(stderr, "metalsim: addCompletedHandler on a committed command buffer (Metal asserts here)\n");
    std::abort();
  }
  _completedHandlers->push_back((MTLCommandBufferHandler)_Block_copy(block));
}
- (void)waitUntilScheduled {
  auto& e = engine();
  std::unique_lock<std::mutex> lock(e.mu);
  e.cv.wait(lock, [&] { return _status >= MTLCommandBufferStatusScheduled; });
}
- (void)waitUntilCompleted {
  auto& e = engine();
  std::unique_lock<std::mutex> lock(e.mu);
  e.cv.wait(lock, [&] { return _status == MTLCommandBufferStatusCompleted; });
  metalsim::observe(e, *_endClock);
}
- (id<MTLBlitCommandEncoder>)blitCommandEncoder {
  SimBlitEncoder* encoder = [SimBlitEncoder new];
  encoder->_buffer = self;
  return [encoder autorelease];
}
- (id<MTLComputeCommandEncoder>)computeCommandEncoder {
  return [[[SimComputeEncoder alloc] initWithBuffer:self] autorelease];
}
- (void)encodeSignalEvent:(id<MTLEvent>)event value:(uint64_t)value {
  Command command;
  command.kind = Command::kSignal;
  command.event = [event retain];
  command.value = value;
  metalsim::addCommand(self, std::move(command));
}
- (void)encodeWaitForEvent:(id<MTLEvent>)event value:(uint64_t)value {
  Command command;
  command.kind = Command::kWait;
  command.event = [event retain];
  command.value = value;
  metalsim::addCommand(self, std::move(command));
}
@end

@implementation SimCommandQueue
- (id<MTLDevice>)device {
  return metalsimDevice();
}
- (id<MTLCommandBuffer>)commandBuffer {
  {
    // Metal blocks here while the queue has maxCommandBufferCount (64) command buffers in flight
    auto& e = engine();
    std::unique_lock<std::mutex> lock(e.mu);
    e.cv.wait(lock, [&] { return e.pending[_index].size() < 64; });
  }
  return [[[SimCommandBuffer alloc] initWithQueue:self] autorelease];
}
- (id<MTLCommandBuffer>)commandBufferWithUnretainedReferences {
  return [self commandBuffer];
}
@end

// MPS's command buffer: a wrapper whose root command buffer commitAndContinue commits and
// replaces with a fresh one on the same queue.
@implementation MPSCommandBuffer {
  id<MTLCommandBuffer> _root;
  std::mutex* _rootLock;
}
+ (MPSCommandBuffer*)commandBufferFromCommandQueue:(id<MTLCommandQueue>)commandQueue {
  return [[[MPSCommandBuffer alloc] initWithCommandBuffer:[commandQueue commandBuffer]] autorelease];
}
+ (MPSCommandBuffer*)commandBufferWithCommandBuffer:(id<MTLCommandBuffer>)commandBuffer {
  return [[[MPSCommandBuffer alloc] initWithCommandBuffer:commandBuffer] autorelease];
}
- (instancetype)initWithCommandBuffer:(id<MTLCommandBuffer>)commandBuffer {
  _root = [commandBuffer retain];
  _rootLock = new std::mutex();
  return self;
}
- (void)dealloc {
  [_root release];
  delete _rootLock;
  [super dealloc];
}
- (id<MTLCommandBuffer>)root {
  std::lock_guard<std::mutex> lock(*_rootLock);
  return _root;
}
- (id<MTLCommandBuffer>)commandBuffer {
  return [self root];
}
- (id<MTLCommandBuffer>)rootCommandBuffer {
  return [self root];
}
- (void)commitAndContinue {
  id<MTLCommandBuffer> next = [[[self root] commandQueue] commandBuffer];
  id<MTLCommandBuffer> previous;
  {
    std::lock_guard<std::mutex> lock(*_rootLock);
    previous = _root;
    _root = [next retain];
  }
  [previous commit];
  [previous release];
}
- (id<MTLDevice>)device {
  return metalsimDevice();
}
- (id<MTLCommandQueue>)commandQueue {
  return [[self root] commandQueue];
}
- (MTLCommandBufferStatus)status {
  return [[self root] status];
}
- (NSError*)error {
  return nil;
}
- (void)enqueue {
}
- (void)commit {
  [[self root] commit];
}
- (void)addScheduledHandler:(MTLCommandBufferHandler)block {
  [[self root] addScheduledHandler:block];
}
- (void)addCompletedHandler:(MTLCommandBufferHandler)block {
  [[self root] addCompletedHandler:block];
}
- (void)waitUntilScheduled {
  [[self root] waitUntilScheduled];
}
- (void)waitUntilCompleted {
  [[self root] waitUntilCompleted];
}
- (id<MTLBlitCommandEncoder>)blitCommandEncoder {
  return [[self root] blitCommandEncoder];
}
- (id<MTLComputeCommandEncoder>)computeCommandEncoder {
  return [[self root] computeCommandEncoder];
}
- (void)encodeSignalEvent:(id<MTLEvent>)event value:(uint64_t)value {
  [[self root] encodeSignalEvent:event value:value];
}
- (void)encodeWaitForEvent:(id<MTLEvent>)event value:(uint64_t)value {
  [[self root] encodeWaitForEvent:event value:value];
}
@end

@implementation MPSGraphCompilationDescriptor {
  MPSGraphOptimization _optimizationLevel;
  BOOL _waitForCompilationCompletion;
}
- (MPSGraphOptimization)optimizationLevel {
  return _optimizationLevel;
}
- (void)setOptimizationLevel:(MPSGraphOptimization)level {
  _optimizationLevel = level;
}
@end

@implementation MPSGraphExecutionDescriptor {
  BOOL _enableCommitAndContinue;
  MPSGraphCompilationDescriptor* _compilationDescriptor;
}
- (BOOL)enableCommitAndContinue {
  return _enableCommitAndContinue;
}
- (void)setEnableCommitAndContinue:(BOOL)enable {
  _enableCommitAndContinue = enable;
}
- (MPSGraphCompilationDescriptor*)compilationDescriptor {
  return _compilationDescriptor;
}
- (void)setCompilationDescriptor:(MPSGraphCompilationDescriptor*)descriptor {
  [descriptor retain];
  [_compilationDescriptor release];
  _compilationDescriptor = descriptor;
}
- (void)dealloc {
  [_compilationDescriptor release];
  [super dealloc];
}
@end

// ------------------------------------------------------------------------------------------
// Device
// ------------------------------------------------------------------------------------------

@implementation SimDevice
- (NSString*)name {
  return nil;
}
- (uint64_t)registryID {
  return 1;
}
- (NSUInteger)maxBufferLength {
  return engine().memory_limit;
}
- (uint64_t)recommendedMaxWorkingSetSize {
  return engine().memory_limit;
}
- (NSUInteger)currentAllocatedSize {
  std::lock_guard<std::mutex> lock(engine().mu);
  return engine().heap_bytes;
}
- (BOOL)hasUnifiedMemory {
  return YES;
}
- (id<MTLCommandQueue>)newCommandQueue {
  SimCommandQueue* queue = [SimCommandQueue new];
  auto& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  queue->_index = e.queue_names.size();
  if (queue->_index + 1 >= metalsim::kMaxAgents) {
    std::fprintf(stderr, "metalsim: more than %zu command queues\n", metalsim::kMaxAgents - 1);
    std::abort();
  }
  e.queue_names.push_back("queue#" + std::to_string(queue->_index));
  e.pending.emplace_back();
  e.queue_clock.emplace_back();
  e.next_seq.push_back(0);
  e.worker_started.push_back(false);
  return queue;
}
- (id<MTLCommandQueue>)newCommandQueueWithMaxCommandBufferCount:(NSUInteger)maxCommandBufferCount {
  return [self newCommandQueue];
}
- (MTLSizeAndAlign)heapBufferSizeAndAlignWithLength:(NSUInteger)length options:(MTLResourceOptions)options {
  MTLSizeAndAlign result;
  result.size = (length + 255) & ~NSUInteger(255);
  result.align = 256;
  return result;
}
- (id<MTLHeap>)newHeapWithDescriptor:(MTLHeapDescriptor*)descriptor {
  auto& e = engine();
  {
    std::lock_guard<std::mutex> lock(e.mu);
    if (e.heap_bytes + descriptor.size > e.memory_limit) {
      return nil; // out of device memory
    }
    e.heap_bytes += descriptor.size;
  }
  SimHeap* heap = [SimHeap new];
  heap->_size = descriptor.size;
  heap->_storage = descriptor.storageMode;
  heap->_purgeable = MTLPurgeableStateNonVolatile;
  return heap;
}
- (id<MTLBuffer>)newBufferWithLength:(NSUInteger)length options:(MTLResourceOptions)options {
  return [[SimBuffer alloc] initWithLength:length options:options heap:nil];
}
- (id<MTLBuffer>)newBufferWithBytes:(const void*)pointer length:(NSUInteger)length options:(MTLResourceOptions)options {
  SimBuffer* buffer = [[SimBuffer alloc] initWithLength:length options:options heap:nil];
  std::memcpy(buffer->_bytes, pointer, length);
  return buffer;
}
- (id<MTLSharedEvent>)newSharedEvent {
  return [[SimSharedEvent alloc] init];
}
@end

// ------------------------------------------------------------------------------------------
// MPSGraph, as far as MPSStream::executeMPSGraph and a Placeholder-like harness use it
// ------------------------------------------------------------------------------------------

// An immutable dictionary (what @{...} literals build): keys are compared by identity, as
// MPSGraph's tensors are.
@implementation NSDictionary {
  std::vector<id>* _keys; // retained
  std::vector<id>* _values; // retained
}
+ (instancetype)dictionaryWithObjects:(const id[])objects forKeys:(const id<NSCopying>[])keys count:(NSUInteger)cnt {
  NSDictionary* dictionary = [[self alloc] init];
  dictionary->_keys = new std::vector<id>();
  dictionary->_values = new std::vector<id>();
  for (NSUInteger i = 0; i < cnt; ++i) {
    dictionary->_keys->push_back([(id)keys[i] retain]);
    dictionary->_values->push_back([objects[i] retain]);
  }
  return [dictionary autorelease];
}
+ (instancetype)dictionary {
  return [self dictionaryWithObjects:nullptr forKeys:nullptr count:0];
}
- (void)dealloc {
  for (size_t i = 0; _keys && i < _keys->size(); ++i) {
    [(*_keys)[i] release];
    [(*_values)[i] release];
  }
  delete _keys;
  delete _values;
  [super dealloc];
}
- (NSUInteger)count {
  return _keys ? _keys->size() : 0;
}
- (id)objectForKey:(id)key {
  for (size_t i = 0; _keys && i < _keys->size(); ++i) {
    if ((*_keys)[i] == key) {
      return (*_values)[i];
    }
  }
  return nil;
}
- (id)objectForKeyedSubscript:(id)key {
  return [self objectForKey:key];
}
// for (id key in dictionary): all keys in one batch
- (NSUInteger)countByEnumeratingWithState:(NSFastEnumerationState*)state
                                  objects:(id __unsafe_unretained[])buffer
                                    count:(NSUInteger)len {
  if (state->state != 0 || _keys == nullptr || _keys->empty()) {
    return 0;
  }
  state->state = 1;
  state->itemsPtr = _keys->data();
  state->mutationsPtr = &state->extra[0];
  return _keys->size();
}
@end

@interface MPSGraphTensorData (Sim)
- (id<MTLBuffer>)simBuffer;
@end

@implementation MPSGraphTensor
- (id)copyWithZone:(void*)zone {
  return [self retain];
}
@end

@implementation MPSGraphTensorData {
  id<MTLBuffer> _simBuffer; // retained
}
- (instancetype)initWithMTLBuffer:(id<MTLBuffer>)buffer shape:(MPSShape*)shape dataType:(MPSDataType)dataType {
  _simBuffer = [buffer retain];
  return self;
}
- (void)dealloc {
  [_simBuffer release];
  [super dealloc];
}
- (id<MTLBuffer>)simBuffer {
  return _simBuffer;
}
@end

// The simulated graph: every result's buffer becomes the first feed's bytes + 1 (without
// feeds: result += 1), like the compute encoder's kernel; feeds are read, results written.
@implementation MPSGraph
- (void)encodeToCommandBuffer:(MPSCommandBuffer*)commandBuffer
                        feeds:(MPSGraphTensorDataDictionary*)feeds
             targetOperations:(NSArray<MPSGraphOperation*>*)targetOperations
            resultsDictionary:(MPSGraphTensorDataDictionary*)resultsDictionary
          executionDescriptor:(MPSGraphExecutionDescriptor*)executionDescriptor {
  metalsim::Command command;
  SimBuffer* in = nil;
  std::vector<SimBuffer*> outs;
  for (id key in feeds) {
    SimBuffer* buffer = (SimBuffer*)[[(MPSGraphTensorData*)feeds[key] simBuffer] retain];
    command.reads.push_back(buffer);
    in = in ? in : buffer;
  }
  for (id key in resultsDictionary) {
    SimBuffer* buffer = (SimBuffer*)[[(MPSGraphTensorData*)resultsDictionary[key] simBuffer] retain];
    command.writes.push_back(buffer);
    outs.push_back(buffer);
  }
  command.body = [in, outs] {
    for (SimBuffer* out : outs) {
      addOne(out, in);
    }
  };
  metalsim::addCommand((SimCommandBuffer*)[commandBuffer rootCommandBuffer], std::move(command));
}
@end

namespace {
// libobjc2 runs +initialize under a lock it allocates lazily, invisible to ThreadSanitizer: the
// first messages to each class are sent here, once, before any other thread can use them.
SimDevice* createDevice() {
  for (Class cls : {[NSObject class], [SimBuffer class], [SimHeap class], [MTLHeapDescriptor class],
                    [SimSharedEvent class], [MTLSharedEventListener class], [SimComputeEncoder class],
                    [SimBlitEncoder class], [SimCommandBuffer class], [SimCommandQueue class],
                    [MPSCommandBuffer class], [MPSGraphCompilationDescriptor class],
                    [MPSGraphExecutionDescriptor class], [NSDictionary class], [MPSGraphTensor class],
                    [MPSGraphTensorData class], [MPSGraph class], [SimDevice class]}) {
    (void)cls;
  }
  return [SimDevice new];
}
} // namespace

id<MTLDevice> metalsimDevice() {
  static SimDevice* device = createDevice();
  return device;
}
