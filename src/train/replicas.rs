//! Data-parallel training in one process (`--device cuda:0,cuda:1`, docs/DISTRIBUTED.md §1), as
//! PyTorch's `DataParallel`: one model replica per device, each encoding its contiguous share of
//! the batch; the image and text codes are gathered on the first device, whose scoring head
//! (visual-guided attention, fusion) scores the whole batch, so the ranking loss takes its
//! hardest negatives from every replica. One backward reaches every replica; their gradients are
//! added into the first's, the optimizer steps there, and its variables (batch-norm buffers
//! included) are copied back to the others. Batch norm normalises each share with its own
//! statistics; the running statistics kept are the first replica's. With one device this is
//! plain single-device training, with no copy.
//!
//! Under a launcher (torchrun, SLURM; docs/DISTRIBUTED.md §2) the same scheme spans processes,
//! as DistributedDataParallel: each process encodes its share of the global batch, the codes of
//! every process are all-gathered so that each scores the whole batch (hardest negatives from
//! every rank), the backward continues from the gathered copies into this process's share, the
//! gradients are averaged over the processes, every process takes the same Adam step, and rank
//! 0's batch-norm buffers are broadcast to the others.

use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::data::{shares, PairBatch};
use crate::device::{upload, QueueMark};
use crate::dist::ProcessGroup;
use crate::model::{add_to_gradient, Model, Pass, Training};
use crate::optim::Adam;

/// The replicas of one model, the first (`primary`) on the first device.
pub struct Replicas {
    /// The model the optimizer updates, validates and saves.
    pub primary: Model,
    /// Copies of `primary` on the other devices, made identical to it after every update.
    others: Vec<Model>,
    /// The other processes of a launch, when there are.
    peers: Option<Rc<ProcessGroup>>,
}

/// A batch's inputs on the devices, made before the step that reads them: this process's share
/// of the batch cut among the replicas, each part on its replica's device, ready for the
/// encoders. A step reads nothing else of the batch, so a captured step (`super::graphs`) reads
/// these tensors each time, refilled.
pub struct BatchInputs {
    /// Pairs in the batch (the global batch, with peers).
    pairs: usize,
    /// Each replica's part, in replica order (replicas without a pair left out).
    shares: Vec<ShareInputs>,
}

/// One replica's part of a batch on its device.
struct ShareInputs {
    /// The images, prepared for the CNN `[b, 3, H, W]`.
    pixels: Tensor,
    /// The captions' ids `[b, W]` (cut to the part's longest caption) and lengths `[b]`.
    captions: (Tensor, Tensor),
    /// The keywords' ids and lengths, when the batch has them.
    keywords: Option<(Tensor, Tensor)>,
}

impl BatchInputs {
    /// Whether the batch has keywords.
    fn keywords(&self) -> bool {
        self.shares.iter().any(|share| share.keywords.is_some())
    }

