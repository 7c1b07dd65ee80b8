// Apple-SDK shim (Linux syntax check only): <objc/objc.h>.
// `id`, `Class` and `SEL` are built into clang's Objective-C mode; this adds BOOL and nil with
// the definitions the arm64 macOS SDK uses (BOOL is C++ bool on arm64).
#pragma once

typedef bool BOOL;
#define YES __objc_yes
#define NO __objc_no

#ifndef nil
#define nil nullptr
#endif
#ifndef Nil
#define Nil nullptr
#endif
