//! amfmn's network against the PyTorch reference of tests/reference (same weights through
//! safetensors, same inputs): scores within 1e-4, loss within 1e-4, gradients within 1e-3, for
//! the three attention types and the skip-thoughts variants; amfmn's weights load into the
//! reference with `load_state_dict(strict=True)`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use amfmn::checkpoint::{read_safetensors, write_safetensors};
use amfmn::data::loader::pad_captions;
use amfmn::loss::{contrastive_loss, dynamic_margins, Margin};
use amfmn::model::{Model, ModelConfig, Pass};
use amfmn::options::Options;
use tch::{Device, Kind, Tensor};

const VOCAB: i64 = 20;
/// A margin above the largest possible score gap (2), so every hinge term is active and a
/// 1e-6 difference in scores cannot switch a term on or off between the implementations.
const MARGIN: f64 = 2.5;
/// libtorch's random generator is global: tests that seed it must not interleave.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn options(att_type: &str, seq2vec: &str) -> Options {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let sets = [
        format!("model.cross_attention.att_type={att_type}"),
        format!("model.seq2vec.type={seq2vec}"),
        "model.seq2vec.dropout=0.0".into(),
        "model.embed.embed_dim=32".into(),
        "dataset.image_size=64".into(),
        "dataset.resize=70".into(),
    ];
    Options::parse(&text, &sets).unwrap()
}

/// Inputs: 4 images, captions of lengths 6, 3, 1, 4 (zero-padded).
fn inputs() -> (Tensor, Tensor, Tensor) {
    tch::manual_seed(11);
    let images = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
    let lengths = [6i64, 3, 1, 4];
    let mut ids = vec![0i64; 4 * 6];
    for (row, &len) in lengths.iter().enumerate() {
        for t in 0..len as usize {
            ids[row * 6 + t] = 1 + ((row * 7 + t * 3) as i64 % VOCAB);
        }
    }
    (images, Tensor::from_slice(&ids).view([4, 6]), Tensor::from_slice(&lengths))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// Prior similarities of a 4-pair batch for the dynamic margin (1 on the diagonal).
fn prior() -> Tensor {
    Tensor::from_slice(&[1.0f32, 0.2, 0.55, 0.0, 0.1, 1.0, 0.35, 0.9, 0.75, 0.05, 1.0, 0.4, 0.0, 0.6, 0.25, 1.0])
        .view([4, 4])
}

/// Dynamic-margin settings (gamma, beta) with margins above the largest score gap (2).
const DYNAMIC: (f64, f64) = (2.5, 5.0);

/// Inputs with blank captions: 4 images, captions of 3 and 2 tokens and two blank ones, padded
/// by amfmn's collate ([`pad_captions`]).
fn inputs_with_blanks() -> (Tensor, Tensor, Tensor) {
    let (images, _, _) = inputs();
    let rows: [&[i64]; 4] = [&[3, 9, 4], &[], &[5, 2], &[]];
    let (ids, lengths) = pad_captions(&rows);
    (images, ids, lengths)
}

/// Runs both implementations; returns the maximum differences (scores, loss, gradients).
fn compare(att_type: &str, seq2vec: &str, max_violation: bool, dynamic: bool) -> (f64, f64, f64) {
    compare_on(att_type, seq2vec, max_violation, dynamic, inputs)
}

/// [`compare`] on the inputs `make` returns.
fn compare_on(
    att_type: &str,
    seq2vec: &str,
    max_violation: bool,
    dynamic: bool,
    make: fn() -> (Tensor, Tensor, Tensor),
) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(att_type, seq2vec);
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new(&ModelConfig::new(&opts, VOCAB as usize), Device::Cpu, 3).unwrap();
    let weights = dir.path().join("weights.safetensors");
    write_safetensors(&weights, &model.state_dict()).unwrap();
    let (images, ids, lengths) = make();
    drop(guard);
    let mut input_map = BTreeMap::new();
    input_map.insert("images".to_string(), images.shallow_clone());
    input_map.insert("ids".to_string(), ids.shallow_clone());
    let input_path = dir.path().join("inputs.safetensors");
    write_safetensors(&input_path, &input_map).unwrap();
    let output = dir.path().join("out.safetensors");
    let mut config = serde_json::json!({
        "weights": weights, "inputs": input_path, "output": output, "vocab_size": VOCAB,
        "att_type": att_type, "seq2vec": seq2vec, "embed_dim": 32, "image_size": 64,
        "margin": MARGIN, "max_violation": max_violation,
    });
    if dynamic {
        let prior_path = dir.path().join("prior.safetensors");
        write_safetensors(&prior_path, &BTreeMap::from([("prior".to_string(), prior())])).unwrap();
        config["prior"] = serde_json::json!(prior_path);
        config["gamma"] = serde_json::json!(DYNAMIC.0);
        config["beta"] = serde_json::json!(DYNAMIC.1);
    }
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    common::run_reference("parity.py", &[config_path.to_str().unwrap()]);
    let reference = read_safetensors(&output).unwrap();

    let images = model.prepare_images(&images);
    let eval = tch::no_grad(|| model.net.forward(&images, &ids, &lengths, Pass::EVAL).evaluated());
    let maps = tch::no_grad(|| model.net.encode_images_with_maps(&images));
    let fv = tch::no_grad(|| model.net.encode_images(&images, Pass::EVAL));
    assert!(fv.equal(&maps.fv), "the encoder path with the maps gives the same Fv bit for bit");
    assert_eq!(maps.gate.size(), [4, 1, 4, 4]);
    let gate_diff = max_diff(&maps.gate, &reference["mvsa_gate"]);
    eprintln!("{att_type}/{seq2vec}: MVSA gate within {gate_diff:e} of the reference");
    assert!(gate_diff <= 1e-6, "MVSA's gate differs from the reference's by {gate_diff}");
    assert!(max_diff(&maps.fv, &reference["mvsa_fv"]) < 1e-5);
    let training = model.net.forward(&images, &ids, &lengths, Pass::training(None));
    let scores = training.detached();
    let margin = if dynamic {
        // Diagonal margins are 0 (prior 1) but the diagonal is masked; off-diagonal ones lie
        // between 2.5 (prior 0) and 0.25 (prior 0.9).
        Margin::PerPair(dynamic_margins(&prior(), DYNAMIC.0, DYNAMIC.1))
    } else {
        Margin::Fixed(MARGIN)
    };
    let training_loss = training.map(|scores| contrastive_loss(&scores, &margin, max_violation));
    let loss = training_loss.detached();
    training_loss.backward();
    let score_diff = max_diff(&eval, &reference["scores_eval"]).max(max_diff(&scores, &reference["scores_train"]));
    let loss_diff = max_diff(&loss, &reference["loss"]);
    let mut grad_diff = 0f64;
    let mut compared = 0;
    for (key, var) in model.trainable() {
        let grad = var.grad();
        match reference.get(&format!("grad.{key}")) {
            Some(want) => {
                assert!(grad.defined(), "{key}: the reference has a gradient, amfmn none");
                grad_diff = grad_diff.max(max_diff(&grad, want));
                compared += 1;
            }
            None => assert!(!grad.defined() || grad.abs().max().double_value(&[]) == 0.0, "{key}: unexpected gradient"),
        }
    }
    assert!(compared > 60, "{compared} gradients compared");
    for (key, value) in model.state_dict() {
        if key.ends_with("running_mean") || key.ends_with("running_var") || key.ends_with("num_batches_tracked") {
            let want = &reference[&format!("buffer.{key}")];
            assert!(max_diff(&value, want) < 1e-4, "{key} after one training forward");
        }
    }
    (score_diff, loss_diff, grad_diff)
}

