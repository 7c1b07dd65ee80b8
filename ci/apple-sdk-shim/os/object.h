// Apple-SDK shim (Linux syntax check only): <os/object.h>.
// As in the SDK, OS objects (dispatch queues, logs) are Objective-C objects when compiled as
// Objective-C (OS_OBJECT_USE_OBJC) and a C++ struct hierarchy in plain C++.
#pragma once

#ifdef __OBJC__
#include <objc/NSObject.h>
#define OS_OBJECT_USE_OBJC 1
#else
#define OS_OBJECT_USE_OBJC 0
#endif
