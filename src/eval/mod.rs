//! Evaluation: encode every image and every caption of a set once (the processes of a launch
//! sharing the work), score all pairs with the one scorer ([`crate::score`]), and compute the
//! recall metrics (docs/ARCHITECTURE.md, Metrics).

pub mod metrics;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, ArrayD, Ix2};
use tch::{Device, Kind, Tensor};

pub use metrics::{results_table, MetricName, Metrics, METRICS};

use crate::data::loader::pad_captions;
use crate::data::{shares, CaptionSet};
use crate::device::{synchronize, upload, DeviceClock};
use crate::encode::{self, Workers};
use crate::model::Model;
use crate::options::Options;
use crate::score::{ImageCodes, Mode, Precision, Scorer, TextCodes};
use crate::text::Vocabulary;

/// Image and caption codes of a caption set.
pub struct Codes {
    /// Fv of every image (and its gates): `[N_img, d]`.
    pub images: ImageCodes,
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

/// The processes of a launch sharing an evaluation: this process (`rank` of `world`) encodes the
/// `rank`-th contiguous share of the image batches and of the caption chunks (the same batches
/// and chunks one process would encode, so the codes gathered are the ones it would make, bit
/// for bit), then scores the `rank`-th contiguous share of the images against every caption
/// (the scores equal one process's up to the rounding of products over fewer rows, about 1e-8).
pub struct Peers<'a> {
    pub rank: usize,
    pub world: usize,
    /// Every rank's rows (rank k's `[sizes[k], ...]`, this rank's given) stacked in rank order:
    /// `[Σ sizes, ...]`, on any device.
    pub gather: &'a dyn Fn(&Tensor, &[usize]) -> Result<Tensor>,
}

/// The part of `items` (batches or chunks in their order, `len` gives each one's rows) that
/// this process encodes, and how to gather every part's rows: alone, all of them.
struct Share<'s, 'a, T> {
    mine: &'s [T],
    sizes: Vec<usize>,
    peers: Option<&'s Peers<'a>>,
}

impl<'s, 'a, T> Share<'s, 'a, T> {
    fn of(items: &'s [T], len: impl Fn(&T) -> usize, peers: Option<&'s Peers<'a>>) -> Self {
        let Some(p) = peers else {
            return Share { mine: items, sizes: vec![items.iter().map(&len).sum()], peers };
        };
        let parts = shares(items.len(), p.world);
        let rows = |&(start, count): &(usize, usize)| items[start..start + count].iter().map(&len).sum();
        let (start, count) = parts[p.rank];
        Share { mine: &items[start..start + count], sizes: parts.iter().map(rows).collect(), peers }
    }

    /// Every part's rows in order, `[Σ sizes, d]` on `device`, from this process's (its items'
    /// in order; none when it has no items).
    fn gather(&self, mine: Vec<Tensor>, d: i64, device: Device) -> Result<Tensor> {
        let mine = if mine.is_empty() {
            Tensor::zeros([0, d], (Kind::Float, device))
        } else {
            Tensor::cat(&mine, 0).to_kind(Kind::Float)
        };
        match self.peers {
            None => Ok(mine),
            Some(p) => Ok((p.gather)(&mine, &self.sizes)?.to_device(device)),
        }
    }
}

/// Seconds of an evaluation's model work, each part ending when the device has run it:
/// encoding the images (their decoding overlaps it on other threads and is not counted), the
/// captions (and keywords), and scoring every pair in every mode.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelSeconds {
    pub images: f64,
    pub texts: f64,
    pub scores: f64,
}

impl std::fmt::Display for ModelSeconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.images + self.texts + self.scores;
        write!(
            f,
            "model time {total:.3} s (images {:.3} s, captions {:.3} s, scores {:.3} s)",
            self.images, self.texts, self.scores
        )
    }
}

/// An evaluation's results, one per mode, and its model time.
pub struct Evaluated {
    pub results: Vec<ModeResult>,
    pub seconds: ModelSeconds,
}

/// The scores and metrics of one retrieval mode.
pub struct ModeResult {
    pub mode: Mode,
    /// `[N_img, N_cap]` on the CPU.
    pub scores: Array2<f32>,
    pub metrics: Metrics,
}

