// Apple-SDK shim (Linux syntax check only): <objc/NSObjCRuntime.h>, LP64 definitions.
#pragma once

typedef long NSInteger;
typedef unsigned long NSUInteger;
