//! The prior similarity `p_ij` of the dynamic margin (docs/ARCHITECTURE.md, Loss): how much caption j already
//! describes image i, from its five captions, before any training.

use std::collections::HashMap;

use tch::Tensor;

use crate::data::CaptionSet;
use crate::text::bleu::sentence_bleu;
use crate::text::caption_tokens;
use crate::text::porter::stem;
use crate::text::stopwords::is_stop_word;

/// Stemmed, stop-word-free token ids of every caption of a caption set.
#[derive(Debug, Clone)]
pub struct PriorSimilarity {
    captions: Vec<Vec<u32>>,
    captions_per_image: usize,
}

impl PriorSimilarity {
    /// Tokenizes every caption (docs/ARCHITECTURE.md, Text), drops stop words, stems (Porter, NLTK's rules).
    pub fn new(set: &CaptionSet) -> PriorSimilarity {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let captions = set
            .texts
            .iter()
            .map(|text| {
                caption_tokens(text)
                    .into_iter()
                    .filter(|t| !is_stop_word(t))
                    .map(|t| {
                        let next = ids.len() as u32;
                        *ids.entry(stem(&t)).or_insert(next)
                    })
                    .collect()
            })
            .collect();
        PriorSimilarity { captions, captions_per_image: set.captions_per_image }
    }

    /// `p = (BLEU-4(caption; references) + overlap) / 2` where the references are the captions
    /// of `image`, BLEU is 1 when the caption equals a reference, and overlap is the mean over
    /// references of |set(ref) ∩ set(caption)| / |set(ref)|.
    pub fn prior(&self, image: usize, caption: usize) -> f64 {
        let per = self.captions_per_image;
        let refs: Vec<&[u32]> = self.captions[image * per..(image + 1) * per].iter().map(Vec::as_slice).collect();
        let hyp = self.captions[caption].as_slice();
        let bleu = if refs.contains(&hyp) { 1.0 } else { sentence_bleu(&refs, hyp) };
        let mut hyp_set: Vec<u32> = hyp.to_vec();
        hyp_set.sort_unstable();
        hyp_set.dedup();
        let overlap = refs
            .iter()
            .map(|r| {
                let mut ref_set = r.to_vec();
                ref_set.sort_unstable();
                ref_set.dedup();
                if ref_set.is_empty() {
                    0.0
                } else {
                    ref_set.iter().filter(|t| hyp_set.binary_search(t).is_ok()).count() as f64 / ref_set.len() as f64
                }
            })
            .sum::<f64>()
            / refs.len() as f64;
        (bleu + overlap) / 2.0
    }

    /// The `[B, B]` prior matrix of a batch: row i = image `images[i]`, column j = caption
    /// `captions[j]`.
    pub fn matrix(&self, images: &[usize], captions: &[usize]) -> Tensor {
        let values: Vec<f32> =
            images.iter().flat_map(|&i| captions.iter().map(move |&j| self.prior(i, j) as f32)).collect();
        Tensor::from_slice(&values).view([images.len() as i64, captions.len() as i64])
    }
}
