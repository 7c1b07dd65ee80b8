// Apple-SDK shim (Linux syntax check only): <mach/vm_param.h> for arm64 user space, where the page
// size is only known at run time: PAGE_SIZE is the vm_page_size variable. The SDK reaches this
// header from <Foundation/Foundation.h> (through CoreFoundation and <mach/mach.h>).
#pragma once

#include <mach/vm_page_size.h>

#define PAGE_SIZE vm_page_size
#define PAGE_MASK vm_page_mask

extern "C" vm_size_t vm_page_mask;
