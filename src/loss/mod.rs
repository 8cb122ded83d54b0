//! The triplet ranking loss (docs/ARCHITECTURE.md, Loss) with a fixed margin or the dynamic margin of the paper.

mod prior;

pub use prior::PriorSimilarity;

use tch::{Kind, Tensor};

/// The margin of every (image i, caption j) pair of a batch.
#[derive(Debug)]
pub enum Margin {
    /// `α_ij = margin` for every pair.
    Fixed(f64),
    /// A `[B, B]` matrix of margins (see [`dynamic_margins`]).
    PerPair(Tensor),
}

/// The original's `calcul_loss`: for scores `[B, B]` (images × captions, positives on the
/// diagonal), `cost_c[i,j] = [α_ij + S_ij − S_ii]₊` and `cost_i[i,j] = [α_ij + S_ij − S_jj]₊`,
/// diagonal zeroed, summed; with `max_violation` only the hardest negative of each row (cost_c)
/// and each column (cost_i) counts. Returns a scalar.
pub fn contrastive_loss(scores: &Tensor, margin: &Margin, max_violation: bool) -> Tensor {
    let b = scores.size()[0];
    let diagonal = scores.diag(0).view([b, 1]);
    let shifted = match margin {
        Margin::Fixed(m) => scores + *m,
        Margin::PerPair(m) => scores + m,
    };
    let eye = Tensor::eye(b, (Kind::Bool, scores.device()));
    let cost_captions = (&shifted - &diagonal).clamp_min(0.0).masked_fill(&eye, 0.0);
    let cost_images = (&shifted - diagonal.tr()).clamp_min(0.0).masked_fill(&eye, 0.0);
    if max_violation {
        cost_captions.amax(&[1i64][..], false).sum(Kind::Float) + cost_images.amax(&[0i64][..], false).sum(Kind::Float)
    } else {
        cost_captions.sum(Kind::Float) + cost_images.sum(Kind::Float)
    }
}

/// Dynamic margins (paper eq. 29-30): `α = γ (e^β − e^{β p}) / (e^β − 1)` for prior
/// similarities `p ∈ [0, 1]`; dissimilar pairs get γ, identical ones 0.
pub fn dynamic_margins(prior: &Tensor, gamma: f64, beta: f64) -> Tensor {
    let e = beta.exp();
    ((prior * beta).exp().neg() + e) * (gamma / (e - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(values: &[f32], n: i64) -> Tensor {
        Tensor::from_slice(values).view([n, n])
    }

    #[test]
    fn fixed_margin_by_hand() {
        // Rows are images, columns captions; positives 0.9, 0.5, 0.1 on the diagonal.
        let s = matrix(&[0.9, 0.3, 0.8, 0.2, 0.5, 0.4, 0.6, 0.7, 0.1], 3);
        // cost_c (row i against S_ii, margin 0.2):
        //   row 0: [_, 0, 0.1]    row 1: [0, _, 0.1]    row 2: [0.7, 0.8, _]        sum 1.7
        // cost_i (column j against S_jj):
        //   col 0: [_, 0, 0]      col 1: [0, _, 0.4]    col 2: [0.9, 0.5, _]        sum 1.8
        let loss = contrastive_loss(&s, &Margin::Fixed(0.2), false).double_value(&[]);
        assert!((loss - 3.5).abs() < 1e-6, "{loss}");
        // Hardest negatives: rows 0.1, 0.1, 0.8; columns 0, 0.4, 0.9.
        let hard = contrastive_loss(&s, &Margin::Fixed(0.2), true).double_value(&[]);
        assert!((hard - 2.3).abs() < 1e-6, "{hard}");
    }

    #[test]
    fn per_pair_margins_replace_the_constant() {
        let s = matrix(&[0.9, 0.3, 0.2, 0.5], 2);
        let m = matrix(&[0.0, 0.7, 0.1, 0.0], 2);
        // cost_c: [0, 0.7+0.3-0.9=0.1; 0.1+0.2-0.5=0 → 0, 0]; cost_i: [0, 0.7+0.3-0.5=0.5; 0.1+0.2-0.9 → 0, 0].
        let loss = contrastive_loss(&s, &Margin::PerPair(m), false).double_value(&[]);
        assert!((loss - 0.6).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn dynamic_margin_ends_and_monotony() {
        let p = Tensor::from_slice(&[0.0f32, 0.5, 1.0]);
        let a: Vec<f32> = Vec::try_from(dynamic_margins(&p, 0.6, 5.0)).unwrap();
        assert!((a[0] - 0.6).abs() < 1e-6 && a[2].abs() < 1e-6, "{a:?}");
        let mid = 0.6 * ((5f64).exp() - (2.5f64).exp()) / ((5f64).exp() - 1.0);
        assert!((a[1] as f64 - mid).abs() < 1e-6, "{a:?}");
    }
}
