// Stress driver for the MPS stream pool core (aten/src/ATen/mps/MPSStreamPool.{h,cpp}).
//
// Built by scripts/pool_stress.py with -fsanitize=thread against the pool core of the patched
// PyTorch tree, with TestStream standing in for MPSStream: a mutex plays the stream's serial
// dispatch queue, `pending` counts work committed but not completed, and `holders` is the
// driver's own record of which threads are bound to the stream. The driver checks the pool's
// promises against that record; it never trusts the pool's word for what it checks.
//
// Usage: stress_main share   (all scenarios under the default policy)
//        stress_main wait    (the PYTORCH_MPS_STREAM_POOL_POLICY=wait scenarios)
// Prints "RESULT key=value ..." last; exit status 0 iff no invariant was violated.

#include <ATen/mps/MPSStreamPool.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

using at::mps::kMPSAutoStreamId;
using at::mps::kMPSStreamsPerPool;
using namespace at::mps::detail;

namespace {

constexpr int kWorkers = kMPSStreamsPerPool - 1;

struct TestStream {
  explicit TestStream(int stream_id) : id(stream_id) {}
  const int id;
  std::mutex queue; // the serial dispatch queue: every use and every drain runs under it
  std::set<uint64_t> holders; // driver's record of bound threads (under queue)
  long pending = 0; // work committed but not completed (under queue)
  int inside = 0; // threads inside a queue block (under queue)
  uint64_t uses = 0; // (under queue)
};

std::atomic<long> g_violations{0};
std::mutex g_print_mu;

void violation(const std::string& what) {
  const long n = ++g_violations;
  if (n <= 20) {
    std::lock_guard<std::mutex> lock(g_print_mu);
    std::fprintf(stderr, "INVARIANT VIOLATION: %s\n", what.c_str());
  }
}

std::atomic<int> g_created[kMPSStreamsPerPool];
std::atomic<uint64_t> g_next_token{1};
thread_local uint64_t t_token = 0;

uint64_t token() {
  if (t_token == 0) {
    t_token = g_next_token.fetch_add(1);
  }
  return t_token;
}

std::atomic<bool> g_fail_next_create{false};

void* createStream(int id) {
  if (g_fail_next_create.exchange(false)) {
    throw StreamPoolError("planted: creating stream " + std::to_string(id) + " failed");
  }
  if (g_created[id].fetch_add(1) != 0) {
    violation("stream " + std::to_string(id) + " created twice");
  }
  return new TestStream(id); // never destroyed, like the pool's streams
}

void drainStream(void* raw, bool wait) {
  auto* s = static_cast<TestStream*>(raw);
  std::lock_guard<std::mutex> lock(s->queue);
  if (wait) {
    // The pool calls drain(wait=true) only for the last holder, before the slot is free again.
    // The driver removes a thread from `holders` before it gives the stream back and adds one
    // after it was bound, so `holders` is a subset of the pool's holders: it must be empty now.
    if (!s->holders.empty()) {
      violation("stream " + std::to_string(s->id) + " drained as 'last holder' while " +
                std::to_string(s->holders.size()) + " other thread(s) are bound to it");
    }
    s->pending = 0; // "wait until completed"
  }
}

MPSStreamPoolCore& pool() {
  static MPSStreamPoolCore& p = [] () -> MPSStreamPoolCore& {
    StreamPoolHooks hooks;
    hooks.create = &createStream;
    hooks.drain = &drainStream;
    return MPSStreamPoolCore::install(hooks, streamPoolOptionsFromEnv());
  }();
  return p;
}

TestStream* streamById(int id) {
  return static_cast<TestStream*>(pool().stream(id));
}

// Binds (if needed) and records the binding. `exclusive`: no other thread may be bound and the
// previous owner's work must have completed. `max_holders`: bound on the holders of one stream.
TestStream* bindChecked(bool exclusive, size_t max_holders) {
  auto* s = static_cast<TestStream*>(pool().current());
  if (s->id == 0) {
    violation("a worker thread got the default stream");
  }
  std::lock_guard<std::mutex> lock(s->queue);
  if (exclusive && !s->holders.empty()) {
    violation("stream " + std::to_string(s->id) + " exclusively held by two threads");
  }
  if (exclusive && s->pending != 0) {
    violation("stream " + std::to_string(s->id) + " handed to a new thread before its work completed");
  }
  if (!s->holders.insert(token()).second) {
    violation("thread bound twice to one stream");
  }
  if (s->holders.size() > max_holders) {
    violation("stream " + std::to_string(s->id) + " has " + std::to_string(s->holders.size()) +
              " holders, more than the " + std::to_string(max_holders) + " fair sharing allows");
  }
  return s;
}

// One unit of work on the stream, "inside dispatch_sync" on its queue.
void use(TestStream* s, bool must_be_bound) {
  if (pool().current() != s) {
    violation("current stream changed while the thread held it");
  }
  std::lock_guard<std::mutex> lock(s->queue);
  if (++s->inside != 1) {
    violation("two threads inside one stream's queue");
  }
  if (must_be_bound && s->holders.count(token()) == 0) {
    violation("thread uses stream " + std::to_string(s->id) + " without being bound to it");
  }
  ++s->pending;
  ++s->uses;
  --s->inside;
}

void unregister(TestStream* s) {
  std::lock_guard<std::mutex> lock(s->queue);
  if (s->holders.erase(token()) != 1) {
    violation("thread was not recorded as holder at give-back");
  }
}

void releaseChecked(TestStream* s) {
  unregister(s);
  pool().releaseCurrentThread();
}

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const int gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen != gen_; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
  int count_ = 0;
  int gen_ = 0;
};

