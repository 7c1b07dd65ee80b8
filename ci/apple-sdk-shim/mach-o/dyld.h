// Apple-SDK shim (Linux syntax check only): <mach-o/dyld.h>, image enumeration.
#pragma once

#include <mach-o/loader.h>
#include <stdint.h>

extern "C" {
uint32_t _dyld_image_count(void);
const struct mach_header* _dyld_get_image_header(uint32_t image_index);
const char* _dyld_get_image_name(uint32_t image_index);
}
