//! `text_feature`: skip-thoughts sentence vector mapped to the joint space, `t = relu(W s + b)`.

use tch::nn::Path;
use tch::Tensor;

use super::layers::Linear;
use super::pass::Pass;
use super::seq2vec::{Seq2Vec, SENTENCE_DIM};
use super::training::Training;
use crate::options::Seq2VecOptions;

/// The text encoder (`text_feature.{seq2vec,to_out}`).
#[derive(Debug)]
pub struct TextFeature {
    pub seq2vec: Seq2Vec,
    to_out: Linear,
}

impl TextFeature {
    pub fn new(vs: Path, cfg: &Seq2VecOptions, vocab_size: i64, embed_dim: i64) -> TextFeature {
        TextFeature {
            seq2vec: Seq2Vec::new(&vs / "seq2vec", cfg.kind, vocab_size, cfg.dropout, cfg.fixed_emb),
            to_out: Linear::new(&vs / "to_out", SENTENCE_DIM, embed_dim, true),
        }
    }

    /// ids `[B, L]`, lengths `[B]` → t `[B, d]`.
    pub fn forward(&self, ids: &Tensor, lengths: &Tensor, pass: Pass) -> Training<Tensor> {
        self.seq2vec.forward(ids, lengths, pass).map(|s| self.to_out.forward(&s, pass).relu())
    }
}
