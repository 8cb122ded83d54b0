//! `amfmn train` end to end on a tiny synthetic set: checkpoints and their compatibility with
//! PyTorch, resume equivalence (at an epoch boundary and after Ctrl-C), the NaN stop, the text
//! log and TensorBoard events, bad options, pretrained ResNet files.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amfmn::checkpoint::pretrained;
use amfmn::checkpoint::read_safetensors;
use amfmn::model::{Model, ModelConfig};
use amfmn::options::Options;
use common::{amfmn_in, stderr, stdout, tiny_training_set as setup};
use tch::{Device, Tensor};

fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "--path_opt", "opt.yaml", "--device", "cpu", "--set", "model.resnet_weights=none"];
    args.extend_from_slice(extra);
    amfmn_in(dir, &args)
}

fn weights(path: &Path) -> BTreeMap<String, Tensor> {
    read_safetensors(path).unwrap()
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        let diff = (v.to_kind(tch::Kind::Double) - b[k].to_kind(tch::Kind::Double)).abs().max().double_value(&[]);
        assert!(diff == 0.0, "{k} differs by {diff}");
    }
}

#[test]
fn trains_logs_and_writes_checkpoints_pytorch_loads() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = train(dir.path(), &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("fold epoch      loss        lr   img/s wait%"), "{text}");
    let epoch_rows = text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|w| w.len() == 15);
    let rows: Vec<Vec<&str>> = epoch_rows.filter(|w| w[0] == "0").collect();
    assert_eq!(rows.len(), 2, "{text}");
    for row in rows {
        let waiting: f64 = row[5].parse().unwrap();
        assert!((0.0..100.0).contains(&waiting), "wait% {waiting} in {row:?}");
    }
    assert!(text.contains("best validation results"), "{text}");
    let weights_line = "initial weights: a random ResNet-18 (model.resnet_weights: none), a random text encoder \
                        (model.seq2vec.pretrained: false); not the paper's setup";
    assert!(text.contains(weights_line), "{text}");
    let fold = dir.path().join("checkpoint/demo/0");
    for f in
        ["best.safetensors", "best.json", "last.safetensors", "last.json", "last.optimizer.safetensors", "split.json"]
    {
        assert!(fold.join(f).is_file(), "{f}");
    }
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fold.join("last.json")).unwrap()).unwrap();
    assert_eq!((last["epoch"].as_u64(), last["batch"].as_u64(), last["Eiters"].as_u64()), (Some(2), Some(0), Some(12)));
    let words = amfmn::text::Vocabulary::load(&dir.path().join("v.json")).unwrap().words().to_vec();
    assert_eq!(last["vocabulary"], serde_json::json!(words), "the checkpoint carries its vocabulary");
    assert_eq!(last["initial_weights"], serde_json::json!({"imagenet": null, "skipthoughts": null}));
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fold.join("split.json")).unwrap()).unwrap();
    assert_eq!((split["train"].as_array().unwrap().len(), split["val"].as_array().unwrap().len()), (12, 4));

    let log = std::fs::read_to_string(fold.join("AMFMN_demo.txt")).unwrap();
    assert!(log.starts_with("Epoch: [0][0/6]\tTime "), "{log}");
    assert!(log.contains("\nEpoch:1 r1i:") && log.contains("\nBest:   r1i:") && log.contains(" ------\n"), "{log}");

    let events = common::run_reference("read_events.py", &[dir.path().join("logs/demo/demo/0").to_str().unwrap()]);
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    assert_eq!(events["L"][0].as_u64(), Some(12), "{events}");
    assert_eq!(events["L"][1].as_u64(), Some(12), "{events}");
    assert_eq!(events["rsum"][0].as_u64(), Some(2), "{events}");
    assert_eq!(events["data_time"][0].as_u64(), Some(12), "{events}");
    for tag in ["lr", "batch_time", "r1i", "r10t", "medrt", "meanri"] {
        assert!(events[tag][0].as_u64().unwrap() >= 1, "{tag} in {events}");
    }

    let best = fold.join("best.safetensors");
    let exported = dir.path().join("exported.safetensors");
    let vocab = amfmn::text::Vocabulary::load(&dir.path().join("v.json")).unwrap().len().to_string();
    let keys = common::run_reference(
        "strict_load.py",
        &[best.to_str().unwrap(), exported.to_str().unwrap(), &vocab, "soft_att", "BayesianUniSkip", "512", "32"],
    );
    assert_eq!(keys.trim(), "150");
    assert_same_weights(&best, &exported);
    let options = Options::load(&dir.path().join("opt.yaml"), &[]).unwrap();
    let mut model = Model::new(&ModelConfig::new(&options, vocab.parse().unwrap()), Device::Cpu, 1).unwrap();
    model.load_state_dict(&weights(&exported)).unwrap();
}