/// Text codes `[N, d]` of token-id lists, in inference mode, batched by length (which only
/// saves padding work).
/// `lists` with each blank list replaced by padding as long as the longest list of its batch
/// in the original's order (`batch_size` lists at a time): the original encodes a blank caption
/// up to its batch's last step ([`pad_captions`]); amfmn batches by length, so the padding
/// carries that length.
fn with_blanks_padded(lists: &[Vec<i64>], batch_size: usize) -> Vec<Vec<i64>> {
    let mut padded = lists.to_vec();
    for (batch, chunk) in padded.chunks_mut(batch_size.max(1)).enumerate() {
        let longest = lists[batch * batch_size.max(1)..][..chunk.len()].iter().map(Vec::len).max().unwrap_or(0);
        for list in chunk.iter_mut().filter(|l| l.is_empty()) {
            *list = vec![0; longest.max(1)];
        }
    }
    padded
}

/// Captions encoded together on a GPU in evaluation (at least): the text encoder launches the
/// same kernels per step whatever the rows, so larger batches keep a GPU busy. A caption's code
/// does not depend on its batch (its state is read at its own length), so this changes nothing
/// but rounding.
const GPU_TEXT_BATCH: usize = 1024;

/// How many captions [`encode_token_lists`] encodes together on `device`: `batch_size` on the
/// CPU, at least [`GPU_TEXT_BATCH`] on CUDA.
fn text_batch(device: Device, batch_size: usize) -> usize {
    if device.is_cuda() {
        batch_size.max(GPU_TEXT_BATCH)
    } else {
        batch_size
    }
}

/// Codes `[N, d]` of token `lists` in their order: blanks padded as the original's batches of
/// `batch_size` would pad them, then encoded `chunk` at a time in order of length (with
/// `peers`, this process's share of the chunks, and every share gathered).
fn encode_token_lists(
    model: &Model,
    lists: &[Vec<i64>],
    (batch_size, chunk): (usize, usize),
    peers: Option<&Peers>,
    progress: &indicatif::ProgressBar,
) -> Result<Tensor> {
    let lists = with_blanks_padded(lists, batch_size);
    let mut order: Vec<usize> = (0..lists.len()).collect();
    order.sort_by_key(|&k| lists[k].len());
    let device = model.device();
    let chunks: Vec<&[usize]> = order.chunks(chunk.max(1)).collect();
    let share = Share::of(&chunks, |c| c.len(), peers);
    let codes: Vec<Tensor> = tch::no_grad(|| {
        share
            .mine
            .iter()
            .map(|chunk| {
                let rows: Vec<&[i64]> = chunk.iter().map(|&k| lists[k].as_slice()).collect();
                let (ids, lengths) = pad_captions(&rows);
                progress.inc(chunk.len() as u64);
                model.net.encode_texts(&upload(&ids, device), &upload(&lengths, device))
            })
            .collect()
    });
    let sorted = share.gather(codes, model.embed_dim(), device)?;
    let index = upload(&Tensor::from_slice(&order.iter().map(|&k| k as i64).collect::<Vec<_>>()), device);
    Ok(sorted.zeros_like().index_copy(0, &index, &sorted))
}

/// Fv `[N_img, d]` of every image of `set` (eval transform), in inference mode, through the
/// image-encoding pipeline (`config.workers` decode threads a batch or two ahead; with `peers`,
/// this process's share of the batches, and every share gathered); adds the device's seconds
/// for the batches to `seconds` (the host queues each batch without waiting for the last).
fn encode_images(
    model: &Model,
    (set, config, peers): (&Arc<CaptionSet>, EvalConfig, Option<&Peers>),
    progress: &indicatif::ProgressBar,
    seconds: &mut f64,
) -> Result<Tensor> {
    let plan: Vec<Vec<PathBuf>> = set.image_paths.chunks(config.batch_size.max(1)).map(<[PathBuf]>::to_vec).collect();
    let share = Share::of(&plan, Vec::len, peers);
    let side = config.image_size;
    let workers = Workers { workers: config.workers, prefetch: config.prefetch };
    let mut image_codes = Vec::new();
    let mut clock = DeviceClock::new(model.device());
    let prepare = |path: &PathBuf, out: &mut [f32]| encode::image_file_input(path, side, out);
    encode::each_batch(share.mine, side, workers, prepare, |batch| {
        if let Some((_, reason)) = batch.failures.into_iter().next() {
            bail!("{reason}");
        }
        image_codes.push(clock.time(|| encode::image_fv(model, &batch.images))?);
        progress.inc(batch.rows.len() as u64);
        Ok(())
    })?;
    *seconds += clock.seconds()?;
    share.gather(image_codes, model.embed_dim(), model.device())
}

