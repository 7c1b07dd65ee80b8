// Apple-SDK shim (Linux syntax check only): <simd/simd.h> vector types, as clang extended vectors
// (the SDK's own definition). <Metal/Metal.h> includes it, as in the SDK.
#pragma once

typedef __attribute__((__ext_vector_type__(2))) unsigned int simd_uint2;
typedef __attribute__((__ext_vector_type__(3))) unsigned int simd_uint3;
typedef __attribute__((__ext_vector_type__(4))) unsigned int simd_uint4;
typedef __attribute__((__ext_vector_type__(2))) unsigned long simd_ulong2;
typedef __attribute__((__ext_vector_type__(3))) unsigned long simd_ulong3;
typedef __attribute__((__ext_vector_type__(4))) unsigned long simd_ulong4;
typedef __attribute__((__ext_vector_type__(2))) float simd_float2;
typedef __attribute__((__ext_vector_type__(3))) float simd_float3;
typedef __attribute__((__ext_vector_type__(4))) float simd_float4;
