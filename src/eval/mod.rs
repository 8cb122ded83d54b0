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
use crate::data::{CaptionSet, Loader, LoaderConfig, Transform};
use crate::model::Model;
use crate::options::Options;
use crate::text::Vocabulary;

/// How a text query is formed: its sentence, its image's keywords, or both fused (VGMF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sentence,
    Keywords,
    Fused,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sentence => "sentence",
            Mode::Keywords => "keywords",
            Mode::Fused => "fused",
        }
    }
}

/// Image and caption codes of a caption set.
pub struct Codes {
    /// Fv of every image: `[N_img, d]`.
    pub images: Tensor,
    /// t of every caption: `[N_cap, d]`.
    pub texts: Tensor,
    /// t of each caption's image keywords: `[N_cap, d]`, when asked for.
    pub keywords: Option<Tensor>,
}

/// How evaluation batches are made.
#[derive(Debug, Clone, Copy)]
pub struct EvalConfig {
    pub image_size: u32,
    pub batch_size: usize,
    pub workers: usize,
    pub prefetch: usize,
}

/// Text codes `[N, d]` of token-id lists, in inference mode, batched by length (which only
/// saves padding work).
fn encode_token_lists(
    model: &Model,
    lists: &[Vec<i64>],
    batch_size: usize,
    progress: &indicatif::ProgressBar,
) -> Tensor {
    let mut order: Vec<usize> = (0..lists.len()).collect();
    order.sort_by_key(|&k| lists[k].len());
    let device = model.device();
    let codes: Vec<Tensor> = tch::no_grad(|| {
        order
            .chunks(batch_size)
            .map(|chunk| {
                let rows: Vec<&[i64]> = chunk.iter().map(|&k| lists[k].as_slice()).collect();
                let (ids, lengths) = pad_captions(&rows);
                progress.inc(chunk.len() as u64);
                model.net.encode_texts(&ids.to_device(device), &lengths.to_device(device), false)
            })
            .collect()
    });
    let sorted = Tensor::cat(&codes, 0);
    let index = Tensor::from_slice(&order.iter().map(|&k| k as i64).collect::<Vec<_>>()).to_device(sorted.device());
    sorted.zeros_like().index_copy(0, &index, &sorted)
}

/// Encodes each image once (eval transform), each caption once, and, with `keywords`, each
/// image's keywords once, in inference mode.
pub fn encode(model: &Model, set: &Arc<CaptionSet>, config: EvalConfig, keywords: bool, label: &str) -> Result<Codes> {
    let loader = Loader::new(
        Arc::clone(set),
        Transform::Eval { size: config.image_size },
        LoaderConfig { batch_size: config.batch_size, workers: config.workers, prefetch: config.prefetch, seed: 0 },
    );
    let keyword_lists = if keywords {
        Some(set.keywords.as_ref().context("keywords were asked for but the split has no keywords file")?)
    } else {
        None
    };
    let total = set.num_images() + set.num_captions() + keyword_lists.map_or(0, |k| k.len());
    let progress = crate::progress::bar(total as u64, label);
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
    let texts = encode_token_lists(model, &set.captions, config.batch_size, &progress);
    let keywords = keyword_lists.map(|lists| {
        let per_image = encode_token_lists(model, lists, config.batch_size, &progress);
        let index: Vec<i64> = (0..set.num_captions()).map(|k| set.image_of_caption(k) as i64).collect();
        per_image.index_select(0, &Tensor::from_slice(&index).to_device(per_image.device()))
    });
    progress.finish_and_clear();
    Ok(Codes { images: Tensor::cat(&image_codes, 0), texts, keywords })
}

/// The `[N_img, N_cap]` score matrix of all pairs in `mode`, on the CPU.
pub fn score_matrix(model: &Model, codes: &Codes, mode: Mode) -> Result<Tensor> {
    let (n_caps, d) = (codes.texts.size()[0], codes.texts.size()[1]);
    // Blocked scoring materialises up to three [block, N_cap, d] tensors: keep that near 64 M values.
    let block = (64 * 1024 * 1024 / (3 * n_caps * d).max(1)).max(1);
    let attention = &model.net.cross_attention_s;
    let keywords = || codes.keywords.as_ref().context("this evaluation encoded no keywords");
    let scores = match mode {
        Mode::Sentence => attention.score_matrix(&codes.images, &codes.texts, block),
        Mode::Keywords => attention.score_matrix(&codes.images, keywords()?, block),
        Mode::Fused => {
            let keywords = keywords()?;
            tch::no_grad(|| {
                let blocks: Vec<Tensor> = codes
                    .images
                    .split(block, 0)
                    .iter()
                    .map(|v| model.net.mode_scores(v, &codes.texts, keywords).fused)
                    .collect();
                Tensor::cat(&blocks, 0)
            })
        }
    };
    Ok(scores.to_device(Device::Cpu))
}

/// Scores (row-major `[N_img, N_cap]` values) and metrics of a caption set in each of `modes`.
pub fn evaluate(
    model: &Model,
    set: &Arc<CaptionSet>,
    config: EvalConfig,
    modes: &[Mode],
    label: &str,
) -> Result<Vec<(Mode, Vec<f32>, Metrics)>> {
    let wants_keywords = modes.iter().any(|&m| m != Mode::Sentence);
    let codes = encode(model, set, config, wants_keywords, label)?;
    modes
        .iter()
        .map(|&mode| {
            let scores = score_matrix(model, &codes, mode)?;
            let values: Vec<f32> = Vec::try_from(scores.to_kind(Kind::Float).contiguous().view([-1]))?;
            let metrics = Metrics::from_scores(&values, set.num_images(), set.captions_per_image);
            Ok((mode, values, metrics))
        })
        .collect()
}

/// The test split of `options`' dataset, encoded with its vocabulary; images must exist.
pub fn load_test_set(options: &Options, vocab: &Vocabulary) -> Result<Arc<CaptionSet>> {
    Ok(Arc::new(CaptionSet::load(options, "test", vocab)?.0))
}

/// A model with the weights of `path`: an amfmn checkpoint (its sidecar fixes the model
/// options; a fold folder means its `best`) or bare safetensors weights (the model options of
/// `options`). Also says whether it was trained with keywords.
pub fn load_model(options: &Options, path: &Path, vocab: &Vocabulary, device: Device) -> Result<(Model, bool)> {
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
    let keywords = sidecar.map_or(options.dataset.keywords, |c| c.info.options.dataset.keywords);
    Ok((model, keywords))
}

/// The evaluation settings of `options` for a model trained at `image_size`.
pub fn eval_config(options: &Options, image_size: u32) -> EvalConfig {
    let d = &options.dataset;
    EvalConfig { image_size, batch_size: d.batch_size_val, workers: d.workers, prefetch: d.prefetch }
}
