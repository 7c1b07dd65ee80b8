// Apple-SDK shim (Linux syntax check only): <os/log.h> (unified logging).
#pragma once

#include <os/object.h>

#if OS_OBJECT_USE_OBJC
@protocol OS_os_log <NSObject>
@end
typedef NSObject<OS_os_log>* os_log_t;
#else
typedef struct os_log_s* os_log_t;
#endif

extern "C" os_log_t os_log_create(const char* subsystem, const char* category);