void runThreads(int n, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back(body, i);
  }
  for (auto& t : threads) {
    t.join();
  }
}

// Every slot free, nobody recorded as holder: nothing lost, everything given back.
void checkQuiescent(const char* scenario) {
  const StreamPoolStats st = pool().stats();
  for (int i = 1; i < kMPSStreamsPerPool; ++i) {
    if (st.slots[i].holders != 0 || st.slots[i].draining) {
      violation(std::string(scenario) + ": slot " + std::to_string(i) + " still has " +
                std::to_string(st.slots[i].holders) + " holder(s) after all threads finished");
    }
    if (st.slots[i].created) {
      auto* s = streamById(i);
      std::lock_guard<std::mutex> lock(s->queue);
      if (!s->holders.empty()) {
        violation(std::string(scenario) + ": stream " + std::to_string(i) + " still recorded as held");
      }
    }
  }
}

uint64_t binds(const StreamPoolStats& st) {
  return st.exclusive_binds + st.shared_binds;
}

struct Totals {
  uint64_t cycles = 0;
  uint64_t short_threads = 0;
  uint64_t overflow_exclusive = 0;
  uint64_t overflow_shared = 0;
  uint64_t overrides = 0;
  int fork_child_ok = 0;
  int wait_policy_ok = 0;
};

// 64 threads x N acquire/use/release cycles under sharing (more threads than streams).
void scenarioCycles(Totals& totals, int threads, int cycles) {
  const auto before = pool().stats();
  const size_t max_holders = (threads + kWorkers - 1) / kWorkers;
  runThreads(threads, [&](int) {
    for (int c = 0; c < cycles; ++c) {
      TestStream* s = bindChecked(false, max_holders);
      use(s, true);
      releaseChecked(s);
    }
  });
  const auto after = pool().stats();
  const uint64_t expected = static_cast<uint64_t>(threads) * cycles;
  if (binds(after) - binds(before) != expected) {
    violation("cycles: " + std::to_string(binds(after) - binds(before)) + " bindings for " +
              std::to_string(expected) + " cycles");
  }
  if (after.give_backs - before.give_backs != expected) {
    violation("cycles: " + std::to_string(after.give_backs - before.give_backs) +
              " give-backs for " + std::to_string(expected) + " cycles");
  }
  checkQuiescent("cycles");
  totals.cycles += expected;
}