fn check(att_type: &str, seq2vec: &str, max_violation: bool, dynamic: bool) {
    let (s, l, g) = compare(att_type, seq2vec, max_violation, dynamic);
    eprintln!(
        "{att_type} {seq2vec} max_violation={max_violation} dynamic={dynamic}: |Δscore| {s:.2e}, |Δloss| {l:.2e}, |Δgrad| {g:.2e}"
    );
    assert!(s < 1e-4, "score difference {s}");
    assert!(l < 1e-4, "loss difference {l}");
    assert!(g < 1e-3, "gradient difference {g}");
}

#[test]
fn soft_attention_matches_the_reference() {
    check("soft_att", "BayesianUniSkip", false, false);
}

#[test]
fn fusion_attention_matches_the_reference() {
    check("fusion_att", "BayesianUniSkip", true, false);
}

#[test]
fn similarity_attention_matches_the_reference() {
    check("similarity_att", "BayesianUniSkip", false, false);
}

#[test]
fn dynamic_margin_matches_the_reference() {
    check("soft_att", "BayesianUniSkip", false, true);
    check("similarity_att", "BayesianUniSkip", true, true);
}

#[test]
fn blank_captions_are_encoded_like_the_original() {
    for seq2vec in ["BayesianUniSkip", "UniSkip"] {
        let (s, l, g) = compare_on("soft_att", seq2vec, false, false, inputs_with_blanks);
        eprintln!("{seq2vec} with blank captions: |Δscore| {s:.2e}, |Δloss| {l:.2e}, |Δgrad| {g:.2e}");
        assert!(s < 1e-4 && l < 1e-4 && g < 1e-3, "{seq2vec}: {s} {l} {g}");
    }
}

