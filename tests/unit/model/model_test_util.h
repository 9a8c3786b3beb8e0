// Tiny model specs and inputs shared by the model tests.
#pragma once

#include "runtime/model/model.h"

#include <cstdint>
#include <string>

namespace pipet::testing {

// ViT: image 8, patch 4 (4 patches + CLS), hidden 16, 2 heads.
ModelSpec tiny_vit_spec(int64_t blocks = 2, int64_t labels = 3);
// BERT: vocab 50, 16 positions, hidden 16, 2 heads, dropout 0.1.
ModelSpec tiny_bert_spec(int64_t blocks = 2, int64_t labels = 3);

// Random pixel_values for `spec` ([B, C, image, image]).
Activations vit_inputs(const ModelSpec& spec, int64_t batch);
// Random ids in [1, vocab); the last `padding` positions of sample 0 are
// padding (id 0, mask 0); token types 0 for the first half, 1 after.
Activations bert_inputs(const ModelSpec& spec, int64_t batch, int64_t seq, int64_t padding = 0);

// "/usr/bin/python3" when it imports torch, "" otherwise.
std::string python_with_torch();

}  // namespace pipet::testing
