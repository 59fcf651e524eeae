// What focus_cpu.cpp offers the Python module (module.cpp) besides its registered ops.
#pragma once
#include <ATen/ATen.h>

namespace focuskern {

// Every argument check of focus_logits_ in one pass; see focus_cpu.cpp.
int64_t focus_logits_check_cpu(const at::Tensor& logits, const at::Tensor& row_offsets, const at::Tensor& token_ids,
                               const at::Tensor& token_bias, const at::Tensor& alpha, const at::Tensor& decay,
                               const at::Tensor& step, int64_t n_kinds, bool apply);

}  // namespace focuskern
