// An uninitialised float tensor in pinned (page-locked) host memory from PyTorch's caching host
// allocator, as `torch.empty(..., pin_memory=True)` makes it; tch can only pin a copy of a tensor.
// A batch the encoding workers write in place is then copied to a GPU without blocking, with no
// host copy in between.
//
// C interface for src/device.rs.

#include <ATen/ATen.h>

extern "C" {

// `[sizes[0], ..., sizes[dims - 1]]` float32, contiguous, pinned; nullptr when it cannot be made
// (no CUDA, or no pinned memory left): the caller then uses pageable memory.
at::Tensor* amfmn_empty_pinned(const int64_t* sizes, size_t dims) noexcept {
    try {
        auto options = at::TensorOptions().dtype(at::kFloat).pinned_memory(true);
        return new at::Tensor(at::empty(at::IntArrayRef(sizes, dims), options));
    } catch (...) {
        return nullptr;
    }
}

}  // extern "C"
