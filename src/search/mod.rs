//! Searching a folder of images by sentence, keywords or both (the paper's VGMF), and
//! captions by image: an index holds every image's code once; a query is encoded once and scored
//! against all of them by the one scorer ([`crate::score`]).

pub mod html;
pub mod index;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::data::loader::pad_captions;
use crate::model::Model;
use crate::score::{cosine_scores, ImageCodes, Precision, Scorer, TextCodes};
use crate::text::Vocabulary;

/// Candidates of the half-precision pass within this much of the k-th score are scored again
/// in single precision; the half-precision error is about 1e-4 (tested).
const RESCORE_MARGIN: f32 = 1e-2;

/// The longest query or caption encoded, in characters: queries and captions are sentences, and
/// the text encoder's time and memory grow with a text's length.
pub const MAX_TEXT_CHARS: usize = 2000;

/// A text query: a sentence, keywords (`a, b`), or both.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub sentence: Option<String>,
    pub keywords: Option<String>,
}

/// A query's word ids: of its sentence, of its keywords.
type QueryWords = (Option<Vec<i64>>, Option<Vec<i64>>);

/// A query's text codes.
pub enum EncodedQuery {
    /// One text (a sentence or keywords), `[1, d]`.
    Single(Tensor),
    /// A sentence and keywords, each `[1, d]`, fused by the model.
    Fused { sentence: Tensor, keywords: Tensor },
}

impl EncodedQuery {
    fn of(sentence: Option<Tensor>, keywords: Option<Tensor>) -> Result<EncodedQuery> {
        match (sentence, keywords) {
            (Some(t), None) | (None, Some(t)) => Ok(EncodedQuery::Single(t)),
            (Some(sentence), Some(keywords)) => Ok(EncodedQuery::Fused { sentence, keywords }),
            (None, None) => bail!("give --query, --keywords or both"),
        }
    }

    fn texts(&self) -> TextCodes<'_> {
        match self {
            EncodedQuery::Single(t) => TextCodes::Single(t),
            EncodedQuery::Fused { sentence, keywords } => TextCodes::Fused { sentence, keywords },
        }
    }
}

/// Scores text queries against the codes of an index.
pub struct Searcher {
    pub model: Model,
    vocab: Vocabulary,
    /// Every image's codes, with the half-precision products of the first pass.
    images: ImageCodes,
}

impl Searcher {
    /// `fv` `[N, d]` and, for a soft-attention model, its gates `[N, d]`.
    pub fn new(model: Model, vocab: Vocabulary, fv: Tensor, gate: Option<Tensor>) -> Searcher {
        let device = model.device();
        let images = ImageCodes::new(fv.to_device(device), gate.map(|g| g.to_device(device))).with_half_precision();
        Searcher { model, vocab, images }
    }

    /// The searcher for a service that encodes a few queries at a time ([`Searcher::encode_all`]):
    /// the text encoder's hidden-side weights packed once for products with a few rows on the
    /// CPU (`Seq2Vec::pack_hidden_weights`), about twice as fast at 4 to 16 texts. Each text's
    /// code stays that of its own encoding to float rounding.
    pub fn with_packed_text_encoder(mut self) -> Result<Searcher> {
        self.model.net.text_feature.seq2vec.pack_hidden_weights()?;
        Ok(self)
    }

    /// Bytes the codes take in memory (linear in the number of images).
    pub fn memory_bytes(&self) -> i64 {
        self.images.memory_bytes()
    }

    /// Number of indexed images.
    pub fn len(&self) -> usize {
        self.images.len() as usize
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    fn scorer(&self) -> Scorer<'_> {
        Scorer::new(&self.model.net)
    }

    /// The word ids of a text, refused past [`MAX_TEXT_CHARS`].
    fn words(&self, text: &str) -> Result<Vec<i64>> {
        let length = text.chars().count();
        if length > MAX_TEXT_CHARS {
            bail!("a text of {length} characters: queries and captions are sentences of at most {MAX_TEXT_CHARS}");
        }
        Ok(self.vocab.encode(text))
    }

    /// The word ids of a query's text; a text without a known word is refused.
    fn query_words(&self, text: &str) -> Result<Vec<i64>> {
        let ids = self.words(text)?;
        if ids.is_empty() {
            bail!("the query `{text}` has no words to search for");
        }
        Ok(ids)
    }

