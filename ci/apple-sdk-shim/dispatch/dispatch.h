// Apple-SDK shim (Linux syntax check only): <dispatch/dispatch.h> (libdispatch / GCD).
// Object types follow the SDK: NSObject<OS_dispatch_*>* under Objective-C, derived C++ structs
// otherwise. Only the calls the MPS sources use, and their direct neighbours, are declared.
#pragma once

#include <os/object.h>
#include <stddef.h>
#include <stdint.h>

#if OS_OBJECT_USE_OBJC
@protocol OS_dispatch_object <NSObject>
@end
@protocol OS_dispatch_queue <OS_dispatch_object>
@end
@protocol OS_dispatch_queue_attr <OS_dispatch_object>
@end
@protocol OS_dispatch_data <OS_dispatch_object>
@end
@protocol OS_dispatch_semaphore <OS_dispatch_object>
@end
typedef NSObject<OS_dispatch_object>* dispatch_object_t;
typedef NSObject<OS_dispatch_queue>* dispatch_queue_t;
typedef NSObject<OS_dispatch_queue_attr>* dispatch_queue_attr_t;
typedef NSObject<OS_dispatch_data>* dispatch_data_t;
typedef NSObject<OS_dispatch_semaphore>* dispatch_semaphore_t;
#else
typedef struct dispatch_object_s {
 private:
  dispatch_object_s();
  ~dispatch_object_s();
  dispatch_object_s(const dispatch_object_s&);
  void operator=(const dispatch_object_s&);
}* dispatch_object_t;
typedef struct dispatch_queue_s : public dispatch_object_s {}* dispatch_queue_t;
typedef struct dispatch_queue_attr_s : public dispatch_object_s {}* dispatch_queue_attr_t;
typedef struct dispatch_data_s : public dispatch_object_s {}* dispatch_data_t;
typedef struct dispatch_semaphore_s : public dispatch_object_s {}* dispatch_semaphore_t;
#endif

typedef void (^dispatch_block_t)(void);
typedef void (*dispatch_function_t)(void* _Nullable);
typedef uint64_t dispatch_time_t;

#define DISPATCH_QUEUE_SERIAL NULL
#define DISPATCH_TIME_NOW (0ull)
#define DISPATCH_TIME_FOREVER (~0ull)
#define DISPATCH_DATA_DESTRUCTOR_DEFAULT NULL

extern "C" {

dispatch_queue_t dispatch_queue_create(const char* _Nullable label, dispatch_queue_attr_t _Nullable attr);
dispatch_queue_t dispatch_get_main_queue(void);
void dispatch_sync(dispatch_queue_t queue, __attribute__((noescape)) dispatch_block_t block);
void dispatch_async(dispatch_queue_t queue, dispatch_block_t block);
void dispatch_sync_f(dispatch_queue_t queue, void* _Nullable context, dispatch_function_t work);
void dispatch_queue_set_specific(dispatch_queue_t queue,
                                 const void* key,
                                 void* _Nullable context,
                                 dispatch_function_t _Nullable destructor);
void* _Nullable dispatch_queue_get_specific(dispatch_queue_t queue, const void* key);
void* _Nullable dispatch_get_specific(const void* key);
const char* dispatch_queue_get_label(dispatch_queue_t _Nullable queue);

dispatch_time_t dispatch_time(dispatch_time_t when, int64_t delta);
dispatch_semaphore_t dispatch_semaphore_create(intptr_t value);
intptr_t dispatch_semaphore_wait(dispatch_semaphore_t dsema, dispatch_time_t timeout);
intptr_t dispatch_semaphore_signal(dispatch_semaphore_t dsema);

dispatch_data_t dispatch_data_create(const void* buffer,
                                     size_t size,
                                     dispatch_queue_t _Nullable queue,
                                     dispatch_block_t _Nullable destructor);

void dispatch_retain(dispatch_object_t object);
void dispatch_release(dispatch_object_t object);

} // extern "C"
