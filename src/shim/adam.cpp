// PyTorch's fused Adam (`aten::_fused_adam_`, what `torch.optim.Adam(fused=True)` calls, which tch
// does not expose): every parameter of a list updated by one multi-tensor kernel on CUDA instead
// of about eleven kernels per tensor. libtorch also has a CPU kernel, which the tests use.
//
// C interface for src/optim.rs.

#include <ATen/ATen.h>

#include <vector>

#include "guarded.h"

namespace {

std::vector<at::Tensor> list(const at::Tensor* const* tensors, size_t n) {
    std::vector<at::Tensor> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        out.push_back(*tensors[i]);
    }
    return out;
}

}  // namespace

extern "C" {

// One Adam step (no weight decay, no amsgrad) of the `n` parameters `params` with their `grads`,
// moments `exp_avgs`, `exp_avg_sqs` and step counts `steps` (float scalars, already advanced to
// this step), all on one device and of one kind; 0, or -1 with the first line of the exception in
// `error`.
int amfmn_fused_adam(const at::Tensor* const* params, const at::Tensor* const* grads,
                     const at::Tensor* const* exp_avgs, const at::Tensor* const* exp_avg_sqs,
                     const at::Tensor* const* steps, size_t n, double lr, double beta1, double beta2, double eps,
                     char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        at::_fused_adam_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n), {},
                         list(steps, n), lr, beta1, beta2, /*weight_decay=*/0.0, eps, /*amsgrad=*/false,
                         /*maximize=*/false);
    });
}

}  // extern "C"
