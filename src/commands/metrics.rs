//! `amfmn metrics`: the recall metrics of a saved score matrix (from amfmn, the original code,
//! or any other model).

use std::path::PathBuf;

use anyhow::{bail, Result};
use ndarray::Ix2;

use crate::eval::{results_table, Metrics};

/// Arguments of `amfmn metrics`.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// An images x captions score matrix (.npy, float32 or float64); caption k belongs to
    /// image k / captions-per-image.
    #[arg(long, value_name = "FILE.npy")]
    pub sims: PathBuf,
    #[arg(long = "captions-per-image", default_value_t = 5)]
    pub captions_per_image: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Checks the matrix and prints its metrics.
pub fn run(args: &MetricsArgs) -> Result<()> {
    let array = crate::npy::read_f32(&args.sims)?;
    let name = args.sims.display();
    let per = args.captions_per_image;
    if per == 0 {
        bail!("--captions-per-image 0: must be at least 1");
    }
    let shape = array.shape().to_vec();
    let Ok(scores) = array.into_dimensionality::<Ix2>() else {
        bail!("{name}: expected a 2-d images x captions matrix, got shape {shape:?}");
    };
    let (images, captions) = scores.dim();
    if images == 0 || captions % per != 0 {
        bail!("{name}: {captions} captions is not a multiple of {per} captions per image (--captions-per-image)");
    }
    if captions != images * per {
        bail!("{name}: {images} images need {} captions ({per} each), the matrix has {captions} columns", images * per);
    }
    if let Some(((i, c), bad)) = scores.indexed_iter().find(|(_, v)| !v.is_finite()) {
        bail!("{name}: entry ({i}, {c}) is {bad}; scores must be finite");
    }
    let m = Metrics::from_scores(scores.view(), per);
    if args.json {
        println!("{}", serde_json::to_value(m)?);
    } else {
        print!("{}", results_table(&[("sims".into(), m)]));
    }
    Ok(())
}
