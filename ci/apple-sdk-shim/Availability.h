// Apple-SDK shim (Linux syntax check only): <Availability.h>.
// The shim stands for the macOS 15 SDK (Xcode 16): the __MAC_* macros that the PyTorch sources
// test are defined, so MPSGraphVenturaOps.h, MPSGraphSonomaOps.h and MPSGraphSequoiaOps.h skip
// their fallback declarations exactly as in a build with that SDK, and the shim declares those
// APIs with Apple's own names instead.
#pragma once

#define __MAC_11_0 110000
#define __MAC_13_0 130000
#define __MAC_13_2 130200
#define __MAC_14_0 140000
#define __MAC_15_0 150000
