//! `amfmn index` and `amfmn retrieve` on a folder of images with an (untrained) checkpoint:
//! incremental indexing, unreadable files, the three query kinds and image-to-text, the closed
//! form against the model's own scores, and the HTML page rendered by headless Chromium.

mod common;

use std::path::{Path, PathBuf};

use amfmn::checkpoint::Checkpoint;
use amfmn::model::{Model, ModelConfig, Pass};
use amfmn::options::Options;
use amfmn::search::index::Index;
use amfmn::search::{Query, Searcher};
use amfmn::text::Vocabulary;
use common::{amfmn_in, stderr, stdout};
use tch::{Device, Kind};

/// Solid colours, one image each (distinct, so a screenshot shows which thumbnail is where).
const COLOURS: [[u8; 3]; 6] =
    [[200, 30, 30], [30, 180, 40], [40, 60, 210], [230, 210, 40], [190, 40, 200], [40, 200, 210]];

/// A vocabulary, a checkpoint of a fresh 64x64 model (with sidecar) and a folder of images.
fn setup(dir: &Path) -> PathBuf {
    let ckpt = common::fresh_checkpoint(dir);
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    for (i, c) in COLOURS.iter().enumerate() {
        let name = if i == 5 { format!("sub/c{i}.png") } else { format!("c{i}.png") };
        image::RgbImage::from_pixel(64, 64, image::Rgb(*c)).save(images.join(name)).unwrap();
    }
    std::fs::write(images.join("broken.jpg"), b"not a jpeg").unwrap();
    std::fs::write(images.join("notes.txt"), b"ignored").unwrap();
    ckpt
}

/// Indexes every image of the setup (sub-folders too) into `i.st`; returns the table printed.
fn index(dir: &Path) -> String {
    let out = amfmn_in(
        dir,
        &["index", "--checkpoint", "ckpt", "--images", "images", "--recursive", "--out", "i.st", "--device", "cpu"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str(stdout(out).trim()).unwrap()
}

#[test]
fn index_is_incremental_and_skips_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    let out = amfmn_in(
        d,
        &["index", "--checkpoint", "ckpt/best.json", "--images", "images", "--out", "i.st", "--device", "cpu"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.lines().nth(2).unwrap().split_whitespace().take(4).eq(["5", "0", "5", "1"]), "{text}");
    assert_eq!(text.lines().next().unwrap().split_whitespace().nth(4), Some("encoded/s"), "{text}");
    let rate: f64 = text.lines().nth(2).unwrap().split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(rate > 0.0, "images encoded per second: {text}");
    assert!(text.contains("skipped broken.jpg: cannot decode image"), "{text}");

    let text = index(d);
    assert!(
        text.lines().nth(2).unwrap().split_whitespace().take(4).eq(["6", "5", "1", "1"]),
        "only sub/c5.png is new: {text}"
    );

    std::thread::sleep(std::time::Duration::from_millis(20));
    image::RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3])).save(d.join("images/c0.png")).unwrap();
    std::fs::remove_file(d.join("images/c1.png")).unwrap();
    let text = index(d);
    assert!(
        text.lines().nth(2).unwrap().split_whitespace().take(4).eq(["5", "4", "1", "1"]),
        "c0 changed, c1 gone: {text}"
    );
    let index = Index::load(&d.join("i.st")).unwrap();
    let names: Vec<&str> = index.info.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["c0.png", "c2.png", "c3.png", "c4.png", "sub/c5.png"]);
    assert_eq!(index.fv.size(), [5, 32]);
    assert_eq!(index.gate.unwrap().size(), [5, 32], "soft attention stores the gates");
}

