// Apple-SDK shim (Linux syntax check only): <mach-o/getsect.h>.
#pragma once

#include <mach-o/loader.h>
#include <stdint.h>

extern "C" uint8_t* getsectiondata(const struct mach_header_64* mhp,
                                   const char* segname,
                                   const char* sectname,
                                   unsigned long* size);