    /// Text codes `[n, d]` of text lines (tokenized like captions).
    pub fn encode_texts(&self, lines: &[&str]) -> Result<Tensor> {
        let ids = lines.iter().map(|l| self.words(l)).collect::<Result<Vec<_>>>()?;
        Ok(self.encode_ids(&ids))
    }

    /// Text codes `[n, d]` of word ids.
    fn encode_ids(&self, ids: &[Vec<i64>]) -> Tensor {
        let rows: Vec<&[i64]> = ids.iter().map(Vec::as_slice).collect();
        let (ids, lengths) = pad_captions(&rows);
        let device = self.model.device();
        tch::no_grad(|| self.model.net.encode_texts(&ids.to_device(device), &lengths.to_device(device)))
    }

    /// The code `[1, d]` of a query's text.
    fn encode_query(&self, text: &str) -> Result<Tensor> {
        Ok(self.encode_ids(&[self.query_words(text)?]))
    }

    /// The text codes of a query: its sentence's or keywords' code `[1, d]`, or both.
    pub fn encode(&self, query: &Query) -> Result<EncodedQuery> {
        let sentence = query.sentence.as_deref().map(|s| self.encode_query(s)).transpose()?;
        let keywords = query.keywords.as_deref().map(|k| self.encode_query(k)).transpose()?;
        EncodedQuery::of(sentence, keywords)
    }

    /// The text codes of several queries, their texts encoded together in one pass of the text
    /// encoder (its cost hardly grows with the batch); each query's own error stays its own.
    pub fn encode_all(&self, queries: &[Query]) -> Vec<Result<EncodedQuery>> {
        let words = |text: &Option<String>| text.as_deref().map(|t| self.query_words(t)).transpose();
        let ids: Vec<Result<QueryWords>> =
            queries.iter().map(|q| Ok((words(&q.sentence)?, words(&q.keywords)?))).collect();
        let texts: Vec<Vec<i64>> = ids.iter().flatten().flat_map(|(s, k)| s.iter().chain(k.iter())).cloned().collect();
        let codes = if texts.is_empty() { None } else { Some(self.encode_ids(&texts)) };
        let mut row = 0i64;
        let mut next = |present: bool| {
            present.then(|| {
                row += 1;
                codes.as_ref().expect("encoded").narrow(0, row - 1, 1)
            })
        };
        ids.into_iter()
            .map(|ids| {
                let (sentence, keywords) = ids?;
                let sentence = next(sentence.is_some());
                EncodedQuery::of(sentence, next(keywords.is_some()))
            })
            .collect()
    }

    /// The score of every indexed image for `query`, `[N]` on the CPU.
    pub fn scores(&self, query: &Query) -> Result<Tensor> {
        Ok(self.encoded_scores(&self.encode(query)?))
    }

    /// The score of every indexed image for encoded texts, `[N]` on the CPU.
    fn encoded_scores(&self, query: &EncodedQuery) -> Tensor {
        let scores = self.scorer().score_matrix(&self.images, &query.texts(), Precision::Exact);
        scores.squeeze_dim(1).to_device(Device::Cpu).to_kind(Kind::Float)
    }

    /// The plain cosine cos(Fv, t) of every indexed image with the query's one text (SLM's
    /// score, no attention), `[N]` on the CPU.
    pub fn plain_scores(&self, query: &Query) -> Result<Tensor> {
        let text = match (&query.sentence, &query.keywords) {
            (Some(text), None) | (None, Some(text)) => text,
            _ => bail!(
                "the plain score takes one text: give --query or --keywords, not both (fusing needs the model's score)"
            ),
        };
        let scores = cosine_scores(&self.images.fv, &self.encode_query(text)?);
        Ok(scores.squeeze_dim(1).to_device(Device::Cpu).to_kind(Kind::Float))
    }

    /// The `k` best images for `query`, best first, with their scores. With soft attention and
    /// a single text, every image is first scored in half precision; the candidates within
    /// `RESCORE_MARGIN` of the k-th are scored again in single precision, so the ranking and
    /// scores equal those of [`Searcher::scores`] at a fraction of the memory traffic.
    pub fn top(&self, query: &Query, k: usize) -> Result<Vec<(usize, f32)>> {
        self.top_visible(query, k, None)
    }

