//! Data-parallel training (`--device cpu,cpu`, `cuda:0,cuda:1`) against single-device training:
//! with batch norm in evaluation mode, two replicas give the weights of one device; in training
//! mode, those of one device that normalises each replica's share of the batch separately. The
//! replicas stay identical to each other, buffers included.

mod common;

use std::collections::BTreeMap;

use amfmn::data::shares;
use amfmn::data::PairBatch;
use amfmn::model::{Model, ModelConfig, Pass};
use amfmn::optim::{Adam, GradScaler};
use amfmn::train::Replicas;
use common::training::*;
use tch::{Device, Tensor};

/// `STEPS` updates of one model (seed 3) that encodes the images of each of `shares` of the
/// batch on its own, in training mode (its batch norm normalises each share separately), and
/// scores the whole batch; returns its variables. (The text encoder treats each caption alone,
/// so its captions are encoded at once.)
fn train_by_shares(batch: &PairBatch, shares: &[(usize, usize)]) -> BTreeMap<String, Tensor> {
    let opts = options();
    let model = Model::new(&ModelConfig::new(&opts, VOCAB as usize), Device::Cpu, 3).unwrap();
    let mut adam = Adam::new(model.trainable(), LR).with_eps(EPS);
    let images = batch.images.input_on(Device::Cpu);
    let rows = |t: &Tensor, (start, size): (usize, usize)| t.narrow(0, start as i64, size as i64);
    let pass = Pass::training(None);
    for _ in 0..STEPS {
        let visual: Vec<Tensor> = shares
            .iter()
            .map(|&share| model.net.encode_images(&model.prepare_images(&rows(&images, share)), pass))
            .collect();
        let text = model.net.encode_texts_with(&batch.captions, &batch.lengths, pass);
        let scores = text.map(|text| model.net.cross_attention_s.scores(&Tensor::cat(&visual, 0), &text, pass));
        adam.zero_grad();
        scores.map(|scores| loss(&[scores])).backward();
        adam.step();
    }
    model.state_dict()
}

fn assert_identical_replicas(replicas: &[BTreeMap<String, Tensor>]) {
    for other in &replicas[1..] {
        assert_eq!(max_diff(&replicas[0], other, |_| true), 0.0, "the replicas drifted apart");
    }
}

#[test]
fn shares_are_contiguous_and_the_first_take_the_remainder() {
    assert_eq!(shares(10, 4), [(0, 3), (3, 3), (6, 2), (8, 2)]);
    assert_eq!(shares(6, 2), [(0, 3), (3, 3)]);
    assert_eq!(shares(1, 3), [(0, 1), (1, 0), (1, 0)]);
    assert_eq!(shares(7, 1), [(0, 7)]);
}

/// Batch norm in evaluation mode: the model is a function of each pair alone, so two and three
/// replicas (shares 3 + 2 and 2 + 2 + 1) must give one device's weights after an Adam step
/// ([`FROZEN_STEPS`]), with and without keywords (whose three modes use the fusion gate).
#[test]
fn replicas_with_frozen_batch_norm_train_like_one_device() {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let before = Model::new(&ModelConfig::new(&options(), VOCAB as usize), Device::Cpu, 3).unwrap().state_dict();
    for keywords in [false, true] {
        let batch = batch(5, keywords);
        let one = train_replicas(&[Device::Cpu], &batch, false, FROZEN_STEPS);
        let moved = max_diff(&one[0], &before, |k| !is_buffer(k));
        assert!(moved > 1e-4, "the step moved the weights by {moved} only");
        for n in [2, 3] {
            let replicated = train_replicas(&vec![Device::Cpu; n], &batch, false, FROZEN_STEPS);
            let diff = max_diff(&one[0], &replicated[0], |_| true);
            eprintln!("keywords {keywords}, {n} replicas: max |dw| = {diff:.2e} (steps moved {moved:.2e})");
            assert!(diff <= 1e-5, "{n} replicas differ from one device by {diff}");
            assert_identical_replicas(&replicated);
        }
    }
}

