//! `amfmn locate`: where in a large scene a sentence (or keywords) applies, as SeLo v1 computes
//! it: multi-scale crops scored by the model, the per-pixel mean of their scores, min–max to
//! u8, a 251 median; written as a probability map, its JET picture and their overlay.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::ImageFormat;

use super::RuntimeArgs;
use crate::checkpoint::{self, Checkpoint};
use crate::data::image_file::{image_dimensions, load_rgb_hashed};
use crate::fsutil::owned::{refuse_collisions, Outputs};
use crate::fsutil::sha256_file;
use crate::locate::codes::{CodesKey, CropCodes};
use crate::locate::crops::{encode_crops, CropEncoding, CropResize};
use crate::locate::heat::{crop_count, crops, gaussian_filter, median_filter, MeanMap, Rect, MAX_MEDIAN};
use crate::locate::raster::Gray;
use crate::locate::{render, selo};
use crate::search::{top_k, Query, Searcher};
use crate::table::Table;

/// Arguments of `amfmn locate`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocateArgs {
    /// The checkpoint (a fold folder, a .json sidecar or a weights file).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// The scene.
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// The sentence to locate.
    #[arg(long)]
    pub query: Option<String>,
    /// Keywords to locate (`a, b`), alone or fused with the sentence.
    #[arg(long)]
    pub keywords: Option<String>,
    /// The overlay of the map's JET colours on the scene (PNG).
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,
    /// The probability map, 8-bit gray PNG (default: <out stem>.prob.png).
    #[arg(long, value_name = "FILE.png")]
    pub prob: Option<PathBuf>,
    /// The JET picture of the map on its own (PNG).
    #[arg(long, value_name = "FILE.png")]
    pub jet: Option<PathBuf>,
    #[command(flatten)]
    pub map: MapArgs,
    /// Weight of the colours in the overlay.
    #[arg(long, default_value_t = 0.3)]
    pub alpha: f64,
    /// Keep the scene's crop codes in this file (safetensors) and reuse them when the scene,
    /// the checkpoint, the steps and the resize are the same: another query encodes only its text.
    #[arg(long, value_name = "FILE.safetensors")]
    pub codes: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Replace existing output files that amfmn did not write for this purpose.
    #[arg(long)]
    pub force: bool,
}

/// How a scene's map is made: the crops, their scores, the filter (shared by `locate` and
/// `selo`'s end-to-end mode).
#[derive(Debug, Clone, clap::Args)]
pub struct MapArgs {
    /// Crop sides, each cut on two grids (SeLo's default 256,512,768).
    #[arg(long, value_delimiter = ',', default_value = "256,512,768")]
    pub steps: Vec<usize>,
    /// How crops are resized to the network's input.
    #[arg(long, value_enum, default_value = "cubic")]
    pub crop_resize: CropResize,
    /// How a crop is scored: `vga`, the model's own score (visual-guided attention); `plain`,
    /// cos(Fv, t) as SLM's released model (which may lack the attention and fusion weights).
    #[arg(long, value_enum, default_value = "vga")]
    pub score: ScoreKind,
    /// The map's filter: `median:251` (SeLo v1), `gaussian:255` (SeLo v2) or `none`.
    #[arg(long, default_value = "median:251", value_parser = parse_filter)]
    pub filter: Filter,
    /// Refuse scenes of more pixels than this (read from the header before decoding; memory is
    /// about 9 bytes per pixel, so the default keeps a run under 2 GB).
    #[arg(long, default_value_t = 200_000_000)]
    pub max_pixels: u64,
    /// Crops encoded at a time.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// How `locate` scores a crop against the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoreKind {
    /// The model's own score: cos(Fv, g ⊙ t) for soft attention, any attention and fusion.
    Vga,
    /// cos(Fv, t), as SLM's released model computes it.
    Plain,
}

/// The widest Gaussian window: its cost grows with its side, and wider windows only flatten the
/// map further (SeLo v2 uses 255).
const MAX_GAUSSIAN: usize = 1023;

/// The most crops a scene is cut into (SeLo's steps cut a 4096² scene into 698; a 20000²
/// scene into about 17,000): each is encoded by the network, so the count bounds the work.
const MAX_CROPS: u64 = 100_000;

/// The filter of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Median(usize),
    Gaussian(usize),
    None,
}

impl Filter {
    fn apply(self, map: Gray) -> Gray {
        match self {
            Filter::Median(size) => median_filter(&map, size),
            Filter::Gaussian(size) => gaussian_filter(&map, size),
            Filter::None => map,
        }
    }
}

