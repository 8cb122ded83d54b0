//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A port for a rendezvous (`MASTER_PORT`) that nothing listens on now, below the kernel's
/// ephemeral range (from 32768 on Linux). A port freed after binding port 0 is an ephemeral one
/// the kernel can hand straight to another socket, such as a Gloo connection of a test running
/// beside; ranks then meet the wrong process (seen once in CI: a barrier timed out and another
/// test's rank lost its peer). Every call in a process gets another port.
pub fn rendezvous_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = CALLS.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + ((std::process::id().wrapping_mul(37)).wrapping_add(n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The Python of the project's PyTorch environment (`exec/env.sh` exports `AMFMN_PYTHON`).
pub fn python() -> PathBuf {
    std::env::var_os("AMFMN_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME is set");
        Path::new(&home).join(".cache/amfmn/torch-2.11.0/bin/python")
    })
}

/// Runs a reference script of `tests/reference/` with arguments; panics with its stderr on failure.
pub fn run_reference(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run exec/test.sh to install it): {e}", python().display()));
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs the `amfmn` binary.
pub fn amfmn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amfmn")).args(args).output().expect("amfmn runs")
}

/// Runs `amfmn` in `dir`.
pub fn amfmn_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amfmn")).current_dir(dir).args(args).output().expect("amfmn runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One file served by [`serve`]: its body, and the length the response declares (more than the
/// body for a download that breaks off).
pub struct Served {
    pub body: Vec<u8>,
    pub declared_length: usize,
}

/// A loopback HTTP/1.1 server for the tests, serving `files` by path (404 for any other path)
/// until the test process ends; returns its base URL (`http://127.0.0.1:PORT`).
pub fn serve(files: std::collections::HashMap<String, Served>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or_default();
            let mut stream = stream;
            let _ = match files.get(path) {
                Some(file) => write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    file.declared_length
                )
                .and_then(|()| stream.write_all(&file.body)),
                None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            };
        }
    });
    base
}

/// Saves amfmn weights the ways the original code and torchvision save them
/// (`tests/reference/torch_save.py`) into `dir/pth/`: `original_{zip,legacy}.pth.tar` (the
/// original's checkpoint dict, with `options` in it), `state_{zip,legacy}.pth` (bare state
/// dicts) and `evil.pth` (a pickle that calls `os.system`). `model` is the vocabulary size,
/// attention type, seq2vec type, embedding size and image size of the weights.
pub fn torch_save(dir: &Path, weights: &Path, options: &amfmn::options::Options, model: [&str; 5]) {
    let json = dir.join("opt.json");
    std::fs::write(&json, serde_json::to_string(options).unwrap()).unwrap();
    let out = dir.join("pth");
    std::fs::create_dir_all(&out).unwrap();
    let paths = [weights, &json, &out].map(|p| p.to_str().unwrap().to_owned());
    let args: Vec<&str> = paths.iter().map(String::as_str).chain(model).collect();
    run_reference("torch_save.py", &args);
}

/// A vocabulary `v.json` and the checkpoint `ckpt/` (with sidecar) of a fresh 64x64 model of
/// 32-d codes, soft attention, in `dir`; returns the checkpoint folder.
pub fn fresh_checkpoint(dir: &Path) -> PathBuf {
    let words = ["two", "white", "houses", "baseball", "field", "red", "boat", "port", "<unk>"];
    let vocab = amfmn::text::Vocabulary::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
    let mut outputs = amfmn::fsutil::owned::Outputs::new(dir, "vocab", false).unwrap();
    vocab.save(&mut outputs, &dir.join("v.json")).unwrap();
    outputs.finish().unwrap();
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let sets = ["dataset.vocab_path=v.json", "dataset.image_size=64", "dataset.resize=70", "model.embed.embed_dim=32"];
    let options = amfmn::options::Options::parse(&demo, &sets.map(String::from)).unwrap();
    untrained_checkpoint(dir, options, &vocab, 7)
}