    /// Every tensor, in a fixed order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut all = Vec::new();
        for share in &self.shares {
            all.extend([&share.pixels, &share.captions.0, &share.captions.1]);
            all.extend(share.keywords.iter().flat_map(|(ids, lengths)| [ids, lengths]));
        }
        all
    }

    /// The same inputs with each tensor replaced by `f` of it, in [`BatchInputs::tensors`]' order.
    pub fn map(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> BatchInputs {
        let shares = self
            .shares
            .iter()
            .map(|share| ShareInputs {
                pixels: f(&share.pixels),
                captions: (f(&share.captions.0), f(&share.captions.1)),
                keywords: share.keywords.as_ref().map(|(ids, lengths)| (f(ids), f(lengths))),
            })
            .collect();
        BatchInputs { pairs: self.pairs, shares }
    }
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
        let replicas = Replicas { primary, others, peers: None };
        replicas.broadcast();
        Ok(replicas)
    }

    /// These replicas as this process's part of `group`: every variable takes rank 0's value.
    pub fn with_peers(mut self, group: Rc<ProcessGroup>) -> Result<Replicas> {
        let variables: BTreeMap<String, Tensor> = self.primary.vs.variables().into_iter().collect();
        broadcast_all(&group, variables.values())?;
        self.broadcast();
        self.peers = Some(group);
        Ok(self)
    }

    /// The process group this process trains in, when it is one of several.
    pub fn peers(&self) -> Option<&ProcessGroup> {
        self.peers.as_deref()
    }

    /// Checks that every process of the launch holds the same variables, as it must after each
    /// update: two checksums per variable (its sum and its sum of squares, in f64), all-gathered
    /// and compared exactly. A difference is an error naming the rank and the first variable.
    pub fn check_in_sync(&self) -> Result<()> {
        let Some(group) = &self.peers else { return Ok(()) };
        let variables: BTreeMap<String, Tensor> = self.primary.vs.variables().into_iter().collect();
        let sums: Vec<Tensor> = variables
            .values()
            .flat_map(|v| {
                let v = v.to_kind(Kind::Double);
                [v.sum(Kind::Double), (&v * &v).sum(Kind::Double)]
            })
            .collect();
        let mine = Tensor::stack(&sums, 0).to_device(group.device);
        let all = group.all_gather(&mine)?.view([group.world as i64, -1]);
        settled(group, "the check of the weights")?;
        let rank_0 = Vec::<f64>::try_from(all.get(0))?;
        for rank in 1..group.world {
            let theirs = Vec::<f64>::try_from(all.get(rank as i64))?;
            if let Some(at) = rank_0.iter().zip(&theirs).position(|(a, b)| a.to_bits() != b.to_bits()) {
                let name = variables.keys().nth(at / 2).map_or("?", String::as_str);
                bail!(
                    "the weights of rank {rank} differ from rank 0's (first {name}): the processes no longer train \
                     the same model (different libtorch builds or devices?); resume from the last checkpoint"
                );
            }
        }
        Ok(())
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
    /// sentence; or by sentence, keywords and both fused when the batch has keywords. With
    /// peers, `batch` is the global batch, of which this process encodes its share.
    pub fn scores(&self, batch: &PairBatch, pass: Pass) -> Result<Training<Vec<Tensor>>> {
        self.scores_of(&self.inputs(batch)?, pass)
    }

    /// The inputs of `batch` for [`Replicas::scores_of`]: this process's share of it (all of it
    /// without peers), cut among the replicas, each part uploaded to its replica's device with
    /// its images prepared and its ids cut to its longest caption (the text encoder runs as many
    /// steps as the ids are wide).
    pub fn inputs(&self, batch: &PairBatch) -> Result<BatchInputs> {
        let b = batch.caption_ids.len();
        let (start, size) = match &self.peers {
            None => (0, b),
            Some(group) => {
                let all = shares(b, group.world);
                if all.iter().any(|&(_, size)| size == 0) {
                    bail!(
                        "a batch of {b} pairs over {} processes leaves one without a pair: raise batch_size",
                        group.world
                    );
                }
                all[group.rank]
            }
        };
        let parts = self.iter().zip(shares(size, self.len())).filter(|(_, (_, n))| *n > 0);
        let shares = parts.map(|(model, (offset, n))| share_inputs(model, batch, start + offset, n)).collect();
        Ok(BatchInputs { pairs: b, shares })
    }

    /// [`Replicas::scores`] of a batch's [`Replicas::inputs`].
    pub fn scores_of(&self, inputs: &BatchInputs, pass: Pass) -> Result<Training<Vec<Tensor>>> {
        let keywords = inputs.keywords();
        let Some(group) = &self.peers else {
            return Ok(self.encode(inputs, pass).map(|codes| self.head(&codes, keywords, pass)));
        };
        let all = shares(inputs.pairs, group.world);
        let start = all[group.rank].0;
        let sizes: Vec<usize> = all.iter().map(|&(_, size)| size).collect();
        let local = self.encode(inputs, pass);
        let device = self.primary.device();
        let gathered = local
            .detached()
            .iter()
            .map(|code| Ok(group.all_gather_rows(code, &sizes)?.to_device(device).set_requires_grad(true)))
            .collect::<Result<Vec<_>>>()?;
        let scores = self.head(&gathered, keywords, pass);
        Ok(local.continued(scores, gathered, start as i64, group.world as f64))
    }

    /// The codes of a batch's inputs, encoded by the replicas in parts and gathered on the
    /// primary's device: Fv, t of the captions and, with keywords, theirs.
    fn encode(&self, inputs: &BatchInputs, pass: Pass) -> Training<Vec<Tensor>> {
        let codes: Vec<Training<ShareCodes>> =
            self.iter().zip(&inputs.shares).map(|(model, share)| encode_share(model, share, pass)).collect();
        Training::collect(codes).map(|codes| {
            let device = self.primary.device();
            let mut out = vec![
                gather(codes.iter().map(|c| &c.visual), device),
                gather(codes.iter().map(|c| &c.sentence), device),
            ];
            if inputs.keywords() {
                out.push(gather(codes.iter().filter_map(|c| c.keywords.as_ref()), device));
            }
            out
        })
    }

    /// The scores of the whole batch's codes ([`Replicas::encode`]'s order) in each mode.
    fn head(&self, codes: &[Tensor], keywords: bool, pass: Pass) -> Vec<Tensor> {
        let net = &self.primary.net;
        if !keywords {
            return vec![net.cross_attention_s.scores(&codes[0], &codes[1], pass)];
        }
        let scores = net.mode_scores(&codes[0], &codes[1], &codes[2], pass);
        vec![scores.sentence, scores.keywords, scores.fused]
    }

    /// One optimizer step from the loss of a [`Replicas::scores`] forward: backward through
    /// every replica, their gradients summed into the primary's (and averaged over the peers),
    /// unscaled (fp16), clipped to `grad_clip` (0: not clipped), Adam (skipped on inf/NaN
    /// gradients), and the primary copied to the other replicas (rank 0's buffers to the peers).
    pub fn update(&self, adam: &mut Adam, loss: Training<Tensor>, grad_clip: f64) -> Result<()> {
        adam.zero_grad();
        self.backward(loss.map(|loss| adam.scale_loss(&loss)));
        if let Some(group) = &self.peers {
            self.average_gradients(group)?;
        }
        adam.clip_and_step(grad_clip);
        if let Some(group) = &self.peers {
            let trainable = self.primary.trainable();
            let buffers = self.primary.vs.variables().into_iter().filter(|(key, _)| !trainable.contains_key(key));
            broadcast_all(group, buffers.collect::<BTreeMap<_, _>>().values())?;
        }
        self.broadcast();
        Ok(())
    }

    /// Replaces the primary's gradients by their mean over the peers, in one all-reduce. A
    /// parameter without a gradient (unused by the model's configuration) keeps none, as in one
    /// process: every process runs the same graph, so all leave out the same parameters.
    fn average_gradients(&self, group: &ProcessGroup) -> Result<()> {
        let params = self.primary.trainable();
        if params.values().any(|p| p.kind() != Kind::Float) {
            bail!("averaging gradients over processes needs fp32 parameters");
        }
        let grads: Vec<Tensor> = params.values().map(Tensor::grad).filter(Tensor::defined).collect();
        let flat = Tensor::cat(&grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(), 0).to_device(group.device);
        group.all_reduce_sum(&flat)?;
        let flat = (flat / group.world as f64).to_device(self.primary.device());
        let mut offset = 0;
        tch::no_grad(|| {
            for mut grad in grads {
                let numel = grad.numel() as i64;
                grad.copy_(&flat.narrow(0, offset, numel).view_as(&grad));
                offset += numel;
            }
        });
        Ok(())
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

/// Waits until the device has run the work queued so far (the collectives just queued with it),
/// at most the group's timeout, so that a read that follows does not block: NCCL's collectives
/// are queued without the host waiting, and a read of their result would otherwise wait for as
/// long as a lost rank makes them take (until NCCL's own watchdog, at twice the timeout). `what`
/// names the work in the error.
pub(super) fn settled(group: &ProcessGroup, what: &str) -> Result<()> {
    if QueueMark::now(group.device)?.wait(group.timeout)? {
        Ok(())
    } else {
        Err(group.stalled(what))
    }
}

/// Rank 0's values of `vars` into every rank's, in place: one broadcast per element kind, of
/// their values laid end to end on the group's device.
fn broadcast_all<'a>(group: &ProcessGroup, vars: impl Iterator<Item = &'a Tensor>) -> Result<()> {
    let vars: Vec<&Tensor> = vars.collect();
    let mut kinds: Vec<Kind> = Vec::new();
    for var in &vars {
        if !kinds.contains(&var.kind()) {
            kinds.push(var.kind());
        }
    }
    for kind in kinds {
        let members: Vec<&Tensor> = vars.iter().copied().filter(|v| v.kind() == kind).collect();
        let flat = Tensor::cat(&members.iter().map(|v| v.reshape(-1).to_device(group.device)).collect::<Vec<_>>(), 0);
        group.broadcast(&flat, 0)?;
        let mut offset = 0;
        tch::no_grad(|| {
            for var in members {
                let numel = var.numel() as i64;
                var.shallow_clone().copy_(&flat.narrow(0, offset, numel).view_as(var));
                offset += numel;
            }
        });
    }
    Ok(())
}

/// Adds `grad` (a replica's, reset to zero here) into `target`'s gradient on `target`'s device.
fn add_gradient(target: &Tensor, mut grad: Tensor) {
    if !grad.defined() {
        return;
    }
    add_to_gradient(target, &grad.to_device(target.device()));
    let _ = grad.zero_();
}

/// Rows `start..start + size` of the batch on `model`'s device, ready for its encoders.
fn share_inputs(model: &Model, batch: &PairBatch, start: usize, size: usize) -> ShareInputs {
    let device = model.device();
    // The ids cut to the part's longest caption on the host.
    let rows = |(ids, lengths): (&Tensor, &Tensor)| {
        let (ids, lengths) = (ids.narrow(0, start as i64, size as i64), lengths.narrow(0, start as i64, size as i64));
        let longest = Vec::<i64>::try_from(&lengths).map_or(ids.size()[1], |l| l.into_iter().max().unwrap_or(1));
        (upload(&ids.narrow(1, 0, longest).contiguous(), device), upload(&lengths, device))
    };
    let images = batch.images.narrow(start - batch.images_from, size);
    ShareInputs {
        pixels: model.prepare_images(&images.input_on(device)),
        captions: rows((&batch.captions, &batch.lengths)),
        keywords: batch.keywords.as_ref().map(|(ids, lengths)| rows((ids, lengths))),
    }
}

/// A replica's part of a batch encoded by `model`.
fn encode_share(model: &Model, share: &ShareInputs, pass: Pass) -> Training<ShareCodes> {
    let visual = model.net.encode_images(&share.pixels, pass);
    let (ids, lengths) = &share.captions;
    match &share.keywords {
        None => model.net.encode_texts_with(ids, lengths, pass).map(|sentence| ShareCodes {
            visual,
            sentence,
            keywords: None,
        }),
        Some((keyword_ids, keyword_lengths)) => {
            let texts = model.net.encode_sentences_and_keywords((ids, lengths), (keyword_ids, keyword_lengths), pass);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Images;
    use crate::dist::Launch;
    use crate::loss::{contrastive_loss, Margin};

    /// The demo model at 64², without dropout, on `device`, with `weights` when given.
    fn model(device: Device, weights: Option<&BTreeMap<String, Tensor>>) -> Model {
        let sets = ["model.seq2vec.dropout=0.0", "dataset.image_size=64", "dataset.resize=70"];
        let mut model = crate::model::demo_model(&sets, 12, device, 3);
        if let Some(weights) = weights {
            model.load_state_dict(weights).unwrap();
        }
        model
    }

    /// Four pairs of random 64² images and captions of 1 to 5 words.
    fn four_pairs() -> PairBatch {
        let images = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
        let lengths = [5i64, 2, 1, 4];
        let ids: Vec<i64> = (0..4)
            .flat_map(|row| (0..5).map(move |t| if t < lengths[row] { 1 + (row as i64 * 3 + t) % 11 } else { 0 }))
            .collect();
        PairBatch {
            images: Images::Ready(images),
            images_from: 0,
            captions: Tensor::from_slice(&ids).view([4, 5]),
            lengths: Tensor::from_slice(&lengths),
            caption_ids: (0..4).collect(),
            image_ids: (0..4).collect(),
            keywords: None,
        }
    }

    /// The variables after two steps on `batch` of `replicas`. Adam's large eps makes its step
    /// continuous in the gradient: a gradient that is zero up to the rounding of a GPU's
    /// atomic sums does not move its weight by ±lr.
    fn two_steps(replicas: &Replicas, batch: &PairBatch) -> BTreeMap<String, Tensor> {
        let mut adam = Adam::new(replicas.primary.trainable(), 1e-2).with_eps(1e-2);
        for _ in 0..2 {
            let scores = replicas.scores(batch, Pass::training(None)).unwrap();
            let loss = scores.map(|scores| contrastive_loss(&scores[0], &Margin::Fixed(0.2), false));
            replicas.update(&mut adam, loss, 2.0).unwrap();
        }
        replicas.primary.state_dict()
    }

    /// A launch of one process trains as the process alone, through every collective of a
    /// launch's step: the codes all-gathered, the backward continued from the gathered copies,
    /// the gradients all-reduced, the buffers broadcast, the weights checked in sync. The group
    /// is Gloo's on the CPU and NCCL's on a GPU: the GPU check runs this test there, where one
    /// GPU is enough for it (NCCL refuses two ranks on one GPU).
    #[test]
    fn a_launch_of_one_process_trains_like_one_process_on_device() {
        let device = crate::device::test_device();
        let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
        let launch = Launch {
            rank: 0,
            world: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
            prefix: "amfmn-test/".into(),
            launcher: "torchrun",
        };
        let group = Rc::new(ProcessGroup::join(&launch, std::time::Duration::from_secs(60), device).unwrap());
        let expected_backend = if device.is_cuda() && ProcessGroup::has_nccl() { "NCCL" } else { "Gloo" };
        assert_eq!(group.backend(), expected_backend);
        let first = model(device, None);
        let (initial, trainable) = (first.state_dict(), first.trainable());
        let batch = four_pairs();
        let alone = two_steps(&Replicas::new(model(device, Some(&initial)), &[]).unwrap(), &batch);
        let launched = Replicas::new(model(device, Some(&initial)), &[]).unwrap().with_peers(group.clone()).unwrap();
        let after = two_steps(&launched, &batch);
        launched.check_in_sync().unwrap();
        assert!(group.time_in_collectives().unwrap() > std::time::Duration::ZERO, "the collectives ran");
        // The same arithmetic in the same order on the CPU; a GPU's atomic sums may round otherwise.
        let tolerance = if device.is_cuda() { 1e-6 } else { 0.0 };
        let (mut moved, mut worst) = (0f64, 0f64);
        for (name, value) in &alone {
            let diff = (value - &after[name]).abs().max().double_value(&[]);
            assert!(diff <= tolerance, "{name} differs by {diff} ({expected_backend})");
            if trainable.contains_key(name) {
                moved = moved.max((value - &initial[name]).abs().max().double_value(&[]));
            }
            worst = worst.max(diff);
        }
        assert!(moved > 1e-3, "the steps moved the parameters ({moved})");
        println!("{expected_backend}: largest difference {worst:.1e}, largest parameter move {moved:.1e}");
    }
}