#[test]
fn index_follows_only_links_that_stay_inside_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let images = d.join("images");
    image::RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9])).save(d.join("outside.png")).unwrap();
    std::os::unix::fs::symlink(d.join("outside.png"), images.join("escape.png")).unwrap();
    std::os::unix::fs::symlink(images.join("c2.png"), images.join("again.png")).unwrap();
    std::os::unix::fs::symlink(&images, images.join("sub/loop")).unwrap();
    let out = amfmn_in(
        d,
        &["index", "--checkpoint", "ckpt", "--images", "images", "--recursive", "--out", "i.st", "--device", "cpu"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped 1 symbolic link(s) that lead outside"), "{}", stderr(&out));
    assert!(stderr(&out).contains("(first: escape.png)"), "{}", stderr(&out));
    let index = Index::load(&d.join("i.st")).unwrap();
    let names: Vec<&str> = index.info.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["again.png", "c0.png", "c1.png", "c2.png", "c3.png", "c4.png", "sub/c5.png"]);
    assert_eq!(index.fv.get(0).sum(Kind::Float).double_value(&[]), index.fv.get(3).sum(Kind::Float).double_value(&[]));
}

#[test]
fn a_checkpoint_carries_its_vocabulary_to_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    std::fs::remove_file(d.join("v.json")).unwrap();
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let (ckpt, images) = (d.join("ckpt"), d.join("images"));
    let args = ["index", "--checkpoint", ckpt.to_str().unwrap(), "--images", images.to_str().unwrap()];
    let out = amfmn_in(&elsewhere, &[&args[..], &["--out", "i.st", "--device", "cpu"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let out = amfmn_in(&elsewhere, &["retrieve", "--index", "i.st", "--query", "two white houses", "--json"]);
    let found = json(&out);
    assert_eq!(found["results"].as_array().map(Vec::len), Some(5), "{found}");

    let sidecar = ckpt.join("best.json");
    let mut info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
    info["vocabulary"] = serde_json::Value::Null;
    std::fs::write(&sidecar, info.to_string()).unwrap();
    let out = amfmn_in(&elsewhere, &[&args[..], &["--out", "j.st", "--device", "cpu"]].concat());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot find the checkpoint's vocabulary v.json (an older amfmn's checkpoint"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn index_and_retrieve_take_a_checkpoint_of_the_original_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = setup(d);
    let options = Checkpoint::open(&ckpt).unwrap().info.options;
    common::torch_save(d, &ckpt.join("best.safetensors"), &options, ["9", "soft_att", "BayesianUniSkip", "32", "64"]);
    let search = |checkpoint: &str, index: &str| {
        let args = ["index", "--checkpoint", checkpoint, "--images", "images", "--out", index, "--device", "cpu"];
        let out = amfmn_in(d, &args);
        assert!(out.status.success(), "{checkpoint}: {}", stderr(&out));
        json(&amfmn_in(d, &["retrieve", "--index", index, "--query", "red boat in a port", "--json"]))
    };
    let ours = search("ckpt", "a.st");
    let theirs = search("pth/original_legacy.pth.tar", "b.st");
    // The same weights; two processes' products may round differently (MKL's order follows the
    // alignment of its buffers: 6e-7 apart was seen once in CI).
    let ranked = |found: &serde_json::Value| -> Vec<(String, f64)> {
        let results = found["results"].as_array().unwrap();
        results.iter().map(|r| (r["path"].as_str().unwrap().to_owned(), r["score"].as_f64().unwrap())).collect()
    };
    let (ours, theirs) = (ranked(&ours), ranked(&theirs));
    assert_eq!(ours.iter().map(|r| &r.0).collect::<Vec<_>>(), theirs.iter().map(|r| &r.0).collect::<Vec<_>>());
    assert!(ours.iter().zip(&theirs).all(|(a, b)| (a.1 - b.1).abs() <= 1e-6), "{ours:?} vs {theirs:?}");
    assert_eq!(ours.len(), 5);
    let out = amfmn_in(d, &["index", "--checkpoint", "pth/state_zip.pth", "--images", "images", "--out", "c.st"]);
    assert!(stderr(&out).contains("a PyTorch file without the original's `options` entry"), "{}", stderr(&out));
}

#[test]
fn locate_writes_a_probability_map_and_its_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    image::RgbImage::from_fn(600, 500, |x, y| image::Rgb([(x / 3) as u8, (y / 2) as u8, ((x + y) % 256) as u8]))
        .save(d.join("scene.png"))
        .unwrap();
    let args = ["locate", "--checkpoint", "ckpt", "--image", "scene.png", "--query", "red boat", "--out", "o.png"];
    let options = ["--steps", "128,256", "--filter", "median:51", "--device", "cpu"];
    let out = amfmn_in(d, &[&args[..], &options, &["--json"]].concat());
    let report = json(&out);
    assert_eq!(report["crops"], 48, "{report}");
    assert_eq!(report["crops_per_step"], serde_json::json!({"128": 39, "256": 9}));
    assert_eq!(report["top_crops"].as_array().map(Vec::len), Some(5));
    let overlay = image::open(d.join("o.png")).unwrap();
    let prob = image::open(d.join("o.prob.png")).unwrap();
    assert_eq!((overlay.width(), overlay.height(), prob.width(), prob.height()), (600, 500, 600, 500));
    assert_eq!(prob.color(), image::ColorType::L8);
    let levels = prob.to_luma8();
    assert!(levels.pixels().any(|p| p[0] > 200), "min-max spreads the map up to 255 before the median");

    let again = amfmn_in(d, &[&args[..], &options].concat());
    assert!(again.status.success(), "its own outputs are replaced: {}", stderr(&again));
    assert!(stdout(&again).contains("overlay written to o.png, probability map to o.prob.png"), "{}", stdout(&again));
    std::fs::write(d.join("mine.png"), "a user's file").unwrap();
    let refused = amfmn_in(d, &[&args[..], &options, &["--jet", "mine.png"]].concat());
    assert!(stderr(&refused).contains("mine.png exists and amfmn did not write it as locate output"));
    // Crop codes kept with --codes: a second run encodes only the text, with the same map.
    let codes = ["--codes", "scene.codes", "--json"];
    let cold = json(&amfmn_in(d, &[&args[..], &options, &codes].concat()));
    assert_eq!(cold["codes_reused"], false);
    let cold_map = std::fs::read(d.join("o.prob.png")).unwrap();
    let warm_args = ["locate", "--checkpoint", "ckpt", "--image", "scene.png", "--query", "red boat", "--out", "w.png"];
    let warm = json(&amfmn_in(d, &[&warm_args[..], &options, &codes].concat()));
    assert_eq!(warm["codes_reused"], true);
    assert_eq!(std::fs::read(d.join("w.prob.png")).unwrap(), cold_map, "a byte-identical probability map");
    let other_steps = json(&amfmn_in(d, &[&warm_args[..], &["--steps", "256", "--device", "cpu"], &codes].concat()));
    assert_eq!((other_steps["codes_reused"].clone(), other_steps["crops"].clone()), (false.into(), 9.into()));

    let small = amfmn_in(d, &[&args[..], &["--steps", "1024", "--device", "cpu"]].concat());
    assert!(stderr(&small).contains("no crop of --steps [1024] fits in the 600x500 scene"), "{}", stderr(&small));
}

#[test]
fn locate_scores_by_plain_cosine_with_slms_reduced_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = setup(d);
    let options = Checkpoint::open(&ckpt).unwrap().info.options;
    common::torch_save(d, &ckpt.join("best.safetensors"), &options, ["9", "soft_att", "BayesianUniSkip", "32", "64"]);
    image::RgbImage::from_fn(400, 300, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, ((x * y) % 256) as u8]))
        .save(d.join("scene.png"))
        .unwrap();
    let locate = |checkpoint: &str, out: &str, score: &str| {
        let args = ["locate", "--checkpoint", checkpoint, "--image", "scene.png", "--query", "red boat", "--out", out];
        let options = ["--steps", "128", "--filter", "none", "--device", "cpu", "--score", score, "--json"];
        amfmn_in(d, &[&args[..], &options].concat())
    };
    let reduced = json(&locate("pth/slm_reduced.pth.tar", "a.png", "plain"));
    let full = json(&locate("ckpt", "b.png", "plain"));
    assert_eq!(reduced["top_crops"], full["top_crops"], "the plain score needs only the encoders");
    let read = |p: &str| std::fs::read(d.join(p)).unwrap();
    assert_eq!(read("a.prob.png"), read("b.prob.png"));
    let vga = json(&locate("ckpt", "c.png", "vga"));
    assert_ne!(vga["top_crops"], full["top_crops"], "the model's own score attends to the text");
    let refused = locate("pth/slm_reduced.pth.tar", "d.png", "vga");
    assert!(
        stderr(&refused).contains("no visual-guided attention or fusion weights")
            && stderr(&refused).contains("locate --score plain"),
        "{}",
        stderr(&refused)
    );
    let both = amfmn_in(
        d,
        &["locate", "--checkpoint", "ckpt", "--image", "scene.png", "--query", "red boat", "--keywords", "boat"]
            .iter()
            .chain(&["--out", "e.png", "--score", "plain", "--steps", "128", "--device", "cpu"])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert!(stderr(&both).contains("the plain score takes one text"), "{}", stderr(&both));
    let limited = amfmn_in(
        d,
        &[
            "locate",
            "--checkpoint",
            "ckpt",
            "--image",
            "scene.png",
            "--query",
            "boat",
            "--out",
            "f.png",
            "--max-pixels",
            "100000",
        ],
    );
    assert_eq!(
        stderr(&limited).trim(),
        "error: scene.png: 400x300 is 120000 pixels, more than --max-pixels 100000 (raise it if the memory allows: about 9 bytes a pixel)"
    );
}