// At most 31 threads: every binding must be exclusive and start on a drained stream.
void scenarioExclusive(Totals& totals, int cycles) {
  const auto before = pool().stats();
  runThreads(kWorkers, [&](int) {
    for (int c = 0; c < cycles; ++c) {
      TestStream* s = bindChecked(true, 1);
      use(s, true);
      use(s, true);
      releaseChecked(s);
    }
  });
  const auto after = pool().stats();
  if (after.shared_binds != before.shared_binds) {
    violation("exclusive: a thread shared a stream although a free one existed");
  }
  checkQuiescent("exclusive");
  totals.cycles += static_cast<uint64_t>(kWorkers) * cycles;
}

// Many short-lived threads: the give-back happens in the thread_local releaser at exit.
void scenarioShortLived(Totals& totals, int total_threads, int concurrent) {
  const auto before = pool().stats();
  int started = 0;
  while (started < total_threads) {
    const int batch = std::min(concurrent, total_threads - started);
    runThreads(batch, [&](int) {
      TestStream* s = bindChecked(false, (concurrent + kWorkers - 1) / kWorkers);
      use(s, true);
      unregister(s); // the releaser gives the stream back when the thread exits
    });
    started += batch;
  }
  const auto after = pool().stats();
  const uint64_t n = static_cast<uint64_t>(total_threads);
  if (binds(after) - binds(before) != n || after.give_backs - before.give_backs != n) {
    violation("short-lived threads: " + std::to_string(binds(after) - binds(before)) +
              " bindings and " + std::to_string(after.give_backs - before.give_backs) +
              " give-backs for " + std::to_string(n) + " threads");
  }
  checkQuiescent("short-lived");
  totals.short_threads += n;
}

// 64 threads alive at once (ThreadPoolExecutor(max_workers=64)): 31 exclusive, 33 shared,
// nobody waits, every stream has 2 or 3 holders.
void scenarioOverflow(Totals& totals) {
  constexpr int kThreads = 64;
  const auto before = pool().stats();
  Barrier bound(kThreads + 1), checked(kThreads + 1);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      TestStream* s = bindChecked(false, 3);
      bound.wait();
      checked.wait();
      use(s, true);
      unregister(s); // released at thread exit
    });
  }
  bound.wait();
  const auto held = pool().stats();
  int total = 0;
  for (int i = 1; i < kMPSStreamsPerPool; ++i) {
    total += held.slots[i].holders;
    if (held.slots[i].holders < 2 || held.slots[i].holders > 3) {
      violation("overflow: stream " + std::to_string(i) + " has " +
                std::to_string(held.slots[i].holders) + " holders (fair sharing gives 2 or 3)");
    }
  }
  if (total != kThreads) {
    violation("overflow: " + std::to_string(total) + " holders counted for 64 threads");
  }
  const uint64_t ex = held.exclusive_binds - before.exclusive_binds;
  const uint64_t sh = held.shared_binds - before.shared_binds;
  if (ex != static_cast<uint64_t>(kWorkers) || sh != static_cast<uint64_t>(kThreads - kWorkers)) {
    violation("overflow: " + std::to_string(ex) + " exclusive / " + std::to_string(sh) +
              " shared bindings, expected 31 / 33");
  }
  checked.wait();
  for (auto& t : threads) {
    t.join();
  }
  checkQuiescent("overflow");
  totals.overflow_exclusive = ex;
  totals.overflow_shared = sh;
}

