//! Batches for training (and validation pairs). `workers` threads decode and transform images into
//! bounded queues of ready batches (at most `prefetch` per worker), delivered in plan order.
//! Every sample draws its augmentation from its own random stream (seed, epoch, caption), so a
//! batch does not depend on the number of workers or on thread timing.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use tch::Tensor;

use super::dataset::CaptionSet;
use super::image_file::with_decoded;
use super::transforms::{apply_on, resize_bilinear, stack_levels, Draw, Transform};
use crate::rng;
use image::RgbImage;

/// How batches are made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Decode threads; 0 decodes on the consuming thread.
    pub workers: usize,
    /// Ready batches each worker may queue.
    pub prefetch: usize,
    /// Seed of the epoch order and augmentation streams.
    pub seed: u64,
    /// Where the images are transformed.
    pub pixels: Pixels,
    /// `(rank, world)`: decode only the images of this rank's share of each batch ([`shares`]),
    /// for one process of a launch; `None` decodes them all.
    pub share: Option<(usize, usize)>,
}

/// Where a loader's images are transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// On the loader's threads, into normalized f32 ([`Images::Ready`]).
    Host,
    /// On the model's device: the loader's threads only decode ([`Images::Decoded`]), for a
    /// CUDA model.
    Device,
}

/// A batch's images as the loader hands them over.
#[derive(Debug)]
pub enum Images {
    /// `[b, 3, S, S]` f32, transformed and normalized.
    Ready(Tensor),
    /// `[b, H, W, 3]` decoded u8 levels of one size (pinned when CUDA is there), each row with
    /// its random choices, still to be transformed by `transform` ([`apply_on`]).
    Decoded { levels: Tensor, draws: Vec<Draw>, transform: Transform },
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Images::Ready(images) => images.size()[0] as usize,
            Images::Decoded { draws, .. } => draws.len(),
        }
    }

    /// Whether the batch has no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images `start..start + size`.
    pub fn narrow(&self, start: usize, size: usize) -> Images {
        match self {
            Images::Ready(images) => Images::Ready(images.narrow(0, start as i64, size as i64)),
            Images::Decoded { levels, draws, transform } => Images::Decoded {
                levels: levels.narrow(0, start as i64, size as i64),
                draws: draws[start..start + size].to_vec(),
                transform: *transform,
            },
        }
    }

    /// The network's input on `device`: `[b, 3, S, S]` normalized f32, the same values either way.
    pub fn input_on(&self, device: tch::Device) -> Tensor {
        match self {
            Images::Ready(images) => images.to_device(device),
            Images::Decoded { levels, draws, transform } => apply_on(*transform, levels, draws, device),
        }
    }
}

/// A batch of (image, caption) pairs.
#[derive(Debug)]
pub struct PairBatch {
    /// The images of rows `images_from..images_from + b`, every row (`b = B`) unless
    /// [`LoaderConfig::share`] asks for one rank's share.
    pub images: Images,
    /// The batch row of `images`' first row.
    pub images_from: usize,
    /// `[B, L]` i64 token ids, zero-padded to the longest caption of the batch.
    pub captions: Tensor,
    /// `[B]` i64 caption lengths (at least 1).
    pub lengths: Tensor,
    /// Caption index of each row in the caption set.
    pub caption_ids: Vec<usize>,
    /// Image index of each row in the caption set.
    pub image_ids: Vec<usize>,
    /// The keywords of each row's image, `([B, K] ids, [B] lengths)`, when the set has them.
    pub keywords: Option<(Tensor, Tensor)>,
}

/// One sample of a plan: which image, and which augmentation stream it draws from.
#[derive(Debug, Clone, Copy)]
struct Sample {
    image: usize,
    stream: [u64; 3],
}

/// Makes batches of a caption set.
pub struct Loader {
    set: Arc<CaptionSet>,
    transform: Transform,
    config: LoaderConfig,
}

impl Loader {
    pub fn new(set: Arc<CaptionSet>, transform: Transform, config: LoaderConfig) -> Loader {
        assert!(config.batch_size > 0 && config.prefetch > 0, "batch_size and prefetch are at least 1");
        Loader { set, transform, config }
    }

    /// The caption set batches are drawn from.
    pub fn set(&self) -> &CaptionSet {
        &self.set
    }

