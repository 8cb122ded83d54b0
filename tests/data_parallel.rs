//! Data-parallel training (`--device cpu,cpu`, `cuda:0,cuda:1`) against single-device training:
//! with batch norm in evaluation mode, two replicas give the weights of one device; in training
//! mode, those of one device that normalises each replica's share of the batch separately. The
//! replicas stay identical to each other, buffers included.

use std::collections::BTreeMap;
use std::path::Path;

use amfmn::data::PairBatch;
use amfmn::loss::{contrastive_loss, Margin};
use amfmn::model::{Model, ModelConfig, Pass};
use amfmn::optim::Adam;
use amfmn::options::Options;
use amfmn::train::{shares, Replicas};
use tch::{Device, Kind, Tensor};

const VOCAB: i64 = 20;
/// A margin above the largest score gap, so every hinge term is active in both runs.
const MARGIN: f64 = 2.5;
/// Two steps: the second starts from weights the first updated and broadcast, so it checks the
/// reduction and the copy back. (Further steps compare how a ReLU whose input is within rounding
/// of zero goes: by the third, one such unit on either side can move a weight by 3e-5.)
const STEPS: usize = 2;
/// With batch norm frozen, one device and the replicas run convolutions on batches of other
/// sizes (5 against 3 + 2), whose rounding differs by CPU: after one step they agree to 4e-7 on
/// every CPU tried, but on some (an AVX2-only AMD EPYC) the second step already sends a ReLU
/// within rounding of zero the other way, moving weights by 1.2e-4. One step still checks the
/// reduction (without it the weights differ by 1e-4) and, through the replicas' equality, the
/// copy back.
const FROZEN_STEPS: usize = 1;
/// Adam with a large eps: its first step is then continuous in the gradient. (With eps 1e-8 it
/// is `lr · sign(g)`, so an entry whose gradient is zero up to rounding moves by ±lr depending on
/// the summation order: two runs that differ by rounding alone differ by 2·lr there.)
const LR: f64 = 2e-4;
const EPS: f64 = 1e-2;
/// libtorch's random generator is global: tests that seed it must not interleave.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn options() -> Options {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let sets = ["model.seq2vec.dropout=0.0", "model.embed.embed_dim=32", "dataset.image_size=64", "dataset.resize=70"];
    Options::parse(&text, &sets.map(String::from)).unwrap()
}

/// Token ids `[b, width]` (zero-padded) and lengths `[b]` of `b` rows, the lengths cycling
/// through `lengths`.
fn tokens(b: usize, lengths: &[i64], salt: usize) -> (Tensor, Tensor) {
    let width = *lengths.iter().max().unwrap();
    let lengths: Vec<i64> = (0..b).map(|row| lengths[row % lengths.len()]).collect();
    let mut ids = vec![0i64; b * width as usize];
    for (row, &len) in lengths.iter().enumerate() {
        for t in 0..len as usize {
            ids[row * width as usize + t] = 1 + ((row * 7 + t * 3 + salt) as i64 % VOCAB);
        }
    }
    (Tensor::from_slice(&ids).view([b as i64, width]), Tensor::from_slice(&lengths))
}

/// A batch of `b` pairs of 64x64 images, with keywords when asked.
fn batch(b: usize, keywords: bool) -> PairBatch {
    tch::manual_seed(11);
    let images = Tensor::randn([b as i64, 3, 64, 64], (Kind::Float, Device::Cpu));
    let (captions, lengths) = tokens(b, &[6, 3, 1, 4, 5], 0);
    PairBatch {
        images,
        captions,
        lengths,
        caption_ids: (0..b).collect(),
        image_ids: (0..b).collect(),
        keywords: keywords.then(|| tokens(b, &[2, 3], 5)),
    }
}

/// The loss of a batch: the ranking loss summed over its modes.
fn loss(scores: &[Tensor]) -> Tensor {
    scores.iter().map(|s| contrastive_loss(s, &Margin::Fixed(MARGIN), false)).reduce(|a, b| a + b).unwrap()
}

/// Brings the batch-norm running statistics near the batch's own (training-mode forwards
/// without gradients), as a trained model's are: with the initial ones (mean 0, variance 1) the
/// evaluation-mode ResNet does not normalise at all, and its activations grow layer after layer
/// until a rounding difference of 1e-7 in the weights becomes 1e-4 after three steps.
fn warm_batch_norm(model: &Model, batch: &PairBatch) {
    tch::no_grad(|| {
        for _ in 0..20 {
            let _ = model.net.encode_images(&model.prepare_images(&batch.images), Pass::training(None));
        }
    });
}

/// `steps` updates of a model (seed 3) replicated on `devices`, batch norm in training mode or
/// not (then with warmed statistics); returns the replicas' variables, the primary's first.
fn train_replicas(devices: &[Device], batch: &PairBatch, train: bool, steps: usize) -> Vec<BTreeMap<String, Tensor>> {
    let opts = options();
    let model = Model::new(&ModelConfig::new(&opts, VOCAB as usize), devices[0], 3).unwrap();
    if !train {
        warm_batch_norm(&model, batch);
    }
    let mut adam = Adam::new(model.trainable(), LR).with_eps(EPS);
    let replicas = Replicas::new(model, &devices[1..]).unwrap();
    let pass = Pass { train, precision: None };
    for _ in 0..steps {
        let scores = replicas.scores(batch, pass);
        replicas.update(&mut adam, scores.map(|scores| loss(&scores)), 0.0);
    }
    replicas.iter().map(Model::state_dict).collect()
}

/// `STEPS` updates of one model (seed 3) that encodes the images of each of `shares` of the
/// batch on its own, in training mode (its batch norm normalises each share separately), and
/// scores the whole batch; returns its variables. (The text encoder treats each caption alone,
/// so its captions are encoded at once.)
fn train_by_shares(batch: &PairBatch, shares: &[(usize, usize)]) -> BTreeMap<String, Tensor> {
    let opts = options();
    let model = Model::new(&ModelConfig::new(&opts, VOCAB as usize), Device::Cpu, 3).unwrap();
    let mut adam = Adam::new(model.trainable(), LR).with_eps(EPS);
    let rows = |t: &Tensor, (start, size): (usize, usize)| t.narrow(0, start as i64, size as i64);
    let pass = Pass::training(None);
    for _ in 0..STEPS {
        let visual: Vec<Tensor> = shares
            .iter()
            .map(|&share| model.net.encode_images(&model.prepare_images(&rows(&batch.images, share)), pass))
            .collect();
        let text = model.net.encode_texts_with(&batch.captions, &batch.lengths, pass);
        let scores = text.map(|text| model.net.cross_attention_s.scores(&Tensor::cat(&visual, 0), &text, pass));
        adam.zero_grad();
        scores.map(|scores| loss(&[scores])).backward();
        adam.step();
    }
    model.state_dict()
}

/// The largest difference over the variables of `a` whose key `select` accepts.
fn max_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, select: impl Fn(&str) -> bool) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .filter(|(k, _)| select(k))
        .map(|(k, v)| (v.to_kind(Kind::Double) - b[k].to_kind(Kind::Double)).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

fn is_buffer(key: &str) -> bool {
    key.ends_with("running_mean") || key.ends_with("running_var") || key.ends_with("num_batches_tracked")
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