#[test]
fn selo_end_to_end_makes_the_maps_locate_makes_and_evaluates_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let out = amfmn_in(d, &["synth-scenes", "--out", "s", "--scenes", "2", "--size", "1024x1024", "--seed", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let anno: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("s/annotations/anno.json")).unwrap()).unwrap();
    let cases = anno.as_array().unwrap();
    let settings = ["--steps", "256,512", "--filter", "median:51", "--device", "cpu"];
    let args = ["selo", "--annotations", "s/annotations/anno.json", "--images", "s/scenes", "--checkpoint", "ckpt"];
    let report = json(&amfmn_in(d, &[&args[..], &["--out", "maps", "--overlays", "--json"], &settings].concat()));
    assert_eq!(report["samples"].as_array().unwrap().len(), cases.len());
    for (i, case) in cases.iter().enumerate() {
        let scene = format!("s/scenes/{}", case["jpg_name"].as_str().unwrap());
        let caption = case["caption"].as_str().unwrap();
        let out = format!("l{i}.png");
        let located = amfmn_in(
            d,
            &[&["locate", "--checkpoint", "ckpt", "--image", &scene, "--query", caption, "--out", &out][..], &settings]
                .concat(),
        );
        assert!(located.status.success(), "{}", stderr(&located));
        let read = |p: String| std::fs::read(d.join(p)).unwrap();
        assert_eq!(
            read(format!("maps/probmap_{i}.png")),
            read(format!("l{i}.prob.png")),
            "case {i}: the map locate makes"
        );
        assert_eq!(read(format!("maps/addmap_{i}.png")), read(out), "case {i}: its overlay");
    }
    let again = amfmn_in(d, &["selo", "--annotations", "s/annotations/anno.json", "--heatmaps", "maps", "--json"]);
    assert_eq!(json(&again)["mean"], report["mean"], "evaluating the written maps gives the same indicators");
    let missing = amfmn_in(d, &["selo", "--annotations", "s/annotations/anno.json", "--checkpoint", "ckpt"]);
    assert!(stderr(&missing).contains("--images"), "{}", stderr(&missing));
}