/// `median:251`, `gaussian:255` or `none` (odd window sides; the median up to
/// [`MAX_MEDIAN`], the Gaussian up to [`MAX_GAUSSIAN`]).
fn parse_filter(text: &str) -> std::result::Result<Filter, String> {
    let expected = || format!("expected median:SIZE, gaussian:SIZE (an odd side) or none, not {text:?}");
    if text == "none" {
        return Ok(Filter::None);
    }
    let (kind, size) = text.split_once(':').ok_or_else(expected)?;
    let size: usize = size.parse().map_err(|_| expected())?;
    if size.is_multiple_of(2) {
        return Err(expected());
    }
    let (filter, largest) = match kind {
        "median" => (Filter::Median(size), MAX_MEDIAN),
        "gaussian" => (Filter::Gaussian(size), MAX_GAUSSIAN),
        _ => return Err(expected()),
    };
    if size > largest {
        return Err(format!("{text}: the {kind} window is at most {largest} pixels wide"));
    }
    Ok(filter)
}

/// The output files, checked before any work; one manifest per folder.
struct Pictures {
    paths: Vec<PathBuf>,
    folders: Vec<(PathBuf, Outputs)>,
}

impl Pictures {
    fn check(paths: &[&Path], force: bool) -> Result<Pictures> {
        let mut folders: Vec<(PathBuf, Outputs)> = Vec::new();
        for &path in paths {
            let folder = path.parent().unwrap_or(Path::new("")).to_owned();
            if !folders.iter().any(|(f, _)| *f == folder) {
                folders.push((folder.clone(), Outputs::for_file(path, "locate", force)?));
            }
            let outputs = folders.iter_mut().find(|(f, _)| *f == folder).map(|(_, o)| o);
            outputs.context("the folder was just added")?.check(path)?;
        }
        Ok(Pictures { paths: paths.iter().map(|p| p.to_path_buf()).collect(), folders })
    }

    /// Writes the pictures, in the order the paths were given.
    fn write(mut self, pictures: Vec<image::DynamicImage>) -> Result<()> {
        for (path, picture) in self.paths.iter().zip(pictures) {
            let folder = path.parent().unwrap_or(Path::new(""));
            let outputs = self.folders.iter_mut().find(|(f, _)| f == folder).map(|(_, o)| o);
            write_png(outputs.context("every path was checked")?, path, picture)?;
        }
        for (_, outputs) in self.folders {
            outputs.finish()?;
        }
        Ok(())
    }
}

/// Writes `picture` to `path` as PNG, as an output of `outputs`.
pub fn write_png(outputs: &mut Outputs, path: &Path, picture: image::DynamicImage) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut bytes, ImageFormat::Png).with_context(|| format!("cannot encode {}", path.display()))?;
    outputs.write(path, bytes.get_ref())
}

/// A model opened from a checkpoint for inference: its network, vocabulary and weights file.
pub struct CheckpointModel {
    pub model: crate::model::Model,
    pub vocab: crate::text::Vocabulary,
    pub weights: PathBuf,
    /// The weights file's SHA-256 as the checkpoint's sidecar records it (checked when loaded).
    recorded_sha256: Option<String>,
}

impl CheckpointModel {
    /// Opens a checkpoint on the device `runtime` chooses; with `encoders_only`, bare weights
    /// without the attention and fusion weights load too.
    pub fn open(checkpoint: &Path, runtime: &RuntimeArgs, encoders_only: bool) -> Result<CheckpointModel> {
        let checkpoint = Checkpoint::open_for_evaluation(checkpoint)?;
        let mut options = checkpoint.info.options.clone();
        runtime.apply_to_checkpoint(&mut options);
        crate::device::set_threads(options.threads)?;
        let device = crate::device::resolve(&options.device)?;
        let vocab = checkpoint.vocabulary()?;
        let load = if encoders_only { checkpoint::load_encoders } else { checkpoint::load_model };
        let weights = checkpoint.model_path();
        let model = load(&options, &weights, &vocab, device)?.model;
        Ok(CheckpointModel { model, vocab, weights, recorded_sha256: checkpoint.info.model_sha256 })
    }

    /// The weights file's SHA-256: the one loading verified, else (a PyTorch file) computed.
    pub fn weights_sha256(&self) -> Result<String> {
        self.recorded_sha256.clone().map_or_else(|| sha256_file(&self.weights), Ok)
    }
}

impl MapArgs {
    /// Opens the checkpoint for these settings (`--score plain` accepts a model without the
    /// attention and fusion weights).
    pub fn open(&self, checkpoint: &Path) -> Result<CheckpointModel> {
        CheckpointModel::open(checkpoint, &self.runtime, self.score == ScoreKind::Plain)
    }

