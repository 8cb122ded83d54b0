//! Mixed precision (`optim.amp`), as PyTorch's autocast applies it to this model: convolutions
//! and linear layers compute in bf16 or fp16 (inputs and weights rounded, products accumulated by
//! the backend), their outputs return to fp32, so the GRU recurrences, batch norm, the sigmoid
//! gates, the cosines and the loss stay fp32. The setting is per thread, like autocast's state,
//! and applies inside [`autocast`] only.

use std::cell::Cell;

use tch::{Kind, Tensor};

thread_local! {
    static LOWER: Cell<Option<Kind>> = const { Cell::new(None) };
}

/// Runs `f` with convolutions and linear layers in `kind` (`None`: fp32 throughout).
pub fn autocast<T>(kind: Option<Kind>, f: impl FnOnce() -> T) -> T {
    let before = LOWER.with(|l| l.replace(kind));
    let out = f();
    LOWER.with(|l| l.set(before));
    out
}

/// `op(x, weight, bias)` in the autocast precision when one is set and `x` is fp32, its output
/// back in fp32; else `op` as it is.
pub fn lowered(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    op: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor,
) -> Tensor {
    match LOWER.with(Cell::get) {
        Some(kind) if x.kind() == Kind::Float => {
            let bias = bias.map(|b| b.to_kind(kind));
            op(&x.to_kind(kind), &weight.to_kind(kind), bias.as_ref()).to_kind(Kind::Float)
        }
        _ => op(x, weight, bias),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn autocast_rounds_the_operands_and_returns_fp32() {
        let x = Tensor::from_slice(&[1.0f32 + 1.0 / 1024.0, 3.0]).view([1, 2]);
        let w = Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2]);
        let linear = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| x.linear(w, b);
        let exact = lowered(&x, &w, None, linear);
        assert_eq!(exact.double_value(&[0, 0]), 4.0 + 1.0 / 1024.0, "outside autocast: fp32");
        let bf16 = autocast(Some(Kind::BFloat16), || lowered(&x, &w, None, linear));
        assert_eq!(bf16.kind(), Kind::Float);
        assert_eq!(bf16.double_value(&[0, 0]), 4.0, "1 + 2^-10 rounds to 1 in bf16 (8 bits of mantissa)");
        assert_eq!(lowered(&x, &w, None, linear).double_value(&[0, 0]), 4.0 + 1.0 / 1024.0, "restored after");
        let ids = Tensor::from_slice(&[1i64, 2]).to_device(Device::Cpu);
        assert_eq!(autocast(Some(Kind::BFloat16), || ids.kind()), Kind::Int64);
    }
}
