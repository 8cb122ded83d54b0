//! A small AMFMN, batches and a training loop shared by the data-parallel tests (in one
//! process and across processes).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use amfmn::data::{Images, PairBatch};
use amfmn::loss::{contrastive_loss, Margin};
use amfmn::model::{Model, ModelConfig, Pass};
use amfmn::optim::Adam;
use amfmn::options::Options;
use amfmn::train::Replicas;
use tch::{Device, Kind, Tensor};

pub const VOCAB: i64 = 20;
/// A margin above the largest score gap, so every hinge term is active in both runs.
pub const MARGIN: f64 = 2.5;
/// Two steps: the second starts from weights the first updated and broadcast, so it checks the
/// reduction and the copy back. (Further steps compare how a ReLU whose input is within rounding
/// of zero goes: by the third, one such unit on either side can move a weight by 3e-5.)
pub const STEPS: usize = 2;
/// With batch norm frozen, one device and the replicas run convolutions on batches of other
/// sizes (5 against 3 + 2), whose rounding differs by CPU: after one step they agree to 4e-7 on
/// every CPU tried, but on some (an AVX2-only AMD EPYC) the second step already sends a ReLU
/// within rounding of zero the other way, moving weights by 1.2e-4. One step still checks the
/// reduction (without it the weights differ by 1e-4) and, through the replicas' equality, the
/// copy back.
pub const FROZEN_STEPS: usize = 1;
/// Adam with a large eps: its first step is then continuous in the gradient. (With eps 1e-8 it
/// is `lr · sign(g)`, so an entry whose gradient is zero up to rounding moves by ±lr depending on
/// the summation order: two runs that differ by rounding alone differ by 2·lr there.)
pub const LR: f64 = 2e-4;
pub const EPS: f64 = 1e-2;
/// libtorch's random generator is global: tests that seed it must not interleave.
pub static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn options() -> Options {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let sets = ["model.seq2vec.dropout=0.0", "model.embed.embed_dim=32", "dataset.image_size=64", "dataset.resize=70"];
    Options::parse(&text, &sets.map(String::from)).unwrap()
}

/// Token ids `[b, width]` (zero-padded) and lengths `[b]` of `b` rows, the lengths cycling
/// through `lengths`.
pub fn tokens(b: usize, lengths: &[i64], salt: usize) -> (Tensor, Tensor) {
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
pub fn batch(b: usize, keywords: bool) -> PairBatch {
    tch::manual_seed(11);
    let images = Tensor::randn([b as i64, 3, 64, 64], (Kind::Float, Device::Cpu));
    let (captions, lengths) = tokens(b, &[6, 3, 1, 4, 5], 0);
    PairBatch {
        images_from: 0,
        images: Images::Ready(images),
        captions,
        lengths,
        caption_ids: (0..b).collect(),
        image_ids: (0..b).collect(),
        keywords: keywords.then(|| tokens(b, &[2, 3], 5)),
    }
}

/// The loss of a batch: the ranking loss summed over its modes.
pub fn loss(scores: &[Tensor]) -> Tensor {
    scores.iter().map(|s| contrastive_loss(s, &Margin::Fixed(MARGIN), false)).reduce(|a, b| a + b).unwrap()
}

/// Brings the batch-norm running statistics near the batch's own (training-mode forwards
/// without gradients), as a trained model's are: with the initial ones (mean 0, variance 1) the
/// evaluation-mode ResNet does not normalise at all, and its activations grow layer after layer
/// until a rounding difference of 1e-7 in the weights becomes 1e-4 after three steps.
pub fn warm_batch_norm(model: &Model, batch: &PairBatch) {
    tch::no_grad(|| {
        for _ in 0..20 {
            let _ = model
                .net
                .encode_images(&model.prepare_images(&batch.images.input_on(Device::Cpu)), Pass::training(None));
        }
    });
}

/// `steps` updates of a model (seed 3) replicated on `devices`, batch norm in training mode or
/// not (then with warmed statistics); returns the replicas' variables, the primary's first.
pub fn train_replicas(
    devices: &[Device],
    batch: &PairBatch,
    train: bool,
    steps: usize,
) -> Vec<BTreeMap<String, Tensor>> {
    train_replicas_with(devices, batch, train, steps, |replicas| replicas)
}

/// [`train_replicas`] with the replicas passed through `setup` first (to join peers).
pub fn train_replicas_with(
    devices: &[Device],
    batch: &PairBatch,
    train: bool,
    steps: usize,
    setup: impl FnOnce(Replicas) -> Replicas,
) -> Vec<BTreeMap<String, Tensor>> {
    let opts = options();
    let model = Model::new(&ModelConfig::new(&opts, VOCAB as usize), devices[0], 3).unwrap();
    if !train {
        warm_batch_norm(&model, batch);
    }
    let mut adam = Adam::new(model.trainable(), LR).with_eps(EPS);
    let replicas = setup(Replicas::new(model, &devices[1..]).unwrap());
    let pass = Pass { train, precision: None };
    for _ in 0..steps {
        let scores = replicas.scores(batch, pass).unwrap();
        replicas.update(&mut adam, scores.map(|scores| loss(&scores)), 0.0).unwrap();
    }
    replicas.iter().map(Model::state_dict).collect()
}

/// The largest difference over the variables of `a` whose key `select` accepts.
pub fn max_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, select: impl Fn(&str) -> bool) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .filter(|(k, _)| select(k))
        .map(|(k, v)| (v.to_kind(Kind::Double) - b[k].to_kind(Kind::Double)).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

pub fn is_buffer(key: &str) -> bool {
    key.ends_with("running_mean") || key.ends_with("running_var") || key.ends_with("num_batches_tracked")
}
