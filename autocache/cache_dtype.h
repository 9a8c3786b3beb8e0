// Storage types of cached activations and their conversions from and to f32.
//
// Numerics: an f32 cache is bit-exact (a cached activation is the very value
// the frozen prefix computed). bf16 and f16 caches round every value to the
// nearest representable one (ties to even), so training from a bf16/f16
// cache is NOT bit-identical to recomputing the frozen prefix in f32: the
// first active layer sees inputs perturbed by up to 2^-8 (bf16) or 2^-11
// (f16) relative error; f16 also overflows to infinity beyond 65504 and
// flushes below 2^-24 to zero. Use them to halve the footprint when the
// frozen prefix itself runs in reduced precision (GPU autocast) or when that
// perturbation is acceptable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pipet {

enum class CacheDtype : uint8_t { kF32 = 1, kF16 = 2, kBF16 = 3 };

// Bytes per element: 4, 2, 2.
size_t cache_dtype_size(CacheDtype dtype);
// "f32", "f16", "bf16".
const char* cache_dtype_name(CacheDtype dtype);
// Parses "f32" / "float32", "f16" / "float16", "bf16" / "bfloat16". Throws
// ConfigError naming `what` (the config key) and the accepted values.
CacheDtype parse_cache_dtype(const std::string& text, const std::string& what = "autocache.dtype");

// Round-to-nearest-even conversions; NaN stays NaN (quiet), infinities stay.
uint16_t f32_to_bf16(float value);
float bf16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);
float f16_to_f32(uint16_t bits);

// Converts `count` f32 values to `dtype` into `out` (count * size bytes), and
// back. f32 <-> f32 is a plain copy.
void convert_from_f32(const float* in, size_t count, CacheDtype dtype, void* out);
void convert_to_f32(const void* in, size_t count, CacheDtype dtype, float* out);

}  // namespace pipet
