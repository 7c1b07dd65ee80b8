// Apple-SDK shim (Linux syntax check only): <AvailabilityMacros.h>.
// Same SDK as <Availability.h> (macOS 15); deployment target 11.0 like the official 2.9.1 wheels.
#pragma once

#define MAC_OS_X_VERSION_11_0 110000
#define MAC_OS_X_VERSION_13_0 130000
#define MAC_OS_X_VERSION_13_2 130200
#define MAC_OS_X_VERSION_14_0 140000
#define MAC_OS_X_VERSION_15_0 150000
#define MAC_OS_X_VERSION_MIN_REQUIRED MAC_OS_X_VERSION_11_0
#define MAC_OS_X_VERSION_MAX_ALLOWED MAC_OS_X_VERSION_15_0