#[test]
fn closed_form_search_equals_the_model_scores() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    index(d);
    let index = Index::load(&d.join("i.st")).unwrap();
    let vocab = Vocabulary::load(&d.join("v.json")).unwrap();
    let ckpt = Checkpoint::open(&d.join("ckpt/best.json")).unwrap();
    let mut model = Model::new(&ModelConfig::new(&ckpt.info.options, vocab.len()), Device::Cpu, 0).unwrap();
    ckpt.load_model(&mut model).unwrap();
    let searcher =
        Searcher::new(model, vocab, index.fv.shallow_clone(), index.gate.as_ref().map(|g| g.shallow_clone()));
    let query = Query { sentence: Some("two white houses".into()), keywords: None };
    let fast = searcher.scores(&query).unwrap();
    let text = searcher.encode_texts(&["two white houses"]).unwrap();
    let direct =
        tch::no_grad(|| searcher.model.net.cross_attention_s.scores(&index.fv, &text, Pass::EVAL)).squeeze_dim(1);
    let diff = (&fast - direct.to_kind(Kind::Float)).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "closed form vs pairwise: {diff}");
    let both = Query { sentence: Some("two white houses".into()), keywords: Some("baseball field, red".into()) };
    let keywords = searcher.encode_texts(&["baseball field, red"]).unwrap();
    let fused =
        tch::no_grad(|| searcher.model.net.mode_scores(&index.fv, &text, &keywords, Pass::EVAL).fused).squeeze_dim(1);
    let diff = (searcher.scores(&both).unwrap() - fused).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "fused query: {diff}");
}

