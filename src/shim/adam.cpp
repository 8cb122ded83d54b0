// PyTorch's fused Adam (`aten::_fused_adam_`, what `torch.optim.Adam(fused=True)` calls, which tch
// does not expose): every parameter of a list updated by one multi-tensor kernel on CUDA instead
// of about eleven kernels per tensor, with its step counts advanced on the device; and the
// GradScaler's unscaling (`aten::_amp_foreach_non_finite_check_and_unscale_`), which records
// non-finite gradients in a device flag the update then obeys, so fp16 training reads nothing
// back. libtorch also has CPU kernels of both, which the tests use.
//
// C interface for src/optim.rs.

#include <ATen/ATen.h>

#include <optional>
#include <unordered_set>
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

// Each tensor of `tensors` once (several parameters may share one step count).
std::vector<at::Tensor> distinct(const std::vector<at::Tensor>& tensors) {
    std::unordered_set<const c10::TensorImpl*> seen;
    std::vector<at::Tensor> out;
    for (const auto& t : tensors) {
        if (seen.insert(t.unsafeGetTensorImpl()).second) {
            out.push_back(t);
        }
    }
    return out;
}

}  // namespace

extern "C" {

// One Adam step (no weight decay, no amsgrad) of the `n` parameters `params` with their `grads`,
// moments `exp_avgs`, `exp_avg_sqs` and step counts `steps` (0-d float tensors on the parameters'
// device, which may be shared), as PyTorch's fused Adam makes it: each distinct step count
// advanced by one, then the update. With `found_inf` (a 0-d float flag on that device, or null),
// a step whose flag is 1 changes nothing, step counts included. 0, or -1 with the first line of
// the exception in `error`.
int amfmn_fused_adam(const at::Tensor* const* params, const at::Tensor* const* grads,
                     const at::Tensor* const* exp_avgs, const at::Tensor* const* exp_avg_sqs,
                     const at::Tensor* const* steps, size_t n, double lr, double beta1, double beta2, double eps,
                     const at::Tensor* found_inf, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        std::vector<at::Tensor> counts = distinct(list(steps, n));
        at::_foreach_add_(counts, 1);
        std::optional<at::Tensor> skip;
        if (found_inf != nullptr) {
            // A skipped step does not count: the kernel leaves everything else alone.
            at::_foreach_add_(counts, *found_inf, -1);
            skip = *found_inf;
        }
        at::_fused_adam_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n), {},
                         list(steps, n), lr, beta1, beta2, /*weight_decay=*/0.0, eps, /*amsgrad=*/false,
                         /*maximize=*/false, /*grad_scale=*/std::nullopt, skip);
    });
}

// The GradScaler's unscaling of the `n` gradients `grads` in place: each multiplied by
// `inv_scale`, and `found_inf` (0-d float) set to 1 when any holds an inf or NaN (left as it is
// otherwise). 0, or -1 with the first line of the exception in `error`.
int amfmn_unscale(const at::Tensor* const* grads, size_t n, const at::Tensor* found_inf,
                  const at::Tensor* inv_scale, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        at::Tensor flag = *found_inf;
        at::_amp_foreach_non_finite_check_and_unscale_(list(grads, n), flag, *inv_scale);
    });
}

}  // extern "C"
