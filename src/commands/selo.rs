//! `amfmn selo`: the SeLo benchmark's four indicators (Rsu, Ras, Rda, Rmi) of probability maps
//! against the annotated regions, exactly as the authors' `SLM.py` computes them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::data::image_file::confined_path;
use crate::locate::annotations::{self, Case};
use crate::locate::selo::{self, parameters, Indicators};
use crate::report;
use crate::table::Table;

/// Arguments of `amfmn selo`.
#[derive(Debug, Clone, clap::Args)]
pub struct SeloArgs {
    /// The benchmark's annotation file: a JSON array of {caption, jpg_name, points}.
    #[arg(long, value_name = "FILE.json")]
    pub annotations: PathBuf,
    /// The folder of the probability maps, probmap_{i}.png (or .jpg), matched to the cases by index.
    #[arg(long, value_name = "DIR")]
    pub heatmaps: PathBuf,
    /// The scenes' folder: each map must have its scene's size.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Evaluates every case and prints a row per case and the mean.
pub fn run(args: &SeloArgs) -> Result<()> {
    let cases = annotations::read(&args.annotations)?;
    if cases.is_empty() {
        bail!("{}: no cases", args.annotations.display());
    }
    let progress = report::progress(cases.len() as u64, "evaluating");
    let mut results = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        results.push(evaluate_case(args, index, case)?);
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
fn evaluate_case(args: &SeloArgs, index: usize, case: &Case) -> Result<Indicators> {
    let path = annotations::map_path(&args.heatmaps, index).with_context(|| {
        format!("no probability map for case {index}: {}", args.heatmaps.join(format!("probmap_{index}.png")).display())
    })?;
    let map = annotations::read_map(&path)?;
    if let Some(images) = &args.images {
        let scene = confined_path(images, &case.jpg_name).map_err(|e| anyhow::anyhow!("case {index}: {e}"))?;
        let (width, height) = image::image_dimensions(&scene)
            .with_context(|| format!("case {index}: cannot read the size of the scene {}", scene.display()))?;
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
