//! `mvsa`: the multiscale visual self-attention module (the paper's MVSA as the
//! authors' code computes it; docs/ARCHITECTURE.md, Model).

use tch::nn::Path;
use tch::Tensor;

use super::layers::{Conv2d, ConvConfig, Linear};
use super::pass::Pass;
use crate::options::MultiscaleOptions;

/// Fuses lower and higher features into a gate on the global feature: `Fv = v_g ⊙ mask`.
#[derive(Debug)]
pub struct Mvsa {
    lf_conv: Conv2d,
    hf_conv: Conv2d,
    conv1x1_1: Conv2d,
    conv1x1_2: Conv2d,
    solo_attention: Linear,
}

impl Mvsa {
    /// `image_size` fixes the 16x16 grid of the code version (S/16 per side).
    pub fn new(vs: Path, cfg: &MultiscaleOptions, embed_dim: i64, image_size: i64) -> Mvsa {
        let (c, o) = (cfg.multiscale_input_channel, cfg.multiscale_output_channel);
        let side = image_size / 16;
        let conv = |name: &str, i, out, k, stride| {
            Conv2d::new(&vs / name, i, out, k, ConvConfig { stride, ..ConvConfig::default() })
        };
        Mvsa {
            lf_conv: conv("LF_conv", 192, c, 3, 4),
            hf_conv: conv("HF_conv", 768, c, 1, 1),
            conv1x1_1: conv("conv1x1_1", 2 * c, o, 1, 1),
            conv1x1_2: conv("conv1x1_2", 2 * c, o, 1, 1),
            solo_attention: Linear::new(&vs / "solo_attention", o * side * side, embed_dim, true),
        }
    }

    /// lower `[B, 192, S/4, S/4]`, higher `[B, 768, S/16, S/16]`, global `[B, d]` → Fv `[B, d]`.
    pub fn forward(&self, lower: &Tensor, higher: &Tensor, global: &Tensor, pass: Pass) -> Tensor {
        self.forward_with_maps(lower, higher, global, pass).fv
    }

    /// [`Mvsa::forward`] with its spatial maps: the gate `A = σ(conv1x1_2(J))` and the
    /// attended `main ⊙ A`, each `[B, o, S/16, S/16]` (docs/LOCALISATION.md, Saliency).
    pub fn forward_with_maps(&self, lower: &Tensor, higher: &Tensor, global: &Tensor, pass: Pass) -> MvsaMaps {
        let l = self.lf_conv.forward(lower, pass);
        let h = self.hf_conv.forward(higher, pass);
        let joint = Tensor::cat(&[&l, &h], 1) + h.mean_dim(&[1i64][..], true, None);
        let main = self.conv1x1_1.forward(&joint, pass);
        let gate = self.conv1x1_2.forward(&joint, pass).sigmoid();
        let attended = main * &gate;
        let fv = global * self.solo_attention.forward(&attended.flatten(1, -1), pass).sigmoid();
        MvsaMaps { fv, gate, attended }
    }
}

/// MVSA's output with its spatial maps.
#[derive(Debug)]
pub struct MvsaMaps {
    /// Fv `[B, d]`.
    pub fv: Tensor,
    /// The spatial gate A in (0, 1), `[B, o, S/16, S/16]`.
    pub gate: Tensor,
    /// `main ⊙ A` (signed), `[B, o, S/16, S/16]`.
    pub attended: Tensor,
}