    /// Caption order of training epoch `epoch`: a shuffle seeded by (seed, epoch).
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.set.num_captions()).collect();
        rng::shuffle(&mut rng::stream(self.config.seed, &[rng::tag::EPOCH_ORDER, epoch as u64]), &mut order);
        order
    }

    /// Number of pair batches of an epoch.
    pub fn num_pair_batches(&self) -> usize {
        self.set.num_captions().div_ceil(self.config.batch_size)
    }

    /// Whether pair batch `i` of an epoch holds `batch_size` pairs (only the last may hold fewer).
    pub fn is_full_batch(&self, i: usize) -> bool {
        (i + 1) * self.config.batch_size <= self.set.num_captions()
    }

    /// Shuffled (image, caption) pairs of training epoch `epoch`.
    pub fn train_epoch(&self, epoch: usize) -> impl Iterator<Item = Result<PairBatch>> {
        self.train_epoch_from(epoch, 0)
    }

    /// The batches of training epoch `epoch` after the first `skip` (to resume within an epoch).
    pub fn train_epoch_from(&self, epoch: usize, skip: usize) -> impl Iterator<Item = Result<PairBatch>> {
        let order = self.epoch_order(epoch);
        let start = (skip * self.config.batch_size).min(order.len());
        self.pairs(order[start..].to_vec(), epoch)
    }

    /// Every caption with its image, in caption order.
    pub fn pairs_in_order(&self) -> impl Iterator<Item = Result<PairBatch>> {
        self.pairs((0..self.set.num_captions()).collect(), 0)
    }

    fn pairs(&self, order: Vec<usize>, epoch: usize) -> impl Iterator<Item = Result<PairBatch>> {
        let set = Arc::clone(&self.set);
        let batches: Vec<Vec<usize>> = order.chunks(self.config.batch_size).map(<[usize]>::to_vec).collect();
        let share = self.config.share;
        let image_rows = move |b: usize| share.map_or((0, b), |(rank, world)| shares(b, world)[rank]);
        let plan = batches
            .iter()
            .map(|ids| {
                let (from, n) = image_rows(ids.len());
                ids[from..from + n]
                    .iter()
                    .map(|&k| Sample {
                        image: set.image_of_caption(k),
                        stream: [rng::tag::AUGMENT, epoch as u64, k as u64],
                    })
                    .collect()
            })
            .collect();
        ImagePipeline::start(Arc::clone(&self.set), self.transform, self.config, plan).zip(batches).map(
            move |(images, caption_ids)| {
                let captions: Vec<&[i64]> = caption_ids.iter().map(|&k| set.captions[k].as_slice()).collect();
                let (captions, lengths) = pad_captions(&captions);
                let image_ids: Vec<usize> = caption_ids.iter().map(|&k| set.image_of_caption(k)).collect();
                let keywords = set.keywords.as_ref().map(|k| {
                    let rows: Vec<&[i64]> = image_ids.iter().map(|&i| k[i].as_slice()).collect();
                    pad_captions(&rows)
                });
                let images_from = image_rows(caption_ids.len()).0;
                Ok(PairBatch { images: images?, images_from, captions, lengths, image_ids, caption_ids, keywords })
            },
        )
    }
}

/// The contiguous shares `(start, size)` of a batch of `b` rows over `n` replicas or processes:
/// the first `b mod n` take one row more (some are empty when `b < n`).
pub fn shares(b: usize, n: usize) -> Vec<(usize, usize)> {
    let (base, extra) = (b / n, b % n);
    let mut start = 0;
    (0..n)
        .map(|k| {
            let size = base + usize::from(k < extra);
            start += size;
            (start - size, size)
        })
        .collect()
}