    /// [`Searcher::top`] over the images `visible` marks (`[N]` booleans on the CPU; all when
    /// `None`): the others are left out before the k best are chosen, so the result is exact
    /// over the visible images, and holds fewer than `k` when fewer are visible.
    pub fn top_visible(&self, query: &Query, k: usize, visible: Option<&Tensor>) -> Result<Vec<(usize, f32)>> {
        self.top_encoded(&self.encode(query)?, k, visible)
    }

    /// [`Searcher::top_visible`] for encoded texts.
    pub fn top_encoded(&self, query: &EncodedQuery, k: usize, visible: Option<&Tensor>) -> Result<Vec<(usize, f32)>> {
        let Some(text) = self.rough_text(query) else {
            return Ok(top_k_visible(&self.encoded_scores(query), k, visible));
        };
        let rough = self.scorer().score_matrix(&self.images, &TextCodes::Single(text), Precision::Half);
        self.rescored_top(text, rough.squeeze_dim(1).to_device(Device::Cpu), k, visible)
    }

    /// [`Searcher::top_encoded`] for several queries, each with its `k` and the images it may see:
    /// the half-precision pass of all single-text queries is one product (its cost hardly grows
    /// with the number of queries); each query's shortlist is rescored on its own, so every
    /// result is that of [`Searcher::top_encoded`].
    pub fn top_encoded_all(
        &self,
        queries: &[(&EncodedQuery, usize, Option<&Tensor>)],
    ) -> Vec<Result<Vec<(usize, f32)>>> {
        let texts: Vec<&Tensor> = queries.iter().filter_map(|(query, ..)| self.rough_text(query)).collect();
        let rough = (!texts.is_empty()).then(|| {
            let texts = Tensor::cat(&texts, 0);
            let rough = self.scorer().score_matrix(&self.images, &TextCodes::Single(&texts), Precision::Half);
            rough.to_device(Device::Cpu).tr().contiguous().unbind(0).into_iter()
        });
        let mut rough = rough.into_iter().flatten();
        queries
            .iter()
            .map(|&(query, k, visible)| match self.rough_text(query) {
                Some(text) => self.rescored_top(text, rough.next().expect("a row per single text"), k, visible),
                None => self.top_encoded(query, k, visible),
            })
            .collect()
    }

