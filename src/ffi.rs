//! Calling the C++ shim (`src/shim/`, what libtorch offers that tch does not expose): a shim
//! function reports a C++ exception by writing the first line of its message into an error
//! buffer the caller passes and returning a negative status (`src/shim/guarded.h`).

use std::ffi::{c_char, c_void};

use anyhow::{anyhow, Result};
use tch::Tensor;

/// A tensor as the shim's functions take it (`const at::Tensor*`), borrowed for the call.
pub fn ptr(tensor: &Tensor) -> *const c_void {
    tensor.as_ptr() as *const c_void
}

/// The size in bytes of the error buffer [`call`] passes.
pub const ERROR_CAPACITY: usize = 1024;

/// Runs the shim function `f` with an error buffer of [`ERROR_CAPACITY`] bytes: its status when
/// it is not negative, else the message it wrote.
pub fn call(f: impl FnOnce(*mut c_char) -> i32) -> Result<i32> {
    let mut error = vec![0u8; ERROR_CAPACITY];
    let status = f(error.as_mut_ptr() as *mut c_char);
    if status >= 0 {
        return Ok(status);
    }
    let end = error.iter().position(|&b| b == 0).unwrap_or(error.len());
    Err(anyhow!("{}", String::from_utf8_lossy(&error[..end])))
}