// set_stream overrides from many threads, mixed with automatic bindings; threads that only set
// and read streams (like autograd's device threads using the guard) must never bind a stream.
void scenarioOverrides(Totals& totals, int threads, int ops) {
  const auto before = pool().stats();
  std::atomic<uint64_t> override_count{0};
  const int auto_threads = threads / 2;
  runThreads(threads, [&](int index) {
    const bool binds_auto = index < auto_threads;
    std::mt19937 rng(1234 + index);
    TestStream* mine = nullptr;
    if (binds_auto) {
      mine = bindChecked(false, static_cast<size_t>(threads));
    }
    for (int i = 0; i < ops; ++i) {
      const int id = static_cast<int>(rng() % kMPSStreamsPerPool);
      pool().setCurrent(id);
      ++override_count;
      TestStream* expected = streamById(id);
      if (pool().current() != expected || pool().currentId(false) != id || pool().overrideId() != id) {
        violation("override: current stream is not the one just set");
      }
      use(expected, false);
      if (rng() % 2 == 0) {
        pool().setCurrent(kMPSAutoStreamId);
        const int now = pool().currentId(false);
        if (binds_auto ? now != mine->id : now != kMPSAutoStreamId) {
          violation("override: clearing the override did not restore the automatic stream");
        }
      }
    }
    pool().setCurrent(kMPSAutoStreamId);
    if (binds_auto) {
      use(mine, true);
      unregister(mine);
    }
  });
  const auto after = pool().stats();
  if (binds(after) - binds(before) != static_cast<uint64_t>(auto_threads)) {
    violation("override: " + std::to_string(binds(after) - binds(before)) + " bindings, expected " +
              std::to_string(auto_threads) + " (guard-only threads must not bind a stream)");
  }
  checkQuiescent("overrides");
  totals.overrides += override_count.load();
}

// fork() while threads bind and release streams: the child starts with no holders, refuses
// worker streams with a clear error, keeps the default stream, and can exit normally.
void scenarioFork(Totals& totals) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 40; ++i) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        TestStream* s = bindChecked(false, 2);
        use(s, true);
        releaseChecked(s);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    int failures = 0;
    auto expect = [&](bool ok, const char* what) {
      if (!ok) {
        std::fprintf(stderr, "FORK CHILD: %s\n", what);
        ++failures;
      }
    };
    const auto st = pool().stats();
    expect(st.forked_child, "pool does not know it is in a forked child");
    for (int i = 1; i < kMPSStreamsPerPool; ++i) {
      expect(st.slots[i].holders == 0 && !st.slots[i].draining, "child inherited holders");
    }
    expect(pool().current() == pool().stream(0), "child main thread lost the default stream");
    auto refused = [&](const std::function<void()>& fn) {
      try {
        fn();
      } catch (const StreamPoolError& e) {
        return std::strstr(e.what(), "spawn") != nullptr;
      }
      return false;
    };
    expect(refused([] { pool().stream(5); }), "stream(5) did not fail clearly in the child");
    expect(refused([] { pool().setCurrent(7); }), "setCurrent(7) did not fail clearly in the child");
    expect(refused([] { pool().nextPoolStreamId(); }), "getStreamFromPool did not fail clearly");
    int visited = 0;
    pool().forEachCreatedStream([](void*, int id, void* count) { *static_cast<int*>(count) += id == 0 ? 1 : 100; },
                                &visited);
    expect(visited == 1, "forEachCreatedStream visits the parent's worker streams in the child");
    bool thread_refused = false;
    std::thread t([&] { thread_refused = refused([] { pool().current(); }); });
    t.join();
    expect(thread_refused, "a new thread in the child got a worker stream");
    std::exit(failures == 0 ? 0 : 3); // normal exit: static destruction in the child
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    violation("fork child failed (status " + std::to_string(status) + ")");
  } else {
    totals.fork_child_ok = 1;
  }
  stop.store(true);
  for (auto& t : threads) {
    t.join();
  }
  checkQuiescent("fork parent");
}

// A binding whose stream cannot be created must not keep its slot: the error reaches the thread,
// the slot is free again, and the next thread that binds it gets a working stream.
void scenarioCreateFailure() {
  pool().setPerThread(true);
  g_fail_next_create.store(true);
  std::string error;
  std::thread([&] {
    try {
      pool().current();
    } catch (const StreamPoolError& e) {
      error = e.what();
    }
  }).join();
  if (error.find("planted") == std::string::npos) {
    violation("create failure: the error did not reach the binding thread (got '" + error + "')");
  }
  const auto stats = pool().stats();
  for (int i = 1; i < kMPSStreamsPerPool; ++i) {
    if (stats.slots[i].holders != 0) {
      violation("create failure: slot " + std::to_string(i) + " still held after its stream failed to be created");
    }
  }
  runThreads(1, [&](int) {
    TestStream* mine = bindChecked(true, 1);
    use(mine, true);
    unregister(mine);
  });
  pool().setPerThread(false);
  checkQuiescent("create failure");
}

