//! Loader throughput: images/s of decode + train transforms (resize, rotation, crop, normalize)
//! through the threaded loader, over every image of a precomp split; with PIXELS `device`, of
//! decoding alone (what the loader's threads do for a CUDA model, which transforms on the GPU).
//!
//! `cargo bench --bench loader -- DATA_DIR WORKERS [BATCH] [EPOCHS] [PIXELS]` (PIXELS `host`,
//! the default, or `device`); prints one line `images_per_second=<best epoch>`.
//! `exec/bench_loader.sh` runs it beside PyTorch's DataLoader.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use amfmn::data::{CaptionSet, Loader, LoaderConfig, Pixels, PrecompSplit, Transform};

fn main() -> anyhow::Result<()> {
    amfmn::device::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let data = PathBuf::from(args.first().expect("DATA_DIR"));
    let workers: usize = args.get(1).expect("WORKERS").parse()?;
    let batch: usize = args.get(2).map_or(Ok(32), |s| s.parse())?;
    let epochs: usize = args.get(3).map_or(Ok(3), |s| s.parse())?;
    let pixels = match args.get(4).map_or("host", String::as_str) {
        "host" => Pixels::Host,
        "device" => Pixels::Device,
        other => anyhow::bail!("PIXELS {other}: host or device"),
    };
    let split = PrecompSplit::read(&data, "train", 5)?;
    // One sample per image: the benchmark measures image work, not caption handling.
    let set = Arc::new(CaptionSet {
        image_names: split.images.clone(),
        image_paths: split.image_paths(&data.join("images")),
        captions: vec![vec![1]; split.num_images()],
        texts: vec![String::new(); split.num_images()],
        keywords: None,
        captions_per_image: 1,
    });
    let transform = Transform::Train { resize: 278, crop: 256, rotation: [0.0, 90.0] };
    let loader = Loader::new(
        set,
        transform,
        LoaderConfig { batch_size: batch, workers, prefetch: 2, seed: 0, pixels, share: None },
    );
    let mut best = 0f64;
    for epoch in 0..=epochs {
        let start = Instant::now();
        let mut n = 0;
        for batch in loader.train_epoch(epoch) {
            n += batch?.images.len();
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        if epoch > 0 {
            best = best.max(rate);
        }
    }
    println!("images_per_second={best:.1}");
    Ok(())
}
