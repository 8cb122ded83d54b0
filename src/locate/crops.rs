//! Cutting a scene into its crops, resizing them to the network's input and encoding them,
//! batch by batch, with a progress bar.

use std::time::Instant;

use anyhow::Result;
use image::RgbImage;
use tch::Tensor;

use super::heat::Rect;
use crate::data::transforms::{resize_bilinear, resize_cubic, to_chw};
use crate::encode::{self, Workers};
use crate::model::Model;

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

/// The codes of every crop, `batch_size` at a time, through the image-encoding pipeline: crops
/// are cut and resized by one thread per core while the model encodes the batch before.
/// `encoded` is told how many crops each batch held; an error from it stops the encoding.
pub fn encode_crops(
    model: &Model,
    scene: &RgbImage,
    crops: &[Rect],
    (resize, batch_size): (CropResize, usize),
    mut encoded: impl FnMut(usize) -> Result<()>,
) -> Result<CropEncoding> {
    let side = model.image_size();
    let plan: Vec<Vec<Rect>> = crops.chunks(batch_size.max(1)).map(<[Rect]>::to_vec).collect();
    let (mut fvs, mut gates, mut seconds) = (Vec::new(), Vec::new(), [0.0; 2]);
    let prepare = |rect: &Rect, out: &mut [f32]| -> Result<()> {
        crop_input(scene, rect, side, resize, out);
        Ok(())
    };
    encode::each_batch(&plan, side, Workers::all_cores(), prepare, |batch| {
        seconds[0] += batch.seconds;
        let start = Instant::now();
        let (fv, gate) = encode::image_codes(model, &batch.images);
        fvs.push(fv);
        gates.extend(gate);
        seconds[1] += start.elapsed().as_secs_f64();
        encoded(batch.rows.len())
    })?;
    let gate = (!gates.is_empty()).then(|| Tensor::cat(&gates, 0));
    Ok(CropEncoding { fv: Tensor::cat(&fvs, 0), gate, seconds })
}
