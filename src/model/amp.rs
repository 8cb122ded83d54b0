//! Mixed precision (`optim.amp`), as PyTorch's autocast applies it to this model's image
//! backbone: inside ResNet-18 every layer computes in bf16 or fp16 (the images rounded once,
//! each convolution's weight rounded, batch norm normalising the 16-bit activations with fp32
//! statistics and parameters, ReLU, pooling and the residual sums on 16-bit values), and the
//! multiscale maps made from its stages stay 16-bit until MVSA's first convolutions. Elsewhere
//! convolutions, linear layers and the GRU's products (input side, each step's hidden side, and
//! the deferred hidden-weight gradients) compute in 16 bits (operands rounded, products
//! accumulated by the backend) and return to fp32, so the GRU's state and gates, the sigmoid
//! gates, the cosines and the loss stay fp32. The precision is the forward pass's
//! ([`super::Pass::precision`]).

use tch::{Kind, Tensor};

/// `op(x, weight, bias)` in `precision` when one is given and `x` is floating-point, its output
/// left in `precision` for a next layer that also computes in it (an `x` already in
/// `precision` is not copied); else `op` as it is.
pub fn within(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    precision: Option<Kind>,
    op: impl Fn(&Tensor, &Tensor, Option<&Tensor>) -> Tensor,
) -> Tensor {
    match precision {
        Some(kind) if x.is_floating_point() => {
            let bias = bias.map(|b| b.to_kind(kind));
            op(&x.to_kind(kind), &weight.to_kind(kind), bias.as_ref())
        }
        _ => op(x, weight, bias),
    }
}

/// `y` in fp32 when it was computed in 16 bits, else as it is: a layer's output leaving the
/// 16-bit computation.
pub fn to_fp32(y: Tensor) -> Tensor {
    match y.kind() {
        Kind::BFloat16 | Kind::Half => y.to_kind(Kind::Float),
        _ => y,
    }
}

/// `x` in `precision` (when one is given and `x` is floating-point): the input of a block that
/// computes in 16 bits throughout.
pub fn lower(x: &Tensor, precision: Option<Kind>) -> Tensor {
    match precision {
        Some(kind) if x.is_floating_point() => x.to_kind(kind),
        _ => x.shallow_clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn lowering_rounds_the_operands_and_to_fp32_returns() {
        let x = Tensor::from_slice(&[1.0f32 + 1.0 / 1024.0, 3.0]).view([1, 2]);
        let w = Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2]);
        let linear = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| x.linear(w, b);
        let exact = within(&x, &w, None, None, linear);
        assert_eq!((exact.kind(), exact.double_value(&[0, 0])), (Kind::Float, 4.0 + 1.0 / 1024.0), "fp32");
        let bf16 = within(&x, &w, None, Some(Kind::BFloat16), linear);
        assert_eq!(bf16.kind(), Kind::BFloat16, "the output stays 16-bit");
        assert_eq!(bf16.double_value(&[0, 0]), 4.0, "1 + 2^-10 rounds to 1 in bf16 (8 bits of mantissa)");
        let lowered = lower(&x, Some(Kind::BFloat16));
        assert_eq!((lowered.kind(), lowered.double_value(&[0, 0])), (Kind::BFloat16, 1.0));
        let again = within(&lowered, &w, None, Some(Kind::BFloat16), linear);
        assert!(again.equal(&bf16), "a 16-bit input is used as it is");
        assert_eq!(to_fp32(bf16).kind(), Kind::Float);
        let ids = Tensor::from_slice(&[1i64, 2]).to_device(Device::Cpu);
        let embedded = to_fp32(within(&ids, &w, None, Some(Kind::BFloat16), |x, _, _| x.shallow_clone()));
        assert_eq!(embedded.kind(), Kind::Int64, "only floating-point inputs are lowered");
        assert_eq!(lower(&ids, Some(Kind::BFloat16)).kind(), Kind::Int64);
    }
}
