// ThreadSanitizer annotations for libdispatch, linked into the harness executable.
//
// Debian's TSan runtime has no libdispatch interceptors, and libdispatch stays uninstrumented,
// so TSan cannot see that a block submitted to a queue runs after its submission, or that the
// blocks of a serial queue run one after another. These wrappers interpose the calls the MPS
// runtime files and the harness make and tell TSan exactly that, the way compiler-rt's own
// libdispatch interceptors do on Darwin: release at submission, acquire at the start of the
// block; acquire/release on the queue around each block (serial queues: every queue the MPS
// runtime creates is serial); for dispatch_sync, the block's end happens before the return.

#include <dispatch/dispatch.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void* _Block_copy(const void* block);
void _Block_release(const void* block);
}

namespace {

template <typename F>
F realFunction(const char* name) {
  void* symbol = dlsym(RTLD_NEXT, name);
  if (symbol == nullptr) {
    std::fprintf(stderr, "tsan_dispatch: %s not found in libdispatch\n", name);
    std::abort();
  }
  return reinterpret_cast<F>(symbol);
}

// A heap token per submission: a fresh address, so that TSan's sync object for it carries only
// this submission's clock (memory is reset on free).
struct Token {
  char byte;
};

// Which queues each thread is inside (dispatch_sync blocks run on the caller's thread) and which
// one it waits to enter: printed when a scenario times out, to name the queues of a deadlock.
struct QueueState {
  std::vector<void*> inside;
  void* waiting_for = nullptr;
  bool in_semaphore_wait = false;
};
std::mutex& stateMutex() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::map<std::thread::id, QueueState>& queueStates() {
  static auto* states = new std::map<std::thread::id, QueueState>();
  return *states;
}
// dispatch_async work submitted and not started yet, by target queue.
std::map<void*, int>& pendingAsync() {
  static auto* pending = new std::map<void*, int>();
  return *pending;
}
void countAsync(void* queue, int delta) {
  std::lock_guard<std::mutex> lock(stateMutex());
  if ((pendingAsync()[queue] += delta) == 0) {
    pendingAsync().erase(queue);
  }
}
void setSemaphoreWait(bool waiting) {
  std::lock_guard<std::mutex> lock(stateMutex());
  queueStates()[std::this_thread::get_id()].in_semaphore_wait = waiting;
}
void setWaiting(void* queue) {
  std::lock_guard<std::mutex> lock(stateMutex());
  queueStates()[std::this_thread::get_id()].waiting_for = queue;
}
void enter(void* queue) {
  std::lock_guard<std::mutex> lock(stateMutex());
  QueueState& state = queueStates()[std::this_thread::get_id()];
  state.waiting_for = nullptr;
  state.inside.push_back(queue);
}
void leave() {
  std::lock_guard<std::mutex> lock(stateMutex());
  queueStates()[std::this_thread::get_id()].inside.pop_back();
}

} // namespace

namespace metalsim {
// Prints every thread that is inside or waiting for a queue; `name` maps a queue to a label.
void printDispatchState(const char* (*name)(void* queue)) {
  std::lock_guard<std::mutex> lock(stateMutex());
  for (const auto& [thread, state] : queueStates()) {
    if (state.inside.empty() && state.waiting_for == nullptr && !state.in_semaphore_wait) {
      continue;
    }
    std::fprintf(stderr, "  thread %zu: inside", std::hash<std::thread::id>()(thread) % 100000);
    for (void* queue : state.inside) {
      std::fprintf(stderr, " [%s]", name(queue));
    }
    if (state.inside.empty()) {
      std::fprintf(stderr, " no queue");
    }
    if (state.waiting_for != nullptr) {
      std::fprintf(stderr, ", waiting in dispatch_sync for [%s]", name(state.waiting_for));
    }
    if (state.in_semaphore_wait) {
      std::fprintf(stderr, ", waiting in dispatch_semaphore_wait");
    }
    std::fprintf(stderr, "\n");
  }
  for (const auto& [queue, count] : pendingAsync()) {
    std::fprintf(stderr, "  dispatch_async work not started: %d for [%s]\n", count, name(queue));
  }
}
} // namespace metalsim

extern "C" {

DISPATCH_NOTHROW void dispatch_sync(dispatch_queue_t queue, DISPATCH_NOESCAPE dispatch_block_t block) {
  static auto real = realFunction<void (*)(dispatch_queue_t, dispatch_block_t)>("dispatch_sync");
  Token* token = new Token();
  __tsan_release(token);
  setWaiting(queue);
  real(queue, ^{
    enter(queue);
    __tsan_acquire(token);
    __tsan_acquire(queue);
    block();
    __tsan_release(queue);
    __tsan_release(token);
    leave();
  });
  __tsan_acquire(token);
  delete token;
}

// dispatch_async runs the work on a libdispatch thread: the block's memory (copied inside the
// uninstrumented libdispatch) must not be read before the acquire, so the work travels in a
// context of ours, handed over as a function argument (what compiler-rt does on Darwin).
struct AsyncWork {
  dispatch_queue_t queue;
  dispatch_block_t block; // copied, or nullptr
  void* context;
  dispatch_function_t function;
};

void runAsyncWork(void* raw) {
  __tsan_acquire(raw);
  auto* work = static_cast<AsyncWork*>(raw);
  countAsync(work->queue, -1);
  __tsan_acquire(work->queue);
  if (work->block != nullptr) {
    work->block();
    _Block_release(work->block);
  } else {
    work->function(work->context);
  }
  __tsan_release(work->queue);
  delete work;
}

void submitAsync(AsyncWork* work) {
  static auto real = realFunction<void (*)(dispatch_queue_t, void*, dispatch_function_t)>("dispatch_async_f");
  dispatch_queue_t queue = work->queue; // read before the release: runAsyncWork frees `work`
  countAsync(queue, +1);
  __tsan_release(work);
  real(queue, work, runAsyncWork);
}

DISPATCH_NOTHROW void dispatch_async(dispatch_queue_t queue, dispatch_block_t block) {
  submitAsync(new AsyncWork{queue, (dispatch_block_t)_Block_copy(block), nullptr, nullptr});
}

DISPATCH_NOTHROW void dispatch_sync_f(dispatch_queue_t queue, void* context, dispatch_function_t work) {
  dispatch_sync(queue, ^{
    work(context);
  });
}

DISPATCH_NOTHROW void dispatch_async_f(dispatch_queue_t queue, void* context, dispatch_function_t work) {
  submitAsync(new AsyncWork{queue, nullptr, context, work});
}

DISPATCH_NOTHROW intptr_t dispatch_semaphore_signal(dispatch_semaphore_t semaphore) {
  static auto real = realFunction<intptr_t (*)(dispatch_semaphore_t)>("dispatch_semaphore_signal");
  __tsan_release(semaphore);
  return real(semaphore);
}

DISPATCH_NOTHROW intptr_t dispatch_semaphore_wait(dispatch_semaphore_t semaphore, dispatch_time_t timeout) {
  static auto real = realFunction<intptr_t (*)(dispatch_semaphore_t, dispatch_time_t)>("dispatch_semaphore_wait");
  setSemaphoreWait(true);
  const intptr_t result = real(semaphore, timeout);
  setSemaphoreWait(false);
  if (result == 0) {
    __tsan_acquire(semaphore);
  }
  return result;
}

} // extern "C"
