//! The image-encoding pipeline's host side: images/s of decoding and the evaluation transform
//! (resize, normalize) into batches, as `index`, evaluation and `saliency` prepare them for the
//! model (the model itself is left out). On a GPU machine `index` cannot encode faster than this.
//!
//! `cargo bench --bench encode -- IMAGES_DIR WORKERS [BATCH] [ROUNDS]` (every file of the folder,
//! images of any size, side 256); prints `images_per_second=<best round>`.

use std::path::PathBuf;
use std::time::Instant;

use amfmn::encode::{each_batch, image_file_input, Workers};

fn main() -> anyhow::Result<()> {
    amfmn::device::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let dir = PathBuf::from(args.first().expect("IMAGES_DIR"));
    let workers: usize = args.get(1).expect("WORKERS").parse()?;
    let batch: usize = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(4), |s| s.parse())?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    let plan: Vec<Vec<PathBuf>> = files.chunks(batch.max(1)).map(<[PathBuf]>::to_vec).collect();
    let mut best = 0f64;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut images = 0;
        each_batch(
            &plan,
            256,
            Workers { workers, prefetch: 1 },
            |path, out| image_file_input(path, 256, out),
            |b| {
                images += b.rows.len();
                Ok(())
            },
        )?;
        best = best.max(images as f64 / start.elapsed().as_secs_f64());
    }
    println!("images_per_second={best:.0}");
    Ok(())
}