#[test]
fn two_pass_top_k_equals_the_exact_ranking() {
    let vocab =
        Vocabulary::from_words(["two", "white", "houses", "red", "boat", "<unk>"].map(String::from).to_vec()).unwrap();
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let options = Options::parse(&demo, &["dataset.image_size=64".into(), "dataset.resize=70".into()]).unwrap();
    let model = Model::new(&ModelConfig::new(&options, vocab.len()), Device::Cpu, 3).unwrap();
    tch::manual_seed(5);
    let fv = tch::Tensor::randn([20_000, 512], (Kind::Float, Device::Cpu)).abs();
    let gate = tch::Tensor::randn([20_000, 512], (Kind::Float, Device::Cpu)).sigmoid();
    let searcher = Searcher::new(model, vocab, fv, Some(gate));
    for text in ["two white houses", "red boat", "houses"] {
        let query = Query { sentence: Some(text.into()), keywords: None };
        let exact = amfmn::search::top_k(&searcher.scores(&query).unwrap(), 25);
        let top = searcher.top(&query, 25).unwrap();
        assert_eq!(top.iter().map(|h| h.0).collect::<Vec<_>>(), exact.iter().map(|h| h.0).collect::<Vec<_>>());
        // The shortlist's product rounds the last bit as its length has it.
        assert!(top.iter().zip(&exact).all(|(a, b)| (a.1 - b.1).abs() <= 1e-6), "{text}: {top:?}");
    }
    // Visibility applied before the k best are chosen: exact over the visible images, which
    // are picked here among the best of all so the two-pass shortlist must exclude the others.
    let query = Query { sentence: Some("red boat".into()), keywords: None };
    let all = searcher.scores(&query).unwrap();
    let best_of_all: Vec<usize> = amfmn::search::top_k(&all, 40).into_iter().map(|(i, _)| i).collect();
    let mut visible = vec![false; 20_000];
    for (n, &row) in best_of_all.iter().enumerate() {
        visible[row] = n % 3 == 1;
    }
    visible[7] = true;
    let mask = tch::Tensor::from_slice(&visible);
    let mut expected: Vec<(usize, f32)> =
        amfmn::search::top_k(&all, 20_000).into_iter().filter(|&(i, _)| visible[i]).collect();
    expected.truncate(10);
    let got = searcher.top_visible(&query, 10, Some(&mask)).unwrap();
    assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), expected.iter().map(|h| h.0).collect::<Vec<_>>());
    // A shortlist of another length rounds the last bit of a matrix product differently.
    assert!(got.iter().zip(&expected).all(|(a, b)| (a.1 - b.1).abs() <= 1e-6), "{got:?}");
    let few = searcher.top_visible(&query, 100, Some(&mask)).unwrap();
    assert_eq!(few.len(), visible.iter().filter(|&&v| v).count(), "never an invisible row to fill k");
    let fused = Query { sentence: Some("red boat".into()), keywords: Some("houses".into()) };
    let ranked = searcher.top_visible(&fused, 100, Some(&mask)).unwrap();
    assert!(ranked.iter().all(|&(i, _)| visible[i]) && ranked.len() == few.len(), "fused scores too");
    // Several queries ranked together (one first pass for the single texts) rank as each alone.
    let encoded: Vec<_> = [&query, &fused, &Query { sentence: Some("houses".into()), keywords: None }]
        .map(|q| searcher.encode(q).unwrap())
        .into_iter()
        .collect();
    let asks = [(&encoded[0], 10, Some(&mask)), (&encoded[1], 5, Some(&mask)), (&encoded[2], 25, None)];
    for (together, &(query, k, visible)) in searcher.top_encoded_all(&asks).into_iter().zip(&asks) {
        let (together, alone) = (together.unwrap(), searcher.top_encoded(query, k, visible).unwrap());
        assert_eq!(together.iter().map(|h| h.0).collect::<Vec<_>>(), alone.iter().map(|h| h.0).collect::<Vec<_>>());
        assert!(together.iter().zip(&alone).all(|(a, b)| (a.1 - b.1).abs() <= 1e-6), "{together:?}");
    }
}