#[test]
fn uniskip_and_biskip_match_torch_gru() {
    check("soft_att", "UniSkip", false, false);
    check("soft_att", "BiSkip", false, false);
}

#[test]
fn soft_att_model_has_the_original_150_keys() {
    let model = {
        let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        Model::new(&ModelConfig::new(&options("soft_att", "BayesianUniSkip"), 1349), Device::Cpu, 0).unwrap()
    };
    let keys = model.state_dict();
    assert_eq!(keys.len(), 150);
    for key in [
        "extract_feature.resnet.fc.weight",
        "extract_feature.resnet.layer4.1.bn2.num_batches_tracked",
        "extract_feature.resnet.layer2.0.downsample.1.running_var",
        "extract_feature.linear.bias",
        "mvsa.LF_conv.weight",
        "mvsa.solo_attention.weight",
        "text_feature.seq2vec.embedding.weight",
        "text_feature.seq2vec.rnn.gru_cell.weight_ii.bias",
        "text_feature.seq2vec.rnn.gru_cell.weight_hn.weight",
        "text_feature.to_out.weight",
        "cross_attention_s.cross_attention.0.weight",
        "vgmf_gate.gate.bias",
    ] {
        assert!(keys.contains_key(key), "{key}");
    }
    assert_eq!(keys["extract_feature.resnet.layer1.0.bn1.num_batches_tracked"].kind(), Kind::Int64);
    assert_eq!(keys["text_feature.seq2vec.embedding.weight"].size(), [1350, 620]);
    // The original has 36.7 M parameters with RSITMD's vocabulary at 256x256; at 64x64 solo_attention
    // has 16 inputs instead of 256 (240 x 32 fewer weights) and embed_dim 32 instead of 512.
    assert_eq!(model.num_parameters(), reference_parameter_count());
}

/// The parameter count of the same configuration in PyTorch, computed by hand from the layer
/// shapes: ResNet-18 with fc 11,689,512; linear 512x32+32; MVSA convs and solo_attention;
/// embedding 1350x620; six GRU projections; to_out; soft attention; VGMF gate.
fn reference_parameter_count() -> i64 {
    let resnet = 11_689_512;
    let linear = 512 * 32 + 32;
    let mvsa = (192 * 3 * 9 + 3) + (768 * 3 + 3) + 2 * (6 + 1) + (16 * 32 + 32);
    let embedding = 1350 * 620;
    let gru = 3 * (620 * 2400 + 2400) + 3 * 2400 * 2400;
    let to_out = 2400 * 32 + 32;
    let soft = 32 * 32 + 32;
    let vgmf = 64 * 32 + 32;
    resnet + linear + mvsa + embedding + gru + to_out + soft + vgmf
}

/// bf16 autocast (`optim.amp: bf16`) on the CPU: the training loss over three Adam steps stays
/// within 2% of fp32's, and is not identical to it (the convolutions and linear layers did run
/// in bf16).
#[test]
fn bf16_autocast_trains_close_to_fp32() {
    let opts = options("soft_att", "BayesianUniSkip");
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (images, ids, lengths) = inputs();
    let run = |kind: Option<Kind>| -> Vec<f64> {
        let model = Model::new(&ModelConfig::new(&opts, VOCAB as usize), Device::Cpu, 3).unwrap();
        let mut adam = amfmn::optim::Adam::new(model.trainable(), 2e-4);
        (0..3)
            .map(|_| {
                let pixels = model.prepare_images(&images);
                let scores = model.net.forward(&pixels, &ids, &lengths, Pass::training(kind));
                let loss = scores.map(|scores| contrastive_loss(&scores, &Margin::Fixed(MARGIN), false));
                let value = loss.detached().double_value(&[]);
                adam.zero_grad();
                loss.backward();
                adam.step();
                value
            })
            .collect()
    };
    let (fp32, bf16) = (run(None), run(Some(Kind::BFloat16)));
    drop(guard);
    eprintln!("losses fp32 {fp32:?}, bf16 {bf16:?}");
    for (a, b) in fp32.iter().zip(&bf16) {
        assert!((a - b).abs() <= 0.02 * a.abs(), "fp32 {fp32:?} vs bf16 {bf16:?}");
    }
    assert_ne!(fp32, bf16, "autocast changed nothing");
}

