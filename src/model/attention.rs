//! `cross_attention_s`: visual-guided attention (VGA) and the cosine score of SPEC §4.

use tch::nn::Path;
use tch::Tensor;

use super::layers::Linear;
use crate::options::AttentionType;

/// `eps` of the original's cosine similarity.
const COSINE_EPS: f64 = 1e-8;

/// `cos(Fv_i, T_ij)` for images `[Bv, d]` and attended texts `[Bv, Bt, d]` → `[Bv, Bt]`, with
/// the original's `w12 / max(‖x1‖ ‖x2‖, 1e-8)`.
pub fn cosine(visual: &Tensor, attended: &Tensor) -> Tensor {
    let dot = (visual.unsqueeze(1) * attended).sum_dim_intlist(-1, false, None);
    let visual_norm = visual.norm_scalaropt_dim(2, [-1], true);
    let attended_norm = attended.norm_scalaropt_dim(2, [-1], false);
    dot / (visual_norm * attended_norm).clamp_min(COSINE_EPS)
}

/// Soft-attention scores in closed form: images `[Nv, d]` with their gates g `[Nv, d]` and norms
/// ‖Fv‖ `[Nv]`, texts `[Nt, d]` → `[Nv, Nt]`; `s_ij = Σ_k Fv_ik g_ik t_jk / (‖Fv_i‖ ‖g_i ⊙ t_j‖)`
/// with `‖g_i ⊙ t_j‖² = Σ_k g_ik² t_jk²`: two matrix products.
pub fn soft_scores(visual: &Tensor, gate: &Tensor, visual_norm: &Tensor, text: &Tensor) -> Tensor {
    let dot = (visual * gate).matmul(&text.tr());
    let attended_norm = gate.square().matmul(&text.square().tr()).sqrt();
    dot / (visual_norm.unsqueeze(1) * attended_norm).clamp_min(COSINE_EPS)
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

    /// For soft attention, the gates `g = σ(W Fv + b)` `[B, d]` of images `[B, d]`.
    pub fn soft_gate(&self, visual: &Tensor) -> Option<Tensor> {
        match self {
            CrossAttention::Soft { gate } => Some(gate.forward(visual).sigmoid()),
            _ => None,
        }
    }

    /// The attended text `T` `[Bv, Bt, d]` for images `[Bv, d]` and texts `[Bt, d]`.
    pub fn attended(&self, visual: &Tensor, text: &Tensor) -> Tensor {
        let (bv, bt) = (visual.size()[0], text.size()[0]);
        match self {
            CrossAttention::Soft { gate } => gate.forward(visual).sigmoid().unsqueeze(1) * text.unsqueeze(0),
            CrossAttention::Fusion { fc1, fc2 } => {
                let d = visual.size()[1];
                let u = Tensor::cat(
                    &[visual.unsqueeze(1).expand([bv, bt, d], false), text.unsqueeze(0).expand([bv, bt, d], false)],
                    -1,
                );
                fc1.forward(&u).sigmoid() * fc2.forward(&u)
            }
            CrossAttention::Similarity { fc_visual, fc_text } => {
                let a = fc_visual.forward(visual).unsqueeze(1);
                let b = fc_text.forward(text).unsqueeze(0);
                (&a * &b).sigmoid() * b
            }
        }
    }

    /// Scores `s_ij = cos(Fv_i, T_ij)` `[Bv, Bt]`, computed through the full `[Bv, Bt, d]`
    /// attended tensor exactly as the original (used in training, where gradients flow).
    pub fn scores(&self, visual: &Tensor, text: &Tensor) -> Tensor {
        cosine(visual, &self.attended(visual, text))
    }

    /// The same scores for evaluation, with bounded memory: soft attention in closed form
    /// (`s_ij = Σ_k Fv_ik g_ik t_jk / (‖Fv_i‖ ‖g_i ⊙ t_j‖)`, `‖g_i ⊙ t_j‖² = Σ_k g_ik² t_jk²`:
    /// two matrix products), the others in blocks of `block` images.
    pub fn score_matrix(&self, visual: &Tensor, text: &Tensor, block: i64) -> Tensor {
        tch::no_grad(|| match self {
            CrossAttention::Soft { gate } => {
                let visual_norm = visual.norm_scalaropt_dim(2, [-1], false);
                soft_scores(visual, &gate.forward(visual).sigmoid(), &visual_norm, text)
            }
            _ => {
                let blocks: Vec<Tensor> = visual.split(block.max(1), 0).iter().map(|v| self.scores(v, text)).collect();
                Tensor::cat(&blocks, 0)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    #[test]
    fn closed_form_and_blocked_scores_equal_the_pairwise_ones() {
        tch::manual_seed(4);
        let visual = Tensor::randn([7, 16], (Kind::Float, Device::Cpu));
        // Non-negative like relu outputs, with one all-zero text vector.
        let text = Tensor::randn([9, 16], (Kind::Float, Device::Cpu)).relu();
        let _ = text.get(3).zero_();
        for att in [AttentionType::Soft, AttentionType::Fusion, AttentionType::Similarity] {
            let vs = VarStore::new(Device::Cpu);
            let attention = CrossAttention::new(vs.root(), att, 16);
            let pairwise = tch::no_grad(|| attention.scores(&visual, &text));
            for block in [1, 3, 100] {
                let fast = attention.score_matrix(&visual, &text, block);
                assert_eq!(fast.size(), [7, 9]);
                let diff = (&fast - &pairwise).abs().max().double_value(&[]);
                assert!(diff < 1e-6, "{att:?} block {block}: {diff}");
            }
            if att == AttentionType::Soft {
                let zero_column = pairwise.select(1, 3).abs().max().double_value(&[]);
                assert_eq!(zero_column, 0.0, "an all-zero text scores 0 (eps, no NaN)");
            }
        }
    }
}