#[test]
fn queries_encoded_together_equal_queries_encoded_alone() {
    let vocab =
        Vocabulary::from_words(["two", "white", "houses", "red", "boat", "<unk>"].map(String::from).to_vec()).unwrap();
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let options = Options::parse(&demo, &["dataset.image_size=64".into(), "dataset.resize=70".into()]).unwrap();
    let model = || Model::new(&ModelConfig::new(&options, vocab.len()), Device::Cpu, 3).unwrap();
    let codes = || tch::Tensor::zeros([1, 512], (Kind::Float, Device::Cpu));
    let (first, mut second) = (model(), model());
    // The same weights whatever other tests draw from libtorch's global generator meanwhile.
    second.vs.copy(&first.vs).unwrap();
    let plain = Searcher::new(first, vocab.clone(), codes(), None);
    // The service's searcher: the GRU's hidden weights packed for a few rows.
    let packed = Searcher::new(second, vocab.clone(), codes(), None).with_packed_text_encoder().unwrap();
    let query =
        |s: Option<&str>, k: Option<&str>| Query { sentence: s.map(String::from), keywords: k.map(String::from) };
    let queries = [
        query(Some("two white houses"), None),
        query(Some(""), None),
        query(Some("red boat"), Some("houses")),
        query(None, Some("white")),
    ];
    // One to four rows take each of the text encoder's products (see seq2vec).
    for (n, searcher) in (1..=queries.len()).flat_map(|n| [(n, &plain), (n, &packed)]) {
        let together = searcher.encode_all(&queries[..n]);
        for (q, encoded) in queries.iter().zip(together) {
            let alone = plain.encode(q);
            let (together, alone) = match (encoded, alone) {
                (Err(a), Err(b)) => {
                    assert_eq!(a.to_string(), b.to_string(), "the same error, for this query alone");
                    continue;
                }
                (Ok(a), Ok(b)) => (a, b),
                (a, b) => panic!("{:?} vs {:?}", a.is_ok(), b.is_ok()),
            };
            let codes = |e: &amfmn::search::EncodedQuery| match e {
                amfmn::search::EncodedQuery::Single(t) => vec![t.shallow_clone()],
                amfmn::search::EncodedQuery::Fused { sentence, keywords } => {
                    vec![sentence.shallow_clone(), keywords.shallow_clone()]
                }
            };
            for (a, b) in codes(&together).iter().zip(codes(&alone)) {
                let diff = (a - &b).abs().max().double_value(&[]);
                assert!(diff <= 1e-5, "{n} queries: {diff}");
            }
        }
    }
}

