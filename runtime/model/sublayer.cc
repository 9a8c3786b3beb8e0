#include "runtime/model/sublayer.h"

#include "runtime/model/counter_dropout.h"

namespace pipet {

const char* to_string(SubLayerKind kind) {
  switch (kind) {
    case SubLayerKind::kEmbedding: return "embedding";
    case SubLayerKind::kAttention: return "attention";
    case SubLayerKind::kMlp: return "mlp";
    case SubLayerKind::kHead: return "head";
  }
  return "unknown";
}

std::string SubLayer::display_name() const {
  if (kind_ == SubLayerKind::kAttention || kind_ == SubLayerKind::kMlp) {
    return "block" + std::to_string(block_) + "." + to_string(kind_);
  }
  return to_string(kind_);
}

NamedTensors SubLayer::hf_parameters() const {
  NamedTensors out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    out.emplace_back(hf_prefix_ + item.key(), item.value());
  }
  return out;
}

int64_t SubLayer::parameter_count() const {
  int64_t count = 0;
  for (const auto& p : parameters(/*recurse=*/true)) count += p.numel();
  return count;
}

uint64_t SubLayer::dropout_site(int index) const {
  return pipet::dropout_site(static_cast<int>(kind_), block_, index);
}

torch::Tensor SubLayer::dropout(const torch::Tensor& x, double p, int index) const {
  return dropout_at(x, p, is_training(), dropout_site(index));
}

}  // namespace pipet
