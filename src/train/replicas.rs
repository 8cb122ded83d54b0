//! Data-parallel training in one process (`--device cuda:0,cuda:1`, docs/DISTRIBUTED.md §1), as
//! PyTorch's `DataParallel`: one model replica per device, each encoding its contiguous share of
//! the batch; the image and text codes are gathered on the first device, whose scoring head
//! (visual-guided attention, fusion) scores the whole batch, so the ranking loss takes its
//! hardest negatives from every replica. One backward reaches every replica; their gradients are
//! added into the first's, the optimizer steps there, and its variables (batch-norm buffers
//! included) are copied back to the others. Batch norm normalises each share with its own
//! statistics; the running statistics kept are the first replica's. With one device this is
//! plain single-device training, with no copy.

use anyhow::Result;
use tch::{Device, Tensor};

use crate::data::transforms::normalize_on;
use crate::data::PairBatch;
use crate::model::{Model, Pass, Training};
use crate::optim::Adam;

/// The replicas of one model, the first (`primary`) on the first device.
pub struct Replicas {
    /// The model the optimizer updates, validates and saves.
    pub primary: Model,
    /// Copies of `primary` on the other devices, made identical to it after every update.
    others: Vec<Model>,
}

/// The codes of one share of a batch, on its replica's device.
struct ShareCodes {
    /// Fv `[b, d]`.
    visual: Tensor,
    /// t of the captions `[b, d]`.
    sentence: Tensor,
    /// t of the images' keywords `[b, d]`, when the batch has them.
    keywords: Option<Tensor>,
}

impl Replicas {
    /// `primary` with a copy of it (its configuration, layout and current variables) on each of
    /// `more` devices.
    pub fn new(primary: Model, more: &[Device]) -> Result<Replicas> {
        let copy = |device| Ok(Model::new(primary.config(), device, 0)?.with_channels_last(primary.channels_last()));
        let others = more.iter().map(|&device| copy(device)).collect::<Result<_>>()?;
        let replicas = Replicas { primary, others };
        replicas.broadcast();
        Ok(replicas)
    }

    /// The number of replicas (devices).
    fn len(&self) -> usize {
        1 + self.others.len()
    }

    /// Every replica, the primary first.
    pub fn iter(&self) -> impl Iterator<Item = &Model> {
        std::iter::once(&self.primary).chain(&self.others)
    }

    /// The `[B, B]` scores of a batch on the primary's device, in each trained mode: by
    /// sentence; or by sentence, keywords and both fused when the batch has keywords.
    pub fn scores(&self, batch: &PairBatch, pass: Pass) -> Training<Vec<Tensor>> {
        let shares = shares(batch.caption_ids.len(), self.len());
        let codes: Vec<Training<ShareCodes>> = self
            .iter()
            .zip(shares)
            .filter(|(_, (_, size))| *size > 0)
            .map(|(model, (start, size))| encode_share(model, batch, start, size, pass))
            .collect();
        Training::collect(codes).map(|codes| {
            let device = self.primary.device();
            let visual = gather(codes.iter().map(|c| &c.visual), device);
            let sentence = gather(codes.iter().map(|c| &c.sentence), device);
            let net = &self.primary.net;
            if batch.keywords.is_none() {
                return vec![net.cross_attention_s.scores(&visual, &sentence, pass)];
            }
            let keywords = gather(codes.iter().filter_map(|c| c.keywords.as_ref()), device);
            let scores = net.mode_scores(&visual, &sentence, &keywords, pass);
            vec![scores.sentence, scores.keywords, scores.fused]
        })
    }

    /// One optimizer step from the loss of a [`Replicas::scores`] forward: backward through
    /// every replica, their gradients summed into the primary's, unscaled (fp16), clipped to
    /// `grad_clip` (0: not clipped), Adam (skipped on inf/NaN gradients), and the primary
    /// copied to the other replicas.
    pub fn update(&self, adam: &mut Adam, loss: Training<Tensor>, grad_clip: f64) {
        adam.zero_grad();
        self.backward(loss.map(|loss| adam.scale_loss(&loss)));
        let finite = adam.unscale_gradients();
        if finite {
            if grad_clip > 0.0 {
                adam.clip_grad_norm(grad_clip);
            }
            adam.step();
        }
        adam.update_scale(!finite);
        self.broadcast();
    }

    /// Backpropagates `loss` into every replica and adds the other replicas' gradients into
    /// the primary's (theirs are reset to zero for the next step).
    fn backward(&self, loss: Training<Tensor>) {
        loss.backward();
        if self.others.is_empty() {
            return;
        }
        let primary = self.primary.trainable();
        tch::no_grad(|| {
            for other in &self.others {
                for (key, var) in other.trainable() {
                    add_gradient(&primary[&key], var.grad());
                }
            }
        });
    }

    /// Copies the primary's variables (parameters and buffers) into every other replica.
    fn broadcast(&self) {
        if self.others.is_empty() {
            return;
        }
        let source = self.primary.vs.variables();
        tch::no_grad(|| {
            for other in &self.others {
                for (key, mut var) in other.vs.variables() {
                    var.copy_(&source[&key].to_device(var.device()));
                }
            }
        });
    }
}

/// Adds `grad` (a replica's, reset to zero here) into `target`'s gradient on `target`'s device.
fn add_gradient(target: &Tensor, mut grad: Tensor) {
    if !grad.defined() {
        return;
    }
    let moved = grad.to_device(target.device());
    let mut into = target.grad();
    if into.defined() {
        let _ = into.g_add_(&moved);
    } else {
        // No gradient on the primary yet: accumulate one through autograd (d(target·g)/d target = g).
        tch::with_grad(|| (target * &moved).sum(tch::Kind::Float).backward());
    }
    let _ = grad.zero_();
}

/// The contiguous shares `(start, size)` of a batch of `b` rows over `n` replicas: the first
/// `b mod n` take one row more (some are empty when `b < n`).
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

/// Rows `start..start + size` of the batch encoded by `model` on its device.
fn encode_share(model: &Model, batch: &PairBatch, start: usize, size: usize, pass: Pass) -> Training<ShareCodes> {
    let device = model.device();
    let rows = |t: &Tensor| t.narrow(0, start as i64, size as i64).to_device(device);
    let pixels = model.prepare_images(&normalize_on(&batch.images.narrow(0, start as i64, size as i64), device));
    let visual = model.net.encode_images(&pixels, pass);
    let captions = (&rows(&batch.captions), &rows(&batch.lengths));
    match &batch.keywords {
        None => model.net.encode_texts_with(captions.0, captions.1, pass).map(|sentence| ShareCodes {
            visual,
            sentence,
            keywords: None,
        }),
        Some((ids, lengths)) => {
            let texts = model.net.encode_sentences_and_keywords(captions, (&rows(ids), &rows(lengths)), pass);
            texts.map(|(sentence, keywords)| ShareCodes { visual, sentence, keywords: Some(keywords) })
        }
    }
}

/// The codes of every share, on `device`, in batch order: `[B, d]`.
fn gather<'a>(codes: impl Iterator<Item = &'a Tensor>, device: Device) -> Tensor {
    let moved: Vec<Tensor> = codes.map(|c| c.to_device(device)).collect();
    match <[Tensor; 1]>::try_from(moved) {
        Ok([one]) => one,
        Err(moved) => Tensor::cat(&moved, 0),
    }
}
