//! torchvision-layout ResNet-18 (`conv1`, `bn1`, `layer1..4` of two BasicBlocks, `fc`), returning
//! the four stage outputs f1..f4 that AMFMN's multiscale features are made from.

use tch::nn::Path;
use tch::Tensor;

use super::layers::{BatchNorm2d, Conv2d, ConvConfig, ConvInit, Linear};
use super::pass::Pass;

/// torchvision's convolutions: no bias, Kaiming (fan-out) init.
fn resnet_conv(vs: Path, in_channels: i64, out_channels: i64, kernel: i64, stride: i64, padding: i64) -> Conv2d {
    let config = ConvConfig { stride, padding, bias: false, init: ConvInit::KaimingFanOut };
    Conv2d::new(vs, in_channels, out_channels, kernel, config)
}

/// A BasicBlock: two 3x3 convolutions with a residual connection (projected when the shape
/// changes).
#[derive(Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    fn new(vs: Path, in_channels: i64, channels: i64, stride: i64) -> BasicBlock {
        let downsample = (stride != 1 || in_channels != channels).then(|| {
            let path = &vs / "downsample";
            (resnet_conv(&path / "0", in_channels, channels, 1, stride, 0), BatchNorm2d::new(&path / "1", channels))
        });
        BasicBlock {
            conv1: resnet_conv(&vs / "conv1", in_channels, channels, 3, stride, 1),
            bn1: BatchNorm2d::new(&vs / "bn1", channels),
            conv2: resnet_conv(&vs / "conv2", channels, channels, 3, 1, 1),
            bn2: BatchNorm2d::new(&vs / "bn2", channels),
            downsample,
        }
    }
}

impl BasicBlock {
    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + x)`, `x` projected when the shape changes; in
    /// the pass's precision throughout.
    fn forward(&self, x: &Tensor, pass: Pass) -> Tensor {
        let out = self.bn1.forward(&self.conv1.forward_within(x, pass), pass).relu();
        let out = self.bn2.forward(&self.conv2.forward_within(&out, pass), pass);
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward_within(x, pass), pass),
            None => x.shallow_clone(),
        };
        (out + identity).relu()
    }
}

/// ResNet-18 without its classifier in the forward pass (`fc` exists for checkpoint keys).
#[derive(Debug)]
pub struct ResNet18 {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: [Vec<BasicBlock>; 4],
    _fc: Linear,
}

/// The four stage outputs for a `[B, 3, S, S]` input: f1 `[B, 64, S/4, S/4]`,
/// f2 `[B, 128, S/8, S/8]`, f3 `[B, 256, S/16, S/16]`, f4 `[B, 512, S/32, S/32]`; in the pass's
/// precision.
pub struct Stages {
    pub f1: Tensor,
    pub f2: Tensor,
    pub f3: Tensor,
    pub f4: Tensor,
}

impl ResNet18 {
    pub fn new(vs: Path) -> ResNet18 {
        let widths = [64, 128, 256, 512];
        let mut in_channels = 64;
        let layers = std::array::from_fn(|i| {
            let stride = if i == 0 { 1 } else { 2 };
            let layer = &vs / format!("layer{}", i + 1);
            let blocks = vec![
                BasicBlock::new(&layer / "0", in_channels, widths[i], stride),
                BasicBlock::new(&layer / "1", widths[i], widths[i], 1),
            ];
            in_channels = widths[i];
            blocks
        });
        ResNet18 {
            conv1: resnet_conv(&vs / "conv1", 3, 64, 7, 2, 3),
            bn1: BatchNorm2d::new(&vs / "bn1", 64),
            layers,
            _fc: Linear::new(&vs / "fc", 512, 1000, true),
        }
    }

    /// Stem (conv, BN, ReLU, max-pool) then the four stages, in the pass's precision (the images
    /// rounded to it once).
    pub fn forward(&self, images: &Tensor, pass: Pass) -> Stages {
        let images = super::amp::lower(images, pass.precision);
        let x = self.bn1.forward(&self.conv1.forward_within(&images, pass), pass).relu();
        let x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        let stage =
            |x: &Tensor, blocks: &[BasicBlock]| blocks.iter().fold(x.shallow_clone(), |x, b| b.forward(&x, pass));
        let f1 = stage(&x, &self.layers[0]);
        let f2 = stage(&f1, &self.layers[1]);
        let f3 = stage(&f2, &self.layers[2]);
        let f4 = stage(&f3, &self.layers[3]);
        Stages { f1, f2, f3, f4 }
    }
}
