// PyTorch's fused GRU cell, the kernel `nn.GRUCell` and `nn.GRU`'s non-cuDNN path run on CUDA
// (`aten::_thnn_fused_gru_cell`, which tch does not expose): one GRU step from the gates' input-
// and hidden-side pre-activations in one kernel, and its backward in one more (autograd records
// it through the dispatcher as for any ATen operator). CUDA only: libtorch has no CPU kernel.
//
// C interface for src/model/fused_gru.rs.

#include <ATen/ATen.h>

#include "guarded.h"

extern "C" {

// `input_gates`, `hidden_gates` [B, 3H] (gates r, z, n), `hx` [B, H] → h' [B, H] in `out`; 0, or
// -1 with the first line of the exception in `error`.
int amfmn_fused_gru_cell(const at::Tensor* input_gates, const at::Tensor* hidden_gates, const at::Tensor* hx,
                         at::Tensor** out, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        auto hy = std::get<0>(at::_thnn_fused_gru_cell(*input_gates, *hidden_gates, *hx, {}, {}));
        *out = new at::Tensor(std::move(hy));
    });
}

}  // extern "C"
