//! `extract_feature`: the multiscale visual features of the paper's MVSA input, from a
//! ResNet-18 (docs/ARCHITECTURE.md, Model).

use tch::nn::Path;
use tch::{Kind, Tensor};

use super::layers::Linear;
use super::pass::Pass;
use super::resnet::ResNet18;

/// ResNet-18 plus the linear map of the global feature (`extract_feature.{resnet,linear}`).
#[derive(Debug)]
pub struct ExtractFeature {
    pub resnet: ResNet18,
    linear: Linear,
}

/// Multiscale features of a `[B, 3, S, S]` batch (`lower` and `higher` in the pass's precision,
/// `global` in fp32).
pub struct VisualFeatures {
    /// `concat(f1, up2(f2))`: `[B, 192, S/4, S/4]`.
    pub lower: Tensor,
    /// `concat(f3, up2(f4))`: `[B, 768, S/16, S/16]`.
    pub higher: Tensor,
    /// `v_g = Linear(mean over space of f4)`: `[B, d]`.
    pub global: Tensor,
}

impl ExtractFeature {
    pub fn new(vs: Path, embed_dim: i64) -> ExtractFeature {
        ExtractFeature {
            resnet: ResNet18::new(&vs / "resnet"),
            linear: Linear::new(&vs / "linear", 512, embed_dim, true),
        }
    }

    pub fn forward(&self, images: &Tensor, pass: Pass) -> VisualFeatures {
        let stages = self.resnet.forward(images, pass);
        let up2 = |t: &Tensor| {
            let (_, _, h, w) = t.size4().expect("[B, C, H, W]");
            t.upsample_nearest2d([2 * h, 2 * w], 2.0, 2.0)
        };
        let lower = Tensor::cat(&[&stages.f1, &up2(&stages.f2)], 1);
        let higher = Tensor::cat(&[&stages.f3, &up2(&stages.f4)], 1);
        // The spatial mean of a 16-bit f4 is accumulated and returned in fp32.
        let global = self.linear.forward(&stages.f4.mean_dim(&[2i64, 3][..], false, Kind::Float), pass);
        VisualFeatures { lower, higher, global }
    }
}