/// The layout (`channels_last: on | off`) changes how the CNN's weights and images are stored,
/// not the model: on the CPU both layouts give the same scores.
#[test]
fn channels_last_changes_the_layout_not_the_scores() {
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (images, ids, lengths) = inputs();
    let run = |channels_last: bool| {
        let opts = options("soft_att", "BayesianUniSkip");
        let model = Model::new(&ModelConfig::new(&opts, VOCAB as usize), Device::Cpu, 3).unwrap();
        let model = model.with_channels_last(channels_last);
        let conv = &model.vs.variables()["extract_feature.resnet.conv1.weight"];
        let pixels = model.prepare_images(&images);
        let scores = model.net.forward(&pixels, &ids, &lengths, Pass::EVAL).evaluated();
        (conv.is_contiguous(), pixels.is_contiguous(), scores)
    };
    let (nchw, nhwc) = (run(false), run(true));
    drop(guard);
    assert_eq!((nchw.0, nchw.1), (true, true), "off: NCHW weights and images");
    assert_eq!((nhwc.0, nhwc.1), (false, false), "on: NHWC weights and images");
    let diff = max_diff(&nchw.2, &nhwc.2);
    eprintln!("channels-last vs NCHW scores: max |d| = {diff:.2e}");
    assert!(diff <= 1e-5, "the layouts' scores differ by {diff}");
}

/// `optim.amp: bf16` runs ResNet-18 as PyTorch's autocast does: 16-bit activations through
/// batch norm (fp32 statistics), ReLU, pooling and the residual sums, each convolution's weight
/// rounded. In training mode on the same weights and images, in either layout, the four stages,
/// the multiscale maps, the ResNet's gradients (of sum(lower²) + sum(higher²)) and its
/// batch-norm buffers equal the reference's under `torch.autocast("cpu", torch.bfloat16)` bit
/// for bit.
#[test]
fn bf16_backbone_equals_pytorch_autocast() {
    for channels_last in [false, true] {
        let compared = bf16_backbone_against_autocast(channels_last);
        assert!(compared.len() > 100, "{} tensors compared", compared.len());
        for (name, diff) in compared {
            assert_eq!(diff, 0.0, "{name} differs from PyTorch's autocast by {diff} (channels_last {channels_last})");
        }
    }
}

/// The largest difference of each compared tensor (see [`bf16_backbone_equals_pytorch_autocast`]).
fn bf16_backbone_against_autocast(channels_last: bool) -> Vec<(String, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let opts = options("soft_att", "BayesianUniSkip");
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let new_model = || {
        let model = Model::new(&ModelConfig::new(&opts, VOCAB as usize), Device::Cpu, 3).unwrap();
        model.with_channels_last(channels_last)
    };
    let (model, twin) = (new_model(), new_model());
    let (images, ids, _) = inputs();
    drop(guard);
    let weights = dir.path().join("weights.safetensors");
    write_safetensors(&weights, &model.state_dict()).unwrap();
    let inputs = dir.path().join("inputs.safetensors");
    write_safetensors(&inputs, &BTreeMap::from([("images".to_string(), images.shallow_clone()), ("ids".into(), ids)]))
        .unwrap();
    let autocast = dir.path().join("autocast.safetensors");
    let config = serde_json::json!({
        "weights": weights, "inputs": inputs, "output": dir.path().join("out.safetensors"),
        "vocab_size": VOCAB, "att_type": "soft_att", "seq2vec": "BayesianUniSkip", "embed_dim": 32,
        "image_size": 64, "margin": MARGIN, "max_violation": false, "autocast": autocast,
        "channels_last": channels_last,
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    common::run_reference("parity.py", &[config_path.to_str().unwrap()]);
    let reference = read_safetensors(&autocast).unwrap();

    let pass = Pass::training(Some(Kind::BFloat16));
    let pixels = model.prepare_images(&images);
    let stages = twin.net.extract_feature.resnet.forward(&pixels, pass);
    let features = model.net.extract_feature.forward(&pixels, pass);
    let mut compared = vec![];
    for (name, ours) in [
        ("f1", &stages.f1),
        ("f2", &stages.f2),
        ("f3", &stages.f3),
        ("f4", &stages.f4),
        ("lower", &features.lower),
        ("higher", &features.higher),
    ] {
        assert_eq!(ours.kind(), Kind::BFloat16, "{name} stays 16-bit");
        compared.push((name.to_string(), max_diff(ours, &reference[&format!("autocast.{name}")])));
    }
    let square_sum = |t: &Tensor| t.to_kind(Kind::Float).square().sum(Kind::Float);
    (square_sum(&features.lower) + square_sum(&features.higher)).backward();
    for (key, value) in model.vs.variables() {
        let Some(name) = key.strip_prefix("extract_feature.resnet.") else { continue };
        if name.starts_with("fc.") {
            continue;
        }
        let (ours, kind) = if value.requires_grad() { (value.grad(), "grad") } else { (value, "buffer") };
        compared.push((key.clone(), max_diff(&ours, &reference[&format!("autocast.{kind}.{key}")])));
    }
    compared
}
