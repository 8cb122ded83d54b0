//! `amfmn saliency`: MVSA's spatial gate (or the attended map) of images, upsampled onto each
//! image as a grey mask and a JET overlay, with an optional HTML page and the raw grids.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::RuntimeArgs;
use crate::checkpoint::{Opening, TrainedModel};
use crate::data::image_file::batches_within_budget;
use crate::encode::{self, Workers};
use crate::fsutil::owned::{refuse_collisions, Outputs};
use crate::locate::render::write_png;
use crate::saliency::{self, Grid, MapKind, PageEntry, Scale, Upsample};
use crate::table::Table;

/// Arguments of `amfmn saliency`.
#[derive(Debug, Clone, clap::Args)]
pub struct SaliencyArgs {
    /// The checkpoint (a fold folder, a .json sidecar or a weights file; the encoders suffice).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Images (repeatable).
    #[arg(long, value_name = "FILE", required_unless_present = "images", conflicts_with = "images")]
    pub image: Vec<PathBuf>,
    /// A folder of images.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// With --images, also the images in its subfolders.
    #[arg(long, requires = "images")]
    pub recursive: bool,
    /// Output folder: <stem>.mask.png and <stem>.overlay.png per image (and <stem>.mask.npy).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The gate A (in 0..1) or the attended map main ⊙ A (signed).
    #[arg(long, value_enum, default_value = "gate")]
    pub map: MapKind,
    /// Levels: absolute round(255·v) (default for the gate) or per-image min–max (default for
    /// the attended map).
    #[arg(long, value_enum)]
    pub scale: Option<Scale>,
    /// How the grid is brought to the image's size.
    #[arg(long, value_enum, default_value = "bilinear")]
    pub upsample: Upsample,
    /// Weight of the colours in the overlay.
    #[arg(long, default_value_t = 0.3)]
    pub alpha: f64,
    /// Also write the raw grid values as <stem>.mask.npy (float32 [o, S/16, S/16]).
    #[arg(long)]
    pub npy: bool,
    /// Write a self-contained page (original, overlay and grid per image).
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<PathBuf>,
    /// Images encoded at a time.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Replace files amfmn did not write for saliency.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The images named on the command line: (path, name relative to the folder).
fn inputs(args: &SaliencyArgs) -> Result<Vec<(PathBuf, String)>> {
    let Some(dir) = &args.images else {
        return Ok(args
            .image
            .iter()
            .map(|p| (p.clone(), p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())))
            .collect());
    };
    let scan = crate::search::index::scan(dir, args.recursive)?;
    if scan.files.is_empty() {
        bail!("{}: no images (.tif, .jpg, .png) found", dir.display());
    }
    Ok(scan.files.into_iter().map(|f| (dir.join(&f.path), f.path)).collect())
}

/// The output `<out>/<name's stem><suffix>.<kind>` of the image `name` (`a/b.x.png` →
/// `<out>/a/b.x.mask.png`).
fn output(args: &SaliencyArgs, name: &str, suffix: &str, kind: &str) -> PathBuf {
    let stem = Path::new(name).with_extension("");
    args.out.join(format!("{}{suffix}.{kind}", stem.display()))
}

/// The files each image gives (before any channel suffix) and the page, with what they are:
/// two inputs of one stem (`x.png`, `x.jpg`) would write the same files.
fn planned_outputs(args: &SaliencyArgs, images: &[(PathBuf, String)]) -> Vec<(PathBuf, String)> {
    let mut planned: Vec<(PathBuf, String)> = images
        .iter()
        .flat_map(|(_, name)| {
            ["mask.png", "overlay.png", "mask.npy"]
                .map(|kind| (output(args, name, "", kind), format!("{name}'s {kind}")))
        })
        .collect();
    planned.extend(args.html.iter().map(|page| (page.clone(), "--html".to_owned())));
    planned
}

/// The decoded bytes of a batch of images kept for drawing (a batch holds them until it is drawn,
/// and the pipeline prepares the next ones meanwhile).
const BATCH_BYTES: u64 = 256 << 20;

/// MVSA's maps of a batch of inputs `[B, 3, S, S]`: the chosen kind and the gate, each
/// `[B, o, S/16, S/16]` on the CPU.
fn maps_of(model: &crate::model::Model, images: &Tensor, kind: MapKind) -> (Tensor, Tensor) {
    let maps = tch::no_grad(|| model.net.encode_images_with_maps(&model.prepare_images(images)));
    let chosen = match kind {
        MapKind::Gate => &maps.gate,
        MapKind::Attended => &maps.attended,
    };
    (chosen.to_device(Device::Cpu).to_kind(Kind::Float), maps.gate.to_device(Device::Cpu).to_kind(Kind::Float))
}

/// One image's maps, `[o, S/16, S/16]`: the chosen kind and the gate.
struct Maps {
    chosen: Tensor,
    gate: Tensor,
}

/// What [`draw`] wrote: the overlays, and the first channel's overlay and scaled grid.
struct Drawn {
    written: Vec<PathBuf>,
    first: Option<(image::RgbImage, Grid)>,
}