// Streams are opt-in: outside per-thread mode no thread is given a worker stream and every
// thread's current stream is the default stream. The mode is read once per thread: a thread
// keeps the stream it resolved (worker or default) when the mode changes, so no op ever sees
// its stream change under it; only threads that resolve later follow the new mode.
void scenarioDefaultMode() {
  if (pool().perThread()) {
    violation("default mode: per-thread mode is on without PYTORCH_MPS_PER_THREAD_STREAMS=1");
  }
  const auto before = pool().stats();
  runThreads(16, [&](int) {
    if (pool().current() != pool().stream(0) || pool().currentId(true) != 0 || pool().currentId(false) != 0) {
      violation("default mode: a thread's current stream is not the default stream");
    }
  });
  if (binds(pool().stats()) != binds(before)) {
    violation("default mode: a thread was given a worker stream without asking for one");
  }
  // 4 threads resolve in default mode, 4 in per-thread mode; then the mode flips and each
  // thread checks that its stream did not change.
  Barrier default_resolved(5), worker_resolved(5), flipped(9);
  std::vector<std::thread> threads;
  auto body = [&](bool worker, Barrier& resolved) {
    TestStream* mine = worker ? bindChecked(true, 1) : static_cast<TestStream*>(pool().current());
    if (!worker && mine != pool().stream(0)) {
      violation("mode switch: a default-mode thread did not get the default stream");
    }
    resolved.wait();
    flipped.wait();
    if (pool().current() != mine) {
      violation("mode switch: a thread's current stream changed when the mode changed");
    }
    if (worker) {
      use(mine, true);
      unregister(mine);
    }
  };
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back(body, false, std::ref(default_resolved));
  }
  default_resolved.wait();
  pool().setPerThread(true);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back(body, true, std::ref(worker_resolved));
  }
  worker_resolved.wait();
  pool().setPerThread(false);
  flipped.wait();
  for (auto& t : threads) {
    t.join();
  }
  pool().setPerThread(true); // the remaining scenarios exercise per-thread mode
  checkQuiescent("default mode");
}

void scenarioEnvParsing() {
  auto rejects = [](const char* name, const char* value) {
    setenv(name, value, 1);
    bool ok = false;
    try {
      streamPoolOptionsFromEnv();
    } catch (const StreamPoolError& e) {
      ok = std::strstr(e.what(), name) != nullptr;
    }
    unsetenv(name);
    return ok;
  };
  if (!rejects("PYTORCH_MPS_STREAM_POOL_POLICY", "fifo") ||
      !rejects("PYTORCH_MPS_PER_THREAD_STREAMS", "yes") ||
      !rejects("PYTORCH_MPS_STREAM_POOL_WAIT_MS", "-5") ||
      !rejects("PYTORCH_MPS_STREAM_POOL_WAIT_MS", "10s")) {
    violation("bad environment values are not rejected with a message naming the variable");
  }
}

// Thread that still holds a stream when the process exits: its thread_local releaser never
// runs, static destruction must not care.
void leaveThreadHoldingStream() {
  std::atomic<bool> bound{false};
  std::thread([&bound] {
    static_cast<void>(pool().current());
    bound.store(true);
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(60));
    }
  }).detach();
  while (!bound.load()) {
    std::this_thread::yield();
  }
}

int runShare(int scale_percent) {
  Totals totals;
  auto scaled = [&](int n) { return std::max(1, n * scale_percent / 100); };
  scenarioEnvParsing();
  if (pool().current() != pool().stream(0) || pool().currentId(false) != 0) {
    violation("main thread does not use the default stream");
  }
  scenarioCreateFailure();
  scenarioDefaultMode();
  scenarioOverrides(totals, 32, scaled(2000));
  scenarioExclusive(totals, scaled(2000)); // after overrides: streams freed by unpin get drained
  scenarioCycles(totals, 64, scaled(10000));
  scenarioOverflow(totals);
  scenarioShortLived(totals, scaled(10000), 16);
  scenarioFork(totals);
  leaveThreadHoldingStream();
  std::printf(
      "RESULT mode=share cycles=%llu short_threads=%llu overflow_exclusive=%llu "
      "overflow_shared=%llu overrides=%llu fork_child_ok=%d violations=%ld\n",
      (unsigned long long)totals.cycles, (unsigned long long)totals.short_threads,
      (unsigned long long)totals.overflow_exclusive, (unsigned long long)totals.overflow_shared,
      (unsigned long long)totals.overrides, totals.fork_child_ok, g_violations.load());
  return g_violations.load() == 0 ? 0 : 1;
}

