// Apple-SDK shim (Linux syntax check only): <os/signpost.h>.
#pragma once

#include <os/log.h>
#include <stdint.h>

typedef uint64_t os_signpost_id_t;

typedef enum os_signpost_type : uint8_t {
  OS_SIGNPOST_EVENT = 0x00,
  OS_SIGNPOST_INTERVAL_BEGIN = 0x01,
  OS_SIGNPOST_INTERVAL_END = 0x02,
} os_signpost_type_t;

#define OS_SIGNPOST_ID_NULL ((os_signpost_id_t)0)
#define OS_SIGNPOST_ID_INVALID ((os_signpost_id_t)~0)

extern "C" {
os_signpost_id_t os_signpost_id_generate(os_log_t log);
os_signpost_id_t os_signpost_id_make_with_pointer(os_log_t log, const void* ptr);
}
