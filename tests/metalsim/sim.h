// The fake Metal device's own API, for the harness and the runtime-support file.
//
// Everything Metal-shaped (queues, command buffers, shared events, buffers, heaps, encoders,
// MPSCommandBuffer) is reached through the Apple API declared in ci/apple-sdk-shim; this header
// only adds what a real device has no API for: naming queues, tagging work, checking CPU-side
// buffer accesses, and reading the hazard checker's findings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#ifdef __OBJC__
#include <Metal/Metal.h>
#endif

namespace metalsim {

struct Stats {
  uint64_t command_buffers = 0; // completed command buffers
  uint64_t kernels = 0; // executed compute dispatches and blits
  uint64_t signals = 0; // MTLSharedEvent signals (GPU and CPU)
  uint64_t waits = 0; // encoded MTLSharedEvent waits executed
  uint64_t hazards = 0; // unordered conflicting accesses found
};

// Tag attached to every command the calling thread encodes from now on (shown in hazards).
void setTag(const std::string& tag);
// Name shown for this command queue in hazard reports (default "queue#N", N in creation order).
void nameQueue(void* commandQueue, const std::string& name);
// The CPU reads or writes a buffer's contents now: checked against GPU work it is not ordered
// after (CPU ordering comes from waitUntilCompleted, signaledValue reads and GPU callbacks).
void cpuRead(void* buffer, const std::string& what);
void cpuWrite(void* buffer, const std::string& what);
// Bytes of a buffer (private buffers have memory too, so that results can be compared).
uint8_t* contents(void* buffer);
size_t length(void* buffer);
Stats stats();
// Prints up to `max` hazard reports to stderr; returns how many there are in total.
uint64_t printHazards(size_t max);
// Prints the threads inside (or waiting in dispatch_sync for) a dispatch queue (tsan_dispatch.mm).
void printDispatchState(const char* (*name)(void* queue));
// Waits until every committed command buffer completed or `timeout_ms` passed; false on timeout.
bool waitIdle(uint64_t timeout_ms);
// Waits until the listener thread ran every notification block queued so far.
void waitListenerIdle();

} // namespace metalsim

#ifdef __OBJC__
// The one fake device (what MTLCreateSystemDefaultDevice() returns on a Mac).
id<MTLDevice> metalsimDevice();
#endif