/// Encodes each image once (eval transform), each caption once, and, with `keywords`, each
/// image's keywords once, in inference mode (with `peers`, this process's share of each, and
/// every share gathered); the images' and the texts' parts of `seconds`.
pub fn encode(
    model: &Model,
    (set, config, peers): (&Arc<CaptionSet>, EvalConfig, Option<&Peers>),
    keywords: bool,
    (label, seconds): (&str, &mut ModelSeconds),
) -> Result<Codes> {
    let keyword_lists = if keywords {
        Some(set.keywords.as_ref().context("keywords were asked for but the split has no keywords file")?)
    } else {
        None
    };
    let total = set.num_images() + set.num_captions() + keyword_lists.map_or(0, |k| k.len());
    let world = peers.map_or(1, |p| p.world);
    let progress = crate::report::progress(total.div_ceil(world) as u64, label);
    let fv = encode_images(model, (set, config, peers), &progress, &mut seconds.images)?;
    let start = Instant::now();
    let images = Scorer::new(&model.net).image_codes(fv);
    synchronize(model.device());
    seconds.images += start.elapsed().as_secs_f64();
    let start = Instant::now();
    let batches = (config.batch_size, text_batch(model.device(), config.batch_size));
    let texts = encode_token_lists(model, &set.captions, batches, peers, &progress)?;
    let keywords = match keyword_lists {
        None => None,
        Some(lists) => {
            let per_image = encode_token_lists(model, lists, batches, peers, &progress)?;
            let index: Vec<i64> = (0..set.num_captions()).map(|k| set.image_of_caption(k) as i64).collect();
            Some(per_image.index_select(0, &upload(&Tensor::from_slice(&index), per_image.device())))
        }
    };
    synchronize(model.device());
    seconds.texts = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    Ok(Codes { images, texts, keywords })
}

/// The `[N_img, N_cap]` score matrix of all pairs in `mode`, on the CPU (with `peers`, each
/// process scores a contiguous share of the images, and the rows are gathered).
pub fn score_matrix(model: &Model, codes: &Codes, mode: Mode, peers: Option<&Peers>) -> Result<Array2<f32>> {
    let texts = TextCodes::of_mode(mode, &codes.texts, codes.keywords.as_ref())?;
    let scorer = Scorer::new(&model.net);
    let images: Vec<i64> = (0..codes.images.len()).collect();
    let share = Share::of(&images, |_| 1, peers);
    let mine = match share.mine {
        [] => vec![],
        rows => {
            let rows = upload(&Tensor::from_slice(rows), model.device());
            vec![scorer.score_matrix(&codes.images.rows(&rows), &texts, Precision::Exact)]
        }
    };
    to_array(&share.gather(mine, codes.texts.size()[0], model.device())?)
}

/// A `[rows, columns]` tensor as a float32 array on the CPU.
fn to_array(scores: &Tensor) -> Result<Array2<f32>> {
    let array: ArrayD<f32> = (&scores.to_device(Device::Cpu).to_kind(Kind::Float)).try_into()?;
    Ok(array.into_dimensionality::<Ix2>()?)
}

/// Scores and metrics of a caption set in each of `modes`, and the model time. With `peers`,
/// the processes share the encoding and the scoring, and each gets every score.
pub fn evaluate(
    model: &Model,
    (set, config, peers): (&Arc<CaptionSet>, EvalConfig, Option<&Peers>),
    modes: &[Mode],
    label: &str,
) -> Result<Evaluated> {
    let wants_keywords = modes.iter().any(|&m| m != Mode::Sentence);
    let mut seconds = ModelSeconds::default();
    let codes = encode(model, (set, config, peers), wants_keywords, (label, &mut seconds))?;
    let mut results = Vec::with_capacity(modes.len());
    for &mode in modes {
        let start = Instant::now();
        let scores = score_matrix(model, &codes, mode, peers)?;
        seconds.scores += start.elapsed().as_secs_f64();
        let metrics = Metrics::from_scores(scores.view(), set.captions_per_image);
        results.push(ModeResult { mode, scores, metrics });
    }
    Ok(Evaluated { results, seconds })
}

