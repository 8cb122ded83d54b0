//! `vgmf_gate`: visual-guided multi-source fusion of sentence and keyword features (the paper's VGMF;
//! docs/ARCHITECTURE.md, Model).

use tch::nn::Path;
use tch::Tensor;

use super::attention::EPSILON;
use super::layers::Linear;
use super::pass::Pass;

/// `w = σ(W [ŝ ; k̂] + b)`, `F_t = w ⊙ ŝ + (1 − w) ⊙ k̂` with L2-normalised inputs.
#[derive(Debug)]
pub struct VgmfGate {
    gate: Linear,
}

impl VgmfGate {
    pub fn new(vs: Path, dim: i64) -> VgmfGate {
        VgmfGate { gate: Linear::new(&vs / "gate", 2 * dim, dim, true) }
    }

    /// Sentence and keyword features `[..., d]` → fused `[..., d]`.
    pub fn forward(&self, sentence: &Tensor, keywords: &Tensor, pass: Pass) -> Tensor {
        let s = l2norm(sentence);
        let k = l2norm(keywords);
        let w = self.gate.forward(&Tensor::cat(&[&s, &k], -1), pass).sigmoid();
        &w * s + (1.0 - w) * k
    }
}

/// `x / (‖x‖ + EPSILON)` along the last dimension (the original's `l2norm`).
pub fn l2norm(x: &Tensor) -> Tensor {
    x / (x.square().sum_dim_intlist(-1, true, None).sqrt() + EPSILON)
}