/// Pads token-id lists into `[B, L]` (zeros after each caption) and their lengths `[B]`. A
/// blank caption is a row of padding whose length is the batch's `L`, as in the original: its
/// collate gives it length 0, and `_select_last` then takes index -1, the batch's last step.
pub fn pad_captions(captions: &[&[i64]]) -> (Tensor, Tensor) {
    let longest = captions.iter().map(|c| c.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![0i64; captions.len() * longest];
    for (row, caption) in ids.chunks_exact_mut(longest).zip(captions) {
        row[..caption.len()].copy_from_slice(caption);
    }
    let lengths: Vec<i64> = captions.iter().map(|c| if c.is_empty() { longest } else { c.len() } as i64).collect();
    (Tensor::from_slice(&ids).view([captions.len() as i64, longest as i64]), Tensor::from_slice(&lengths))
}

/// Decoded images larger than this many times the transform's resized area are resized on the
/// loader's threads even when the device transforms the batch ([`Pixels::Device`]).
pub const DEVICE_RESIZE_AREA: u64 = 4;

/// Decodes and transforms the images of a batch plan, in order.
struct ImagePipeline {
    set: Arc<CaptionSet>,
    transform: Transform,
    seed: u64,
    pixels: Pixels,
    /// Batches still to decode on the consuming thread (no workers).
    plan: std::vec::IntoIter<Vec<Sample>>,
    receivers: Vec<Receiver<Result<Images>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
}

impl ImagePipeline {
    fn start(
        set: Arc<CaptionSet>,
        transform: Transform,
        config: LoaderConfig,
        plan: Vec<Vec<Sample>>,
    ) -> ImagePipeline {
        let total = plan.len();
        let workers = config.workers.min(total);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        let plan = Arc::new(plan);
        for w in 0..workers {
            let (tx, rx) = sync_channel(config.prefetch);
            let (set, plan) = (Arc::clone(&set), Arc::clone(&plan));
            handles.push(std::thread::spawn(move || {
                for batch in plan.iter().skip(w).step_by(workers) {
                    if tx.send(decode_batch(&set, transform, config.seed, config.pixels, batch)).is_err() {
                        return;
                    }
                }
            }));
            receivers.push(rx);
        }
        let own_plan = if workers == 0 { Arc::try_unwrap(plan).unwrap_or_default() } else { Vec::new() };
        ImagePipeline {
            set,
            transform,
            seed: config.seed,
            pixels: config.pixels,
            plan: own_plan.into_iter(),
            receivers,
            handles,
            next: 0,
            total,
        }
    }
}

impl Iterator for ImagePipeline {
    type Item = Result<Images>;

    fn next(&mut self) -> Option<Result<Images>> {
        if self.next == self.total {
            return None;
        }
        let item = if self.receivers.is_empty() {
            let batch = self.plan.next()?;
            decode_batch(&self.set, self.transform, self.seed, self.pixels, &batch)
        } else {
            let rx = &self.receivers[self.next % self.receivers.len()];
            rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("an image loader thread stopped unexpectedly")))
        };
        self.next += 1;
        if item.is_err() {
            self.next = self.total;
        }
        Some(item)
    }
}