#[test]
fn retrieve_ranks_images_and_captions() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    index(d);
    for args in [
        vec!["--query", "two white houses"],
        vec!["--keywords", "red, boat"],
        vec!["--query", "two white houses", "--keywords", "baseball field"],
    ] {
        let mut all = vec!["retrieve", "--index", "i.st", "--top", "3", "--json"];
        all.extend(args.iter());
        let result = json(&amfmn_in(d, &all));
        let results = result["results"].as_array().unwrap();
        assert_eq!(results.len(), 3, "{result}");
        assert_eq!(result["indexed"], 6);
        let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert_eq!(results[0]["rank"], 1);
    }
    let out = amfmn_in(d, &["retrieve", "--index", "i.st", "--query", "red boat in a port"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().count(), 8, "header, rule and 6 images: {}", stdout(&out));

    std::fs::write(d.join("caps.txt"), "two white houses\n\nred boat in a port\nbaseball field\n").unwrap();
    let result = json(&amfmn_in(
        d,
        &["retrieve", "--index", "i.st", "--image", "images/c2.png", "--captions", "caps.txt", "--json"],
    ));
    let lines: Vec<u64> = result["results"].as_array().unwrap().iter().map(|r| r["line"].as_u64().unwrap()).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3], "three non-empty caption lines ranked");

    let out = amfmn_in(d, &["retrieve", "--index", "i.st"]);
    assert!(stderr(&out).contains("give --query"), "{}", stderr(&out));
    std::fs::write(d.join("ckpt/best.safetensors"), b"changed").unwrap();
    let out = amfmn_in(d, &["retrieve", "--index", "i.st", "--query", "x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("changed since i.st was made; re-run amfmn index"), "{}", stderr(&out));
}

/// A screenshot of `page` in headless Chromium with a `width × height` window.
fn screenshot(page: &Path, size: (u32, u32)) -> image::RgbImage {
    common::chromium_screenshot(&format!("file://{}", page.display()), size, &[])
}

#[test]
fn html_page_shows_the_thumbnails_in_rank_order() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    index(d);
    let result = json(&amfmn_in(
        d,
        &["retrieve", "--index", "i.st", "--query", "two white houses", "--top", "6", "--json", "--html", "page.html"],
    ));
    let png = screenshot(&d.join("page.html"), (760, 560));
    // Layout of the page: 16 px margin, 20 px title + 12 px gap, cells of 180 x 200 with the
    // 160 px thumbnail centred at the top; four cells per row.
    for (rank, hit) in result["results"].as_array().unwrap().iter().enumerate() {
        let path = Path::new(hit["path"].as_str().unwrap());
        let name = path.file_stem().unwrap().to_str().unwrap();
        let colour = COLOURS[name[1..].parse::<usize>().unwrap()];
        let (col, row) = ((rank % 4) as u32, (rank / 4) as u32);
        let (x, y) = (16 + col * 180 + 10 + 80, 48 + row * 200 + 80);
        let pixel = png.get_pixel(x, y).0;
        let close = pixel.iter().zip(colour).all(|(&a, b)| (a as i32 - b as i32).abs() <= 3);
        assert!(close, "rank {}: {name} should be at ({x}, {y}), found {pixel:?} instead of {colour:?}", rank + 1);
    }
}

