//! A product `x Wᵀ` whose weight is packed once for MKL's packed GEMM (through the C++ shim
//! `src/shim/packed.cpp`; the operators PyTorch's Inductor uses for linear layers on the CPU).
//! With a few input rows, MKL's plain GEMM packs the weight on every call and reads it three
//! times; the packed product streams it once, about 2x faster at 4 to 8 rows, which is what a
//! search service encoding a handful of queries together needs from the GRU's hidden side.
//!
//! The packed copy is a snapshot: only a model that is no longer trained is packed.

use std::ffi::{c_char, c_void};

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};

use crate::ffi::{self, ERROR_CAPACITY};

extern "C" {
    fn amfmn_packed_weight(
        weight: *const c_void,
        rows: i64,
        out: *mut *mut c_void,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
    fn amfmn_packed_linear(
        x: *const c_void,
        packed: *const c_void,
        weight: *const c_void,
        rows: i64,
        out: *mut *mut c_void,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
}

/// Input rows the weight is packed for: products with fewer are padded with zero rows, products
/// with more are done in chunks of this many.
pub const PACKED_ROWS: i64 = 8;

/// A weight `[out, in]` with its MKL-packed copy.
#[derive(Debug)]
pub struct PackedLinear {
    weight: Tensor,
    packed: Tensor,
}

impl PackedLinear {
    /// Packs `weight` `[out, in]` (float, on the CPU); `None` for another kind or device, or where
    /// libtorch was built without MKL.
    pub fn new(weight: &Tensor) -> Result<Option<PackedLinear>> {
        if weight.device() != Device::Cpu || weight.kind() != Kind::Float {
            return Ok(None);
        }
        let weight = weight.detach().contiguous();
        let packed = shim_tensor(|out, e| unsafe {
            amfmn_packed_weight(ffi::ptr(&weight), PACKED_ROWS, out, e, ERROR_CAPACITY)
        })?;
        Ok(packed.map(|packed| PackedLinear { weight, packed }))
    }

    /// `x Wᵀ` `[B, out]` for `x` `[B, in]` on the CPU (the rows are independent products: a
    /// row's result does not depend on the rows beside it).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let chunks: Vec<Tensor> = x.contiguous().split(PACKED_ROWS, 0).iter().map(|c| self.chunk(c)).collect();
        Tensor::cat(&chunks, 0)
    }

    /// At most [`PACKED_ROWS`] rows, padded with zero rows to exactly that many.
    fn chunk(&self, x: &Tensor) -> Tensor {
        let rows = x.size()[0];
        let padded = match PACKED_ROWS - rows {
            0 => x.shallow_clone(),
            missing => {
                Tensor::cat(&[x.shallow_clone(), Tensor::zeros([missing, x.size()[1]], (x.kind(), x.device()))], 0)
            }
        };
        let y = shim_tensor(|out, e| unsafe {
            let (x, packed, weight) = (padded.as_ptr(), self.packed.as_ptr(), self.weight.as_ptr());
            amfmn_packed_linear(x as _, packed as _, weight as _, PACKED_ROWS, out, e, ERROR_CAPACITY)
        });
        // The inputs are built here to the shapes the packed weight was made for.
        y.and_then(|y| y.ok_or_else(|| anyhow!("MKL's packed linear vanished")))
            .unwrap_or_else(|e| panic!("packed linear: {e}"))
            .narrow(0, 0, rows)
    }
}

/// Calls a shim function that makes a tensor: `Some` on success, `None` when its operator is
/// missing, the error it reports otherwise.
fn shim_tensor(f: impl FnOnce(*mut *mut c_void, *mut c_char) -> i32) -> Result<Option<Tensor>> {
    let mut out: *mut c_void = std::ptr::null_mut();
    let made = ffi::call(|error| f(&mut out, error))? == 1;
    // SAFETY: on success the shim has written a new tensor, which the `Tensor` owns.
    Ok(made.then(|| unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed product equals `linear` for 1 to 17 rows (chunks, padding, a full chunk).
    #[test]
    fn packed_products_equal_linear() {
        tch::manual_seed(3);
        let weight = Tensor::randn([300, 70], (Kind::Float, Device::Cpu));
        let packed = PackedLinear::new(&weight).unwrap().expect("the PyTorch wheel's libtorch has MKL");
        for rows in 1..=17 {
            let x = Tensor::randn([rows, 70], (Kind::Float, Device::Cpu));
            let expected = x.linear::<Tensor>(&weight, None);
            let got = packed.forward(&x);
            assert_eq!(got.size(), [rows, 300]);
            let error = (&got - &expected).abs().max().double_value(&[]);
            assert!(error < 1e-4, "{rows} rows: {error}");
            let alone = packed.forward(&x.narrow(0, rows - 1, 1));
            assert!(alone.equal(&got.narrow(0, rows - 1, 1)), "{rows} rows: a row depends on its neighbours");
        }
    }

    #[test]
    fn other_kinds_are_not_packed() {
        let weight = Tensor::ones([4, 3], (Kind::Double, Device::Cpu));
        assert!(PackedLinear::new(&weight).unwrap().is_none());
    }
}
