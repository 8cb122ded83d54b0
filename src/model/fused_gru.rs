//! PyTorch's fused GRU cell on CUDA (`aten::_thnn_fused_gru_cell`, the kernel `nn.GRUCell` runs
//! there, through the C++ shim `src/shim/gru.cpp`): one step of a recurrence in one kernel, and
//! its backward in one more, where the composite step launches about ten each way. libtorch has
//! no CPU kernel for it.

use std::ffi::{c_char, c_void};

use tch::{Device, Tensor};

use crate::ffi::{self, ERROR_CAPACITY};

extern "C" {
    fn amfmn_fused_gru_cell(
        input_gates: *const c_void,
        hidden_gates: *const c_void,
        hx: *const c_void,
        out: *mut *mut c_void,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
}

/// Whether [`step`] runs on `device`: CUDA only.
pub fn available(device: Device) -> bool {
    device.is_cuda()
}

/// One GRU step, differentiable: from the gates' input- and hidden-side pre-activations `x`, `u`
/// `[B, 3H]` (gates r, z, n; 2-D, any strides) and the state `h` `[B, H]`, with
/// `r = σ(x_r + u_r)`, `z = σ(x_z + u_z)` and `n = tanh(x_n + r ⊙ u_n)`: `h' = n + z ⊙ (h − n)`
/// `[B, H]`, the original's `(1 − z) ⊙ n + z ⊙ h` rounded in another order. Panics off CUDA, as
/// a tch operator does on a device without its kernel.
pub fn step(x: &Tensor, u: &Tensor, h: &Tensor) -> Tensor {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: the three pointers are live tensors for the call; the shim writes a new tensor,
    // which the `Tensor` below owns, or its message into the error buffer.
    ffi::call(|error| unsafe {
        amfmn_fused_gru_cell(ffi::ptr(x), ffi::ptr(u), ffi::ptr(h), &mut out, error, ERROR_CAPACITY)
    })
    .unwrap_or_else(|e| panic!("fused GRU cell: {e}"));
    unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) }
}