#[test]
fn saliency_writes_masks_overlays_grids_and_a_page() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    let args = ["saliency", "--checkpoint", "ckpt", "--images", "images", "--recursive", "--device", "cpu"];
    let report =
        json(&amfmn_in(d, &[&args[..], &["--out", "sal", "--npy", "--html", "sal/page.html", "--json"]].concat()));
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 6, "broken.jpg skipped: {report}");
    assert_eq!(images[5]["image"], "sub/c5.png");
    for image in images {
        let g = &image["gate"];
        let (min, mean, max) = (g["min"].as_f64().unwrap(), g["mean"].as_f64().unwrap(), g["max"].as_f64().unwrap());
        assert!(0.0 < min && min <= mean && mean <= max && max < 1.0, "{image}");
    }
    let grid = amfmn::npy::read_f32(&d.join("sal/c0.mask.npy")).unwrap();
    assert_eq!(grid.shape(), [1, 4, 4], "o = 1 map of (64/16)² cells");
    let mask = image::open(d.join("sal/sub/c5.mask.png")).unwrap();
    assert_eq!((mask.width(), mask.height(), mask.color()), (64, 64, image::ColorType::L8));
    // Nearest: each cell a 16-px block of round(255·A).
    let out = amfmn_in(d, &[&args[..], &["--out", "near", "--upsample", "nearest"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let near = image::open(d.join("near/c0.mask.png")).unwrap().to_luma8();
    for (i, j) in [(0, 0), (1, 3), (3, 2)] {
        let want = (grid[[0, i, j]] * 255.0).round() as u8;
        for (dy, dx) in [(0, 0), (15, 15), (7, 9)] {
            assert_eq!(near.get_pixel(16 * j as u32 + dx, 16 * i as u32 + dy)[0], want, "cell ({i}, {j})");
        }
    }
    let again = amfmn_in(d, &[&args[..], &["--out", "sal"]].concat());
    assert!(again.status.success(), "its own files are replaced: {}", stderr(&again));

    // The page in headless Chromium: 16 px margin, 20 px title + 12 px gap, a 16 px heading +
    // 4 px gap, then the image, the overlay and the grid (64 px cells), 256 px each, 16 px apart.
    let png = screenshot(&d.join("sal/page.html"), (860, 400));
    let close = |at: (u32, u32), want: [u8; 3], what: &str| {
        let pixel = png.get_pixel(at.0, at.1).0;
        let near = pixel.iter().zip(want).all(|(&a, b)| (a as i32 - b as i32).abs() <= 3);
        assert!(near, "{what} at {at:?}: {pixel:?}, expected {want:?}");
    };
    close((16 + 128, 68 + 128), COLOURS[0], "the first image (c0)");
    let overlay = image::open(d.join("sal/c0.overlay.png")).unwrap().to_rgb8();
    close((288 + 8, 68 + 8), overlay.get_pixel(1, 1).0, "its overlay's top-left");
    for (i, j) in [(0, 0), (2, 3)] {
        let level = (grid[[0, i, j]] * 255.0).round() as u8;
        let at = (560 + 64 * j as u32 + 32, 68 + 64 * i as u32 + 32);
        close(at, amfmn::locate::render::jet(level), &format!("grid cell ({i}, {j})"));
    }
}

#[test]
fn index_and_retrieve_do_not_inherit_the_training_device() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    let sidecar = d.join("ckpt/best.json");
    let text = std::fs::read_to_string(&sidecar).unwrap().replace(r#""device": "auto""#, r#""device": "cuda:3""#);
    assert!(text.contains(r#""device": "cuda:3""#), "the sidecar records the training device");
    std::fs::write(&sidecar, text).unwrap();
    let args = ["index", "--checkpoint", "ckpt", "--images", "images", "--out", "i.st", "--threads", "1"];
    let out = amfmn_in(d, &args);
    if tch::Cuda::device_count() < 4 {
        assert!(out.status.success(), "auto, not the training machine's cuda:3: {}", stderr(&out));
        let result = json(&amfmn_in(d, &["retrieve", "--index", "i.st", "--query", "red boat", "--json"]));
        assert_eq!(result["indexed"], 5);
        let out = amfmn_in(d, &["retrieve", "--index", "i.st", "--query", "red boat", "--device", "cuda:3"]);
        assert!(stderr(&out).contains("--device cuda:3: libtorch sees"), "{}", stderr(&out));
    }
}

#[test]
fn index_and_page_outputs_never_replace_a_users_file() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    std::fs::write(d.join("i.st"), "a user's file").unwrap();
    let out = amfmn_in(d, &["index", "--checkpoint", "ckpt", "--images", "images", "--out", "i.st", "--device", "cpu"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("i.st exists and amfmn did not write it as index output"), "{}", stderr(&out));
    assert_eq!(std::fs::read(d.join("i.st")).unwrap(), b"a user's file");
    std::fs::remove_file(d.join("i.st")).unwrap();
    index(d);
    index(d);

    std::fs::write(d.join("page.html"), "<p>mine</p>").unwrap();
    let page = ["retrieve", "--index", "i.st", "--query", "red boat", "--html", "page.html"];
    let out = amfmn_in(d, &page);
    assert!(stderr(&out).contains("page.html exists and amfmn did not write it as search page output"));
    assert_eq!(std::fs::read_to_string(d.join("page.html")).unwrap(), "<p>mine</p>");
    let forced = amfmn_in(d, &[&page[..], &["--force"]].concat());
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(amfmn_in(d, &page).status.success(), "its own page is replaced");

    // The vocabulary file changed (same words, another order): the checkpoint carries its own.
    let words = ["white", "two", "houses", "baseball", "field", "red", "boat", "port", "<unk>"];
    let swapped = Vocabulary::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
    std::fs::write(d.join("v.json"), swapped.to_json()).unwrap();
    let out = amfmn_in(d, &["retrieve", "--index", "i.st", "--query", "red boat"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
