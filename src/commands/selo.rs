//! `amfmn selo`: the SeLo benchmark's four indicators (Rsu, Ras, Rda, Rmi) of probability maps
//! against the annotated regions, exactly as the authors' `SLM.py` computes them; end to end,
//! the maps made first from a checkpoint as `locate` makes them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::MapArgs;
use crate::checkpoint::{Opening, TrainedModel};
use crate::data::image_file::{confined_path, image_dimensions, load_rgb_within};
use crate::fsutil::owned::Outputs;
use crate::locate::annotations::{self, Case};
use crate::locate::crops::encode_crops;
use crate::locate::render::{self, write_png};
use crate::locate::selo::{self, parameters, Indicators};
use crate::report;
use crate::search::{Query, Searcher};
use crate::table::Table;

/// Arguments of `amfmn selo`.
#[derive(Debug, Clone, clap::Args)]
pub struct SeloArgs {
    /// The benchmark's annotation file: a JSON array of {caption, jpg_name, points}.
    #[arg(long, value_name = "FILE.json")]
    pub annotations: PathBuf,
    /// The folder of the probability maps, probmap_{i}.png (or .jpg), matched to the cases by index.
    #[arg(long, value_name = "DIR", required_unless_present = "checkpoint", conflicts_with = "checkpoint")]
    pub heatmaps: Option<PathBuf>,
    /// The scenes' folder: each map must have its scene's size.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// End to end: make every case's map with this checkpoint (as `locate` does, each scene's
    /// crops encoded once for all its cases) into --out, then evaluate them.
    #[arg(long, value_name = "CKPT", requires_all = ["images", "out"])]
    pub checkpoint: Option<PathBuf>,
    /// Where the end-to-end mode writes probmap_{i}.png (and addmap_{i}.png with --overlays).
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    pub out: Option<PathBuf>,
    /// Also write each case's overlay addmap_{i}.png (0.7·scene + 0.3·JET(map)).
    #[arg(long, requires = "checkpoint")]
    pub overlays: bool,
    #[command(flatten)]
    pub map: MapArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Replace files in --out that amfmn did not write for selo.
    #[arg(long)]
    pub force: bool,
}

