//! `cross_attention_s`: the paper's visual-guided attention (VGA) and the cosine score
//! `s_ij = cos(Fv_i, T_ij)` (docs/ARCHITECTURE.md, Model). Score matrices of whole sets are made by
//! [`crate::score`].

use tch::nn::Path;
use tch::Tensor;

use super::layers::Linear;
use super::pass::Pass;
use crate::options::AttentionType;

/// The one epsilon of the scores: `eps` of the original's cosine similarity, and what its
/// `l2norm` adds to a norm.
pub const EPSILON: f64 = 1e-8;

/// `cos(Fv_i, T_ij)` for images `[Bv, d]` and attended texts `[Bv, Bt, d]` → `[Bv, Bt]`, with
/// the original's `w12 / max(‖x1‖ ‖x2‖, 1e-8)`.
pub fn cosine(visual: &Tensor, attended: &Tensor) -> Tensor {
    let dot = (visual.unsqueeze(1) * attended).sum_dim_intlist(-1, false, None);
    let visual_norm = visual.norm_scalaropt_dim(2, [-1], true);
    let attended_norm = attended.norm_scalaropt_dim(2, [-1], false);
    dot / (visual_norm * attended_norm).clamp_min(EPSILON)
}

/// Soft-attention scores in closed form: images `[Nv, d]` with their gates g `[Nv, d]` and norms
/// ‖Fv‖ `[Nv]`, texts `[Nt, d]` → `[Nv, Nt]`; `s_ij = Σ_k Fv_ik g_ik t_jk / (‖Fv_i‖ ‖g_i ⊙ t_j‖)`
/// with `‖g_i ⊙ t_j‖² = Σ_k g_ik² t_jk²`: two matrix products.
pub fn soft_scores(visual: &Tensor, gate: &Tensor, visual_norm: &Tensor, text: &Tensor) -> Tensor {
    let dot = (visual * gate).matmul(&text.tr());
    let attended_norm = gate.square().matmul(&text.square().tr()).sqrt();
    dot / (visual_norm.unsqueeze(1) * attended_norm).clamp_min(EPSILON)
}

/// The three VGA variants: how text `t_j` is re-weighted under the guidance of image `Fv_i`.
#[derive(Debug)]
pub enum CrossAttention {
    /// `T_ij = σ(W Fv_i + b) ⊙ t_j` (`cross_attention.0`).
    Soft { gate: Linear },
    /// `u = [Fv_i ; t_j]`, `T_ij = σ(W₁ u + b₁) ⊙ (W₂ u + b₂)` (`cross_attention_fc{1,2}.0`).
    Fusion { fc1: Linear, fc2: Linear },
    /// `a = W_v Fv_i + b_v`, `b = W_t t_j + b_t`, `T_ij = σ(a ⊙ b) ⊙ b` (`fc_{visual,text}.0`).
    Similarity { fc_visual: Linear, fc_text: Linear },
}

impl CrossAttention {
    pub fn new(vs: Path, att_type: AttentionType, dim: i64) -> CrossAttention {
        let lin = |name: &str, input| Linear::new(&vs / name / "0", input, dim, true);
        match att_type {
            AttentionType::Soft => CrossAttention::Soft { gate: lin("cross_attention", dim) },
            AttentionType::Fusion => CrossAttention::Fusion {
                fc1: lin("cross_attention_fc1", 2 * dim),
                fc2: lin("cross_attention_fc2", 2 * dim),
            },
            AttentionType::Similarity => {
                CrossAttention::Similarity { fc_visual: lin("fc_visual", dim), fc_text: lin("fc_text", dim) }
            }
        }
    }

    /// True for soft attention, whose scores have a closed form.
    pub fn is_soft(&self) -> bool {
        matches!(self, CrossAttention::Soft { .. })
    }

    /// For soft attention, the gates `g = σ(W Fv + b)` `[B, d]` of images `[B, d]` (evaluation).
    pub fn soft_gate(&self, visual: &Tensor) -> Option<Tensor> {
        match self {
            CrossAttention::Soft { gate } => Some(gate.forward(visual, Pass::EVAL).sigmoid()),
            _ => None,
        }
    }

    /// The attended text `T` `[Bv, Bt, d]` for images `[Bv, d]` and texts `[Bt, d]`.
    pub fn attended(&self, visual: &Tensor, text: &Tensor, pass: Pass) -> Tensor {
        let (bv, bt) = (visual.size()[0], text.size()[0]);
        match self {
            CrossAttention::Soft { gate } => gate.forward(visual, pass).sigmoid().unsqueeze(1) * text.unsqueeze(0),
            CrossAttention::Fusion { fc1, fc2 } => {
                let d = visual.size()[1];
                let u = Tensor::cat(
                    &[visual.unsqueeze(1).expand([bv, bt, d], false), text.unsqueeze(0).expand([bv, bt, d], false)],
                    -1,
                );
                fc1.forward(&u, pass).sigmoid() * fc2.forward(&u, pass)
            }
            CrossAttention::Similarity { fc_visual, fc_text } => {
                let a = fc_visual.forward(visual, pass).unsqueeze(1);
                let b = fc_text.forward(text, pass).unsqueeze(0);
                (&a * &b).sigmoid() * b
            }
        }
    }

    /// Scores `s_ij = cos(Fv_i, T_ij)` `[Bv, Bt]`, computed through the full `[Bv, Bt, d]`
    /// attended tensor exactly as the original (used in training, where gradients flow).
    pub fn scores(&self, visual: &Tensor, text: &Tensor, pass: Pass) -> Tensor {
        cosine(visual, &self.attended(visual, text, pass))
    }
}