impl Drop for ImagePipeline {
    fn drop(&mut self) {
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Loads the images of one batch, transformed where `pixels` says.
fn decode_batch(set: &CaptionSet, transform: Transform, seed: u64, pixels: Pixels, batch: &[Sample]) -> Result<Images> {
    match pixels {
        Pixels::Host => transform_batch(set, transform, seed, batch).map(Images::Ready),
        Pixels::Device => decoded_batch(set, transform, seed, batch),
    }
}

/// The images of one batch transformed on this thread: `[B, 3, S, S]` normalized f32.
fn transform_batch(set: &CaptionSet, transform: Transform, seed: u64, batch: &[Sample]) -> Result<Tensor> {
    let len = transform.output_len();
    let mut buffer = vec![0f32; batch.len() * len];
    for (sample, out) in batch.iter().zip(buffer.chunks_exact_mut(len)) {
        with_decoded(&set.image_paths[sample.image], |image| {
            transform.apply(&image, &mut rng::stream(seed, &sample.stream), out);
        })?;
    }
    let side = transform.output_size() as i64;
    Ok(Tensor::from_slice(&buffer).view([batch.len() as i64, 3, side, side]))
}

/// The images of one batch decoded, with their random choices, as `[B, H, W, 3]` u8 (pinned
/// when CUDA is there). Images of more than [`DEVICE_RESIZE_AREA`] times the resized area, and
/// every image of a batch of several sizes, are resized here (the first step of the transform,
/// which the device then skips), so that a batch stays small and stacks.
fn decoded_batch(set: &CaptionSet, transform: Transform, seed: u64, batch: &[Sample]) -> Result<Images> {
    let side = transform.resize_size();
    let area = DEVICE_RESIZE_AREA * side as u64 * side as u64;
    let mut images = Vec::with_capacity(batch.len());
    let mut draws = Vec::with_capacity(batch.len());
    for sample in batch {
        images.push(with_decoded(&set.image_paths[sample.image], |image| {
            let (w, h) = image.dimensions();
            if w as u64 * h as u64 > area {
                resize_bilinear(&image, side, side)
            } else {
                image
            }
        })?);
        draws.push(transform.draw(&mut rng::stream(seed, &sample.stream)));
    }
    if images.windows(2).any(|pair| pair[0].dimensions() != pair[1].dimensions()) {
        images.iter_mut().for_each(|i| *i = resize_bilinear(i, side, side));
    }
    let levels = stack_levels(&images, images.first().map_or((side, side), RgbImage::dimensions));
    let levels = if tch::Cuda::is_available() { levels.pin_memory(tch::Device::Cuda(0)) } else { levels };
    Ok(Images::Decoded { levels, draws, transform })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tch::Device;

    /// Images whose red channel encodes their index, 2 captions each.
    fn set_with_images(dir: &Path, n: usize) -> Arc<CaptionSet> {
        let mut paths = Vec::new();
        for i in 0..n {
            let path = dir.join(format!("{i}.png"));
            image::RgbImage::from_pixel(8, 8, image::Rgb([i as u8 * 10, 0, 0])).save(&path).unwrap();
            paths.push(path);
        }
        Arc::new(CaptionSet {
            image_names: (0..n).map(|i| format!("{i}.png")).collect(),
            image_paths: paths,
            captions: (0..2 * n).map(|k| vec![1; 1 + k % 3]).collect(),
            texts: (0..2 * n).map(|k| format!("caption {k}")).collect(),
            keywords: Some((0..n).map(|i| vec![1 + i as i64; 1 + i % 2]).collect()),
            captions_per_image: 2,
        })
    }

    fn red_index(images: &Tensor, row: i64) -> i64 {
        let v = images.get(row).get(0).get(0).get(0).double_value(&[]) as f32;
        ((v * 0.229 + 0.485) * 255.0 / 10.0).round() as i64
    }

    fn config(workers: usize) -> LoaderConfig {
        LoaderConfig { batch_size: 4, workers, prefetch: 1, seed: 9, pixels: Pixels::Host, share: None }
    }

    #[test]
    fn train_epoch_pairs_each_caption_with_its_image_in_shuffled_order() {
        let dir = tempfile::tempdir().unwrap();
        let set = set_with_images(dir.path(), 5);
        let transform = Transform::Train { resize: 10, crop: 8, rotation: [0.0, 0.0] };
        let loader = Loader::new(Arc::clone(&set), transform, config(2));
        let order = loader.epoch_order(3);
        assert_ne!(order, (0..10).collect::<Vec<_>>());
        assert_eq!(order, loader.epoch_order(3));
        assert_ne!(order, loader.epoch_order(4));
        let batches: Vec<PairBatch> = loader.train_epoch(3).collect::<Result<_>>().unwrap();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].images.input_on(Device::Cpu).size(), [2, 3, 8, 8]);
        let full: Vec<bool> = (0..3).map(|i| loader.is_full_batch(i)).collect();
        assert_eq!(full, [true, true, false], "only the last batch holds fewer than batch_size pairs");
        let fives = Loader::new(set, transform, LoaderConfig { batch_size: 5, ..config(0) });
        assert!(fives.is_full_batch(0) && fives.is_full_batch(1), "5 divides the 10 captions");
        let ids: Vec<usize> = batches.iter().flat_map(|b| b.caption_ids.clone()).collect();
        assert_eq!(ids, order);
        let rest: Vec<PairBatch> = loader.train_epoch_from(3, 2).collect::<Result<_>>().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].caption_ids, batches[2].caption_ids);
        let pixels = |b: &PairBatch| b.images.input_on(Device::Cpu);
        assert!(pixels(&rest[0]).equal(&pixels(&batches[2])), "same augmentation when resumed");
        for b in &batches {
            for (row, (&k, &img)) in b.caption_ids.iter().zip(&b.image_ids).enumerate() {
                assert_eq!(img, k / 2);
                assert_eq!(red_index(&pixels(b), row as i64), img as i64);
                assert_eq!(b.lengths.int64_value(&[row as i64]), 1 + (k % 3) as i64);
                let (kw, kw_lengths) = b.keywords.as_ref().expect("the set has keywords");
                assert_eq!(kw.int64_value(&[row as i64, 0]), 1 + img as i64, "keywords of the row's image");
                assert_eq!(kw_lengths.int64_value(&[row as i64]), 1 + (img % 2) as i64);
            }
        }
    }

    #[test]
    fn batches_do_not_depend_on_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        let set = set_with_images(dir.path(), 6);
        let transform = Transform::Train { resize: 12, crop: 8, rotation: [-30.0, 30.0] };
        let run = |workers| {
            Loader::new(Arc::clone(&set), transform, config(workers))
                .train_epoch(1)
                .map(|b| b.unwrap().images.input_on(Device::Cpu))
                .collect::<Vec<_>>()
        };
        let (a, b, c) = (run(0), run(1), run(3));
        for ((x, y), z) in a.iter().zip(&b).zip(&c) {
            assert!(x.equal(y) && x.equal(z));
        }
    }

    /// A set of textured images of the given sizes, 2 captions each.
    fn textured_set(dir: &Path, sizes: &[(u32, u32)]) -> Arc<CaptionSet> {
        let mut paths = Vec::new();
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let path = dir.join(format!("t{i}.png"));
            let pixel =
                |x: u32, y: u32| image::Rgb([(x * 37 + y * 11 + i as u32) as u8, (x ^ y) as u8 * 9, (y * 23) as u8]);
            image::RgbImage::from_fn(w, h, pixel).save(&path).unwrap();
            paths.push(path);
        }
        let n = sizes.len();
        Arc::new(CaptionSet {
            image_names: (0..n).map(|i| format!("t{i}.png")).collect(),
            image_paths: paths,
            captions: (0..2 * n).map(|k| vec![1; 1 + k % 3]).collect(),
            texts: (0..2 * n).map(|k| format!("caption {k}")).collect(),
            keywords: None,
            captions_per_image: 2,
        })
    }

    #[test]
    fn batches_transformed_on_device_equal_the_host_path_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mixed")).unwrap();
        let uniform = [(11, 9); 5];
        // 40x40 is more than DEVICE_RESIZE_AREA times 13x13, 10x10 and 9x9.
        let mixed = [(11, 9), (13, 13), (40, 40), (7, 20), (12, 9)];
        let sets =
            [(textured_set(dir.path(), &uniform), uniform), (textured_set(&dir.path().join("mixed"), &mixed), mixed)];
        let transforms = [
            Transform::Train { resize: 13, crop: 8, rotation: [-180.0, 180.0] },
            Transform::Train { resize: 9, crop: 9, rotation: [0.0, 0.0] },
            Transform::Eval { size: 10 },
        ];
        for ((set, sizes), transform) in sets.iter().flat_map(|s| transforms.map(|t| (s, t))) {
            let side = transform.resize_size();
            let host = Loader::new(Arc::clone(set), transform, config(2));
            let device = Loader::new(Arc::clone(set), transform, LoaderConfig { pixels: Pixels::Device, ..config(2) });
            for (a, b) in host.train_epoch(1).zip(device.train_epoch(1)) {
                let (a, b) = (a.unwrap(), b.unwrap());
                let Images::Ready(floats) = &a.images else { panic!("host-transformed floats") };
                let Images::Decoded { levels, .. } = &b.images else { panic!("decoded levels") };
                let on_device = |images: &Images| images.input_on(crate::device::test_device()).to_device(Device::Cpu);
                assert!(on_device(&b.images).equal(floats), "{transform:?}: the same floats");
                let rest = b.images.len() - 1;
                let share = on_device(&b.images.narrow(1, rest));
                assert!(share.equal(&floats.narrow(0, 1, rest as i64)), "{transform:?}: a share of the batch");
                let decoded = |i: usize| {
                    let (w, h) = sizes[i];
                    if w * h > DEVICE_RESIZE_AREA as u32 * side * side {
                        (side, side)
                    } else {
                        (w, h)
                    }
                };
                let kinds: std::collections::BTreeSet<(u32, u32)> = b.image_ids.iter().map(|&i| decoded(i)).collect();
                let (w, h) = if kinds.len() > 1 { (side, side) } else { *kinds.first().unwrap() };
                assert_eq!(
                    levels.size(),
                    [b.image_ids.len() as i64, h as i64, w as i64, 3],
                    "{transform:?}: {kinds:?}"
                );
            }
        }
    }

    #[test]
    fn a_missing_image_stops_the_epoch_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let set = set_with_images(dir.path(), 4);
        std::fs::remove_file(dir.path().join("2.png")).unwrap();
        let loader = Loader::new(set, Transform::Eval { size: 8 }, config(2));
        let results: Vec<Result<PairBatch>> = loader.pairs_in_order().collect();
        let err = results.iter().find_map(|r| r.as_ref().err()).expect("an error");
        assert!(format!("{err:#}").contains("2.png"), "{err:#}");
        assert!(results.last().unwrap().is_err(), "iteration ends at the error");
    }

    #[test]
    fn padding_and_lengths() {
        let (ids, lengths) = pad_captions(&[&[3, 4, 5], &[7], &[]]);
        assert_eq!(ids.size(), [3, 3]);
        assert_eq!(Vec::<i64>::try_from(ids.view([-1])).unwrap(), [3, 4, 5, 7, 0, 0, 0, 0, 0]);
        assert_eq!(Vec::<i64>::try_from(lengths).unwrap(), [3, 1, 3], "a blank caption takes the batch's last step");
        let (ids, lengths) = pad_captions(&[&[]]);
        assert_eq!((ids.size(), Vec::<i64>::try_from(lengths).unwrap()), (vec![1, 1], vec![1]));
    }
}
