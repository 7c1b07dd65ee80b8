// What the MPS runtime files need from the rest of libtorch, provided by us (see README.md):
// the few c10 functions they call (errors, env, the allocator base class, the guard registry),
// MPSDevice (MPSDevice.mm would need the real Metal framework), the profiler entry points
// (MPSProfiler.mm is only partly known; the profiler stays disabled) and two Darwin libc names.
//
// Compiled against the headers of the tree under test and the torch 2.9.1 wheel, so that every
// signature here is checked against the real declaration.

#include "sim.h"

#include <ATen/Context.h>
#include <ATen/detail/MPSHooksInterface.h>
#include <ATen/mps/MPSDevice.h>
#include <ATen/mps/MPSProfiler.h>
#include <ATen/mps/MPSStream.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>
#include <c10/util/env.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <ostream>

extern "C" {
vm_size_t vm_page_size = 16384; // Apple Silicon's page size

uint64_t clock_gettime_nsec_np(clockid_t clock_id) {
  timespec now{};
  clock_gettime(clock_id, &now);
  return uint64_t(now.tv_sec) * 1000000000ull + uint64_t(now.tv_nsec);
}
}

namespace {
[[noreturn]] void notSimulated(const char* what) {
  std::fprintf(stderr, "metalsim: %s is not part of the simulation (called unexpectedly)\n", what);
  std::abort();
}
} // namespace

namespace c10 {

Error::Error(SourceLocation source_location, std::string msg) : msg_(std::move(msg)), caller_(nullptr) {
  what_without_backtrace_ =
      msg_ + " (" + source_location.file + ":" + std::to_string(source_location.line) + ")";
}

const char* Error::what() const noexcept {
  return what_without_backtrace_.c_str();
}

bool Allocator::is_simple_data_ptr(const DataPtr& data_ptr) const {
  return data_ptr.get() == data_ptr.get_context();
}

void Allocator::default_copy_data(void* dest, const void* src, std::size_t count) const {
  std::memcpy(dest, src, count);
}

std::ostream& operator<<(std::ostream& stream, const Device& device) {
  return stream << "mps:" << int(device.index());
}

std::ostream& operator<<(std::ostream& stream, const Stream& s) {
  return stream << "stream " << s.id() << " on " << s.device();
}

namespace detail {
void deleteNothing(void*) {}

void torchCheckFail(const char* func, const char* file, uint32_t line, const std::string& msg) {
  throw Error(SourceLocation{func, file, line}, msg);
}
void torchCheckFail(const char* func, const char* file, uint32_t line, const char* msg) {
  throw Error(SourceLocation{func, file, line}, msg);
}
void torchInternalAssertFail(const char* func,
                             const char* file,
                             uint32_t line,
                             const char* condMsg,
                             const std::string& userMsg) {
  throw Error(SourceLocation{func, file, line}, std::string(condMsg) + " " + userMsg);
}
} // namespace detail

namespace utils {
std::optional<std::string> get_env(const char* name) noexcept {
  const char* value = std::getenv(name);
  return value ? std::optional<std::string>(value) : std::nullopt;
}
} // namespace utils

namespace impl {
// The registry c10 keeps per device type; the harness reads the MPS entry.
const DeviceGuardImplInterface* simMpsGuardImpl = nullptr;
DeviceGuardImplRegistrar::DeviceGuardImplRegistrar(DeviceType type, const DeviceGuardImplInterface* impl) {
  if (type == DeviceType::MPS) {
    simMpsGuardImpl = impl;
  }
}
} // namespace impl

} // namespace c10

namespace at {
Context& globalContext() {
  notSimulated("at::globalContext()");
}
namespace detail {
const MPSHooksInterface& getMPSHooks() {
  notSimulated("at::detail::getMPSHooks()");
}
} // namespace detail
} // namespace at

namespace at::mps {

MPSDevice* MPSDevice::_device = nullptr;

MPSDevice* MPSDevice::getInstance() {
  static MPSDevice* device = new MPSDevice(); // never destroyed, as on macOS
  return device;
}

MPSDevice::MPSDevice() : _mtl_device(metalsimDevice()) {}

MPSDevice::~MPSDevice() = default;

bool MPSDevice::isMacOS13Plus(MacOSVersion) const {
  return true;
}

bool is_available() {
  return true;
}

bool is_macos_13_or_newer(MacOSVersion) {
  return true;
}

namespace Profiler {
MPSProfiler::MPSProfiler() = default;
MPSProfiler::~MPSProfiler() = default;

bool MPSProfiler::isCaptureEnabled() const {
  return false;
}

void MPSProfiler::beginProfileGPUInterval(const void*) {
  notSimulated("MPSProfiler::beginProfileGPUInterval");
}

void MPSProfiler::endProfileKernel(const void*, SyncType) {
  notSimulated("MPSProfiler::endProfileKernel");
}

void MPSProfiler::endProfileCopy(uint64_t, SyncType) {
  notSimulated("MPSProfiler::endProfileCopy");
}
} // namespace Profiler

Profiler::MPSProfiler& getMPSProfiler() {
  static auto* profiler = new Profiler::MPSProfiler(); // all profiling options off
  return *profiler;
}

} // namespace at::mps
