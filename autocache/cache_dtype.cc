#include "autocache/cache_dtype.h"

#include "runtime/core/errors.h"

#include <cstring>

namespace pipet {
namespace {

uint32_t float_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float bits_float(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

}  // namespace

size_t cache_dtype_size(CacheDtype dtype) {
  switch (dtype) {
    case CacheDtype::kF32: return 4;
    case CacheDtype::kF16: return 2;
    case CacheDtype::kBF16: return 2;
  }
  return 0;
}

const char* cache_dtype_name(CacheDtype dtype) {
  switch (dtype) {
    case CacheDtype::kF32: return "f32";
    case CacheDtype::kF16: return "f16";
    case CacheDtype::kBF16: return "bf16";
  }
  return "unknown";
}

CacheDtype parse_cache_dtype(const std::string& text, const std::string& what) {
  if (text == "f32" || text == "float32") return CacheDtype::kF32;
  if (text == "f16" || text == "float16") return CacheDtype::kF16;
  if (text == "bf16" || text == "bfloat16") return CacheDtype::kBF16;
  throw ConfigError(what + ": unknown cache dtype '" + text + "' (expected f32, f16 or bf16)");
}

uint16_t f32_to_bf16(float value) {
  const uint32_t bits = float_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  // Adding 0x7fff plus the lowest kept bit rounds half-way cases to even;
  // a carry into the exponent is the correct rounding up (to infinity too).
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float bf16_to_f32(uint16_t bits) { return bits_float(static_cast<uint32_t>(bits) << 16); }

uint16_t f32_to_f16(float value) {
  const uint32_t bits = float_bits(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // infinity or NaN (NaN keeps top payload bits, forced quiet)
    if (magnitude == 0x7f800000u) return sign | 0x7c00u;
    return static_cast<uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  }
  // 65520 (0x477ff000) is half-way between the largest half (65504, odd
  // mantissa) and 2^16: ties to even round it, and all above, to infinity.
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;
  if (magnitude < 0x38800000u) {  // below 2^-14: a half subnormal (units of 2^-24) or zero
    if (magnitude <= 0x33000000u) return sign;  // <= 2^-25 rounds to zero (2^-25 ties to even 0)
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exponent;  // value / 2^-24 = mantissa >> shift
    const uint32_t kept = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    const uint32_t rounded = kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | rounded);  // 0x400 (smallest normal) is encoded correctly
  }
  const uint32_t rebased = magnitude - 0x38000000u;  // exponent bias 127 -> 15
  const uint32_t rounded = (rebased + 0xfffu + ((rebased >> 13) & 1u)) >> 13;
  return static_cast<uint16_t>(sign | rounded);
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1fu) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return bits_float(sign);
    // Subnormal: shift the leading one into the implicit position.
    int shifts = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shifts;
    }
    mantissa &= 0x3ffu;
    exponent = static_cast<uint32_t>(1 - shifts);
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  }
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

void convert_from_f32(const float* in, size_t count, CacheDtype dtype, void* out) {
  switch (dtype) {
    case CacheDtype::kF32:
      std::memcpy(out, in, count * sizeof(float));
      return;
    case CacheDtype::kBF16: {
      auto* dst = static_cast<uint16_t*>(out);
      for (size_t i = 0; i < count; ++i) dst[i] = f32_to_bf16(in[i]);
      return;
    }
    case CacheDtype::kF16: {
      auto* dst = static_cast<uint16_t*>(out);
      for (size_t i = 0; i < count; ++i) dst[i] = f32_to_f16(in[i]);
      return;
    }
  }
}

void convert_to_f32(const void* in, size_t count, CacheDtype dtype, float* out) {
  switch (dtype) {
    case CacheDtype::kF32:
      std::memcpy(out, in, count * sizeof(float));
      return;
    case CacheDtype::kBF16: {
      const auto* src = static_cast<const uint16_t*>(in);
      for (size_t i = 0; i < count; ++i) out[i] = bf16_to_f32(src[i]);
      return;
    }
    case CacheDtype::kF16: {
      const auto* src = static_cast<const uint16_t*>(in);
      for (size_t i = 0; i < count; ++i) out[i] = f16_to_f32(src[i]);
      return;
    }
  }
}

}  // namespace pipet