    /// The crops of a scene, from its header (checked against `--max-pixels` before anyone
    /// decodes it).
    pub fn scene_crops(&self, path: &Path) -> Result<Vec<Rect>> {
        let (width, height) = image_dimensions(path)?;
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            bail!(
                "{}: {width}x{height} is {pixels} pixels, more than --max-pixels {} (raise it if the memory allows: \
                 about 9 bytes a pixel)",
                path.display(),
                self.max_pixels
            );
        }
        let count = crop_count(height as usize, width as usize, &self.steps);
        if count > MAX_CROPS {
            bail!(
                "--steps {:?} cut the {width}x{height} scene {} into {count} crops, more than {MAX_CROPS}: give larger steps",
                self.steps,
                path.display()
            );
        }
        let rects = crops(height as usize, width as usize, &self.steps);
        if rects.is_empty() {
            bail!("no crop of --steps {:?} fits in the {width}x{height} scene {}", self.steps, path.display());
        }
        Ok(rects)
    }

    /// The score of every crop the searcher holds for `query`, `[N]` on the CPU.
    pub fn scores(&self, searcher: &Searcher, query: &Query) -> Result<tch::Tensor> {
        match self.score {
            ScoreKind::Vga => searcher.scores(query),
            ScoreKind::Plain => searcher.plain_scores(query),
        }
    }

    /// The filtered probability map of a `height × width` scene whose crops `rects` scored
    /// `scores` (a flat map, all zero, is warned about), with the seconds taken to build it
    /// (SLM's "Gnt") and to filter it ("Flt").
    pub fn probability_map(&self, height: usize, width: usize, rects: &[Rect], scores: &[f32]) -> (Gray, [f64; 2]) {
        let start = Instant::now();
        let values: Vec<f64> = scores.iter().map(|&v| f64::from(v)).collect();
        if values.iter().all(|&v| v == values[0]) {
            crate::report::warn("every crop has the same score: the map is flat (all zero)");
        }
        let raw = MeanMap::new(height, width, rects, &values).to_u8();
        let built = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let map = self.filter.apply(raw);
        (map, [built, start.elapsed().as_secs_f64()])
    }
}

/// Locates the query in the scene and writes the pictures.
pub fn run(args: &LocateArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!("--alpha {}: give a weight between 0 and 1", args.alpha);
    }
    let prob = args.prob.clone().unwrap_or_else(|| args.out.with_extension("prob.png"));
    let mut paths = vec![args.out.as_path(), prob.as_path()];
    paths.extend(args.jet.as_deref());
    let names = ["--out", "--prob", "--jet"].into_iter().map(String::from);
    let codes = args.codes.as_deref().map(|c| (c, "--codes".to_owned()));
    refuse_collisions(paths.iter().copied().zip(names).chain(codes))?;
    let pictures = Pictures::check(&paths, args.force)?;
    let query = Query { sentence: args.query.clone(), keywords: args.keywords.clone() };
    if query.sentence.is_none() && query.keywords.is_none() {
        bail!("give --query, --keywords or both");
    }
    let checkpoint = args.map.open(&args.checkpoint)?;
    let checkpoint_sha256 = checkpoint.weights_sha256()?;
    let CheckpointModel { model, vocab, .. } = checkpoint;
    let rects = args.map.scene_crops(&args.image)?;
    let (scene, scene_sha256) = load_rgb_hashed(&args.image, args.map.max_pixels)?;
    let (width, height) = (scene.width() as usize, scene.height() as usize);

    let key = CodesKey {
        scene_sha256,
        checkpoint_sha256,
        steps: args.map.steps.clone(),
        crop_resize: format!("{:?}", args.map.crop_resize).to_lowercase(),
        image_size: model.image_size(),
    };
    let (codes, reused) = crop_codes(args, &model, &scene, &rects, key)?;
    let start = Instant::now();
    let [cut, encode] = codes.seconds;
    let searcher = Searcher::new(model, vocab, codes.fv, codes.gate);
    let scores = args.map.scores(&searcher, &query)?;
    let sim = encode + start.elapsed().as_secs_f64();
    let (map, [gnt, flt]) = args.map.probability_map(height, width, &rects, &Vec::<f32>::try_from(&scores)?);

    let gray = image::GrayImage::from_raw(width as u32, height as u32, map.pixels.clone()).context("map size")?;
    let mut written = vec![render::overlay(scene, &map, args.alpha).into(), gray.into()];
    written.extend(args.jet.as_ref().map(|_| image::DynamicImage::from(render::jet_image(&map))));
    pictures.write(written)?;

    let summary = Summary {
        rects: &rects,
        steps: &args.map.steps,
        scores: &scores,
        map: &map,
        seconds: [cut, sim, gnt, flt],
        reused,
    };
    summary.print(args.json, &args.out, &prob)
}

