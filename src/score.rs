//! The one scorer: the `[N_img, N_txt]` matrix of `s_ij = cos(Fv_i, T_ij)` (docs/ARCHITECTURE.md, Model) for
//! any attention type and retrieval mode, with bounded memory. Validation, `test`, `index` and
//! `retrieve` all score through [`Scorer::score_matrix`].
//!
//! Soft attention has a closed form (two matrix products over the stored gates, see
//! [`soft_scores`]); the other attention types and the fused mode go through the attended
//! tensor in blocks of images. Search may ask for a half-precision first pass of the closed form.

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::model::attention::{soft_scores, EPSILON};
use crate::model::{Amfmn, Pass};

/// Values the attended tensors of one block may hold together (blocks of images are sized so
/// that `3 × block × N_txt × d` stays near this; 64 MB of float32).
const BLOCK_VALUES: i64 = 16 * 1024 * 1024;

/// How a text query is formed: its sentence, its image's keywords, or both fused (VGMF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The caption's sentence.
    Sentence,
    /// The keywords of the caption's image.
    Keywords,
    /// Sentence and keywords fused by VGMF.
    Fused,
}

impl Mode {
    /// The mode's name in tables, JSON and file names.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sentence => "sentence",
            Mode::Keywords => "keywords",
            Mode::Fused => "fused",
        }
    }
}

/// Text codes to score in one mode: t `[N_txt, d]` of sentences or of keywords, or both.
#[derive(Debug, Clone, Copy)]
pub enum TextCodes<'a> {
    /// One code per text, scored through the attention alone.
    Single(&'a Tensor),
    /// Sentence and keyword codes of the same texts, fused by VGMF.
    Fused {
        /// t of the sentences `[N_txt, d]`.
        sentence: &'a Tensor,
        /// t of their keywords `[N_txt, d]`.
        keywords: &'a Tensor,
    },
}

impl<'a> TextCodes<'a> {
    /// The codes of `mode` from sentence codes and, for the keyword modes, keyword codes.
    pub fn of_mode(mode: Mode, sentence: &'a Tensor, keywords: Option<&'a Tensor>) -> Result<TextCodes<'a>> {
        let keywords = || keywords.context("keyword codes are needed for this mode but none were encoded");
        Ok(match mode {
            Mode::Sentence => TextCodes::Single(sentence),
            Mode::Keywords => TextCodes::Single(keywords()?),
            Mode::Fused => TextCodes::Fused { sentence, keywords: keywords()? },
        })
    }

    fn len(&self) -> i64 {
        match self {
            TextCodes::Single(t) | TextCodes::Fused { sentence: t, .. } => t.size()[0],
        }
    }
}

/// How exactly the closed form is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Single precision, as the model computes.
    Exact,
    /// The closed form's products in half precision (about 1e-4 off; search's first pass).
    /// Other attention types and the fused mode are always exact.
    Half,
}

/// Image codes ready to score: Fv `[N, d]`, ‖Fv‖ `[N]`, for soft attention the gates
/// g = σ(W Fv + b) `[N, d]`, and, once prepared, Fv ⊙ g and g² in half precision.
pub struct ImageCodes {
    /// Fv `[N, d]`.
    pub fv: Tensor,
    norm: Tensor,
    /// g `[N, d]`, for soft attention.
    pub gate: Option<Tensor>,
    half: Option<(Tensor, Tensor)>,
}

impl ImageCodes {
    /// Codes of Fv `[N, d]` with the gates stored beside them (an index), or none.
    pub fn new(fv: Tensor, gate: Option<Tensor>) -> ImageCodes {
        let norm = fv.norm_scalaropt_dim(2, [-1], false);
        ImageCodes { fv, norm, gate, half: None }
    }

