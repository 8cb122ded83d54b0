//! Searching a folder of images by sentence, keywords or both (SPEC §4 VGMF), and captions by
//! image: an index holds every image's code once; a query is encoded once and scored against
//! all of them (closed form for soft attention, blocks otherwise).

pub mod html;
pub mod index;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::data::loader::pad_captions;
use crate::model::attention::soft_scores;
use crate::model::Model;
use crate::text::Vocabulary;

/// Images per block when a query is scored through the attended tensor.
const BLOCK: i64 = 4096;
/// Candidates of the half-precision pass within this much of the k-th score are scored again
/// in single precision; the half-precision error is about 1e-4 (tested).
const RESCORE_MARGIN: f32 = 1e-2;

/// A text query: a sentence, keywords (`a, b`), or both.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub sentence: Option<String>,
    pub keywords: Option<String>,
}

/// Scores text queries against the codes of an index.
pub struct Searcher {
    pub model: Model,
    vocab: Vocabulary,
    /// Fv of every image `[N, d]`.
    fv: Tensor,
    /// ‖Fv_i‖ `[N]`.
    fv_norm: Tensor,
    /// For soft attention, the gates g = σ(W Fv + b) `[N, d]` stored in the index.
    gate: Option<Tensor>,
    /// Fv ⊙ g and g² in half precision, for the first pass of [`Searcher::top`].
    soft_half: Option<(Tensor, Tensor)>,
}

impl Searcher {
    /// `fv` `[N, d]` and, for a soft-attention model, its gates `[N, d]`.
    pub fn new(model: Model, vocab: Vocabulary, fv: Tensor, gate: Option<Tensor>) -> Searcher {
        let device = model.device();
        let fv = fv.to_device(device);
        let fv_norm = fv.norm_scalaropt_dim(2, [-1], false);
        let gate = gate.map(|g| g.to_device(device));
        let soft_half = gate.as_ref().map(|g| ((&fv * g).to_kind(Kind::Half), g.square().to_kind(Kind::Half)));
        Searcher { model, vocab, fv, fv_norm, gate, soft_half }
    }

    /// Bytes the codes take in memory (linear in the number of images).
    pub fn memory_bytes(&self) -> i64 {
        let bytes = |t: &Tensor| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
        bytes(&self.fv)
            + bytes(&self.fv_norm)
            + self.gate.as_ref().map_or(0, bytes)
            + self.soft_half.as_ref().map_or(0, |(a, b)| bytes(a) + bytes(b))
    }

    /// Exact soft-attention scores `[N]` of the images `rows` (all when `None`) for one text `[d]`.
    fn soft_scores(&self, gate: &Tensor, t: &Tensor, rows: Option<&Tensor>) -> Tensor {
        let pick = |x: &Tensor| rows.map_or_else(|| x.shallow_clone(), |r| x.index_select(0, r));
        soft_scores(&pick(&self.fv), &pick(gate), &pick(&self.fv_norm), &t.unsqueeze(0)).squeeze_dim(1)
    }