/// The codes of the scene's crops: from `--codes` when that file holds the codes of the same
/// scene, checkpoint and crops, else encoded (and then kept there when `--codes` is given).
/// `true` with codes reused (they took no time: `seconds` zero).
fn crop_codes(
    args: &LocateArgs,
    model: &crate::model::Model,
    scene: &image::RgbImage,
    rects: &[Rect],
    key: CodesKey,
) -> Result<(CropEncoding, bool)> {
    let mut outputs = match &args.codes {
        Some(path) => {
            if path.exists() {
                let kept = CropCodes::load(path, model.embed_dim())?;
                if kept.key == key && kept.crops == rects {
                    return Ok((CropEncoding { fv: kept.fv, gate: kept.gate, seconds: [0.0; 2] }, true));
                }
            }
            let mut outputs = Outputs::for_file(path, "crop codes", args.force)?;
            outputs.check(path)?;
            Some((outputs, path))
        }
        None => None,
    };
    let progress = crate::report::progress(rects.len() as u64, "encoding crops");
    let encoded = encode_crops(model, scene, rects, args.map.crop_resize, args.map.batch_size, &progress)?;
    progress.finish_and_clear();
    if let Some((outputs, path)) = outputs.as_mut() {
        let codes = CropCodes {
            key,
            crops: rects.to_vec(),
            fv: encoded.fv.shallow_clone(),
            gate: encoded.gate.as_ref().map(|g| g.shallow_clone()),
        };
        codes.save(outputs, path)?;
    }
    if let Some((outputs, _)) = outputs {
        outputs.finish()?;
    }
    Ok((encoded, false))
}

/// What `locate` reports.
struct Summary<'a> {
    rects: &'a [Rect],
    steps: &'a [usize],
    scores: &'a tch::Tensor,
    map: &'a Gray,
    /// Seconds to cut and resize the crops, to encode and score them, to build the map and to
    /// filter it (SLM's Cut, Sim, Gnt, Flt).
    seconds: [f64; 4],
    /// Whether the crop codes came from `--codes`.
    reused: bool,
}

impl Summary<'_> {
    fn crops_per_step(&self) -> Vec<(usize, usize)> {
        self.steps.iter().map(|&s| (s, self.rects.iter().filter(|r| r.r1 - r.r0 == s).count())).collect()
    }

    /// Every crop with its score: `[r0, r1, c0, c1, score]` (the f32 score widened, so that a
    /// reader in f64 sums exactly the same values).
    fn crop_scores(&self) -> Result<Vec<serde_json::Value>> {
        let scores = Vec::<f32>::try_from(self.scores)?;
        let row = |(r, s): (&Rect, f32)| serde_json::json!([r.r0, r.r1, r.c0, r.c1, f64::from(s)]);
        Ok(self.rects.iter().zip(scores).map(row).collect())
    }

    fn print(&self, json: bool, out: &Path, prob: &Path) -> Result<()> {
        let centres = selo::attention_centres(self.map);
        let top: Vec<(Rect, f32)> = top_k(self.scores, 5).into_iter().map(|(i, s)| (self.rects[i], s)).collect();
        if json {
            let top: Vec<serde_json::Value> = top
                .iter()
                .map(|(r, s)| serde_json::json!({"rows": [r.r0, r.r1], "columns": [r.c0, r.c1], "score": s}))
                .collect();
            let per_step: serde_json::Map<String, serde_json::Value> =
                self.crops_per_step().into_iter().map(|(s, n)| (s.to_string(), n.into())).collect();
            let value = serde_json::json!({
                "crops": self.rects.len(), "crops_per_step": per_step, "top_crops": top, "centers": centres,
                "seconds": {"cut": self.seconds[0], "sim": self.seconds[1], "gnt": self.seconds[2], "flt": self.seconds[3]},
                "codes_reused": self.reused, "crop_scores": self.crop_scores()?,
                "overlay": out, "probability_map": prob,
            });
            println!("{value}");
            return Ok(());
        }
        let mut table = Table::new(["step", "crops"]);
        for (step, n) in self.crops_per_step() {
            table.row([step.to_string(), n.to_string()]);
        }
        print!("{table}");
        let centres: Vec<String> = centres.iter().map(|(x, y)| format!("({x}, {y})")).collect();
        let [cut, sim, gnt, flt] = self.seconds;
        println!(
            "\nbest crop rows {}..{} columns {}..{} (score {:.4}); attention centres {}; \
             cut {cut:.1} s, sim {sim:.1} s, gnt {gnt:.1} s, flt {flt:.1} s",
            top[0].0.r0,
            top[0].0.r1,
            top[0].0.c0,
            top[0].0.c1,
            top[0].1,
            if centres.is_empty() { "none".to_owned() } else { centres.join(", ") },
        );
        if self.reused {
            println!("the crop codes were reused from --codes: only the text was encoded");
        }
        println!("overlay written to {}, probability map to {}", out.display(), prob.display());
        Ok(())
    }
}
