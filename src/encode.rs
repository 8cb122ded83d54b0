//! The one image-encoding pipeline: the items of a plan of batches (image files, crops of a
//! scene) are prepared into normalised `[3, S, S]` inputs by worker threads that share each
//! batch, a batch ahead of the model, and handed over in order to the thread that encodes them
//! while the next batch is being prepared. `index`, `locate`, `saliency` and evaluation encode through it.

use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::Result;
use image::RgbImage;
use tch::{Device, Kind, Tensor};

use crate::data::image_file::with_decoded;
use crate::data::transforms::Transform;
use crate::device::host_batch;
use crate::model::{Model, Pass};
use crate::score::Scorer;

/// A batch of prepared inputs.
pub struct Prepared<E> {
    /// `[B, 3, S, S]` normalised floats of the items that could be prepared (on the CPU, pinned
    /// when CUDA is there).
    pub images: Tensor,
    /// For each row of `images`: the item's index in the whole plan, and what its preparation
    /// kept besides the input (a decoded image to draw on, or nothing).
    pub rows: Vec<(usize, E)>,
    /// Items that could not be prepared: their index in the whole plan and why.
    pub failures: Vec<(usize, String)>,
    /// Seconds spent preparing the batch (wall time, all its workers together).
    pub seconds: f64,
}

/// How the items are prepared: by `workers` threads (at least one) sharing each batch, at most
/// `prefetch` ready batches ahead of the model.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    pub workers: usize,
    pub prefetch: usize,
}

impl Workers {
    /// One thread per core of this machine, a batch ahead.
    pub fn all_cores() -> Workers {
        Workers { workers: std::thread::available_parallelism().map_or(1, |n| n.get()), prefetch: 1 }
    }
}

/// Prepares the batches of `plan` (items into inputs of side `side` by `prepare`, an error
/// skipping the item) and calls `consume` with each batch, in plan order, on the calling
/// thread, while the next batches are prepared: each batch by all the workers together (its
/// items in contiguous shares), so that memory holds `prefetch + 1` batches whatever the number
/// of workers.
pub fn each_batch<I: Sync, E: Send>(
    plan: &[Vec<I>],
    side: u32,
    workers: Workers,
    prepare: impl Fn(&I, &mut [f32]) -> Result<E> + Sync,
    mut consume: impl FnMut(Prepared<E>) -> Result<()>,
) -> Result<()> {
    let threads = workers.workers.max(1);
    let prepare = &prepare;
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(workers.prefetch.max(1));
        scope.spawn(move || {
            let mut start = 0;
            for batch in plan {
                if tx.send(prepare_batch(batch, start, side, threads, prepare)).is_err() {
                    return;
                }
                start += batch.len();
            }
        });
        for _ in 0..plan.len() {
            let batch = rx.recv().map_err(|_| anyhow::anyhow!("the input thread stopped unexpectedly"))?;
            consume(batch)?;
        }
        Ok(())
    })
}

/// The inputs of one batch whose first item is item `start` of the plan, prepared by `threads`
/// threads (contiguous shares of the items, each written in place), failed items left out.
fn prepare_batch<I: Sync, E: Send>(
    batch: &[I],
    start: usize,
    side: u32,
    threads: usize,
    prepare: &(impl Fn(&I, &mut [f32]) -> Result<E> + Sync),
) -> Prepared<E> {
    let began = Instant::now();
    let len = 3 * side as usize * side as usize;
    let side = side as i64;
    // Written in place: pinned on a CUDA machine, so the model's thread copies it to the GPU
    // without blocking and no host copy comes in between.
    let images = host_batch(&[batch.len() as i64, 3, side, side]);
    let buffer: &mut [f32] = if batch.is_empty() {
        &mut []
    } else {
        // SAFETY: `images` is a new contiguous float tensor of `batch.len() * len` elements that
        // nothing else reads or writes while `buffer` lives (until the rows are compacted).
        unsafe { std::slice::from_raw_parts_mut(images.data_ptr() as *mut f32, batch.len() * len) }
    };
    let share = batch.len().div_ceil(threads).max(1);
    let prepare_share = |items: &[I], out: &mut [f32]| -> Vec<Result<E>> {
        items.iter().zip(out.chunks_exact_mut(len)).map(|(item, out)| prepare(item, out)).collect()
    };
    let results: Vec<Result<E>> = if threads == 1 || batch.len() <= 1 {
        prepare_share(batch, buffer)
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .chunks(share)
                .zip(buffer.chunks_mut(share * len))
                .map(|(items, out)| scope.spawn(move || prepare_share(items, out)))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        })
    };
    let (mut rows, mut failures) = (Vec::new(), Vec::new());
    for (k, result) in results.into_iter().enumerate() {
        match result {
            Ok(kept) => {
                buffer.copy_within(k * len..(k + 1) * len, rows.len() * len);
                rows.push((start + k, kept));
            }
            Err(e) => failures.push((start + k, format!("{e:#}"))),
        }
    }
    let images = images.narrow(0, 0, rows.len() as i64);
    Prepared { images, rows, failures, seconds: began.elapsed().as_secs_f64() }
}

/// Fv `[B, d]` of a batch of inputs `[B, 3, S, S]`, on the model's device.
pub fn image_fv(model: &Model, images: &Tensor) -> Tensor {
    tch::no_grad(|| model.net.encode_images(&model.prepare_images(images), Pass::EVAL))
}