/// Batch norm in training mode (DataParallel's behaviour): each replica normalises its own
/// share, so two replicas equal one device that encodes each share separately, and differ from
/// one device that normalises the whole batch.
#[test]
fn replicas_with_training_batch_norm_normalise_each_share() {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let batch = batch(8, false);
    let replicated = train_replicas(&[Device::Cpu, Device::Cpu], &batch, true, STEPS);
    let reference = train_by_shares(&batch, &shares(8, 2));
    let diff = max_diff(&reference, &replicated[0], |k| !is_buffer(k));
    let whole = train_replicas(&[Device::Cpu], &batch, true, STEPS);
    let versus_whole = max_diff(&whole[0], &replicated[0], |k| !is_buffer(k));
    eprintln!("2 replicas vs one device by shares: {diff:.2e}; vs one device on the whole batch: {versus_whole:.2e}");
    assert!(diff <= 1e-5, "two replicas differ from per-share normalisation by {diff}");
    assert!(versus_whole > 1e-4, "per-share normalisation changed nothing ({versus_whole})");
    assert_identical_replicas(&replicated);
}

/// ATen operators that make the host wait for a GPU: a tensor's value read (`.item()`,
/// `int64_value`) and those whose output size depends on values.
const HOST_READS: [&str; 5] =
    ["aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::is_nonzero"];

/// The operators that read the device (name, calls) of one training step on `devices` (CPU
/// replicas), with Adam's CUDA path (`fused`: PyTorch's fused Adam, through libtorch's CPU
/// kernel) and fp16's loss scaler (`scaled`).
fn host_reads(batch: &PairBatch, devices: &[Device], fused: bool, scaled: bool) -> Vec<(String, i64)> {
    let model = Model::new(&ModelConfig::new(&options(), VOCAB as usize), Device::Cpu, 3).unwrap();
    let mut adam = Adam::new(model.trainable(), LR);
    if fused {
        adam = adam.with_fused();
    }
    if scaled {
        adam.scaler = Some(GradScaler::new(Device::Cpu));
    }
    let replicas = Replicas::new(model, &devices[1..]).unwrap();
    let step = || {
        let scores = replicas.scores(batch, Pass::training(None)).unwrap();
        replicas.update(&mut adam, scores.map(|s| loss(&s)), 2.0).unwrap();
    };
    let ((), count) = amfmn::profile::count_ops(step).unwrap();
    assert!(count.kernels > 500, "the step was counted ({} kernels)", count.kernels);
    count.by_name.iter().filter(|c| HOST_READS.contains(&c.name.as_str())).map(|c| (c.name.clone(), c.calls)).collect()
}

/// A training step (every replica's forward, the loss of the three modes, backward, clipping
/// and Adam) dispatches no operator that reads the device, so on a GPU the host queues the whole
/// step without waiting: counted on the CPU, through the same code, for one device and for two
/// replicas whose second share has shorter captions than the batch. With fp16's loss scaler
/// (unscaling, the flag of non-finite gradients, a step the flag skips, the scale's update), the
/// step reads no more than the fused Adam alone, whose CPU kernel reads each step count
/// (libtorch's CUDA kernel reads them on the device).
#[test]
fn a_training_step_reads_nothing_back_from_the_device() {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let batch = batch(5, true);
    for devices in [&[Device::Cpu][..], &[Device::Cpu, Device::Cpu]] {
        let reads = host_reads(&batch, devices, false, false);
        assert!(reads.is_empty(), "{} devices: {reads:?}", devices.len());
    }
    let (fused, scaled) =
        (host_reads(&batch, &[Device::Cpu], true, false), host_reads(&batch, &[Device::Cpu], true, true));
    assert_eq!(scaled, fused, "loss scaling reads the device");
    assert!(fused.iter().all(|(name, _)| name == "aten::_local_scalar_dense"), "{fused:?}");
}
