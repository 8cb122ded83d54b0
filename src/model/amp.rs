//! Mixed precision (`optim.amp`), as PyTorch's autocast applies it to this model: convolutions
//! and linear layers compute in bf16 or fp16 (inputs and weights rounded, products accumulated by
//! the backend), their outputs return to fp32, so the GRU recurrences, batch norm, the sigmoid
//! gates, the cosines and the loss stay fp32. The precision is the forward pass's
//! ([`super::Pass::precision`]).

use tch::{Kind, Tensor};

/// `op(x, weight, bias)` in `precision` when one is given and `x` is fp32, its output back in
/// fp32; else `op` as it is.
pub fn lowered(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    precision: Option<Kind>,
    op: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor,
) -> Tensor {
    match precision {
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
    fn lowering_rounds_the_operands_and_returns_fp32() {
        let x = Tensor::from_slice(&[1.0f32 + 1.0 / 1024.0, 3.0]).view([1, 2]);
        let w = Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2]);
        let linear = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| x.linear(w, b);
        let exact = lowered(&x, &w, None, None, linear);
        assert_eq!(exact.double_value(&[0, 0]), 4.0 + 1.0 / 1024.0, "fp32");
        let bf16 = lowered(&x, &w, None, Some(Kind::BFloat16), linear);
        assert_eq!(bf16.kind(), Kind::Float);
        assert_eq!(bf16.double_value(&[0, 0]), 4.0, "1 + 2^-10 rounds to 1 in bf16 (8 bits of mantissa)");
        let ids = Tensor::from_slice(&[1i64, 2]).to_device(Device::Cpu);
        let embedded = lowered(&ids, &w, None, Some(Kind::BFloat16), |x, _, _| x.shallow_clone());
        assert_eq!(embedded.kind(), Kind::Int64, "only fp32 inputs are lowered");
    }
}