/// Fv `[B, d]` and, for soft attention, the gates `[B, d]` of a batch of inputs, on the CPU.
pub fn image_codes(model: &Model, images: &Tensor) -> (Tensor, Option<Tensor>) {
    let (fv, gate) = image_codes_on_device(model, images);
    (fv.to_device(Device::Cpu), gate.map(|g| g.to_device(Device::Cpu)))
}

/// [`image_codes`] left on the model's device: the host does not wait for the device to run
/// the batch, and queues the next one meanwhile.
pub fn image_codes_on_device(model: &Model, images: &Tensor) -> (Tensor, Option<Tensor>) {
    if images.size()[0] == 0 {
        let empty = Tensor::zeros([0, model.embed_dim()], (Kind::Float, model.device()));
        let gate = model.net.cross_attention_s.is_soft().then(|| empty.shallow_clone());
        return (empty, gate);
    }
    let codes = tch::no_grad(|| Scorer::new(&model.net).image_codes(image_fv(model, images)));
    (codes.fv, codes.gate)
}

/// Codes of batches left on the model's device ([`image_codes_on_device`]), copied to the CPU
/// together: the host waits for the device once for all of them.
#[derive(Default)]
pub struct QueuedCodes {
    fv: Vec<Tensor>,
    gate: Vec<Tensor>,
}

impl QueuedCodes {
    /// Adds a batch's Fv and gates `[B, d]`.
    pub fn push(&mut self, (fv, gate): (Tensor, Option<Tensor>)) {
        self.fv.push(fv);
        self.gate.extend(gate);
    }

    /// The number of batches queued.
    pub fn batches(&self) -> usize {
        self.fv.len()
    }

    /// Fv `[N, d]` and the gates of every queued batch in order, on the CPU (waits for the
    /// device to run them); the queue is left empty. At least one batch must be queued.
    pub fn take_to_host(&mut self) -> (Tensor, Option<Tensor>) {
        let on_host = |parts: Vec<Tensor>| Tensor::cat(&parts, 0).to_device(Device::Cpu);
        let gate = (!self.gate.is_empty()).then(|| on_host(std::mem::take(&mut self.gate)));
        (on_host(std::mem::take(&mut self.fv)), gate)
    }
}

/// The codes of one image file ([`image_codes`]).
pub fn image_file_codes(model: &Model, path: &Path) -> Result<(Tensor, Option<Tensor>)> {
    let side = model.image_size();
    let mut input = vec![0f32; 3 * side as usize * side as usize];
    image_file_input(path, side, &mut input)?;
    let images = Tensor::from_slice(&input).view([1, 3, side as i64, side as i64]);
    Ok(image_codes(model, &images))
}

/// The evaluation input of the image file `path` (decoded within the decoding budget, then the
/// evaluation transform: resize to `side`, normalise), written into `out`.
pub fn image_file_input(path: &Path, side: u32, out: &mut [f32]) -> Result<()> {
    with_decoded(path, |image| eval_input(&image, side, out))
}

/// [`image_file_input`] that also keeps the decoded image (to draw on).
pub fn image_file_input_kept(path: &Path, side: u32, out: &mut [f32]) -> Result<RgbImage> {
    with_decoded(path, |image| {
        eval_input(&image, side, out);
        image
    })
}

/// The evaluation transform of an image into `out`.
fn eval_input(image: &RgbImage, side: u32, out: &mut [f32]) {
    Transform::Eval { size: side }.apply(image, &mut crate::rng::stream(0, &[]), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items of 1x1 inputs filled with their own value; item 4 cannot be prepared.
    fn run(workers: usize) -> (Vec<usize>, Vec<(usize, String)>) {
        let plan: Vec<Vec<u32>> = vec![vec![0, 1, 2], vec![3, 4, 5, 6], vec![7, 8, 9], vec![10]];
        let (mut seen, mut failed) = (Vec::new(), Vec::new());
        let prepare = |&x: &u32, out: &mut [f32]| {
            anyhow::ensure!(x != 4, "four cannot be read");
            out.fill(x as f32);
            Ok(x * 10)
        };
        each_batch(&plan, 1, Workers { workers, prefetch: 1 }, prepare, |batch| {
            assert_eq!(batch.images.size(), [batch.rows.len() as i64, 3, 1, 1]);
            for (k, &(item, kept)) in batch.rows.iter().enumerate() {
                assert_eq!(kept as usize, item * 10, "what the preparation kept");
                assert_eq!(batch.images.double_value(&[k as i64, 2, 0, 0]), item as f64, "row {k} is item {item}");
                seen.push(item);
            }
            failed.extend(batch.failures);
            Ok(())
        })
        .unwrap();
        (seen, failed)
    }

    #[test]
    fn batches_come_in_plan_order_whatever_the_workers() {
        for workers in [1, 2, 3, 4, 8] {
            let (seen, failed) = run(workers);
            assert_eq!(seen, [0, 1, 2, 3, 5, 6, 7, 8, 9, 10], "{workers} workers: the rows after a failure move up");
            assert_eq!(failed, [(4, "four cannot be read".to_owned())], "{workers} workers");
        }
        let plan = vec![vec![1u8], vec![2], vec![3]];
        let mut calls = 0;
        let err = each_batch(
            &plan,
            1,
            Workers { workers: 2, prefetch: 1 },
            |_, _| Ok(()),
            |_| {
                calls += 1;
                anyhow::bail!("the model failed")
            },
        );
        assert_eq!((err.unwrap_err().to_string(), calls), ("the model failed".to_owned(), 1), "stops at once");
    }
}
