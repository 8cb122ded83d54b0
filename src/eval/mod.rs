//! Evaluation: encode every image and every caption of a set once, score all pairs, and compute
//! the recall metrics (SPEC §7).

pub mod metrics;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

pub use metrics::Metrics;

use crate::checkpoint::Checkpoint;
use crate::data::loader::pad_captions;
use crate::data::{CaptionSet, Loader, LoaderConfig, PrecompSplit, Transform};
use crate::model::Model;
use crate::options::Options;
use crate::text::Vocabulary;

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

/// The test split of `options`' dataset, encoded with its vocabulary; images must exist.
pub fn load_test_set(options: &Options, vocab: &Vocabulary) -> Result<Arc<CaptionSet>> {
    let d = &options.dataset;
    let split = PrecompSplit::read(&d.data_path, "test", d.captions_per_image)?;
    if let Some(warning) = split.blank_caption_warning(&d.data_path.join("test_caps.txt")) {
        eprintln!("warning: {warning}");
    }
    let set = CaptionSet::new(&split, &d.image_path, vocab);
    let missing = set.missing_images();
    if let Some(first) = missing.first() {
        bail!(
            "{} of {} test images are missing, first {}; put the images under dataset.image_path ({})",
            missing.len(),
            set.num_images(),
            first.display(),
            d.image_path.display()
        );
    }
    Ok(Arc::new(set))
}

/// A model with the weights of `path`: an amfmn checkpoint (its sidecar fixes the model
/// options; a fold folder means its `best`) or bare safetensors weights (the model options of
/// `options`).
pub fn load_model(options: &Options, path: &Path, vocab: &Vocabulary, device: Device) -> Result<Model> {
    let sidecar = if path.is_dir() {
        Some(Checkpoint::open(&path.join("best.json"))?)
    } else if path.extension().is_some_and(|e| e == "json") {
        Some(Checkpoint::open(path)?)
    } else if path.with_extension("json").is_file() {
        Some(Checkpoint::open(&path.with_extension("json"))?)
    } else {
        None
    };
    let mut model_options = options.clone();
    if let Some(c) = &sidecar {
        if c.info.vocab_size != vocab.len() {
            bail!(
                "{} was trained with a vocabulary of {} words ({}), dataset.vocab_path has {}",
                c.dir.display(),
                c.info.vocab_size,
                c.info.vocab_path.display(),
                vocab.len()
            );
        }
        model_options.model = c.info.options.model.clone();
        model_options.dataset.image_size = c.info.options.dataset.image_size;
    }
    let mut model = Model::new(&model_options, vocab.len(), device, 0)?;
    match &sidecar {
        Some(c) => c.load_model(&mut model)?,
        None => {
            let tensors = crate::model::amfmn::read_safetensors(path)?;
            model.load_state_dict(&tensors).with_context(|| format!("cannot load {}", path.display()))?;
        }
    }
    Ok(model)
}

/// The evaluation settings of `options` for a model trained at `image_size`.
pub fn eval_config(options: &Options, image_size: u32) -> EvalConfig {
    let d = &options.dataset;
    EvalConfig { image_size, batch_size: d.batch_size_val, workers: d.workers, prefetch: d.prefetch }
}
