// A small counter-based random number generator whose output is identical on
// every platform, compiler and standard library. The standard distributions
// (std::uniform_int_distribution, std::shuffle, ...) are implementation-defined,
// so data order and augmentation would differ between a developer machine and
// the training container; everything in runtime/data, and the model's dropout
// masks (runtime/model/counter_dropout.h), draw from this instead.
//
// Output k of a stream is SplitMix64's finaliser applied to key + (k+1)*golden,
// i.e. exactly SplitMix64 started at `key`. Keys are derived by hashing
// (seed, purpose tag, epoch, sample index, ...), so any sample's draws can be
// computed directly without replaying other samples.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace pipet {

// SplitMix64's output function: a bijective 64-bit mixer.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Hashes a seed and an ordered list of words into a stream key. Order matters:
// (1, 2) and (2, 1) give different keys.
constexpr uint64_t derive_key(uint64_t seed, std::initializer_list<uint64_t> parts) {
  uint64_t h = mix64(seed ^ 0x6A09E667F3BCC909ULL);
  for (uint64_t p : parts) h = mix64(h ^ mix64(p + 0x9E3779B97F4A7C15ULL));
  return h;
}

// Purpose tags keep the streams of different consumers independent even when
// they share a seed and an index.
enum class StreamTag : uint64_t {
  kSampler = 0x73616d706c6572ULL,    // epoch permutation
  kAugment = 0x6175676d656e74ULL,    // crop/flip per (epoch, sample)
  kSyntheticImage = 0x73796e696d67ULL,
  kSyntheticText = 0x73796e747874ULL,
  kDropout = 0x64726f706f7574ULL,     // dropout masks per (epoch, site, sample)
};

// The stream of one sample in one epoch for one purpose.
constexpr uint64_t sample_key(uint64_t seed, StreamTag tag, int64_t epoch, int64_t index) {
  return derive_key(seed, {static_cast<uint64_t>(tag), static_cast<uint64_t>(epoch),
                           static_cast<uint64_t>(index)});
}

class Rng {
 public:
  explicit constexpr Rng(uint64_t key) : key_(key) {}

  // The next 64 uniformly distributed bits.
  constexpr uint64_t next_u64() {
    ++counter_;
    return mix64(key_ + counter_ * 0x9E3779B97F4A7C15ULL);
  }

  // Uniform in [0, n) without modulo bias (rejection of the short top range).
  // n must be >= 1.
  constexpr uint64_t below(uint64_t n) {
    // 2^64 mod n: draws smaller than this would over-represent small results.
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = next_u64();
      if (r >= threshold) return r % n;
    }
  }

  // Uniform integer in [lo, hi], inclusive; requires lo <= hi.
  constexpr int64_t uniform_int(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
    if (span == UINT64_MAX) return static_cast<int64_t>(next_u64());
    return static_cast<int64_t>(static_cast<uint64_t>(lo) + below(span + 1));
  }

  // Uniform in [0, 1) with 53 random bits (exact multiples of 2^-53).
  constexpr double uniform_double() {
    return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0);
  }

  // Uniform in [0, 1) with 24 random bits (exact multiples of 2^-24).
  constexpr float uniform_float() {
    return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f);
  }

  // True with probability num/den (exact rational, no floating point).
  constexpr bool chance(uint64_t num, uint64_t den) { return below(den) < num; }

  constexpr uint64_t key() const { return key_; }
  constexpr uint64_t counter() const { return counter_; }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

}  // namespace pipet
