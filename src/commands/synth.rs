//! `amfmn synth`: writes the synthetic remote-sensing demo set; `amfmn synth-scenes`: large
//! scenes composed from its classes, with the SeLo benchmark's annotations.

use std::path::PathBuf;

use anyhow::Result;

use crate::synthetic::large::{write_scenes, LargeScenesConfig, SceneFormat};
use crate::synthetic::{write_dataset, SynthConfig, SynthFormat};
use crate::table::Table;

/// Arguments of `amfmn synth`.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Output folder (precomp layout; images under `images/`).
    #[arg(long, value_name = "DIR", default_value = "data/demo_precomp")]
    pub out: PathBuf,
    /// Number of images (a fifth of them form the test split).
    #[arg(long, default_value_t = 500)]
    pub images: usize,
    /// Side of the square images in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    /// Random seed; the same seed writes identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image file format.
    #[arg(long, value_enum, default_value_t = SynthFormat::Mixed)]
    pub format: SynthFormat,
    /// Write into a non-empty folder that holds no earlier synth output (files of the same
    /// names are replaced; nothing else is touched).
    #[arg(long)]
    pub force: bool,
}

/// Writes the set and prints its composition.
pub fn run(args: &SynthArgs) -> Result<()> {
    let config = SynthConfig { images: args.images, size: args.size, seed: args.seed, format: args.format };
    let summary = write_dataset(&args.out, config, args.force)?;
    let mut table = Table::new(["class", "train images", "test images"]);
    for (class, [train, test]) in &summary.per_class {
        table.row([class.to_string(), train.to_string(), test.to_string()]);
    }
    let train: usize = summary.per_class.values().map(|c| c[0]).sum();
    let test: usize = summary.per_class.values().map(|c| c[1]).sum();
    table.row(["all".to_string(), train.to_string(), test.to_string()]);
    print!("{table}");
    let formats: Vec<String> = summary.per_format.iter().map(|(ext, n)| format!("{n} .{ext}")).collect();
    let total_captions = summary.captions[0] + summary.captions[1];
    println!(
        "\n{} images of {}x{} ({}), {} captions ({} train, {} test, {:.1} words each), {:.1} keywords per image, written to {}",
        args.images,
        args.size,
        args.size,
        formats.join(", "),
        total_captions,
        summary.captions[0],
        summary.captions[1],
        summary.caption_words as f64 / total_captions as f64,
        summary.keywords as f64 / args.images as f64,
        args.out.display()
    );
    Ok(())
}

/// Arguments of `amfmn synth-scenes`.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthScenesArgs {
    /// Output folder: `scenes/`, `annotations/anno.json` (the SeLo benchmark's format) and
    /// `scenes.json` (every placed tile).
    #[arg(long, value_name = "DIR", default_value = "data/selo_synth")]
    pub out: PathBuf,
    /// Number of scenes.
    #[arg(long, default_value_t = 12)]
    pub scenes: usize,
    /// Scene size, WIDTHxHEIGHT.
    #[arg(long, default_value = "2048x2048", value_parser = parse_size)]
    pub size: (usize, usize),
    /// Random seed; the same seed writes identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image file format of the scenes.
    #[arg(long, value_enum, default_value_t = SceneFormat::Png)]
    pub format: SceneFormat,
    /// Write into a folder holding files amfmn did not write there (files of the same names are
    /// replaced; nothing else is touched).
    #[arg(long)]
    pub force: bool,
}

/// `2048x1536` → (2048, 1536).
fn parse_size(text: &str) -> std::result::Result<(usize, usize), String> {
    let parse = |s: &str| s.trim().parse::<usize>().ok();
    match text.split_once(['x', 'X']).map(|(w, h)| (parse(w), parse(h))) {
        Some((Some(w), Some(h))) => Ok((w, h)),
        _ => Err(format!("expected WIDTHxHEIGHT in pixels, e.g. 2048x2048, not {text:?}")),
    }
}

/// Writes the scenes and prints one row per scene.
pub fn run_scenes(args: &SynthScenesArgs) -> Result<()> {
    let (width, height) = args.size;
    let config = LargeScenesConfig { scenes: args.scenes, width, height, seed: args.seed, format: args.format };
    let summary = write_scenes(&args.out, config, args.force)?;
    let mut table = Table::new(["scene", "object tiles", "cases"]);
    for (name, tiles, cases) in &summary.scenes {
        table.row([name.clone(), tiles.to_string(), cases.to_string()]);
    }
    print!("{table}");
    let cases: usize = summary.scenes.iter().map(|s| s.2).sum();
    println!(
        "\n{} scenes of {width}x{height}, {cases} cases, annotations in {}",
        summary.scenes.len(),
        summary.annotations.display()
    );
    Ok(())
}
