//! `amfmn locate`: where in a large scene a sentence (or keywords) applies, as SeLo v1 computes
//! it: multi-scale crops scored by the model, the per-pixel mean of their scores, min–max to
//! u8, a 251 median; written as a probability map, its JET picture and their overlay.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::MapArgs;
use crate::checkpoint::{Opening, TrainedModel};
use crate::data::image_file::load_rgb_hashed;
use crate::fsutil::owned::{refuse_collisions, Files};
use crate::locate::codes::{cached_or_encoded, CodesFile, CodesKey};
use crate::locate::heat::Rect;
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
    let mut pictures = Files::check(&paths, "locate", args.force)?;
    let query = Query { sentence: args.query.clone(), keywords: args.keywords.clone() };
    if query.sentence.is_none() && query.keywords.is_none() {
        bail!("give --query, --keywords or both");
    }
    let settings = args.map.settings();
    let opening = Opening { encoders_only: settings.encoders_only(), ..Opening::on(args.map.runtime.device()?) };
    let trained = TrainedModel::open(&args.checkpoint, opening)?;
    let checkpoint_sha256 = trained.weights_sha256()?;
    let rects = settings.scene_crops(&args.image)?;
    let (scene, scene_sha256) = load_rgb_hashed(&args.image, settings.max_pixels)?;
    let (width, height) = (scene.width() as usize, scene.height() as usize);
    let key = CodesKey {
        scene_sha256,
        checkpoint_sha256,
        steps: settings.steps.clone(),
        crop_resize: format!("{:?}", settings.crop_resize).to_lowercase(),
        image_size: trained.model.image_size(),
    };
    let file = args.codes.as_deref().map(|path| CodesFile { path, force: args.force });
    let batching = (settings.crop_resize, settings.batch_size);
    let (codes, reused) = cached_or_encoded(file, &trained.model, &scene, &rects, key, batching)?;
    let start = Instant::now();
    let [cut, encode] = codes.seconds;
    let searcher = Searcher::new(trained.model, trained.vocab, codes.fv, codes.gate);
    let scores = settings.scores(&searcher, &query)?;
    let sim = encode + start.elapsed().as_secs_f64();
    let (map, [gnt, flt]) = settings.probability_map(height, width, &rects, &Vec::<f32>::try_from(&scores)?);

    let gray = image::GrayImage::from_raw(width as u32, height as u32, map.pixels.clone()).context("map size")?;
    let mut written = vec![render::overlay(scene, &map, args.alpha).into(), gray.into()];
    written.extend(args.jet.as_ref().map(|_| image::DynamicImage::from(render::jet_image(&map))));
    for (path, picture) in paths.iter().zip(written) {
        pictures.write(path, &render::png_bytes(&picture, path)?)?;
    }
    pictures.finish()?;

    let summary = Summary {
        rects: &rects,
        steps: &settings.steps,
        scores: &scores,
        map: &map,
        seconds: [cut, sim, gnt, flt],
        reused,
    };
    summary.print(args.json, &args.out, &prob)
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