    /// Number of indexed images.
    pub fn len(&self) -> usize {
        self.fv.size()[0] as usize
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Text codes `[n, d]` of text lines (tokenized like captions).
    pub fn encode_texts(&self, lines: &[&str]) -> Tensor {
        let ids: Vec<Vec<i64>> = lines.iter().map(|l| self.vocab.encode(l)).collect();
        let rows: Vec<&[i64]> = ids.iter().map(Vec::as_slice).collect();
        let (ids, lengths) = pad_captions(&rows);
        let device = self.model.device();
        tch::no_grad(|| self.model.net.encode_texts(&ids.to_device(device), &lengths.to_device(device), false))
    }

    /// The score of every indexed image for `query`, `[N]` on the CPU.
    pub fn scores(&self, query: &Query) -> Result<Tensor> {
        let sentence = query.sentence.as_deref().map(|s| self.encode_texts(&[s]));
        let keywords = query.keywords.as_deref().map(|k| self.encode_texts(&[k]));
        let attention = &self.model.net.cross_attention_s;
        let scores = tch::no_grad(|| match (&sentence, &keywords, &self.gate) {
            (Some(t), None, Some(gate)) | (None, Some(t), Some(gate)) => {
                Ok(self.soft_scores(gate, &t.squeeze_dim(0), None))
            }
            (Some(t), None, None) | (None, Some(t), None) => {
                let blocks: Vec<Tensor> =
                    self.fv.split(BLOCK, 0).iter().map(|v| attention.scores(v, t).squeeze_dim(1)).collect();
                Ok(Tensor::cat(&blocks, 0))
            }
            (Some(s), Some(k), _) => {
                let blocks: Vec<Tensor> = self
                    .fv
                    .split(BLOCK, 0)
                    .iter()
                    .map(|v| self.model.net.mode_scores(v, s, k).fused.squeeze_dim(1))
                    .collect();
                Ok(Tensor::cat(&blocks, 0))
            }
            (None, None, _) => bail!("give --query, --keywords or both"),
        })?;
        Ok(scores.to_device(Device::Cpu).to_kind(Kind::Float))
    }

    /// The `k` best images for `query`, best first, with their scores. With soft attention and
    /// a single text, every image is first scored in half precision; the candidates within
    /// `RESCORE_MARGIN` of the k-th are scored again in single precision, so the ranking and
    /// scores equal those of [`Searcher::scores`] at a fraction of the memory traffic.
    pub fn top(&self, query: &Query, k: usize) -> Result<Vec<(usize, f32)>> {
        let single = match (&query.sentence, &query.keywords) {
            (Some(s), None) | (None, Some(s)) => Some(s.as_str()),
            _ => None,
        };
        let (Some(text), Some(gate), Some((fvg_half, g2_half))) = (single, &self.gate, &self.soft_half) else {
            return Ok(top_k(&self.scores(query)?, k));
        };
        let t = self.encode_texts(&[text]).squeeze_dim(0);
        let candidates = tch::no_grad(|| {
            let dot = fvg_half.mv(&t.to_kind(Kind::Half)).to_kind(Kind::Float);
            let norm = g2_half.mv(&t.square().to_kind(Kind::Half)).to_kind(Kind::Float).sqrt();
            let rough = (dot / (&self.fv_norm * norm).clamp_min(1e-8)).to_device(Device::Cpu);
            let best = top_k(&rough, k);
            let floor = best.last().map_or(f32::NEG_INFINITY, |&(_, s)| s - RESCORE_MARGIN);
            rough.ge(floor as f64).nonzero().view([-1])
        });
        let index = candidates.to_device(self.fv.device());
        let exact = tch::no_grad(|| self.soft_scores(gate, &t, Some(&index)).to_device(Device::Cpu));
        let rows: Vec<i64> = Vec::try_from(&candidates)?;
        Ok(top_k(&exact, k).into_iter().map(|(i, s)| (rows[i] as usize, s)).collect())
    }

    /// Scores of caption lines for one image code `[1, d]`, `[n]` on the CPU.
    pub fn caption_scores(&self, image_code: &Tensor, captions: &[&str]) -> Tensor {
        let texts = self.encode_texts(captions);
        let scores =
            self.model.net.cross_attention_s.score_matrix(&image_code.to_device(self.model.device()), &texts, 1);
        scores.squeeze_dim(0).to_device(Device::Cpu).to_kind(Kind::Float)
    }
}

/// The `k` best entries of `scores` as (index, score), best first; equal scores keep index
/// order. (Among rescored candidates the order is by score then by index too: candidate rows
/// are in index order.)
pub fn top_k(scores: &Tensor, k: usize) -> Vec<(usize, f32)> {
    let values: Vec<f32> = Vec::try_from(scores.contiguous().view([-1])).expect("float scores");
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| (i, values[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_index() {
        let s = Tensor::from_slice(&[0.5f32, 0.9, 0.5, 0.1, 0.9]);
        assert_eq!(top_k(&s, 3), [(1, 0.9), (4, 0.9), (0, 0.5)]);
        assert_eq!(top_k(&s, 10).len(), 5);
    }
}
