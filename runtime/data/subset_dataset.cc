#include "runtime/data/subset_dataset.h"

#include <algorithm>
#include <numeric>

#include "runtime/core/errors.h"
#include "runtime/core/random.h"

namespace pipet {
namespace {

constexpr uint64_t kProbeStream = 0x70726f6265ULL;  // "probe"

}  // namespace

SubsetDataset::SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices, std::string what)
    : base_(std::move(base)), indices_(std::move(indices)), what_(std::move(what)) {
  for (int64_t i : indices_)
    if (i < 0 || i >= base_->size())
      throw DataError(what_ + ": sample " + std::to_string(i) + " is outside " + base_->name() + " (" +
                      std::to_string(base_->size()) + " samples)");
}

std::string SubsetDataset::name() const { return base_->name() + " (" + what_ + ")"; }

std::vector<int64_t> SubsetDataset::map(const std::vector<int64_t>& indices) const {
  std::vector<int64_t> out;
  out.reserve(indices.size());
  for (int64_t i : indices) {
    if (i < 0 || i >= size())
      throw DataError(name() + ": index " + std::to_string(i) + " is outside its " + std::to_string(size()) +
                      " samples");
    out.push_back(indices_[static_cast<size_t>(i)]);
  }
  return out;
}

Batch SubsetDataset::get_batch(const std::vector<int64_t>& indices, int64_t epoch) const {
  return base_->get_batch(map(indices), epoch);
}

int64_t SubsetDataset::label(int64_t index) const { return base_->label(map({index}).front()); }

torch::Tensor SubsetDataset::labels(const std::vector<int64_t>& indices) const { return base_->labels(map(indices)); }

ProbeSplit split_probe(std::shared_ptr<const Dataset> data, int64_t probe_samples, uint64_t seed) {
  const int64_t n = data->size();
  if (probe_samples < 1 || probe_samples >= n)
    throw ConfigError("freeze.probe_samples " + std::to_string(probe_samples) + " must leave samples to train on: " +
                      data->name() + " has " + std::to_string(n));
  // A seeded partial Fisher-Yates shuffle picks the probe.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  Rng rng(derive_key(seed, {kProbeStream}));
  for (int64_t i = 0; i < probe_samples; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(n - i)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  std::vector<int64_t> probe(order.begin(), order.begin() + probe_samples);
  std::vector<int64_t> rest(order.begin() + probe_samples, order.end());
  std::sort(probe.begin(), probe.end());
  std::sort(rest.begin(), rest.end());
  ProbeSplit split;
  split.train = std::make_shared<SubsetDataset>(data, std::move(rest), "training, without the freeze probe");
  split.probe = std::make_shared<SubsetDataset>(data, std::move(probe), "freeze probe");
  return split;
}

}  // namespace pipet