    /// The one text of a query that a half-precision first pass can rank (a single text under
    /// soft attention).
    fn rough_text<'q>(&self, query: &'q EncodedQuery) -> Option<&'q Tensor> {
        match (query, &self.images.gate) {
            (EncodedQuery::Single(text), Some(_)) => Some(text),
            _ => None,
        }
    }

    /// The `k` best visible images for `text` `[1, d]` from its half-precision scores `rough`
    /// `[N]` (CPU): the candidates within `RESCORE_MARGIN` of the k-th scored again exactly.
    fn rescored_top(
        &self,
        text: &Tensor,
        rough: Tensor,
        k: usize,
        visible: Option<&Tensor>,
    ) -> Result<Vec<(usize, f32)>> {
        let texts = TextCodes::Single(text);
        let rough = hide(rough, visible);
        let best = top_k(&rough, k);
        let floor = best.last().map_or(f32::NEG_INFINITY, |&(_, s)| s - RESCORE_MARGIN);
        let mut shortlisted = rough.ge(floor as f64);
        if let Some(visible) = visible {
            shortlisted = shortlisted.logical_and(visible);
        }
        let candidates = shortlisted.nonzero().view([-1]);
        let shortlist = self.images.rows(&candidates.to_device(self.images.fv.device()));
        let exact = self.scorer().score_matrix(&shortlist, &texts, Precision::Exact).squeeze_dim(1);
        let rows: Vec<i64> = Vec::try_from(&candidates)?;
        Ok(top_k(&exact.to_device(Device::Cpu), k).into_iter().map(|(i, s)| (rows[i] as usize, s)).collect())
    }

    /// The `k` visible images whose Fv is closest in cosine to `fv` `[1, d]` (an image query),
    /// best first.
    pub fn image_top(&self, fv: &Tensor, k: usize, visible: Option<&Tensor>) -> Vec<(usize, f32)> {
        let scores = cosine_scores(&self.images.fv, &fv.to_device(self.images.fv.device()));
        top_k_visible(&scores.squeeze_dim(1).to_device(Device::Cpu).to_kind(Kind::Float), k, visible)
    }

    /// Fv `[1, d]` of the indexed image at `row`.
    pub fn image_fv(&self, row: usize) -> Tensor {
        self.images.fv.get(row as i64).unsqueeze(0)
    }

    /// Replaces the codes (`fv` `[N, d]`, gates `[N, d]` for soft attention) by others of the
    /// same model: images added to or removed from a service's collection.
    pub fn set_codes(&mut self, fv: Tensor, gate: Option<Tensor>) {
        let device = self.model.device();
        self.images = ImageCodes::new(fv.to_device(device), gate.map(|g| g.to_device(device))).with_half_precision();
    }

    /// The codes held: Fv `[N, d]` and the gates `[N, d]` of soft attention.
    pub fn codes(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.images.fv, self.images.gate.as_ref())
    }

    /// Scores of caption lines for one image code `[1, d]`, `[n]` on the CPU.
    pub fn caption_scores(&self, image_code: &Tensor, captions: &[&str]) -> Result<Tensor> {
        let texts = self.encode_texts(captions)?;
        let scorer = self.scorer();
        let image = scorer.image_codes(image_code.to_device(self.model.device()));
        let scores = scorer.score_matrix(&image, &TextCodes::Single(&texts), Precision::Exact);
        Ok(scores.squeeze_dim(0).to_device(Device::Cpu).to_kind(Kind::Float))
    }
}

/// `scores` with the entries `visible` leaves out set to −∞.
fn hide(scores: Tensor, visible: Option<&Tensor>) -> Tensor {
    match visible {
        Some(visible) => scores.masked_fill(&visible.logical_not(), f64::NEG_INFINITY),
        None => scores,
    }
}

/// [`top_k`] over the entries `visible` marks (all when `None`).
fn top_k_visible(scores: &Tensor, k: usize, visible: Option<&Tensor>) -> Vec<(usize, f32)> {
    let shown = visible.map_or(scores.size()[0], |v| v.sum(Kind::Int64).int64_value(&[])) as usize;
    top_k(&hide(scores.shallow_clone(), visible), k.min(shown))
}

/// The `k` best entries of `scores` as (index, score), best first; equal scores keep index
/// order. (Among rescored candidates the order is by score then by index too: candidate rows
/// are in index order.)
pub fn top_k(scores: &Tensor, k: usize) -> Vec<(usize, f32)> {
    let values: Vec<f32> = Vec::try_from(scores.contiguous().view([-1])).expect("float scores");
    let mut order: Vec<usize> = (0..values.len()).collect();
    let before = |&a: &usize, &b: &usize| values[b].total_cmp(&values[a]).then(a.cmp(&b));
    if k < order.len() {
        // A total order: the k first after selection are the k first after a full sort.
        order.select_nth_unstable_by(k, before);
        order.truncate(k);
    }
    order.sort_by(before);
    order.into_iter().map(|i| (i, values[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_index() {
        let s = Tensor::from_slice(&[0.5f32, 0.9, 0.5, 0.1, 0.9]);
        assert_eq!(top_k(&s, 3), [(1, 0.9), (4, 0.9), (0, 0.5)]);
        assert_eq!(top_k(&s, 10).len(), 5);
        assert!(top_k(&s, 0).is_empty());
    }

    /// Selecting the k best equals sorting everything, ties included.
    #[test]
    fn top_k_equals_a_full_sort() {
        tch::manual_seed(4);
        let scores = (Tensor::rand([1000], (Kind::Float, Device::Cpu)) * 50.0).round() / 50.0;
        let values: Vec<f32> = Vec::try_from(&scores).unwrap();
        let mut sorted: Vec<(usize, f32)> = values.iter().copied().enumerate().collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for k in [1, 7, 100, 999, 1000] {
            assert_eq!(top_k(&scores, k), sorted[..k]);
        }
    }
}
