//! Cutting a scene into its crops, resizing them to the network's input and encoding them,
//! batch by batch: on the host's cores for a CPU model, as batched tensor operations on the GPU
//! for a CUDA model (the scene uploaded once), with the same values.

use std::time::Instant;

use anyhow::Result;
use image::RgbImage;
use tch::{Device, Tensor};

use super::heat::Rect;
use crate::data::transforms::{resize_bilinear, resize_bilinear_on, resize_cubic, resize_cubic_on, to_chw, to_chw_on};
use crate::device::DeviceClock;
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

/// The inputs `[B, 3, side, side]` of the crops `rects` of a scene's levels `scene` (`[H, W, 3]`
/// u8, on any device), cut and resized where the scene is, one run of equal-sized crops at a
/// time: [`crop_input`] of each crop, bit for bit.
fn crop_inputs_on(scene: &Tensor, rects: &[Rect], side: u32, resize: CropResize) -> Tensor {
    let extent = |r: &Rect| (r.r1 - r.r0, r.c1 - r.c0);
    let runs = rects.chunk_by(|a, b| extent(a) == extent(b)).map(|run| {
        let cut: Vec<Tensor> = run
            .iter()
            .map(|r| scene.narrow(0, r.r0 as i64, extent(r).0 as i64).narrow(1, r.c0 as i64, extent(r).1 as i64))
            .collect();
        let cut = Tensor::stack(&cut, 0);
        let resized = match resize {
            CropResize::Cubic => resize_cubic_on(&cut, side, side),
            CropResize::Bilinear => resize_bilinear_on(&cut, side, side),
        };
        to_chw_on(&resized)
    });
    Tensor::cat(&runs.collect::<Vec<_>>(), 0)
}

/// The codes of every crop, `batch_size` at a time: for a CUDA model cut and resized on the GPU
/// ([`crop_inputs_on`]), otherwise by one thread per core while the model encodes the batch
/// before. `encoded` is told how many crops each batch held; an error from it stops the encoding.
pub fn encode_crops(
    model: &Model,
    scene: &RgbImage,
    crops: &[Rect],
    (resize, batch_size): (CropResize, usize),
    encoded: impl FnMut(usize) -> Result<()>,
) -> Result<CropEncoding> {
    let plan: Vec<Vec<Rect>> = crops.chunks(batch_size.max(1)).map(<[Rect]>::to_vec).collect();
    let job = CropJob { model, scene, plan: &plan, resize };
    if model.device().is_cuda() {
        job.on_device(encoded)
    } else {
        job.on_host(encoded)
    }
}

/// The crops of a scene to encode, in batches, and how they are resized.
struct CropJob<'a> {
    model: &'a Model,
    scene: &'a RgbImage,
    plan: &'a [Vec<Rect>],
    resize: CropResize,
}

impl CropJob<'_> {
    /// [`encode_crops`] with the crops prepared by the host's cores.
    fn on_host(&self, mut encoded: impl FnMut(usize) -> Result<()>) -> Result<CropEncoding> {
        let (side, scene, resize) = (self.model.image_size(), self.scene, self.resize);
        let mut codes = Collected::new(self.model.device());
        let prepare = |rect: &Rect, out: &mut [f32]| -> Result<()> {
            crop_input(scene, rect, side, resize, out);
            Ok(())
        };
        encode::each_batch(self.plan, side, Workers::all_cores(), prepare, |batch| {
            codes.prepared += batch.seconds;
            codes.encode(self.model, &batch.images)?;
            encoded(batch.rows.len())
        })?;
        codes.finish()
    }

    /// [`encode_crops`] with the scene's levels uploaded once to the model's device and each
    /// batch cut and resized there, the host queueing each batch without waiting for the last.
    fn on_device(&self, mut encoded: impl FnMut(usize) -> Result<()>) -> Result<CropEncoding> {
        let (device, side) = (self.model.device(), self.model.image_size());
        let began = Instant::now();
        let levels = levels_of(self.scene).to_device(device);
        let mut codes = Collected::new(device);
        codes.prepared = began.elapsed().as_secs_f64();
        for batch in self.plan {
            let inputs = codes.cut.time(|| crop_inputs_on(&levels, batch, side, self.resize))?;
            codes.encode(self.model, &inputs)?;
            encoded(batch.len())?;
        }
        codes.finish()
    }
}

/// A scene's levels as one `[H, W, 3]` u8 tensor on the CPU (one copy).
fn levels_of(scene: &RgbImage) -> Tensor {
    let (width, height) = scene.dimensions();
    Tensor::from_slice(scene.as_raw()).view([height as i64, width as i64, 3])
}

