//! Pretrained skip-thoughts files: small generated `dictionary.txt`, `utable.npy` / `btable.npy`
//! (numeric, and object arrays pickled by Python 3 and the Python 2 way of the original release),
//! `uni_skip.npz` / `bi_skip.npz` (stored and deflated) load into every encoder variant exactly
//! as the original `skipthoughts` package maps them.

mod common;

use std::path::Path;

use amfmn::checkpoint::read_safetensors;
use amfmn::model::skipthoughts;
use amfmn::model::{Model, ModelConfig};
use amfmn::options::Options;
use tch::Device;

fn options(seq2vec: &str) -> Options {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let sets = [format!("model.seq2vec.type={seq2vec}"), "dataset.image_size=64".into(), "dataset.resize=70".into()];
    Options::parse(&text, &sets).unwrap()
}

fn check_format(table_format: &str, variants: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let words: Vec<String> =
        ["red", "house", "lake", "boat", "<unk>", "road", "ship"].iter().map(|w| w.to_string()).collect();
    let vocab_path = dir.path().join("vocab.txt");
    std::fs::write(&vocab_path, words.join("\n")).unwrap();
    common::run_reference(
        "skipthoughts_files.py",
        &[dir.path().to_str().unwrap(), vocab_path.to_str().unwrap(), table_format],
    );
    for variant in variants {
        let model = Model::new(&ModelConfig::new(&options(variant), words.len()), Device::Cpu, 0).unwrap();
        let seq2vec = &model.net.text_feature.seq2vec;
        let loaded = skipthoughts::load(seq2vec, dir.path(), &words).unwrap();
        assert_eq!(loaded, skipthoughts::Loaded { unknown_words: 3, vocabulary: 7, dictionary: 11 }, "{variant}");
        let expected = read_safetensors(&dir.path().join(format!("expected_{variant}.safetensors"))).unwrap();
        let state = model.state_dict();
        for (key, want) in &expected {
            let got = &state[&format!("text_feature.seq2vec.{key}")];
            assert_eq!(got.size(), want.size(), "{variant} {key}");
            assert!(got.equal(want), "{variant} {table_format}: {key} differs");
        }
        let keys = state.keys().filter(|k| k.starts_with("text_feature.seq2vec.")).count();
        assert_eq!(keys, expected.len(), "{variant}: every encoder weight was loaded");
    }
}

#[test]
fn numeric_tables_load_into_every_variant() {
    check_format("numeric", &["BayesianUniSkip", "UniSkip", "DropUniSkip", "BiSkip"]);
}

#[test]
fn pickled_tables_of_the_original_release_load() {
    check_format("object2", &["BayesianUniSkip"]);
    check_format("object3", &["BiSkip"]);
}

#[test]
fn missing_files_are_named_and_leave_the_weights_alone() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::new(&ModelConfig::new(&options("BayesianUniSkip"), 3), Device::Cpu, 0).unwrap();
    let before = model.state_dict();
    let words = vec!["a".to_string(), "b".into(), "<unk>".into()];
    std::fs::write(dir.path().join("dictionary.txt"), "a\nUNK\n").unwrap();
    let err = format!("{:#}", skipthoughts::load(&model.net.text_feature.seq2vec, dir.path(), &words).unwrap_err());
    assert!(err.contains("lacks utable.npy (the uni-skip word vectors, float32 [dictionary lines, 620]); uni_skip.npz (the uni-skip GRU: encoder_W [620, 4800]"), "{err}");
    assert!(!err.contains("dictionary.txt (") && err.contains("model.seq2vec.pretrained: false"), "{err}");
    for (k, v) in model.state_dict() {
        assert!(v.equal(&before[&k]), "{k}");
    }
}

#[test]
fn check_weights_validates_a_set_without_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let words: Vec<String> = ["red", "house", "lake", "boat", "<unk>"].iter().map(|w| w.to_string()).collect();
    std::fs::write(d.join("words.txt"), words.join("\n")).unwrap();
    std::fs::create_dir(d.join("st")).unwrap();
    common::run_reference(
        "skipthoughts_files.py",
        &[d.join("st").to_str().unwrap(), d.join("words.txt").to_str().unwrap(), "numeric"],
    );
    let vocab = amfmn::text::Vocabulary::from_words(words).unwrap();
    let mut outputs = amfmn::fsutil::owned::Outputs::new(d, "vocab", false).unwrap();
    vocab.save(&mut outputs, &d.join("v.json")).unwrap();
    outputs.finish().unwrap();

    let out = common::amfmn_in(d, &["check-weights", "--dir_st", "st", "--vocab", "v.json"]);
    let text = common::stdout(&out);
    assert!(out.status.success(), "{text}{}", common::stderr(&out));
    let row = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(row("dictionary lines"), "dictionary lines = utable.npy rows 12 = 12 ok", "{text}");
    assert_eq!(row("utable.npy row width"), "utable.npy row width 620 values ok", "{text}");
    assert_eq!(row("uni_skip.npz: encoder_U"), "uni_skip.npz: encoder_U [2400, 4800] ok", "{text}");
    assert_eq!(
        row("vocabulary coverage"),
        "vocabulary coverage 3 of 5 words (60.0%); the others take the UNK row ok",
        "{text}"
    );
    assert!(text.ends_with("st is a complete BayesianUniSkip set\n"), "{text}");

    let out = common::amfmn_in(d, &["check-weights", "--dir_st", "st", "--type", "BiSkip"]);
    let text = common::stdout(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" ok\n").count(), 5 + 12, "three files, rows, width, twelve arrays: {text}");

    let dictionary = std::fs::read_to_string(d.join("st/dictionary.txt")).unwrap();
    std::fs::write(d.join("st/dictionary.txt"), dictionary.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
    std::fs::remove_file(d.join("st/bi_skip.npz")).unwrap();
    let out = common::amfmn_in(d, &["check-weights", "--dir_st", "st"]);
    assert!(!out.status.success());
    let text = common::stdout(&out);
    let row = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(
        row("dictionary lines"),
        "dictionary lines = utable.npy rows 11 dictionary lines, but the table's shape is [12, 620] FAILED"
    );
    assert_eq!(common::stderr(&out).trim(), "error: st: 1 of 11 checks failed (see the table above)");
    let out = common::amfmn_in(d, &["check-weights", "--dir_st", "st", "--type", "BiSkip"]);
    assert!(!out.status.success());
    let text = common::stdout(&out);
    let missing = text.lines().find(|l| l.starts_with("bi_skip.npz")).unwrap_or_default();
    assert!(missing.contains("missing: the bi-skip GRUs") && missing.ends_with("FAILED"), "{text}");
}