    /// Number of images.
    pub fn len(&self) -> i64 {
        self.fv.size()[0]
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps Fv ⊙ g and g² in half precision for [`Precision::Half`] (soft attention only).
    pub fn with_half_precision(mut self) -> ImageCodes {
        self.half = self.gate.as_ref().map(|g| ((&self.fv * g).to_kind(Kind::Half), g.square().to_kind(Kind::Half)));
        self
    }

    /// The codes of the images `rows` (indices on the codes' device).
    pub fn rows(&self, rows: &Tensor) -> ImageCodes {
        let pick = |t: &Tensor| t.index_select(0, rows);
        ImageCodes { fv: pick(&self.fv), norm: pick(&self.norm), gate: self.gate.as_ref().map(pick), half: None }
    }

    /// Bytes the codes take in memory.
    pub fn memory_bytes(&self) -> i64 {
        let bytes = |t: &Tensor| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
        bytes(&self.fv)
            + bytes(&self.norm)
            + self.gate.as_ref().map_or(0, bytes)
            + self.half.as_ref().map_or(0, |(a, b)| bytes(a) + bytes(b))
    }
}

/// Scores images against texts with a trained network's attention and fusion.
pub struct Scorer<'a> {
    net: &'a Amfmn,
    block_values: i64,
}

impl<'a> Scorer<'a> {
    /// The scorer of `net`'s attention (`cross_attention_s`) and fusion (`vgmf_gate`).
    pub fn new(net: &'a Amfmn) -> Scorer<'a> {
        Scorer { net, block_values: BLOCK_VALUES }
    }

    /// The same scorer with blocks sized for `values` (tests use tiny blocks).
    pub fn with_block_values(self, values: i64) -> Scorer<'a> {
        Scorer { block_values: values.max(1), ..self }
    }

    /// Image codes of Fv `[N, d]`, with their gates when the attention is soft.
    pub fn image_codes(&self, fv: Tensor) -> ImageCodes {
        let gate = self.net.cross_attention_s.soft_gate(&fv);
        ImageCodes::new(fv, gate)
    }

    /// The `[N_img, N_txt]` scores of every image against every text, without gradients, on
    /// the codes' device.
    pub fn score_matrix(&self, images: &ImageCodes, texts: &TextCodes, precision: Precision) -> Tensor {
        tch::no_grad(|| match (texts, &images.gate) {
            (TextCodes::Single(t), Some(gate)) => match (precision, &images.half) {
                (Precision::Half, Some((fv_gate, gate_squared))) => {
                    half_soft_scores(fv_gate, gate_squared, &images.norm, t)
                }
                (Precision::Half, None) => half_soft_scores(&(&images.fv * gate), &gate.square(), &images.norm, t),
                (Precision::Exact, _) => soft_scores(&images.fv, gate, &images.norm, t),
            },
            _ => self.blocked(images, texts),
        })
    }

    /// Scores through the attended tensor `[block, N_txt, d]`, a block of images at a time.
    fn blocked(&self, images: &ImageCodes, texts: &TextCodes) -> Tensor {
        let d = images.fv.size()[1];
        let block = (self.block_values / (3 * texts.len() * d).max(1)).max(1);
        let attention = &self.net.cross_attention_s;
        let blocks: Vec<Tensor> = images
            .fv
            .split(block, 0)
            .iter()
            .map(|v| match texts {
                TextCodes::Single(t) => attention.scores(v, t, Pass::EVAL),
                TextCodes::Fused { sentence, keywords } => {
                    self.net.mode_scores(v, sentence, keywords, Pass::EVAL).fused
                }
            })
            .collect();
        Tensor::cat(&blocks, 0)
    }
}

/// The plain cosine of every image code with every text code, without attention (SLM's
/// score): Fv `[N, d]`, texts `[M, d]` → `[N, M]`; the soft closed form with a gate of ones.
pub fn cosine_scores(fv: &Tensor, texts: &Tensor) -> Tensor {
    tch::no_grad(|| soft_scores(fv, &fv.ones_like(), &fv.norm_scalaropt_dim(2, [1], false), texts))
}