// PYTORCH_MPS_STREAM_POOL_POLICY=wait: a bounded wait that ends in a clear error, a wait that
// ends when a stream is given back, and 64 threads contending without deadlock.
int runWait(int scale_percent) {
  pool().setPerThread(true);
  const auto timeout = pool().options().wait_timeout;
  if (pool().options().policy != StreamPoolOverflowPolicy::kWait) {
    violation("wait mode: PYTORCH_MPS_STREAM_POOL_POLICY=wait was not applied");
  }
  Barrier bound(kWorkers + 1), release_one(kWorkers + 1), done(kWorkers + 1);
  std::vector<std::thread> holders;
  for (int i = 0; i < kWorkers; ++i) {
    holders.emplace_back([&, i] {
      TestStream* s = bindChecked(true, 1);
      bound.wait();
      release_one.wait();
      if (i == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        releaseChecked(s);
        s = nullptr;
      }
      done.wait();
      if (s != nullptr) {
        unregister(s);
      }
    });
  }
  bound.wait();
  // 1. Nobody gives a stream back: the wait ends in an error after the timeout.
  std::string message;
  double waited_ms = 0;
  std::thread([&] {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      pool().current();
    } catch (const StreamPoolError& e) {
      message = e.what();
    }
    waited_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }).join();
  if (message.find("PYTORCH_MPS_STREAM_POOL_WAIT_MS") == std::string::npos ||
      message.find("max_workers") == std::string::npos) {
    violation("wait mode: no clear error after the timeout (got '" + message + "')");
  }
  if (waited_ms < 0.9 * static_cast<double>(timeout.count()) ||
      waited_ms > static_cast<double>(timeout.count()) + 5000.0) {
    violation("wait mode: waited " + std::to_string(waited_ms) + " ms for a " +
              std::to_string(timeout.count()) + " ms timeout");
  }
  // 2. A holder gives its stream back while we wait: the waiter gets it.
  bool got = false;
  std::thread waiter([&] {
    try {
      TestStream* s = bindChecked(true, 1);
      use(s, true);
      unregister(s);
      got = true;
    } catch (const StreamPoolError& e) {
      violation(std::string("wait mode: waiter failed although a stream was given back: ") + e.what());
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  release_one.wait();
  waiter.join();
  done.wait();
  for (auto& t : holders) {
    t.join();
  }
  checkQuiescent("wait");
  // 3. 64 threads, short holds: everyone gets a stream in time, nobody deadlocks.
  const int cycles = std::max(1, 300 * scale_percent / 100);
  std::atomic<long> failures{0};
  runThreads(64, [&](int) {
    for (int c = 0; c < cycles; ++c) {
      try {
        TestStream* s = bindChecked(true, 1);
        use(s, true);
        releaseChecked(s);
      } catch (const StreamPoolError&) {
        ++failures;
      }
    }
  });
  if (failures.load() != 0) {
    violation("wait mode: " + std::to_string(failures.load()) + " of 64 contending threads timed out");
  }
  checkQuiescent("wait contention");
  std::printf("RESULT mode=wait cycles=%d timeout_error_ms=%.0f waiter_served=%d violations=%ld\n",
              64 * cycles, waited_ms, got ? 1 : 0, g_violations.load());
  return g_violations.load() == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "share";
  const int scale = argc > 2 ? std::atoi(argv[2]) : 100;
  if (mode == "share") {
    return runShare(scale);
  }
  if (mode == "wait") {
    return runWait(scale);
  }
  std::fprintf(stderr, "usage: %s share|wait [scale_percent]\n", argv[0]);
  return 2;
}