/// The checkpoint `ckpt/` in `dir` of a fresh model of `options` and `vocab` (seeded by
/// `seed`), recording its vocabulary; returns the checkpoint folder.
pub fn untrained_checkpoint(
    dir: &Path,
    options: amfmn::options::Options,
    vocab: &amfmn::text::Vocabulary,
    seed: u64,
) -> PathBuf {
    use amfmn::checkpoint::{Checkpoint, CheckpointInfo, CheckpointKind};
    let config = amfmn::model::ModelConfig::new(&options, vocab.len());
    let model = amfmn::model::Model::new(&config, tch::Device::Cpu, seed).unwrap();
    let info = CheckpointInfo {
        kind: CheckpointKind::Best,
        fold: 0,
        epoch: 1,
        batch: 0,
        best_rsum: 0.0,
        eiters: 0,
        lr: 2e-4,
        split_seed: 0,
        vocab_path: "v.json".into(),
        vocab_size: vocab.len(),
        vocab_sha256: None,
        metrics: None,
        options,
        amfmn_version: "test".into(),
        model_file: String::new(),
        optimizer_file: None,
        model_sha256: None,
        optimizer_sha256: None,
        initial_weights: None,
        vocabulary: Some(vocab.words().to_vec()),
        model_config: None,
    };
    let ckpt = dir.join("ckpt");
    Checkpoint::save(&ckpt, info, &model, None).unwrap();
    ckpt
}

/// Sentences of remote-sensing captions, for search benchmarks.
pub const SENTENCES: [&str; 5] = [
    "two white houses next to a baseball field",
    "many planes are parked next to a long building in an airport",
    "a river with two bridges and green banks",
    "some red boats are moored in the port",
    "dense green trees cover the forest",
];

/// A vocabulary of RSITMD's size (1349 words) holding the words of [`SENTENCES`].
pub fn sentence_vocabulary() -> amfmn::text::Vocabulary {
    let mut words: Vec<String> = SENTENCES.iter().flat_map(|s| s.split(' ')).map(str::to_owned).collect();
    words.sort();
    words.dedup();
    words.extend((words.len()..1348).map(|i| format!("w{i}")));
    words.push("<unk>".into());
    amfmn::text::Vocabulary::from_words(words).unwrap()
}

/// A synthetic set (20 images of 32x32: 16 train, 4 test), its vocabulary and an option file
/// for 2 epochs of batch 10 at 32x32 on the CPU.
pub fn tiny_training_set(dir: &Path) -> PathBuf {
    let out = amfmn_in(dir, &["synth", "--out", "d", "--images", "20", "--size", "32", "--seed", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = amfmn_in(dir, &["vocab", "--data_path", "d", "--out", "v.json", "--threshold", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let sets = [
        "dataset.data_path=d/",
        "dataset.image_path=d/images/",
        "dataset.vocab_path=v.json",
        "dataset.image_size=32",
        "dataset.resize=36",
        "dataset.batch_size=10",
        "optim.epochs=2",
        "logs.print_freq=2",
        "threads=2",
    ];
    let text = amfmn::options::Options::parse(&demo, &sets.map(String::from)).unwrap().to_yaml();
    let path = dir.join("opt.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Headless Chromium from Debian's package (or `AMFMN_CHROMIUM`).
pub fn chromium() -> Command {
    let path =
        std::env::var_os("AMFMN_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "{} not found: install Debian's chromium (exec/test.sh does) or set AMFMN_CHROMIUM",
        path.display()
    );
    let mut command = Command::new(path);
    command.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]).args([
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]);
    command
}

/// A screenshot of `url` in headless Chromium with a `width × height` window (and `extra` flags).
pub fn chromium_screenshot(url: &str, (width, height): (u32, u32), extra: &[&str]) -> image::RgbImage {
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("shot.png");
    let status = chromium()
        .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
        .arg(format!("--window-size={width},{height}"))
        .arg("--force-device-scale-factor=1")
        .args(extra)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&status.stderr));
    image::open(&shot).unwrap().to_rgb8()
}

pub mod training;