/// The codes of the batches queued so far, and the time spent making their inputs and
/// encoding them.
struct Collected {
    codes: encode::QueuedCodes,
    /// Seconds the host spent preparing inputs (or uploading the scene).
    prepared: f64,
    /// The device's time cutting and resizing crops.
    cut: DeviceClock,
    /// The device's time encoding them ("Sim").
    sim: DeviceClock,
}

impl Collected {
    fn new(device: Device) -> Collected {
        let (cut, sim) = (DeviceClock::new(device), DeviceClock::new(device));
        Collected { codes: encode::QueuedCodes::default(), prepared: 0.0, cut, sim }
    }

    /// Queues the encoding of a batch of inputs `[B, 3, S, S]`, timed as "Sim"; the codes stay
    /// on the device until [`Collected::finish`].
    fn encode(&mut self, model: &Model, inputs: &Tensor) -> Result<()> {
        let codes = self.sim.time(|| encode::image_codes_on_device(model, inputs))?;
        self.codes.push(codes);
        Ok(())
    }

    /// The codes, copied to the CPU once the device has run every batch, and the seconds.
    fn finish(mut self) -> Result<CropEncoding> {
        let seconds = [self.prepared + self.cut.seconds()?, self.sim.seconds()?];
        let (fv, gate) = self.codes.take_to_host();
        Ok(CropEncoding { fv, gate, seconds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// A scene of random levels (every rounding case of the resizes shows up).
    fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
        let mut levels = vec![0u8; (3 * width * height) as usize];
        crate::rng::stream(seed, &[]).fill_bytes(&mut levels);
        RgbImage::from_raw(width, height, levels).unwrap()
    }

    /// Runs of crops larger than, equal to and smaller than the input side, two not square, in
    /// the corners and in the middle of a 100x90 scene. The 16x32 crop is enlarged exactly 2x
    /// down its columns (weights of k/1024): about one value in 256 lands on a half, which
    /// only rounding half away from zero gets right.
    fn rects() -> Vec<Rect> {
        let r = |r0, c0, h, w| Rect { r0, r1: r0 + h, c0, c1: c0 + w };
        let (big, small) = ([r(0, 0, 48, 48), r(42, 52, 48, 48)], [r(10, 30, 32, 32), r(0, 52, 48, 48)]);
        [&big[..], &small[..], &[r(70, 80, 20, 20), r(5, 3, 70, 40), r(74, 60, 16, 32)]].concat()
    }

    fn host_inputs(scene: &RgbImage, rects: &[Rect], side: u32, resize: CropResize) -> Tensor {
        let len = 3 * (side * side) as usize;
        let mut out = vec![0f32; rects.len() * len];
        for (rect, out) in rects.iter().zip(out.chunks_exact_mut(len)) {
            crop_input(scene, rect, side, resize, out);
        }
        Tensor::from_slice(&out).view([rects.len() as i64, 3, side as i64, side as i64])
    }

    #[test]
    fn crops_cut_and_resized_on_device_equal_the_host_crops_bit_for_bit() {
        let scene = noise(100, 90, 3);
        let levels = levels_of(&scene).to_device(crate::device::test_device());
        for resize in [CropResize::Cubic, CropResize::Bilinear] {
            let host = host_inputs(&scene, &rects(), 32, resize);
            let batched = crop_inputs_on(&levels, &rects(), 32, resize).to_device(tch::Device::Cpu);
            assert_eq!(batched.size(), host.size());
            assert!(batched.equal(&host), "{resize:?}: {}", (batched - &host).abs().max());
        }
    }

    #[test]
    fn crops_encoded_on_device_equal_the_host_path() {
        let model = crate::model::demo_model(&["dataset.image_size=32"], 12, crate::device::test_device(), 3);
        let scene = noise(100, 90, 4);
        let plan: Vec<Vec<Rect>> = rects().chunks(4).map(<[Rect]>::to_vec).collect();
        let mut counts = Vec::new();
        let count = |n| {
            counts.push(n);
            Ok(())
        };
        let job = CropJob { model: &model, scene: &scene, plan: &plan, resize: CropResize::Cubic };
        let device = job.on_device(count).unwrap();
        assert_eq!(counts, [4, 3]);
        let host = job.on_host(|_| Ok(())).unwrap();
        assert_eq!(device.fv.size(), [7, model.embed_dim()]);
        assert!(device.fv.allclose(&host.fv, 0.0, 1e-6, false), "{}", (device.fv - host.fv).abs().max());
        assert_eq!(device.gate.is_some(), host.gate.is_some());
        if let (Some(a), Some(b)) = (device.gate, host.gate) {
            assert!(a.allclose(&b, 0.0, 1e-6, false));
        }
    }
}
