//! Evaluation: encode every image and every caption of a set once, score all pairs, and compute
//! the recall metrics (SPEC §7).

pub mod metrics;

use std::sync::Arc;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

pub use metrics::Metrics;

use crate::data::loader::pad_captions;
use crate::data::{CaptionSet, Loader, LoaderConfig, Transform};
use crate::model::Model;

/// Image and caption codes of a caption set.
pub struct Codes {
    /// Fv of every image: `[N_img, d]`.
    pub images: Tensor,
    /// t of every caption: `[N_cap, d]`.
    pub texts: Tensor,
}

/// How evaluation batches are made.
#[derive(Debug, Clone, Copy)]
pub struct EvalConfig {
    pub image_size: u32,
    pub batch_size: usize,
    pub workers: usize,
    pub prefetch: usize,
}

/// Encodes each image once (eval transform) and each caption once, in inference mode. Captions
/// are batched by length, which only saves padding work.
pub fn encode(model: &Model, set: &Arc<CaptionSet>, config: EvalConfig, label: &str) -> Result<Codes> {
    let loader = Loader::new(
        Arc::clone(set),
        Transform::Eval { size: config.image_size },
        LoaderConfig { batch_size: config.batch_size, workers: config.workers, prefetch: config.prefetch, seed: 0 },
    );
    let total = (set.num_images() + set.num_captions()) as u64;
    let progress = crate::progress::bar(total, label);
    let mut image_codes = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for batch in loader.images() {
            let batch = batch?;
            let n = batch.image_ids.len() as u64;
            image_codes.push(model.net.encode_images(&model.prepare_images(&batch.images), false));
            progress.inc(n);
        }
        Ok(())
    })?;
    let mut order: Vec<usize> = (0..set.num_captions()).collect();
    order.sort_by_key(|&k| set.captions[k].len());
    let mut text_codes = Vec::new();
    tch::no_grad(|| {
        for chunk in order.chunks(config.batch_size) {
            let captions: Vec<&[i64]> = chunk.iter().map(|&k| set.captions[k].as_slice()).collect();
            let (ids, lengths) = pad_captions(&captions);
            let device = model.device();
            text_codes.push(model.net.encode_texts(&ids.to_device(device), &lengths.to_device(device), false));
            progress.inc(chunk.len() as u64);
        }
    });
    progress.finish_and_clear();
    let sorted = Tensor::cat(&text_codes, 0);
    let index = Tensor::from_slice(&order.iter().map(|&k| k as i64).collect::<Vec<_>>()).to_device(sorted.device());
    let texts = sorted.zeros_like().index_copy(0, &index, &sorted);
    Ok(Codes { images: Tensor::cat(&image_codes, 0), texts })
}

/// The `[N_img, N_cap]` score matrix of all pairs, on the CPU.
pub fn score_matrix(model: &Model, codes: &Codes) -> Tensor {
    let (n_caps, d) = (codes.texts.size()[0], codes.texts.size()[1]);
    // Non-soft attentions materialise [block, N_cap, d]: keep that near 64 M values.
    let block = (64 * 1024 * 1024 / (n_caps * d).max(1)).max(1);
    model.net.cross_attention_s.score_matrix(&codes.images, &codes.texts, block).to_device(Device::Cpu)
}

/// Scores and metrics of a caption set.
pub fn evaluate(model: &Model, set: &Arc<CaptionSet>, config: EvalConfig, label: &str) -> Result<(Tensor, Metrics)> {
    let codes = encode(model, set, config, label)?;
    let scores = score_matrix(model, &codes);
    let values: Vec<f32> = Vec::try_from(scores.to_kind(Kind::Float).view([-1]))?;
    let metrics = Metrics::from_scores(&values, set.num_images(), set.captions_per_image);
    Ok((scores, metrics))
}
