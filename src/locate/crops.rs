//! Cutting a scene into its crops, resizing them to the network's input and encoding them,
//! batch by batch, with a progress bar.

use std::time::Instant;

use anyhow::Result;
use image::RgbImage;
use tch::{Device, Tensor};

use super::heat::Rect;
use crate::data::transforms::{resize_bilinear, resize_cubic, to_chw};
use crate::model::Model;
use crate::score::Scorer;

/// How crops are resized to the network's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CropResize {
    /// OpenCV's bicubic resize, as SeLo's scripts do (no antialiasing).
    Cubic,
    /// Pillow's antialiased bilinear resize, as amfmn's evaluation transform (what the network
    /// saw in training).
    Bilinear,
}

/// The crop `rect` of `scene`, resized to `side`², as normalised `[3, side, side]` floats.
fn crop_input(scene: &RgbImage, rect: &Rect, side: u32, resize: CropResize, out: &mut [f32]) {
    let (width, height) = ((rect.c1 - rect.c0) as u32, (rect.r1 - rect.r0) as u32);
    let crop = image::imageops::crop_imm(scene, rect.c0 as u32, rect.r0 as u32, width, height).to_image();
    let resized = match resize {
        CropResize::Cubic => resize_cubic(&crop, side, side),
        CropResize::Bilinear => resize_bilinear(&crop, side, side),
    };
    to_chw(&resized, 0, 0, side, out);
}

/// The codes of a scene's crops and the time taken.
pub struct CropEncoding {
    /// Fv `[N, d]` on the CPU.
    pub fv: Tensor,
    /// The gates `[N, d]` for soft attention.
    pub gate: Option<Tensor>,
    /// Seconds spent cutting and resizing (SLM's "Cut") and encoding ("Sim").
    pub seconds: [f64; 2],
}

/// The codes of every crop. Crops are cut and resized on one thread per core, `batch_size` at
/// a time.
pub fn encode_crops(
    model: &Model,
    scene: &RgbImage,
    crops: &[Rect],
    resize: CropResize,
    batch_size: usize,
    progress: &indicatif::ProgressBar,
) -> Result<CropEncoding> {
    let side = model.image_size();
    let len = 3 * side as usize * side as usize;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut fvs, mut gates, mut seconds) = (Vec::new(), Vec::new(), [0.0; 2]);
    for batch in crops.chunks(batch_size.max(1)) {
        let start = Instant::now();
        let mut buffer = vec![0f32; batch.len() * len];
        let per_thread = batch.len().div_ceil(workers);
        std::thread::scope(|s| {
            for (rects, outs) in batch.chunks(per_thread).zip(buffer.chunks_mut(per_thread * len)) {
                s.spawn(move || {
                    for (rect, out) in rects.iter().zip(outs.chunks_mut(len)) {
                        crop_input(scene, rect, side, resize, out);
                    }
                });
            }
        });
        seconds[0] += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let images = Tensor::from_slice(&buffer).view([batch.len() as i64, 3, side as i64, side as i64]);
        let codes = tch::no_grad(|| {
            let fv = model.net.encode_images(&model.prepare_images(&images), false);
            Scorer::new(&model.net).image_codes(fv)
        });
        fvs.push(codes.fv.to_device(Device::Cpu));
        gates.extend(codes.gate.map(|g| g.to_device(Device::Cpu)));
        seconds[1] += start.elapsed().as_secs_f64();
        progress.inc(batch.len() as u64);
    }
    let gate = (!gates.is_empty()).then(|| Tensor::cat(&gates, 0));
    Ok(CropEncoding { fv: Tensor::cat(&fvs, 0), gate, seconds })
}