/// The test split of `options`' dataset, encoded with its vocabulary; images must exist.
pub fn load_test_set(options: &Options, vocab: &Vocabulary) -> Result<Arc<CaptionSet>> {
    Ok(Arc::new(CaptionSet::load(options, "test", vocab)?.0))
}

/// The evaluation settings of `options` for a model trained at `image_size`.
pub fn eval_config(options: &Options, image_size: u32) -> EvalConfig {
    let dataset = &options.dataset;
    EvalConfig { image_size, batch_size: dataset.batch_size_val, workers: dataset.workers, prefetch: dataset.prefetch }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_caption_is_padded_to_its_original_batch() {
        let lists = vec![vec![1, 2], vec![], vec![3, 4, 5, 6], vec![], vec![], vec![7]];
        let padded = with_blanks_padded(&lists, 2);
        assert_eq!(padded, [vec![1, 2], vec![0, 0], vec![3, 4, 5, 6], vec![0, 0, 0, 0], vec![0], vec![7]]);
        assert_eq!(with_blanks_padded(&[vec![]], 4), [vec![0]], "a batch of blanks alone: one step");
    }

    /// The demo options' model at 32², with random weights, for a vocabulary of 12 words.
    fn demo_model() -> Model {
        crate::model::demo_model(&["dataset.image_size=32"], 12, Device::Cpu, 3)
    }

    /// 23 token lists of 0 to 8 words, blanks among them.
    fn token_lists() -> Vec<Vec<i64>> {
        (0..23).map(|k| (0..(k * 7) % 9).map(|t| 1 + (k * 5 + t * 3) % 12).collect()).collect()
    }

    /// What each of `world` processes gets from `work` (which gathers once), the all-gather
    /// played in two rounds: every rank's rows are recorded (the gather answering zeros), then
    /// the work runs again and the gather hands each rank every recorded row in rank order.
    /// Also the rows each rank gave.
    fn played_among<T>(world: usize, work: impl Fn(&Peers) -> T) -> (Vec<T>, Vec<Tensor>) {
        let recorded = std::cell::RefCell::new((0..world).map(|_| None::<Tensor>).collect::<Vec<_>>());
        let mut results = Vec::new();
        for (round, rank) in (0..2).flat_map(|round| (0..world).map(move |rank| (round, rank))) {
            let gather = |mine: &Tensor, sizes: &[usize]| {
                assert_eq!(sizes.len(), world);
                assert_eq!(mine.size()[0] as usize, sizes[rank], "rank {rank} of {world} gives its share");
                if round == 0 {
                    recorded.borrow_mut()[rank] = Some(mine.copy());
                    let mut all = mine.size();
                    all[0] = sizes.iter().sum::<usize>() as i64;
                    return Ok(Tensor::zeros(all.as_slice(), (Kind::Float, Device::Cpu)));
                }
                Ok(Tensor::cat(&recorded.borrow().iter().flatten().collect::<Vec<_>>(), 0))
            };
            let out = work(&Peers { rank, world, gather: &gather });
            if round == 1 {
                results.push(out);
            }
        }
        (results, recorded.into_inner().into_iter().flatten().collect())
    }

    /// The codes of a caption set do not depend on how many captions are encoded together
    /// (what lets a GPU take [`GPU_TEXT_BATCH`] at a time), blanks included.
    #[test]
    fn caption_codes_do_not_depend_on_the_batching() {
        let (model, lists) = (demo_model(), token_lists());
        assert!(lists.iter().any(Vec::is_empty) && lists.iter().any(|l| l.len() == 8));
        let progress = indicatif::ProgressBar::hidden();
        let by_five = encode_token_lists(&model, &lists, (5, 5), None, &progress).unwrap();
        let at_once = encode_token_lists(&model, &lists, (5, GPU_TEXT_BATCH), None, &progress).unwrap();
        assert_eq!(by_five.size(), [23, model.embed_dim()]);
        assert!(by_five.allclose(&at_once, 0.0, 1e-6, false), "{}", (&by_five - &at_once).abs().max());
        let blanks_otherwise = encode_token_lists(&model, &lists, (23, 23), None, &progress).unwrap();
        assert!(!by_five.allclose(&blanks_otherwise, 0.0, 1e-6, false), "the blanks' padding follows batch_size");
        assert_eq!((text_batch(Device::Cpu, 70), text_batch(Device::Cuda(0), 70)), (70, GPU_TEXT_BATCH));
    }

    /// Processes sharing the captions of an evaluation each end with the codes one process
    /// makes, bit for bit, however many there are (more than chunks: some encode none).
    #[test]
    fn processes_sharing_the_captions_get_the_codes_of_one_process() {
        let (model, lists) = (demo_model(), token_lists());
        let progress = indicatif::ProgressBar::hidden();
        let alone = encode_token_lists(&model, &lists, (5, 5), None, &progress).unwrap();
        for world in [2, 3, 7] {
            let (got, given) = played_among(world, |peers| {
                encode_token_lists(&model, &lists, (5, 5), Some(peers), &progress).unwrap()
            });
            for (rank, got) in got.iter().enumerate() {
                assert!(got.equal(&alone), "rank {rank} of {world}: {}", (got - &alone).abs().max());
            }
            let empty = given.iter().filter(|rows| rows.size()[0] == 0).count();
            assert_eq!(empty, world.saturating_sub(5), "{world} processes for 5 chunks");
        }
    }

    /// A plan's batches go to the processes in contiguous shares, and each knows every share's rows.
    #[test]
    fn the_batches_of_a_plan_are_shared_in_order() {
        let plan: Vec<Vec<u8>> = vec![vec![0; 4], vec![0; 4], vec![0; 4], vec![0; 2]];
        let gather = |_: &Tensor, _: &[usize]| unreachable!();
        let parts: Vec<(usize, Vec<usize>)> = (0..3)
            .map(|rank| {
                let peers = Peers { rank, world: 3, gather: &gather };
                let share = Share::of(&plan, Vec::len, Some(&peers));
                (share.mine.iter().map(Vec::len).sum(), share.sizes)
            })
            .collect();
        assert_eq!(parts, [(8, vec![8, 4, 2]), (4, vec![8, 4, 2]), (2, vec![8, 4, 2])]);
        let alone = Share::of(&plan, Vec::len, None);
        assert_eq!((alone.mine.len(), alone.sizes), (4, vec![14]));
    }

    /// Processes sharing the scoring each end with the score matrix of one process in every
    /// mode, however many there are (more than images: some score none). Not bit for bit: a
    /// product over fewer image rows may round otherwise (up to 2.2e-8 here, one row per process).
    #[test]
    fn processes_sharing_the_scoring_get_the_scores_of_one_process() {
        let model = demo_model();
        let d = model.embed_dim();
        tch::manual_seed(5);
        let codes = Codes {
            images: Scorer::new(&model.net).image_codes(Tensor::randn([11, d], (Kind::Float, Device::Cpu))),
            texts: Tensor::randn([7, d], (Kind::Float, Device::Cpu)),
            keywords: Some(Tensor::randn([7, d], (Kind::Float, Device::Cpu))),
        };
        for mode in [Mode::Sentence, Mode::Keywords, Mode::Fused] {
            let alone = score_matrix(&model, &codes, mode, None).unwrap();
            for world in [2, 3, 13] {
                let (got, given) =
                    played_among(world, |peers| score_matrix(&model, &codes, mode, Some(peers)).unwrap());
                assert!(given.iter().all(|rows| rows.size()[1] == 7), "rows of scores against every caption");
                for (rank, got) in got.iter().enumerate() {
                    let worst = (got - &alone).mapv(f32::abs).fold(0f32, |a, &b| a.max(b));
                    assert!(worst <= 1e-7, "{mode:?}, rank {rank} of {world}: {worst}");
                }
            }
        }
    }
}
