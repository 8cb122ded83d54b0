//! `amfmn test`, `test-single` and `metrics` end to end: the k-fold table and its JSON, saved
//! score matrices, the same scores as the original's shard-by-shard evaluation on the PyTorch
//! reference, and the one-line errors of bad input.

mod common;

use std::path::Path;

use common::{amfmn_in, stderr, stdout};

/// A synthetic set (25 images of 32x32: 20 train, 5 test), vocabulary and options for one
/// epoch per fold with `folds` folds, trained.
fn trained(dir: &Path, folds: usize) {
    trained_with(dir, folds, false);
}

/// Like [`trained`], with `dataset.keywords` set as given.
fn trained_with(dir: &Path, folds: usize, keywords: bool) {
    trained_in(dir, folds, keywords, "png");
}

/// Like [`trained_with`], with images in `format` (png, jpg or tif).
fn trained_in(dir: &Path, folds: usize, keywords: bool, format: &str) {
    let out =
        amfmn_in(dir, &["synth", "--out", "d", "--images", "25", "--size", "32", "--seed", "9", "--format", format]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = amfmn_in(dir, &["vocab", "--data_path", "d", "--out", "v.json", "--threshold", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let sets = [
        "dataset.data_path=d/".to_string(),
        "dataset.image_path=d/images/".into(),
        "dataset.vocab_path=v.json".into(),
        "dataset.image_size=32".into(),
        "dataset.resize=36".into(),
        "dataset.batch_size=10".into(),
        "optim.epochs=1".into(),
        format!("k_fold.nums={folds}"),
        format!("dataset.keywords={keywords}"),
        "threads=2".into(),
    ];
    let text = amfmn::options::Options::parse(&demo, &sets).unwrap().to_yaml();
    std::fs::write(dir.join("opt.yaml"), text).unwrap();
    let out =
        amfmn_in(dir, &["train", "--path_opt", "opt.yaml", "--device", "cpu", "--set", "model.resnet_weights=none"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

const KEYS: [&str; 11] = ["r1i", "r5i", "r10i", "medri", "meanri", "r1t", "r5t", "r10t", "medrt", "meanrt", "mR"];

#[test]
fn test_averages_folds_and_saves_what_metrics_reads() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path(), 2);
    let out = amfmn_in(dir.path(), &["test", "--path_opt", "opt.yaml", "--device", "cpu", "--save-sims", "sims.npy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let mut lines = table.lines();
    let weights = "initial weights: a random ResNet-18 (model.resnet_weights: none), a random text encoder \
                   (model.seq2vec.pretrained: false); not the paper's setup";
    assert_eq!(lines.next(), Some(weights), "said once for both folds: {table}");
    assert!(lines.next().unwrap().split_whitespace().eq(KEYS), "{table}");
    for label in ["0 ", "1 ", "average "] {
        assert!(table.lines().any(|l| l.starts_with(label)), "{label} in {table}");
    }
    assert!(table.contains("5 test images, 25 captions; results written to checkpoint/demo/test.json"), "{table}");
    let written = json(&std::fs::read_to_string(dir.path().join("checkpoint/demo/test.json")).unwrap());
    for part in ["0", "1", "average"] {
        for key in KEYS {
            assert!(written[part][key].is_number(), "{part}.{key} in {written}");
        }
    }
    let mean_r1i = (written["0"]["r1i"].as_f64().unwrap() + written["1"]["r1i"].as_f64().unwrap()) / 2.0;
    assert!((written["average"]["r1i"].as_f64().unwrap() - mean_r1i).abs() < 1e-9);

    let out = amfmn_in(dir.path(), &["test", "--path_opt", "opt.yaml", "--device", "cpu", "--json"]);
    assert_eq!(json(&stdout(&out)), written, "--json prints what test.json holds");

    for fold in ["0", "1"] {
        let out = amfmn_in(dir.path(), &["metrics", "--sims", &format!("sims.fold{fold}.npy"), "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(json(&stdout(&out)), written[fold], "metrics of the saved matrix of fold {fold}");
    }
    let out =
        amfmn_in(dir.path(), &["test-single", "--path_opt", "opt.yaml", "--resume", "checkpoint/demo/1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&stdout(&out)), written["1"]);
    assert!(dir.path().join("checkpoint/demo/1/best.test.json").is_file());
    model_time_is_reported(&stderr(&out));
}

/// The model-time line of an evaluation: `testing: N images x M captions, model time T s
/// (images a s, captions b s, scores c s)`, with every part positive and T their sum.
fn model_time_is_reported(log: &str) {
    let line = log.lines().find(|l| l.contains("model time")).unwrap_or_else(|| panic!("no model time: {log}"));
    assert!(line.starts_with("testing: ") && line.contains(" images x ") && line.contains(" captions, "), "{line}");
    let numbers: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.contains('.'))
        .map(|w| w.parse().unwrap())
        .collect();
    let [total, images, captions, scores] = numbers[..] else { panic!("four times: {line}") };
    assert!(images > 0.0 && captions > 0.0 && scores >= 0.0, "{line}");
    assert!((images + captions + scores - total).abs() <= 0.002, "the parts add up: {line}");
}

/// The largest difference between amfmn's test scores and the original's shard-by-shard
/// evaluation on the PyTorch reference (PIL decoding), for a set whose images are in `format`.
fn shard_parity(format: &str) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    trained_in(dir.path(), 1, false, format);
    let d = dir.path();
    let args = ["test-single", "--path_opt", "opt.yaml", "--device", "cpu", "--resume"];
    let out = amfmn_in(d, &[&args[..], &["checkpoint/demo/0/best.safetensors", "--save-sims", "ours.npy"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let weights = p("checkpoint/demo/0/best.safetensors");
    let (vocab, data, images, theirs) = (p("v.json"), p("d"), p("d/images"), p("theirs.npy"));
    common::run_reference("shard_eval.py", &[&weights, &vocab, &data, &images, "32", "2", "soft_att", "512", &theirs]);
    let ours = amfmn::npy::read_f32(&d.join("ours.npy")).unwrap();
    let theirs = amfmn::npy::read_f32(&d.join("theirs.npy")).unwrap();
    assert_eq!(ours.shape(), [5, 25]);
    assert_eq!(ours.shape(), theirs.shape());
    ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
}

#[test]
fn scores_equal_the_original_shard_evaluation() {
    for format in ["png", "jpg", "tif"] {
        let diff = shard_parity(format);
        println!("{format}: max |Δscore| {diff:e}");
        assert!(diff <= 1e-5, "{format}: max |Δscore| {diff}");
    }
}

#[test]
fn missing_folds_and_bad_matrices_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path(), 1);
    let out = amfmn_in(dir.path(), &["test", "--path_opt", "opt.yaml", "--set", "k_fold.nums=3"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("error: no best checkpoint for 2 of 3 folds: fold 1 (checkpoint/demo/1/best.json), fold 2"),
        "{err}"
    );

    std::fs::write(dir.path().join("mine.fold0.npy"), "a user's file").unwrap();
    let out = amfmn_in(dir.path(), &["test", "--path_opt", "opt.yaml", "--save-sims", "mine.npy"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("mine.fold0.npy exists and amfmn did not write it as scores output"));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.path().join("mine.fold0.npy")).unwrap(), b"a user's file");

    let write = |name: &str, shape: &[usize], data: &[f32]| {
        let array = ndarray::ArrayView::from_shape(shape, data).unwrap();
        let mut outputs = amfmn::fsutil::owned::Outputs::new(dir.path(), "scores", false).unwrap();
        amfmn::npy::write_f32(&mut outputs, &dir.path().join(name), &array).unwrap();
        outputs.finish().unwrap();
    };
    write("flat.npy", &[10], &[0.0; 10]);
    write("odd.npy", &[2, 9], &[0.0; 18]);
    write("short.npy", &[2, 5], &[0.0; 10]);
    let mut nan = vec![0.5f32; 20];
    nan[13] = f32::NAN;
    write("nan.npy", &[2, 10], &nan);
    for (file, needle) in [
        ("flat.npy", "flat.npy: expected a 2-d images x captions matrix, got shape [10]"),
        ("odd.npy", "odd.npy: 9 captions is not a multiple of 5 captions per image"),
        ("short.npy", "short.npy: 2 images need 10 captions (5 each), the matrix has 5 columns"),
        ("nan.npy", "nan.npy: entry (1, 3) is NaN; scores must be finite"),
        ("none.npy", "cannot open none.npy"),
    ] {
        let out = amfmn_in(dir.path(), &["metrics", "--sims", file]);
        assert!(!out.status.success(), "{file}");
        assert!(stderr(&out).contains(needle), "{file}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    let out = amfmn_in(dir.path(), &["metrics", "--sims", "short.npy", "--captions-per-image", "2"]);
    assert!(stderr(&out).contains("short.npy: 5 captions is not a multiple of 2"), "{}", stderr(&out));
}

#[test]
fn keyword_training_reports_three_modes() {
    let dir = tempfile::tempdir().unwrap();
    trained_with(dir.path(), 1, true);
    let log = std::fs::read_to_string(dir.path().join("checkpoint/demo/0/best.json")).unwrap();
    assert!(log.contains("\"keywords\": true"), "{log}");
    let out =
        amfmn_in(dir.path(), &["test", "--path_opt", "opt.yaml", "--device", "cpu", "--json", "--save-sims", "s.npy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result = json(&stdout(&out));
    for part in ["0", "average"] {
        for mode in ["sentence", "keywords", "fused"] {
            assert!(result[part][mode]["mR"].is_number(), "{part}.{mode} in {result}");
        }
    }
    for file in ["s.fold0.npy", "s.fold0.keywords.npy", "s.fold0.fused.npy"] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    let out = amfmn_in(dir.path(), &["metrics", "--sims", "s.fold0.fused.npy", "--json"]);
    assert_eq!(json(&stdout(&out)), result["0"]["fused"]);
    let out = amfmn_in(dir.path(), &["test", "--path_opt", "opt.yaml", "--device", "cpu", "--modes", "sentence"]);
    let table = stdout(&out);
    assert!(table.lines().any(|l| l.starts_with("0 ")) && !table.contains("fused"), "{table}");

    std::fs::remove_file(dir.path().join("d/test_keywords.txt")).unwrap();
    let out = amfmn_in(dir.path(), &["test", "--path_opt", "opt.yaml", "--device", "cpu", "--modes", "fused"]);
    assert!(stderr(&out).contains("--modes fused: the test split has no keywords"), "{}", stderr(&out));
    std::fs::remove_file(dir.path().join("d/train_keywords.txt")).unwrap();
    let out = amfmn_in(dir.path(), &["train", "--path_opt", "opt.yaml", "--device", "cpu"]);
    assert!(
        stderr(&out).contains("dataset.keywords is on but d/train_keywords.txt does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn folds_of_different_settings_and_other_vocabularies_give_clear_results() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained_with(d, 2, true);
    // Fold 1 replaced by a fold trained without keywords.
    let plain = ["--set", "k_fold.experiment_name=plain", "--set", "dataset.keywords=False"];
    let out = amfmn_in(d, &[&["train", "--path_opt", "opt.yaml", "--device", "cpu"][..], &plain].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_dir_all(d.join("checkpoint/demo/1")).unwrap();
    std::fs::rename(d.join("checkpoint/plain/1"), d.join("checkpoint/demo/1")).unwrap();
    let out = amfmn_in(d, &["test", "--path_opt", "opt.yaml", "--device", "cpu", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("the folds were evaluated in different modes"), "{}", stderr(&out));
    let result = json(&stdout(&out));
    assert!(result["0"]["fused"]["mR"].is_number() && result["1"]["mR"].is_number(), "{result}");
    let average = result["average"]["mR"].as_f64().expect("sentence only: a plain metrics object");
    let mean = (result["0"]["sentence"]["mR"].as_f64().unwrap() + result["1"]["mR"].as_f64().unwrap()) / 2.0;
    assert!((average - mean).abs() < 1e-9, "{result}");

    // The same words in another order: as many words, another vocabulary.
    let vocab: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("v.json")).unwrap()).unwrap();
    let mut words: Vec<String> = (1..vocab["idx"].as_u64().unwrap())
        .map(|i| vocab["idx2word"][i.to_string()].as_str().unwrap().to_string())
        .collect();
    words.swap(0, 1);
    let swapped = amfmn::text::Vocabulary::from_words(words).unwrap();
    std::fs::write(d.join("swapped.json"), swapped.to_json()).unwrap();
    let out = amfmn_in(
        d,
        &["test-single", "--path_opt", "opt.yaml", "--device", "cpu", "--resume", "checkpoint/demo/0"]
            .into_iter()
            .chain(["--set", "dataset.vocab_path=swapped.json"])
            .collect::<Vec<_>>(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was trained with another vocabulary"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn pytorch_files_of_the_original_code_evaluate_natively() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d, 1);
    let options = amfmn::options::Options::load(&d.join("opt.yaml"), &[]).unwrap();
    let vocab = amfmn::text::Vocabulary::load(&d.join("v.json")).unwrap();
    let best = d.join("checkpoint/demo/0/best.safetensors");
    let (size, vocab_size) = (options.dataset.image_size.to_string(), vocab.len().to_string());
    common::torch_save(d, &best, &options, [&vocab_size, "soft_att", "BayesianUniSkip", "512", &size]);

    let expected = amfmn::checkpoint::read_safetensors(&best).unwrap();
    for name in ["original_zip.pth.tar", "original_legacy.pth.tar", "state_zip.pth", "state_legacy.pth"] {
        let file = amfmn::checkpoint::pytorch::read(&d.join("pth").join(name)).unwrap();
        assert_eq!(file.tensors.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{name}");
        for (key, tensor) in &expected {
            assert!(file.tensors[key].equal(tensor), "{name}: {key} differs");
        }
        if name.starts_with("original") {
            assert_eq!((file.epoch, file.best_rsum, file.eiters), (Some(3), Some(123.25), Some(77)), "{name}");
            assert_eq!(file.options.unwrap(), serde_json::to_value(&options).unwrap(), "{name}");
        }
    }

    let sims = |resume: &str, out: &str| {
        let args = ["test-single", "--path_opt", "opt.yaml", "--resume", resume, "--save-sims", out, "--device", "cpu"];
        let run = amfmn_in(d, &args);
        assert!(run.status.success(), "{resume}: {}", stderr(&run));
        std::fs::read(d.join(out)).unwrap()
    };
    let reference = sims("checkpoint/demo/0", "amfmn.npy");
    assert_eq!(sims("pth/original_legacy.pth.tar", "legacy.npy"), reference, "the same score matrix");
    assert_eq!(sims("pth/state_zip.pth", "zip.npy"), reference, "the same score matrix");

    std::fs::create_dir_all(d.join("checkpoint/original/0")).unwrap();
    std::fs::copy(d.join("pth/original_zip.pth.tar"), d.join("checkpoint/original/0/AMFMN_best.pth.tar")).unwrap();
    let args = ["test", "--path_opt", "opt.yaml", "--set", "k_fold.experiment_name=original", "--device", "cpu"];
    let run = amfmn_in(d, &[&args[..], &["--save-sims", "k.npy"]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).starts_with("initial weights: not recorded"), "{}", stdout(&run));
    assert_eq!(std::fs::read(d.join("k.fold0.npy")).unwrap(), reference, "test reads the original's fold folders");

    let run = amfmn_in(d, &["test-single", "--path_opt", "opt.yaml", "--resume", "pth/evil.pth", "--device", "cpu"]);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("it calls posix.system"), "{}", stderr(&run));
    assert!(!d.join("owned.txt").exists());

    std::fs::rename(d.join("v.json"), d.join("moved.json")).unwrap();
    let args = ["test-single", "--path_opt", "opt.yaml", "--resume", "checkpoint/demo/0", "--save-sims", "carried.npy"];
    let run = amfmn_in(d, &[&args[..], &["--device", "cpu"]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    let said = "v.json does not exist: using the vocabulary checkpoint/demo/0/best.json carries";
    assert!(stderr(&run).contains(said), "{}", stderr(&run));
    assert_eq!(std::fs::read(d.join("carried.npy")).unwrap(), reference);
}
