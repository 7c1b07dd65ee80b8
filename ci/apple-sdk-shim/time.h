// Apple-SDK shim (Linux syntax check only): <time.h>.
// The host C library's <time.h>, plus the Darwin extension the MPS sources call
// (clock_gettime_nsec_np, declared in Darwin's <time.h>). CLOCK_MONOTONIC_RAW comes from glibc.
#pragma once

#include_next <time.h>
#include <stdint.h>

extern "C" uint64_t clock_gettime_nsec_np(clockid_t __clock_id);
