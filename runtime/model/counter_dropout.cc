#include "runtime/model/counter_dropout.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/core/errors.h"
#include "runtime/core/random.h"

namespace pipet {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
// An element is dropped when the top 24 bits of its draw fall below
// p * 2^24: a 24-bit resolution of p, as float's mantissa has.
constexpr int kDrawBits = 24;

thread_local const DropoutKey* current_key = nullptr;

uint64_t drop_threshold(double p) {
  return static_cast<uint64_t>(std::llround(p * static_cast<double>(uint64_t{1} << kDrawBits)));
}

// Rows and elements per row of `shape` for `key`'s samples.
std::pair<int64_t, int64_t> rows_and_width(const DropoutKey& key, at::IntArrayRef shape) {
  const int64_t rows = key.sample_ids.numel();
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (rows == 0 || shape.empty() || shape[0] % rows != 0 || numel % rows != 0)
    throw ModelError("dropout: a tensor of " + std::to_string(numel) + " elements with first dimension " +
                     (shape.empty() ? std::string("none") : std::to_string(shape[0])) +
                     " does not split into the micro-batch's " + std::to_string(rows) + " samples");
  return {rows, numel / rows};
}

// Each row's stream key: (seed, dropout, epoch, site, sample).
std::vector<uint64_t> row_keys(const DropoutKey& key, uint64_t site) {
  const torch::Tensor ids = key.sample_ids.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* id = ids.data_ptr<int64_t>();
  std::vector<uint64_t> keys(static_cast<size_t>(ids.numel()));
  for (size_t r = 0; r < keys.size(); ++r)
    keys[r] = derive_key(key.seed, {static_cast<uint64_t>(StreamTag::kDropout), static_cast<uint64_t>(key.epoch),
                                    site, static_cast<uint64_t>(id[r])});
  return keys;
}

// Logical right shift of int64 lanes (torch's >> is arithmetic on signed).
torch::Tensor shift_right(const torch::Tensor& x, int bits) {
  return x.__rshift__(bits).bitwise_and(static_cast<int64_t>((uint64_t{1} << (64 - bits)) - 1));
}

}  // namespace

DropoutScope::DropoutScope(const DropoutKey& key) : previous_(current_key) { current_key = &key; }
DropoutScope::~DropoutScope() { current_key = previous_; }

const DropoutKey* current_dropout_key() { return current_key; }

uint64_t dropout_site(int kind, int64_t block, int index) {
  return (static_cast<uint64_t>(block + 2) << 16) | (static_cast<uint64_t>(kind) << 8) | static_cast<uint64_t>(index);
}

torch::Tensor counter_dropout_mask(const DropoutKey& key, uint64_t site, double p, at::IntArrayRef shape,
                                   const torch::TensorOptions& options) {
  if (options.device().type() != torch::kCPU)
    return counter_dropout_mask_by_tensor_ops(key, site, p, shape, options);
  const auto [rows, width] = rows_and_width(key, shape);
  const std::vector<uint64_t> keys = row_keys(key, site);
  const uint64_t threshold = drop_threshold(p);
  torch::Tensor mask = torch::empty(shape, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(torch::kHalf, torch::kBFloat16, mask.scalar_type(), "counter_dropout_mask", [&] {
    const scalar_t keep = static_cast<scalar_t>(1.0 / (1.0 - p));
    const scalar_t drop = static_cast<scalar_t>(0.0);
    scalar_t* out = mask.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const uint64_t base = keys[static_cast<size_t>(r)];
        scalar_t* row = out + r * width;
        for (int64_t e = 0; e < width; ++e) {
          const uint64_t draw = mix64(base + static_cast<uint64_t>(e + 1) * kGolden);
          row[e] = (draw >> (64 - kDrawBits)) >= threshold ? keep : drop;
        }
      }
    });
  });
  return mask;
}

torch::Tensor counter_dropout_mask_by_tensor_ops(const DropoutKey& key, uint64_t site, double p,
                                                 at::IntArrayRef shape, const torch::TensorOptions& options) {
  const auto [rows, width] = rows_and_width(key, shape);
  const std::vector<uint64_t> keys = row_keys(key, site);
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(options.device());
  // uint64 arithmetic in int64 lanes: the same bits, multiplication wraps.
  torch::Tensor base = torch::from_blob(const_cast<uint64_t*>(keys.data()), {rows, 1}, torch::kInt64).to(i64);
  torch::Tensor z = base + torch::arange(1, width + 1, i64).mul_(static_cast<int64_t>(kGolden)).unsqueeze(0);
  z = z.bitwise_xor(shift_right(z, 30)).mul_(static_cast<int64_t>(0xBF58476D1CE4E5B9ULL));
  z = z.bitwise_xor(shift_right(z, 27)).mul_(static_cast<int64_t>(0x94D049BB133111EBULL));
  z = z.bitwise_xor(shift_right(z, 31));
  const torch::Tensor kept = shift_right(z, 64 - kDrawBits).ge(static_cast<int64_t>(drop_threshold(p)));
  return kept.to(options.dtype()).mul_(1.0 / (1.0 - p)).view(shape);
}

torch::Tensor dropout_at(const torch::Tensor& x, double p, bool training, uint64_t site) {
  if (!training || p <= 0.0) return x;
  const DropoutKey* key = current_key;
  if (!key || p >= 1.0) return torch::dropout(x, p, true);
  return x * counter_dropout_mask(*key, site, p, x.sizes(), x.options());
}

}  // namespace pipet
