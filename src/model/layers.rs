//! The few layers AMFMN is built from, with PyTorch's parameter names and default
//! initialisation, so that a fresh amfmn model starts like a fresh PyTorch one and checkpoint
//! keys are `<path>.weight`, `<path>.bias`, `<path>.running_mean`, ...

use tch::nn::{Init, Module, Path};
use tch::{Kind, Tensor};

use super::amp::{to_fp32, within};
use super::pass::Pass;

/// `nn.Linear`: `y = x Wᵀ + b`, weight `[out, in]`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default init: weight and bias uniform in ±1/√in.
    pub fn new(vs: Path, in_dim: i64, out_dim: i64, bias: bool) -> Linear {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let weight = vs.var("weight", &[out_dim, in_dim], Init::Uniform { lo: -bound, up: bound });
        let bias = bias.then(|| vs.var("bias", &[out_dim], Init::Uniform { lo: -bound, up: bound }));
        Linear { weight, bias }
    }
}

impl Linear {
    /// `[..., in]` → `[..., out]`, in the pass's precision.
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Tensor {
        linear(x, &self.weight, self.bias.as_ref(), pass)
    }
}

/// `x Wᵀ + b` for `x` `[..., in]`, `weight` `[out, in]`: operands rounded to the pass's precision
/// when it has one, the result in fp32 (a [`Linear`]'s forward, for weights held otherwise).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, pass: Pass) -> Tensor {
    to_fp32(within(x, weight, bias, pass.precision, |x, w, b| x.linear(w, b)))
}

/// How a convolution's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvInit {
    /// PyTorch's default: uniform in ±1/√fan_in (weights and bias).
    Default,
    /// torchvision's ResNet init: normal with std √(2/fan_out).
    KaimingFanOut,
}

/// Settings of a [`Conv2d`] besides its channel counts and kernel size.
#[derive(Debug, Clone, Copy)]
pub struct ConvConfig {
    pub stride: i64,
    pub padding: i64,
    pub bias: bool,
    pub init: ConvInit,
}

impl Default for ConvConfig {
    /// PyTorch's `nn.Conv2d` defaults: stride 1, no padding, a bias, default init.
    fn default() -> ConvConfig {
        ConvConfig { stride: 1, padding: 0, bias: true, init: ConvInit::Default }
    }
}

/// `nn.Conv2d` with square kernel, stride and padding; weight `[out, in, k, k]`.
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub fn new(vs: Path, in_channels: i64, out_channels: i64, kernel: i64, config: ConvConfig) -> Conv2d {
        let fan_in = (in_channels * kernel * kernel) as f64;
        let weight_init = match config.init {
            ConvInit::Default => Init::Uniform { lo: -1.0 / fan_in.sqrt(), up: 1.0 / fan_in.sqrt() },
            ConvInit::KaimingFanOut => {
                Init::Randn { mean: 0.0, stdev: (2.0 / (out_channels * kernel * kernel) as f64).sqrt() }
            }
        };
        let weight = vs.var("weight", &[out_channels, in_channels, kernel, kernel], weight_init);
        let bound = 1.0 / fan_in.sqrt();
        let bias = config.bias.then(|| vs.var("bias", &[out_channels], Init::Uniform { lo: -bound, up: bound }));
        Conv2d { weight, bias, stride: config.stride, padding: config.padding }
    }
}

impl Conv2d {
    /// `[B, in, H, W]` → `[B, out, H', W']`, in the pass's precision, the output in fp32.
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Tensor {
        to_fp32(self.forward_within(x, pass))
    }

    /// [`Conv2d::forward`] with the output left in the pass's precision (inside a block that
    /// computes in 16 bits throughout: ResNet-18).
    pub fn forward_within(&self, x: &Tensor, pass: Pass) -> Tensor {
        within(x, &self.weight, self.bias.as_ref(), pass.precision, |x, w, b| self.conv(x, w, b))
    }

    fn conv(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        x.conv2d(weight, bias, [self.stride], [self.padding], [1], 1)
    }
}

/// `nn.BatchNorm2d` (eps 1e-5, momentum 0.1) with its buffers, `num_batches_tracked` included.
#[derive(Debug)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    pub fn new(vs: Path, channels: i64) -> BatchNorm2d {
        BatchNorm2d {
            weight: vs.var("weight", &[channels], Init::Const(1.0)),
            bias: vs.var("bias", &[channels], Init::Const(0.0)),
            running_mean: vs.zeros_no_train("running_mean", &[channels]),
            running_var: vs.ones_no_train("running_var", &[channels]),
            num_batches_tracked: vs.add("num_batches_tracked", Tensor::zeros([], (Kind::Int64, vs.device())), false),
        }
    }
}

impl BatchNorm2d {
    /// `[B, C, H, W]` → same shape and kind; batch statistics (and running-stat updates) in
    /// training. A 16-bit `x` is normalised with the fp32 statistics and parameters (computed in
    /// fp32, the output rounded once), as under PyTorch's autocast.
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Tensor {
        let train = pass.train;
        if train {
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
            });
        }
        Tensor::batch_norm(
            x,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            false,
        )
    }
}

/// `nn.Embedding` with `padding_idx = 0`: rows `[num, dim]`, row 0 zero and never trained.
#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    /// Standard-normal rows (PyTorch's default), row 0 zeroed; frozen when `trainable` is false.
    pub fn new(vs: Path, num: i64, dim: i64, trainable: bool) -> Embedding {
        let init = Tensor::randn([num, dim], (Kind::Float, vs.device()));
        let _ = init.get(0).zero_();
        Embedding { weight: vs.add("weight", init, trainable) }
    }
}

impl Module for Embedding {
    /// `[B, L]` ids → `[B, L, dim]`.
    fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, 0, false, false)
    }
}
