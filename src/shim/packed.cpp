// MKL's packed single-precision GEMM, as PyTorch's Inductor uses it for linear layers on the CPU
// (the `mkl::_mkl_reorder_linear_weight` and `mkl::_mkl_linear` operators of a libtorch built
// with MKL): a weight packed once for a fixed number of input rows is then multiplied without
// being packed again, so a product with a few rows streams the weight once instead of packing
// it on every call.
//
// C interface for src/model/packed.rs. Each function returns 0 when the operator is missing
// (a libtorch without MKL), 1 on success, -1 with the first line of the exception in `error`.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>

#include "guarded.h"

namespace {

std::optional<c10::OperatorHandle> find(const char* name) {
    return c10::Dispatcher::singleton().findSchema({name, ""});
}

}  // namespace

extern "C" {

// `weight` [out, in] (float, CPU) packed for products with exactly `rows` input rows.
int amfmn_packed_weight(const at::Tensor* weight, int64_t rows, at::Tensor** out, char* error,
                        size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        auto op = find("mkl::_mkl_reorder_linear_weight");
        if (!op) {
            return 0;
        }
        auto packed = op->typed<at::Tensor(const at::Tensor&, int64_t)>().call(*weight, rows);
        *out = new at::Tensor(std::move(packed));
        return 1;
    });
}

// x [rows, in] times the packed weight: x weightᵀ [rows, out] (`weight` is the unpacked original,
// used by the operator when x does not have `rows` rows).
int amfmn_packed_linear(const at::Tensor* x, const at::Tensor* packed, const at::Tensor* weight, int64_t rows,
                        at::Tensor** out, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        auto op = find("mkl::_mkl_linear");
        if (!op) {
            return 0;
        }
        using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const std::optional<at::Tensor>&, int64_t);
        auto y = op->typed<Signature>().call(*x, *packed, *weight, std::nullopt, rows);
        *out = new at::Tensor(std::move(y));
        return 1;
    });
}

}  // extern "C"