#[test]
fn resuming_at_an_epoch_boundary_continues_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let straight = train(dir.path(), &["--set", "k_fold.experiment_name=straight"]);
    assert!(straight.status.success(), "{}", stderr(&straight));
    let first = train(dir.path(), &["--set", "k_fold.experiment_name=split", "--set", "optim.epochs=1"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = train(dir.path(), &["--set", "k_fold.experiment_name=split", "--resume", "checkpoint/split/0"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stdout(&second).contains("resuming checkpoint/split/0 at epoch 1, batch 0"), "{}", stdout(&second));
    let c = dir.path().join("checkpoint");
    assert_same_weights(&c.join("straight/0/last.safetensors"), &c.join("split/0/last.safetensors"));
    assert_same_weights(
        &c.join("straight/0/last.optimizer.safetensors"),
        &c.join("split/0/last.optimizer.safetensors"),
    );
}

#[test]
fn ctrl_c_writes_a_checkpoint_that_resumes_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let straight = train(dir.path(), &["--set", "k_fold.experiment_name=straight", "--set", "logs.print_freq=1"]);
    assert!(straight.status.success(), "{}", stderr(&straight));

    let child = Command::new(env!("CARGO_BIN_EXE_amfmn"))
        .current_dir(dir.path())
        .args(["train", "--path_opt", "opt.yaml", "--device", "cpu", "--set", "model.resnet_weights=none"])
        .args(["--set", "k_fold.experiment_name=stopped", "--set", "logs.print_freq=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = dir.path().join("checkpoint/stopped/0/AMFMN_demo.txt");
    let start = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "training did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let printed = stderr(&out);
    let resume = printed
        .lines()
        .find_map(|l| l.strip_prefix("stopped by Ctrl-C or SIGTERM; resume with: "))
        .unwrap_or_else(|| {
            panic!("no resume line: {printed}");
        });
    assert_eq!(
        resume,
        "amfmn train --path_opt opt.yaml --set model.resnet_weights=none --set k_fold.experiment_name=stopped \
         --set logs.print_freq=1 --device cpu --resume checkpoint/stopped/0/last.json"
    );
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("checkpoint/stopped/0/last.json")).unwrap())
            .unwrap();
    assert!(last["batch"].as_u64().unwrap() > 0 || last["epoch"].as_u64().unwrap() > 0, "{last}");

    let words = shlex::split(resume.strip_prefix("amfmn ").unwrap()).unwrap();
    let mut changed: Vec<&str> = words.iter().map(String::as_str).collect();
    changed.extend(["--set", "optim.lr=0.1", "--set", "dataset.workers=1"]);
    let refused = amfmn_in(dir.path(), &changed);
    let message = stderr(&refused);
    assert!(!refused.status.success() && message.contains("→ 0.1)"), "{message}");
    assert!(message.contains("(optim.lr: ") && !message.contains("dataset.workers:"), "{message}");

    let resumed = amfmn_in(dir.path(), &words.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let c = dir.path().join("checkpoint");
    assert_same_weights(&c.join("straight/0/last.safetensors"), &c.join("stopped/0/last.safetensors"));

    // Each step's loss is read after the next step is queued: every step is logged once, in
    // order, the last of an epoch and the one Ctrl-C stopped after included, with the loss of
    // the uninterrupted run.
    let straight = logged_steps(&c.join("straight/0/AMFMN_demo.txt"));
    let positions: Vec<(usize, usize)> = straight.iter().map(|&(epoch, i, _)| (epoch, i)).collect();
    assert_eq!(positions, (0..2).flat_map(|e| (0..6).map(move |i| (e, i))).collect::<Vec<_>>());
    assert_eq!(logged_steps(&c.join("stopped/0/AMFMN_demo.txt")), straight);
}

/// The (epoch, step, loss) of each step line of a text log ("Epoch: [e][i/n]\tTime t\tL loss").
fn logged_steps(log: &Path) -> Vec<(usize, usize, String)> {
    let text = std::fs::read_to_string(log).unwrap();
    let parse = |line: &str| -> Option<(usize, usize, String)> {
        let (position, rest) = line.strip_prefix("Epoch: [")?.split_once('/')?;
        let (epoch, i) = position.split_once("][")?;
        let loss = rest.split('\t').find_map(|field| field.strip_prefix("L "))?;
        Some((epoch.parse().ok()?, i.parse().ok()?, loss.to_owned()))
    };
    text.lines().filter_map(parse).collect()
}

/// `device: auto` without a GPU trains on the CPU, and says so at the start and in the fold's log.
#[test]
fn auto_without_a_gpu_says_so() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = train_on(dir.path(), "auto", &["--set", "optim.epochs=1", "--set", "k_fold.experiment_name=auto"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(dir.path().join("checkpoint/auto/0/AMFMN_demo.txt")).unwrap();
    let warned = (stderr(&out).contains("warning: device auto found no GPU"), log.contains("device auto found no GPU"));
    let expected = !tch::Cuda::is_available();
    assert_eq!(warned, (expected, expected), "{}\n{log}", stderr(&out));
}

#[test]
fn a_diverging_loss_stops_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = train(dir.path(), &["--set", "optim.lr=1e30"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("error: the loss became") && err.contains("at epoch 0, step"), "{err}");
    assert!(err.contains("lower optim.lr"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_options_fail_before_training() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    for (set, needle) in [
        ("model.cross_attention.att_type=hard", "model.cross_attention.att_type: unknown variant `hard`"),
        ("model.seq2vec.type=Skip", "model.seq2vec.type: unknown variant `Skip`"),
        ("optim.lr=-1", "optim.lr: must be positive"),
        ("dataset.image_size=33", "dataset.image_size: 33 must be a multiple of 32"),
        ("optim.amp=fp8", "optim.amp: unknown variant `fp8`"),
    ] {
        let out = train(dir.path(), &["--set", set]);
        assert!(!out.status.success(), "{set}");
        assert!(stderr(&out).contains(needle), "{set}: {}", stderr(&out));
    }
    let out = amfmn_in(dir.path(), &["train", "--path_opt", "opt.yaml", "--device", "cuda:7"]);
    assert!(stderr(&out).contains("--device cuda:7: libtorch sees"), "{}", stderr(&out));
    let out = train(dir.path(), &["--set", "optim.amp=fp16"]);
    assert_eq!(
        stderr(&out).trim(),
        "error: optim.amp: fp16 needs a CUDA device (libtorch's fp16 kernels on the CPU are incomplete); use bf16 or off"
    );
    std::fs::remove_dir_all(dir.path().join("d/images")).unwrap();
    let out = train(dir.path(), &[]);
    assert!(stderr(&out).contains("16 of 16 images of the train split are missing"), "{}", stderr(&out));
}

/// `amfmn train` with the options' devices, `threads=2` and random weights.
fn train_on(dir: &Path, device: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "--path_opt", "opt.yaml", "--device", device, "--set", "model.resnet_weights=none"];
    args.extend_from_slice(extra);
    amfmn_in(dir, &args)
}

/// The keys, shapes and kinds of a safetensors file.
fn layout(path: &Path) -> Vec<(String, Vec<i64>, tch::Kind)> {
    weights(path).into_iter().map(|(k, v)| (k, v.size(), v.kind())).collect()
}

/// Two CPU replicas (`--device cpu,cpu`): the run is deterministic across a resume, its
/// checkpoints have the layout of a one-device run's, and one device continues them.
#[test]
fn data_parallel_training_resumes_and_saves_the_checkpoints_of_one_device() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let two = train_on(dir.path(), "cpu,cpu", &["--set", "k_fold.experiment_name=two"]);
    assert!(two.status.success(), "{}", stderr(&two));
    assert!(
        stdout(&two).contains("on 2 data-parallel replicas (cpu (2 threads), cpu (2 threads))"),
        "{}",
        stdout(&two)
    );
    let first = train_on(dir.path(), "cpu,cpu", &["--set", "k_fold.experiment_name=split", "--set", "optim.epochs=1"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second =
        train_on(dir.path(), "cpu,cpu", &["--set", "k_fold.experiment_name=split", "--resume", "checkpoint/split/0"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let c = dir.path().join("checkpoint");
    for file in ["last.safetensors", "last.optimizer.safetensors"] {
        assert_same_weights(&c.join("two/0").join(file), &c.join("split/0").join(file));
    }
    let one = train_on(dir.path(), "cpu", &["--set", "k_fold.experiment_name=one"]);
    assert!(one.status.success(), "{}", stderr(&one));
    for file in ["best.safetensors", "last.safetensors", "last.optimizer.safetensors"] {
        assert_eq!(layout(&c.join("one/0").join(file)), layout(&c.join("two/0").join(file)), "{file}");
    }
    let more = ["--set", "k_fold.experiment_name=two", "--set", "optim.epochs=3", "--resume", "checkpoint/two/0"];
    let continued = train_on(dir.path(), "cpu", &more);
    assert!(continued.status.success(), "{}", stderr(&continued));
    assert!(stdout(&continued).contains("resuming checkpoint/two/0 at epoch 2, batch 0"), "{}", stdout(&continued));
}

/// `cuda_graphs: True` on the CPU, where there are no CUDA graphs, runs the trainer's graphed
/// path (each shape's first step as it is, later ones from the graphs' copies of their inputs):
/// the same weights and optimizer state as without, bit for bit, with dynamic margins; with
/// several replicas it is refused in one line.
#[test]
fn cuda_graphs_train_as_without_them_and_take_one_device() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let sets = |name: &'static str| ["--set", name, "--set", "optim.margin_type=dynamic"];
    let plain = train(dir.path(), &sets("k_fold.experiment_name=plain"));
    assert!(plain.status.success(), "{}", stderr(&plain));
    let mut graphed_sets = sets("k_fold.experiment_name=graphed").to_vec();
    graphed_sets.extend(["--set", "cuda_graphs=True"]);
    let graphed = train(dir.path(), &graphed_sets);
    assert!(graphed.status.success(), "{}", stderr(&graphed));
    assert!(
        stderr(&graphed)
            .contains("cuda_graphs: True on the CPU, which has no CUDA graphs: the steps run as without them"),
        "{}",
        stderr(&graphed)
    );
    let replayed: Vec<usize> = stdout(&graphed)
        .lines()
        .filter(|l| l.contains("replayed from CUDA graphs"))
        .map(|l| l.split(": ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap())
        .collect();
    assert_eq!(replayed.len(), 2, "a line per epoch: {}", stdout(&graphed));
    assert!(replayed[1] > 0, "steps replayed in the second epoch: {}", stdout(&graphed));
    let c = dir.path().join("checkpoint");
    for file in ["last.safetensors", "last.optimizer.safetensors"] {
        assert_same_weights(&c.join("plain/0").join(file), &c.join("graphed/0").join(file));
    }
    let out = train_on(dir.path(), "cpu,cpu", &["--set", "cuda_graphs=True", "--set", "k_fold.experiment_name=two"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "error: cuda_graphs: True trains on one device in one process (device cpu,cpu); set cuda_graphs: False"
    );
}

/// Device lists: one line each for what cannot run, before any training.
#[test]
fn device_lists_that_cannot_run_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    for (device, extra, expected) in [
        ("cpu,cuda:0", "", "error: device cpu,cuda:0: the replicas must be all CUDA devices or all the CPU, not a mix"),
        (
            "auto,cpu",
            "",
            "error: device auto,cpu: list the devices explicitly (cuda:0,cuda:1 or cpu,cpu), without auto",
        ),
        ("cuda:0,cuda:0", "", "error: device cuda:0,cuda:0: cuda:0 is listed twice; name each GPU once"),
        (
            "cpu,cpu,cpu",
            "dataset.batch_size=2",
            "error: dataset.batch_size 2 is smaller than the 3 devices of device cpu,cpu,cpu: each replica needs a \
             pair at least",
        ),
    ] {
        let sets: &[&str] = if extra.is_empty() { &[] } else { &["--set", extra] };
        let out = train_on(dir.path(), device, sets);
        assert!(!out.status.success(), "{device}");
        assert_eq!(stderr(&out).trim(), expected);
    }
    let out = amfmn_in(dir.path(), &["train", "--path_opt", "opt.yaml", "--device", "cpu,gpu"]);
    assert!(stderr(&out).contains("unknown device `gpu`, expected auto, cpu, cuda or cuda:N"), "{}", stderr(&out));
    let out = train_on(dir.path(), "cpu", &["--set", "optim.epochs=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = amfmn_in(dir.path(), &["test", "--path_opt", "opt.yaml", "--device", "cpu,cpu"]);
    assert_eq!(
        stderr(&out).trim(),
        "error: device cpu,cpu: only `amfmn train` runs on several devices; give this command one (--device cpu, cuda \
         or cuda:N)"
    );
}

#[test]
fn torchvision_resnet_files_load() {
    let dir = tempfile::tempdir().unwrap();
    common::run_reference("resnet_files.py", &[dir.path().to_str().unwrap()]);
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml")).unwrap();
    let options = Options::parse(&text, &[]).unwrap();
    let model = Model::new(&ModelConfig::new(&options, 5), Device::Cpu, 0).unwrap();
    let expected = weights(&dir.path().join("expected.safetensors"));
    assert_eq!(pretrained::load_resnet(&model, &dir.path().join("resnet18-zip.pth")).unwrap(), expected.len());
    let state = model.state_dict();
    for (k, v) in &expected {
        assert!(state[&format!("extract_feature.resnet.{k}")].equal(v), "{k}");
    }
    let legacy = dir.path().join("resnet18-legacy.pth");
    let (_, model) = (0, Model::new(&ModelConfig::new(&options, 5), Device::Cpu, 1).unwrap());
    assert_eq!(pretrained::load_resnet(&model, &legacy).unwrap(), expected.len(), "the legacy format reads natively");
    let state = model.state_dict();
    for (k, v) in &expected {
        assert!(state[&format!("extract_feature.resnet.{k}")].equal(v), "legacy {k}");
    }
}

#[test]
fn imagenet_weights_are_fetched_and_the_initial_weights_recorded() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    let out = train(d, &["--set", "model.seq2vec.pretrained=true", "--set", "model.seq2vec.dir_st=st"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("model.seq2vec.dir_st st lacks dictionary.txt (the skip-thoughts words"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!d.join("checkpoint/demo").exists(), "stopped before training");

    let served = d.join("served");
    std::fs::create_dir(&served).unwrap();
    common::run_reference("resnet_files.py", &[served.to_str().unwrap()]);
    let body = std::fs::read(served.join("resnet18-zip.pth")).unwrap();
    let name = format!("resnet18-{}.pth", &amfmn::fsutil::sha256_hex(&body)[..8]);
    let served_files =
        HashMap::from([(format!("/models/{name}"), common::Served { declared_length: body.len(), body })]);
    let url = format!("{}/models/{name}", common::serve(served_files));
    let out = Command::new(env!("CARGO_BIN_EXE_amfmn"))
        .current_dir(d)
        .env("TORCH_HOME", d.join("torch"))
        .env("AMFMN_RESNET18_URL", &url)
        .args(["train", "--path_opt", "opt.yaml", "--device", "cpu", "--set", "optim.epochs=1"])
        .args(["--set", "model.resnet_weights=auto"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let cached = d.join("torch/hub/checkpoints").join(&name);
    let text = stdout(&out);
    assert!(text.contains(&format!("ImageNet ResNet-18 weights from {} (102 tensors)", cached.display())), "{text}");
    let described = format!(
        "initial weights: ImageNet ResNet-18 ({name}), a random text encoder (model.seq2vec.pretrained: false); \
         not the paper's setup"
    );
    assert!(text.contains(&described), "{text}");
    assert!(cached.is_file());
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("checkpoint/demo/0/best.json")).unwrap()).unwrap();
    assert_eq!(sidecar["initial_weights"], serde_json::json!({"imagenet": name, "skipthoughts": null}));
    let out =
        amfmn_in(d, &["test-single", "--path_opt", "opt.yaml", "--resume", "checkpoint/demo/0", "--device", "cpu"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(&format!("{described}\n")), "{}", stdout(&out));
}

#[test]
fn training_resumes_from_a_checkpoint_of_the_original_code() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    let first = train(d, &["--set", "k_fold.experiment_name=first", "--set", "optim.epochs=1"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let options = Options::load(&d.join("opt.yaml"), &[]).unwrap();
    let vocab = amfmn::text::Vocabulary::load(&d.join("v.json")).unwrap().len().to_string();
    let weights = d.join("checkpoint/first/0/last.safetensors");
    common::torch_save(d, &weights, &options, [&vocab, "soft_att", "BayesianUniSkip", "512", "32"]);

    // The file says epoch 3 (the next to train) and fold 0 (its k_fold.current_num).
    let resume = ["--set", "k_fold.experiment_name=resumed", "--set", "optim.epochs=4"];
    let out = train(d, &[&resume[..], &["--resume", "pth/original_legacy.pth.tar"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("fold 0: resuming pth at epoch 3, batch 0"), "{text}");
    assert!(stderr(&out).contains("has no optimizer state; Adam starts afresh"), "{}", stderr(&out));
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("checkpoint/resumed/0/last.json")).unwrap()).unwrap();
    assert_eq!(last["epoch"], 4, "one epoch trained, from the file's epoch 3");
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("checkpoint/resumed/0/best.json")).unwrap()).unwrap();
    assert_eq!(best["epoch"], 4, "this run's best is written by its first validation");
    assert!(best["best_rsum"].as_f64().unwrap() < 123.25, "{}", best["best_rsum"]);
}

#[test]
fn a_keywords_file_is_ignored_unless_keywords_are_on() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let with = train(dir.path(), &["--set", "k_fold.experiment_name=with", "--set", "optim.epochs=1"]);
    assert!(with.status.success(), "{}", stderr(&with));
    std::fs::remove_file(dir.path().join("d/train_keywords.txt")).unwrap();
    let without = train(dir.path(), &["--set", "k_fold.experiment_name=without", "--set", "optim.epochs=1"]);
    assert!(without.status.success(), "{}", stderr(&without));
    let c = dir.path().join("checkpoint");
    assert_same_weights(&c.join("with/0/last.safetensors"), &c.join("without/0/last.safetensors"));
}

#[test]
fn one_run_per_experiment_and_earlier_checkpoints_need_resume_or_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    let one_epoch = ["--set", "optim.epochs=1"];
    let first = train(d, &one_epoch);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!d.join("checkpoint/demo.lock").exists(), "the lock is released at the end");

    let again = train(d, &one_epoch);
    assert!(!again.status.success());
    let err = stderr(&again);
    assert!(err.contains("checkpoint/demo already holds checkpoints"), "{err}");
    assert!(err.contains("--resume checkpoint/demo/0") && err.contains("--overwrite"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let best = std::fs::read(d.join("checkpoint/demo/0/best.safetensors")).unwrap();
    let over = train(d, &[&one_epoch[..], &["--overwrite"]].concat());
    assert!(over.status.success(), "{}", stderr(&over));
    let moved: Vec<PathBuf> = std::fs::read_dir(d.join("checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("demo.replaced-"))
        .collect();
    assert_eq!(moved.len(), 1, "the earlier run is moved aside, not deleted");
    assert_eq!(std::fs::read(moved[0].join("0/best.safetensors")).unwrap(), best);
    assert!(stdout(&over).contains("the earlier run was moved to"), "{}", stdout(&over));

    // A live holder (this test process) blocks the run; a dead one is taken over.
    std::fs::write(d.join("checkpoint/demo.lock"), format!("{}\n", std::process::id())).unwrap();
    let locked = train(d, &["--resume", "checkpoint/demo/0"]);
    let err = stderr(&locked);
    assert!(err.contains(&format!("checkpoint/demo is in use by amfmn process {}", std::process::id())), "{err}");
    std::fs::write(d.join("checkpoint/demo.lock"), "999999999\n").unwrap();
    let resumed = train(d, &["--resume", "checkpoint/demo/0"]);
    assert!(resumed.status.success(), "a stale lock is taken over: {}", stderr(&resumed));
}

#[test]
fn log_write_failures_warn_once_and_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    // The text log on a full disk, the TensorBoard folder impossible to create.
    std::fs::create_dir_all(d.join("checkpoint/full/0")).unwrap();
    std::os::unix::fs::symlink("/dev/full", d.join("checkpoint/full/0/AMFMN_demo.txt")).unwrap();
    std::fs::create_dir_all(d.join("logs/demo")).unwrap();
    std::fs::write(d.join("logs/demo/full"), "a file where a folder should be").unwrap();
    let out = train(d, &["--set", "k_fold.experiment_name=full"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("the text log stops here, training goes on").count(), 1, "{err}");
    assert_eq!(err.matches("TensorBoard logging stops here, training goes on").count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(d.join("checkpoint/full/0/best.json").is_file() && d.join("checkpoint/full/0/last.json").is_file());
}

#[test]
fn resume_refuses_a_damaged_set_and_cleans_what_killed_runs_left() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    let first = train(d, &["--set", "k_fold.experiment_name=dmg", "--set", "optim.epochs=1"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let fold = d.join("checkpoint/dmg/0");
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fold.join("last.json")).unwrap()).unwrap();
    assert_eq!(sidecar["optimizer_sha256"].as_str().unwrap().len(), 64, "the set records its hashes");
    for leftover in [".last.json.tmp999999999", ".last.safetensors.new", ".best.optimizer.safetensors.new"] {
        std::fs::write(fold.join(leftover), "left by a killed run").unwrap();
    }
    let optimizer = fold.join("last.optimizer.safetensors");
    let mut bytes = std::fs::read(&optimizer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&optimizer, bytes).unwrap();
    let out = train(d, &["--set", "k_fold.experiment_name=dmg", "--resume", "checkpoint/dmg/0"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("last.optimizer.safetensors is damaged"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let names: Vec<String> =
        std::fs::read_dir(&fold).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "leftovers removed: {names:?}");
}

#[test]
fn a_split_without_validation_images_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path();
    let caps: Vec<String> =
        std::fs::read_to_string(d.join("d/train_caps.txt")).unwrap().lines().take(5).map(String::from).collect();
    let names: Vec<String> =
        std::fs::read_to_string(d.join("d/train_filename.txt")).unwrap().lines().take(1).map(String::from).collect();
    let keywords = std::fs::read_to_string(d.join("d/train_keywords.txt")).unwrap().lines().next().unwrap().to_string();
    std::fs::write(d.join("d/train_caps.txt"), caps.join("\n") + "\n").unwrap();
    std::fs::write(d.join("d/train_filename.txt"), names.join("\n") + "\n").unwrap();
    std::fs::write(d.join("d/train_keywords.txt"), keywords + "\n").unwrap();
    let out = train(d, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("train_filename.txt lists 1 image(s)") && err.contains("at least 2 images"), "{err}");
    assert!(!d.join("checkpoint/demo").exists(), "nothing trained, nothing written");
}

/// `optim.grad_clip`: Adam's clipping equals `torch.nn.utils.clip_grad_norm_` bit for bit, on
/// the parameters one by one (before the first step) and on the flat buffers (after it), with
/// gradients whose norms round.
#[test]
fn gradient_clipping_equals_pytorchs_bit_for_bit() {
    let sizes = [7i64, 1, 130, 33];
    let params: BTreeMap<String, Tensor> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("p{i}"), Tensor::zeros([n], (tch::Kind::Float, Device::Cpu)).set_requires_grad(true)))
        .collect();
    let shared = params.iter().map(|(name, p)| (name.clone(), p.shallow_clone())).collect();
    let mut adam = amfmn::optim::Adam::new(shared, 1e-3);
    for (step, max_norm) in [(0u32, 0.37f64), (1, 1.3)] {
        // d(sum p·c)/dp = c: gradients of known fp32 values.
        let coefs: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|k| ((k as f32 + 1.0) * 0.7137 + i as f32 + step as f32).sin() / 3.0).collect())
            .collect();
        adam.zero_grad();
        let loss = params.values().zip(&coefs).map(|(p, c)| (p * Tensor::from_slice(c)).sum(tch::Kind::Float));
        loss.reduce(|a, b| a + b).unwrap().backward();
        let total = adam.clip_grad_norm(max_norm).double_value(&[]);
        let given = serde_json::json!({"max_norm": max_norm, "grads": coefs});
        let reference: serde_json::Value =
            serde_json::from_str(&common::run_reference("clip_grad_norm.py", &[&given.to_string()])).unwrap();
        assert_eq!(total, reference["total"].as_f64().unwrap(), "total norm at step {step}");
        for (i, p) in params.values().enumerate() {
            let ours: Vec<f32> = Vec::try_from(p.grad()).unwrap();
            let theirs: Vec<f32> =
                reference["grads"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(ours, theirs, "gradient {i} at step {step}");
            assert!(ours.iter().zip(&coefs[i]).any(|(a, b)| a != b), "clipped at step {step}");
        }
        adam.step();
    }
}

/// fp16's loss scaling, steps an inf or NaN skips, the scale backing off and growing, clipping,
/// and the fused Adam that obeys the scaler's device flag (CUDA's path, through libtorch's CPU
/// kernels), against PyTorch's `GradScaler` with `Adam(fused=True)`: the same scale, growth
/// tracker and step count after every step, a skipped step leaving the weights exactly as they
/// were, and the same weights to 1 ulp or so (the CPU kernel rounds the vectorized body of
/// amfmn's flat buffer and the scalar tail of PyTorch's small tensors differently).
#[test]
fn loss_scaling_with_the_fused_adam_equals_pytorchs_grad_scaler() {
    use amfmn::optim::{Adam, GradScaler};
    let (w0, v0) = ([0.8f32, -1.3, 0.25, 2.0, -0.6], [[0.5f32, -1.1], [1.7, 0.3], [-0.9, 1.2]]);
    let inf_steps = [2usize, 7];
    let given = serde_json::json!({
        "lr": 0.1, "max_norm": 2.0, "growth_interval": 3, "steps": 9, "inf_steps": inf_steps, "w": w0, "v": v0,
    });
    let reference: serde_json::Value =
        serde_json::from_str(&common::run_reference("grad_scaler.py", &[&given.to_string()])).unwrap();
    let w = Tensor::from_slice(&w0).set_requires_grad(true);
    let v = Tensor::from_slice(v0.as_flattened()).view([3, 2]).detach().set_requires_grad(true);
    let params = BTreeMap::from([("v".to_string(), v.shallow_clone()), ("w".to_string(), w.shallow_clone())]);
    let mut adam = Adam::new(params, 0.1).with_fused();
    adam.scaler = Some(GradScaler::with_growth_interval(Device::Cpu, 3));
    let values = |t: &Tensor| -> Vec<f32> { Vec::try_from(t.detach().flatten(0, -1)).unwrap() };
    let floats = |j: &serde_json::Value| -> Vec<f32> {
        let flat = |x: &serde_json::Value| x.as_array().map_or_else(|| vec![x.clone()], |a| a.clone());
        flat(j).iter().flat_map(flat).map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let close = |ours: Vec<f32>, theirs: Vec<f32>, what: &str| {
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(ours.len() == theirs.len() && worst <= 1e-6, "{what}: {ours:?} vs {theirs:?}");
    };
    let mut scales = Vec::new();
    for (step, expected) in reference.as_array().unwrap().iter().enumerate() {
        let before = (values(&w), values(&v));
        adam.zero_grad();
        let loss = (&w * &w).sum(tch::Kind::Float) + v.pow_tensor_scalar(3).sum(tch::Kind::Float);
        let loss = if inf_steps.contains(&step) { loss * f64::INFINITY } else { loss };
        adam.scale_loss(&loss).backward();
        adam.clip_and_step(2.0);
        let scaler = adam.scaler.as_ref().unwrap().state();
        scales.push(scaler.scale);
        assert_eq!(scaler.scale, expected["scale"].as_f64().unwrap(), "scale after step {step}");
        assert_eq!(scaler.growth_tracker, expected["growth_tracker"].as_i64().unwrap(), "after step {step}");
        assert_eq!(adam.state_dict()["step.w"].int64_value(&[]), expected["step"].as_i64().unwrap(), "step {step}");
        close(values(&w), floats(&expected["w"]), &format!("w after step {step}"));
        close(values(&v), floats(&expected["v"]), &format!("v after step {step}"));
        let moved = before != (values(&w), values(&v));
        assert_eq!(moved, !inf_steps.contains(&step), "step {step}: skipped exactly when not finite");
    }
    assert_eq!(adam.scaler.as_ref().unwrap().state().skipped, 2);
    assert_eq!(scales, [65536.0, 65536.0, 32768.0, 32768.0, 32768.0, 65536.0, 65536.0, 32768.0, 32768.0]);
}
