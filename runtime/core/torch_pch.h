// Precompiled once (see pipet_torch_pch in the top CMakeLists) and reused by
// every target that includes torch. Include torch only where a header needs it.
#pragma once
#include <torch/torch.h>
