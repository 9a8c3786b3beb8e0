// Storage conversions: f16 against the compiler's _Float16 (IEEE binary16,
// round to nearest even), bf16 against the nearest-value definition.
#include "autocache/cache_dtype.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace pipet {
namespace {

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::vector<float> probe_values() {
  std::vector<float> values = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, 1e9f, -1e9f,
                               6.1035156e-05f, 5.9604645e-08f, 2.9802322e-08f, 2.98023259e-08f, 1e-10f,
                               std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(),
                               1.00390625f /* bf16 tie, even below */, 1.01171875f /* bf16 tie, even above */};
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = from_bits(bits(rng));
    if (!std::isnan(f)) values.push_back(f);
  }
  // Dense around the half subnormal and overflow ranges.
  for (uint32_t b = 0x33000000u - 5000; b < 0x38800000u + 5000; b += 97) values.push_back(from_bits(b));
  for (uint32_t b = 0x477f0000u; b < 0x47800100u; b += 3) values.push_back(from_bits(b));
  return values;
}

TEST(CacheDtype, F16MatchesHardwareRoundingAndBf16IsNearestEven) {
  int checked = 0;
  for (float f : probe_values()) {
#if defined(__FLT16_MAX__)
    const _Float16 reference = static_cast<_Float16>(f);
    uint16_t reference_bits;
    std::memcpy(&reference_bits, &reference, 2);
    ASSERT_EQ(f32_to_f16(f), reference_bits) << "value " << f;
    ASSERT_EQ(f16_to_f32(reference_bits), static_cast<float>(reference)) << "bits " << reference_bits;
#endif
    // bf16: no representable value is strictly closer; ties keep an even mantissa.
    const uint16_t b = f32_to_bf16(f);
    const double mine = bf16_to_f32(b);
    if (std::isinf(f)) {
      ASSERT_EQ(mine, f);
      continue;
    }
    if (std::isinf(mine)) {  // overflow: f lies at or above the half-way point past the largest bf16
      ASSERT_GE(std::fabs(static_cast<double>(f)), 3.3961775292304e38);
      continue;
    }
    const double below = bf16_to_f32(static_cast<uint16_t>(b - 1));
    const double above = bf16_to_f32(static_cast<uint16_t>(b + 1));
    const double error = std::fabs(mine - f);
    if ((b & 0x7fffu) != 0) {
      ASSERT_LE(error, std::fabs(below - f)) << f;
    }
    if ((b & 0x7fffu) != 0x7f7fu) {
      ASSERT_LE(error, std::fabs(above - f)) << f;
    }
    if (((b & 0x7fffu) != 0) && error == std::fabs(below - f) && error > 0) {
      ASSERT_EQ(b & 1u, 0u) << "tie not to even: " << f;
    }
    ++checked;
  }
  EXPECT_GT(checked, 100000);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80u);  // tie, rounds down to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82u);  // tie, rounds up to even
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00u);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bffu);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::nanf("")))));
  // A NaN whose payload sits in the low bits must not round to infinity.
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(from_bits(0x7f800001u)))));
}

TEST(CacheDtype, BulkConversionsNamesAndParsing) {
  const std::vector<float> values = {1.5f, -2.25f, 3.140625f, 1e-3f, 70000.0f};
  for (CacheDtype dtype : {CacheDtype::kF32, CacheDtype::kF16, CacheDtype::kBF16}) {
    std::vector<uint8_t> stored(values.size() * cache_dtype_size(dtype));
    convert_from_f32(values.data(), values.size(), dtype, stored.data());
    std::vector<float> back(values.size());
    convert_to_f32(stored.data(), values.size(), dtype, back.data());
    for (size_t i = 0; i < values.size(); ++i) {
      const float expected = dtype == CacheDtype::kF32   ? values[i]
                             : dtype == CacheDtype::kF16 ? f16_to_f32(f32_to_f16(values[i]))
                                                         : bf16_to_f32(f32_to_bf16(values[i]));
      EXPECT_EQ(back[i], expected) << cache_dtype_name(dtype) << " " << i;
    }
    EXPECT_EQ(parse_cache_dtype(cache_dtype_name(dtype)), dtype);
  }
  EXPECT_EQ(cache_dtype_size(CacheDtype::kF32), 4u);
  EXPECT_EQ(cache_dtype_size(CacheDtype::kBF16), 2u);
  EXPECT_EQ(parse_cache_dtype("bfloat16"), CacheDtype::kBF16);
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(70000.0f))));
  const std::string message = testing::error_message<ConfigError>([] { parse_cache_dtype("fp8", "autocache.dtype"); });
  EXPECT_NE(message.find("autocache.dtype"), std::string::npos) << message;
  EXPECT_NE(message.find("fp8"), std::string::npos) << message;
}

}  // namespace
}  // namespace pipet