/// Writes one image's mask and overlay per channel (and its grids with `--npy`).
fn draw(
    args: &SaliencyArgs,
    outputs: &mut Outputs,
    name: &str,
    image: &image::RgbImage,
    maps: &Maps,
    scale: Scale,
) -> Result<Drawn> {
    let channels = maps.chosen.size()[0];
    let mut drawn = Drawn { written: Vec::new(), first: None };
    for k in 0..channels {
        let g = grid(&maps.chosen, k)?;
        let (mask, overlay) = saliency::pictures(&g, image, scale, args.upsample, args.alpha);
        let suffix = if channels > 1 { format!(".c{k}") } else { String::new() };
        let [mask_path, overlay_path] = ["mask.png", "overlay.png"].map(|kind| output(args, name, &suffix, kind));
        if let Some(parent) = mask_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_png(outputs, &mask_path, mask.into())?;
        write_png(outputs, &overlay_path, overlay.clone().into())?;
        drawn.written.push(overlay_path);
        if k == 0 {
            drawn.first = Some((overlay, g.scaled(scale)));
        }
    }
    if args.npy {
        let values: Vec<f32> = Vec::try_from(maps.chosen.contiguous().view([-1]))?;
        let shape: Vec<usize> = maps.chosen.size().iter().map(|&s| s as usize).collect();
        let array = ndarray::ArrayD::from_shape_vec(shape, values)?;
        crate::npy::write_f32(outputs, &output(args, name, "", "mask.npy"), &array.view())?;
    }
    Ok(drawn)
}

/// Channel `k` of `[o, h, w]` as a grid.
fn grid(maps: &Tensor, k: i64) -> Result<Grid> {
    let size = maps.size();
    let values: Vec<f32> = Vec::try_from(maps.get(k).contiguous().view([-1]))?;
    Ok(Grid { width: size[2] as usize, height: size[1] as usize, values })
}

/// Writes every image's masks and overlays; prints a row (or JSON) per image.
pub fn run(args: &SaliencyArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!("--alpha {}: give a weight between 0 and 1", args.alpha);
    }
    let images = inputs(args)?;
    refuse_collisions(planned_outputs(args, &images).iter().map(|(p, what)| (p.as_path(), what.clone())))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut outputs = Outputs::new(&args.out, "saliency", args.force)?;
    let mut page = match &args.html {
        Some(path) => Some((Outputs::for_file(path, "saliency page", args.force)?, path)),
        None => None,
    };
    if let Some((outputs, path)) = page.as_mut() {
        outputs.check(path)?;
    }
    let opening = Opening { encoders_only: true, ..Opening::on(args.runtime.device()?) };
    let TrainedModel { model, .. } = TrainedModel::open(&args.checkpoint, opening)?;
    let scale = args.scale.unwrap_or(if args.map == MapKind::Gate { Scale::Absolute } else { Scale::Minmax });
    let progress = crate::report::progress(images.len() as u64, "encoding images");
    let (mut rows, mut shown) = (Vec::new(), Vec::new());
    let all_paths: Vec<PathBuf> = images.iter().map(|(path, _)| path.clone()).collect();
    let plan: Vec<Vec<PathBuf>> = batches_within_budget(&all_paths, args.batch_size, BATCH_BYTES)
        .into_iter()
        .map(|batch| all_paths[batch].to_vec())
        .collect();
    let side = model.image_size();
    let prepare = |path: &PathBuf, out: &mut [f32]| encode::image_file_input_kept(path, side, out);
    encode::each_batch(&plan, side, Workers::all_cores(), prepare, |batch| {
        progress.inc((batch.rows.len() + batch.failures.len()) as u64);
        for (item, reason) in &batch.failures {
            crate::report::warn(format!("skipped {}: {reason}", images[*item].1));
        }
        let (chosen, gate) = maps_of(&model, &batch.images, args.map);
        for (i, (item, image)) in batch.rows.into_iter().enumerate() {
            let name = &images[item].1;
            let maps = Maps { chosen: chosen.get(i as i64), gate: gate.get(i as i64) };
            let drawn = draw(args, &mut outputs, name, &image, &maps, scale)?;
            rows.push((name.clone(), saliency::summary(&grid(&maps.gate, 0)?), drawn.written));
            if let Some(first) = drawn.first.filter(|_| page.is_some()) {
                shown.push((name.clone(), image, first.0, first.1));
            }
        }
        Ok(())
    })?;
    progress.finish_and_clear();
    if rows.is_empty() {
        bail!("none of the {} images could be read", images.len());
    }
    outputs.finish()?;
    if let Some((mut outputs, path)) = page {
        let entries: Vec<PageEntry> =
            shown.iter().map(|(name, image, overlay, grid)| PageEntry { name, image, overlay, grid }).collect();
        saliency::write_page(&mut outputs, path, "MVSA saliency", &entries)?;
        outputs.finish()?;
    }
    print_rows(&rows, args.json);
    Ok(())
}

fn print_rows(rows: &[(String, saliency::GateSummary, Vec<PathBuf>)], json: bool) {
    if json {
        let images: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, s, written)| serde_json::json!({"image": name, "gate": s, "overlays": written}))
            .collect();
        println!("{}", serde_json::json!({ "images": images }));
        return;
    }
    let mut table = Table::new(["image", "gate min", "max", "mean", "arg-max cell", "cells > 0.5"]);
    for (name, s, _) in rows {
        table.row([
            name.clone(),
            format!("{:.4}", s.min),
            format!("{:.4}", s.max),
            format!("{:.4}", s.mean),
            format!("({}, {})", s.argmax[0], s.argmax[1]),
            format!("{:.1}%", 100.0 * s.above_half),
        ]);
    }
    print!("{table}");
}