/// The soft closed form with its two products in half precision: `Fv ⊙ g` and `g²` `[N, d]`
/// (half), ‖Fv‖ `[N]`, texts `[N_txt, d]` → `[N, N_txt]` in single precision.
fn half_soft_scores(fv_gate: &Tensor, gate_squared: &Tensor, norm: &Tensor, text: &Tensor) -> Tensor {
    let fv_gate = fv_gate.to_kind(Kind::Half);
    let dot = fv_gate.matmul(&text.to_kind(Kind::Half).tr()).to_kind(Kind::Float);
    let gate_squared = gate_squared.to_kind(Kind::Half);
    let attended_norm = gate_squared.matmul(&text.square().to_kind(Kind::Half).tr()).to_kind(Kind::Float).sqrt();
    dot / (norm.unsqueeze(1) * attended_norm).clamp_min(EPSILON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::AttentionType;
    use tch::{Device, Kind};

    /// A small network with attention `att` (embed_dim 16).
    fn network(att: AttentionType) -> crate::model::Model {
        let name = serde_json::to_value(att).unwrap();
        let att_type = format!("model.cross_attention.att_type={}", name.as_str().unwrap());
        let sets = ["dataset.image_size=32", "model.embed.embed_dim=16", att_type.as_str()];
        crate::model::demo_model(&sets, 10, Device::Cpu, 3)
    }

    #[test]
    fn plain_cosine_scores_by_hand() {
        let fv = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.0, -1.0, 1.0]).view([3, 2]);
        let texts = Tensor::from_slice(&[1.0f32, 0.0, 2.0, 2.0]).view([2, 2]);
        let scores: Vec<f32> = Vec::try_from(cosine_scores(&fv, &texts).view([-1])).unwrap();
        let half = std::f32::consts::FRAC_1_SQRT_2;
        let expected = [0.6, 7.0 / 5.0 * half, 0.0, 0.0, -half, 0.0];
        for (got, want) in scores.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{scores:?}");
        }
    }

    #[test]
    fn closed_form_and_blocked_scores_equal_the_pairwise_ones() {
        tch::manual_seed(4);
        let visual = Tensor::randn([7, 16], (Kind::Float, Device::Cpu));
        // Non-negative like relu outputs, with one all-zero text vector.
        let text = Tensor::randn([9, 16], (Kind::Float, Device::Cpu)).relu();
        let _ = text.get(3).zero_();
        for att in [AttentionType::Soft, AttentionType::Fusion, AttentionType::Similarity] {
            let model = network(att);
            let attention = &model.net.cross_attention_s;
            let pairwise = tch::no_grad(|| attention.scores(&visual, &text, Pass::EVAL));
            for block in [1, 3, 100] {
                let scorer = Scorer::new(&model.net).with_block_values(block * 3 * 9 * 16);
                let codes = scorer.image_codes(visual.shallow_clone());
                let fast = scorer.score_matrix(&codes, &TextCodes::Single(&text), Precision::Exact);
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

    #[test]
    fn fused_blocks_and_half_precision_match_the_network() {
        tch::manual_seed(5);
        let model = network(AttentionType::Soft);
        let visual = Tensor::randn([6, 16], (Kind::Float, Device::Cpu));
        let sentence = Tensor::randn([4, 16], (Kind::Float, Device::Cpu)).relu();
        let keywords = Tensor::randn([4, 16], (Kind::Float, Device::Cpu)).relu();
        let direct = tch::no_grad(|| model.net.mode_scores(&visual, &sentence, &keywords, Pass::EVAL).fused);
        let scorer = Scorer::new(&model.net).with_block_values(2 * 3 * 4 * 16);
        let codes = scorer.image_codes(visual.shallow_clone());
        let fused = TextCodes::Fused { sentence: &sentence, keywords: &keywords };
        let diff = (scorer.score_matrix(&codes, &fused, Precision::Exact) - &direct).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "fused in blocks of 2 images: {diff}");
        let exact = scorer.score_matrix(&codes, &TextCodes::Single(&sentence), Precision::Exact);
        let prepared = scorer.image_codes(visual.shallow_clone()).with_half_precision();
        for images in [&codes, &prepared] {
            let half = scorer.score_matrix(images, &TextCodes::Single(&sentence), Precision::Half);
            assert_eq!(half.kind(), Kind::Float);
            let diff = (half - &exact).abs().max().double_value(&[]);
            assert!(diff > 0.0 && diff < 5e-3, "half precision is close, not equal: {diff}");
        }
    }
}