/// Evaluates every case and prints a row per case and the mean.
pub fn run(args: &SeloArgs) -> Result<()> {
    let cases = annotations::read(&args.annotations)?;
    if cases.is_empty() {
        bail!("{}: no cases", args.annotations.display());
    }
    let heatmaps = match (&args.checkpoint, &args.out, &args.images) {
        (Some(checkpoint), Some(out), Some(images)) => {
            write_maps(args, &cases, checkpoint, images, out)?;
            out
        }
        _ => args.heatmaps.as_ref().context("give --heatmaps, or --checkpoint with --images and --out")?,
    };
    let progress = report::progress(cases.len() as u64, "evaluating");
    let mut results = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        results.push(evaluate_case(args, heatmaps, index, case)?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let mean = |f: fn(&Indicators) -> f64| results.iter().map(f).sum::<f64>() / results.len() as f64;
    let means = [mean(|r| r.rsu), mean(|r| r.rda), mean(|r| r.ras), mean(|r| r.rmi)];
    if args.json {
        println!("{}", json(&cases, &results, means));
        return Ok(());
    }
    let mut table = Table::new(["index", "scene", "Rsu", "Rda", "Ras", "Rmi"]);
    for (index, (case, r)) in cases.iter().zip(&results).enumerate() {
        let values = [r.rsu, r.rda, r.ras, r.rmi].map(|v| format!("{v:.4}"));
        table.row([index.to_string(), case.jpg_name.clone()].into_iter().chain(values));
    }
    table.row(["mean".to_owned(), String::new()].into_iter().chain(means.map(|v| format!("{v:.4}"))));
    print!("{table}");
    Ok(())
}

/// The indicators of case `index`, after the checks of its map.
fn evaluate_case(args: &SeloArgs, heatmaps: &Path, index: usize, case: &Case) -> Result<Indicators> {
    let path = annotations::map_path(heatmaps, index).with_context(|| {
        format!("no probability map for case {index}: {}", heatmaps.join(format!("probmap_{index}.png")).display())
    })?;
    let map = annotations::read_map(&path, args.map.max_pixels)?;
    if let Some(images) = &args.images {
        let scene = confined_path(images, &case.jpg_name).map_err(|e| anyhow::anyhow!("case {index}: {e}"))?;
        let (width, height) = image_dimensions(&scene).with_context(|| format!("case {index}"))?;
        if (width as usize, height as usize) != (map.width, map.height) {
            bail!(
                "{} is {}x{} pixels but its scene {} is {width}x{height}: the map must cover the scene",
                path.display(),
                map.width,
                map.height,
                scene.display()
            );
        }
    }
    for (k, polygon) in case.points.iter().enumerate() {
        if annotations::leaves_map(polygon, map.width, map.height) {
            report::warn(format!(
                "case {index} ({}): polygon {k} leaves the {}x{} map",
                case.jpg_name, map.width, map.height
            ));
        }
    }
    selo::evaluate(&map, &case.points).with_context(|| format!("case {index} ({})", path.display()))
}

/// The end-to-end mode: every case's probability map (and overlay) written into `out`. Each
/// scene's crops are encoded once; every case's query is scored against its scene's codes.
fn write_maps(args: &SeloArgs, cases: &[Case], checkpoint: &Path, images: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut outputs = Outputs::new(out, "selo", args.force)?;
    let names = ["probmap", "addmap"];
    for index in 0..cases.len() {
        for name in &names[..1 + usize::from(args.overlays)] {
            outputs.check(&out.join(format!("{name}_{index}.png")))?;
        }
    }
    let scene_path = |name: &str| confined_path(images, name).map_err(|e| anyhow::anyhow!("{e}"));
    let mut scenes: Vec<&str> = cases.iter().map(|c| c.jpg_name.as_str()).collect();
    scenes.sort_unstable();
    scenes.dedup();
    let settings = args.map.settings();
    let opening = Opening { encoders_only: settings.encoders_only(), ..Opening::on(args.map.runtime.device()?) };
    let TrainedModel { model, vocab, .. } = TrainedModel::open(checkpoint, opening)?;
    let (mut fvs, mut gates, mut crops_of) = (Vec::new(), Vec::new(), HashMap::new());
    let mut first = 0;
    for name in &scenes {
        let path = scene_path(name)?;
        let rects = settings.scene_crops(&path)?;
        let scene = load_rgb_within(&path, args.map.max_pixels)?;
        let progress = report::progress(rects.len() as u64, &format!("encoding the crops of {name}"));
        let batching = (args.map.crop_resize, args.map.batch_size);
        let codes = encode_crops(&model, &scene, &rects, batching, |n| {
            progress.inc(n as u64);
            Ok(())
        })?;
        progress.finish_and_clear();
        fvs.push(codes.fv);
        gates.extend(codes.gate);
        let size = (scene.height() as usize, scene.width() as usize);
        crops_of.insert(*name, (first, rects.clone(), size));
        first += rects.len();
    }
    let gate = (!gates.is_empty()).then(|| tch::Tensor::cat(&gates, 0));
    let searcher = Searcher::new(model, vocab, tch::Tensor::cat(&fvs, 0), gate);
    let progress = report::progress(cases.len() as u64, "making the maps");
    for name in &scenes {
        let (first, rects, (height, width)) = &crops_of[name];
        // Decoded once for all the scene's overlays.
        let scene = if args.overlays { Some(load_rgb_within(&scene_path(name)?, args.map.max_pixels)?) } else { None };
        for (index, case) in cases.iter().enumerate().filter(|(_, case)| case.jpg_name == *name) {
            let query = Query { sentence: Some(case.caption.clone()), keywords: None };
            let scores = settings.scores(&searcher, &query).with_context(|| format!("case {index}"))?;
            let scores: Vec<f32> = Vec::try_from(scores.narrow(0, *first as i64, rects.len() as i64))?;
            let (map, _) = settings.probability_map(*height, *width, rects, &scores);
            if let Some(scene) = &scene {
                let overlay = render::overlay(scene.clone(), &map, 0.3);
                write_png(&mut outputs, &out.join(format!("addmap_{index}.png")), overlay.into())?;
            }
            let gray = image::GrayImage::from_raw(*width as u32, *height as u32, map.pixels).context("map size")?;
            write_png(&mut outputs, &out.join(format!("probmap_{index}.png")), gray.into())?;
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    outputs.finish()
}

/// The `--json` object: every sample with its centres and regions, the mean, the parameters.
fn json(cases: &[Case], results: &[Indicators], means: [f64; 4]) -> serde_json::Value {
    let samples: Vec<serde_json::Value> = cases
        .iter()
        .zip(results)
        .enumerate()
        .map(|(index, (case, r))| {
            serde_json::json!({
                "index": index, "image": case.jpg_name, "caption": case.caption,
                "rsu": r.rsu, "rda": r.rda, "ras": r.ras, "rmi": r.rmi,
                "centers": r.centers, "regions": r.regions,
            })
        })
        .collect();
    let [rsu, rda, ras, rmi] = means;
    serde_json::json!({
        "samples": samples,
        "mean": {"rsu": rsu, "rda": rda, "ras": ras, "rmi": rmi},
        "parameters": {
            "beta_su": parameters::BETA_SU, "epsilon": parameters::EPSILON, "expand": parameters::EXPAND,
            "filter_passes": parameters::FILTER_PASSES, "box": parameters::BOX,
            "peak_window": parameters::PEAK_WINDOW, "centre_threshold": parameters::CENTRE_THRESHOLD,
            "beta_as": parameters::BETA_AS, "eta_da": parameters::ETA_DA, "rmi_weights": parameters::RMI_WEIGHTS,
        },
    })
}
