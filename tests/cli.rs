//! The `amfmn` binary end to end: synth → vocab → inspect, determinism, option handling, and
//! the one-line errors of bad input.

mod common;

use std::path::Path;

use common::{amfmn, amfmn_in, stderr, stdout};

/// Writes an option file for a dataset under `root`.
fn write_options(root: &Path, data: &str, vocab: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml"))
        .unwrap()
        .replace("'data/demo_precomp/'", &format!("'{data}/'"))
        .replace("'data/demo_precomp/images/'", &format!("'{data}/images/'"))
        .replace("'vocab/demo_vocab.json'", &format!("'{vocab}'"));
    let path = root.join("opt.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, got: {}", stdout(out));
    assert!(err.starts_with("error: ") && err.contains(needle), "stderr: {err}");
    assert_eq!(err.trim_end().lines().filter(|l| !l.starts_with("warning:")).count(), 1, "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        out.push((entry.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&entry).unwrap()));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn synth_is_deterministic_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let out = amfmn_in(dir.path(), &["synth", "--out", name, "--images", "30", "--size", "48", "--seed", seed]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let table = run("a", "3");
    run("b", "3");
    run("c", "4");
    let (a, b, c) = (files_of(&dir.path().join("a")), files_of(&dir.path().join("b")), files_of(&dir.path().join("c")));
    assert_eq!(a, b, "same seed, same files");
    assert_ne!(a, c, "another seed, other files");
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    for f in ["train_caps.txt", "train_filename.txt", "train_keywords.txt", "test_caps.txt", "test_filename.txt"] {
        assert!(names.contains(&f), "{f} in {names:?}");
    }
    let images: Vec<&&str> = names.iter().filter(|n| n.starts_with("images/")).collect();
    assert_eq!(images.len(), 30);
    for ext in [".tif", ".jpg", ".png"] {
        assert!(images.iter().any(|n| n.ends_with(ext)), "a {ext} image");
    }
    let text = |name: &str| String::from_utf8(a.iter().find(|(n, _)| n == name).unwrap().1.clone()).unwrap();
    assert_eq!(text("train_filename.txt").lines().count(), 24);
    assert_eq!(text("train_caps.txt").lines().count(), 120);
    assert_eq!(text("test_filename.txt").lines().count(), 30, "test lists one file name per caption");
    assert_eq!(text("test_caps.txt").lines().count(), 30);
    assert!(text("train_keywords.txt").lines().all(|l| (1..=5).contains(&l.split(',').count())));
    assert!(table.contains("harbour") && table.contains("30 images of 48x48"), "{table}");

    let keep = dir.path().join("a/images/notes.txt");
    std::fs::write(&keep, "mine").unwrap();
    let out = amfmn_in(
        dir.path(),
        &["synth", "--out", "a", "--images", "20", "--size", "48", "--seed", "3", "--format", "png"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let images: Vec<String> = files_of(&dir.path().join("a/images")).into_iter().map(|(n, _)| n).collect();
    assert_eq!(images.len(), 21, "20 new images and the user's file, no leftovers: {images:?}");
    assert!(images.iter().filter(|n| n.ends_with(".png")).count() == 20 && keep.exists());
}

#[test]
fn vocab_command_equals_the_original_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let out = amfmn_in(dir.path(), &["synth", "--out", "d", "--images", "60", "--size", "32", "--seed", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = amfmn_in(
        dir.path(),
        &["vocab", "--data_path", "d", "--splits", "train,test", "--threshold", "3", "--out", "v.json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("written to v.json"), "{}", stdout(&out));
    let d = dir.path().join("d");
    let reference = dir.path().join("ref.json");
    common::run_reference(
        "build_vocab.py",
        &[
            reference.to_str().unwrap(),
            "3",
            d.join("train_caps.txt").to_str().unwrap(),
            d.join("test_caps.txt").to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(dir.path().join("v.json")).unwrap(), std::fs::read(&reference).unwrap());
    let vocab = amfmn::text::Vocabulary::load(&reference).unwrap();
    assert!(vocab.len() > 50, "{}", vocab.len());
    assert_eq!(vocab.words().last().unwrap(), "<unk>");
}

#[test]
fn inspect_reads_a_dataset_through_its_option_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(amfmn_in(dir.path(), &["synth", "--out", "d", "--images", "20", "--size", "40"]).status.success());
    assert!(amfmn_in(dir.path(), &["vocab", "--data_path", "d", "--out", "v.json", "--threshold", "2"])
        .status
        .success());
    let opt = write_options(dir.path(), "d", "v.json");
    let out = amfmn_in(dir.path(), &["inspect", "--path-opt", opt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let train = table.lines().find(|l| l.starts_with("train")).expect("train row");
    let cells: Vec<&str> = train.split_whitespace().collect();
    assert_eq!(&cells[..3], ["train", "16", "80"], "{table}");
    assert_eq!(cells.last(), Some(&"40x40"), "{table}");
    assert!(table.contains("all images present"), "{table}");

    let names = std::fs::read_to_string(dir.path().join("d/train_filename.txt")).unwrap();
    let second = names.lines().nth(1).unwrap();
    std::fs::remove_file(dir.path().join("d/images").join(second)).unwrap();
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", opt.to_str().unwrap()]);
    assert_one_line_error(&out, &format!("1 of 16 images of the train split are missing, first d/images/{second}"));
}

#[test]
fn bad_options_and_data_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    assert!(amfmn_in(dir.path(), &["synth", "--out", "d", "--images", "10", "--size", "32"]).status.success());
    assert!(amfmn_in(dir.path(), &["vocab", "--data_path", "d", "--out", "v.json"]).status.success());
    let opt = write_options(dir.path(), "d", "v.json");
    let opt_s = opt.to_str().unwrap();

    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", "none.yaml"]);
    assert_one_line_error(&out, "cannot read option file none.yaml");
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", opt_s, "--set", "dataset.batch_sise=3"]);
    assert_one_line_error(&out, "opt.yaml: dataset.batch_sise: unknown field `batch_sise`");
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", opt_s, "--set", "model.cross_attention.att_type=x"]);
    assert_one_line_error(&out, "model.cross_attention.att_type: unknown variant `x`");
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", opt_s, "--set", "dataset.vocab_path=nope.json"]);
    assert_one_line_error(&out, "cannot read vocabulary nope.json");

    std::fs::write(dir.path().join("d/train_filename.txt"), "a.png\n").unwrap();
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", opt_s]);
    assert_one_line_error(&out, "train_filename.txt has 1 lines but d/train_caps.txt has 40 captions");

    let mut caps = std::fs::read(dir.path().join("d/test_caps.txt")).unwrap();
    caps.extend_from_slice(b"caf\xe9\n");
    std::fs::write(dir.path().join("d/test_caps.txt"), &caps).unwrap();
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", opt_s, "--splits", "test"]);
    assert_one_line_error(&out, "test_caps.txt:11: not valid UTF-8");

    let out = amfmn_in(dir.path(), &["synth", "--out", "e", "--images", "3"]);
    assert_one_line_error(&out, "--images 3: give 10 (one per class) to 1000000 images");
}

#[test]
fn blank_captions_warn_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    assert!(amfmn_in(dir.path(), &["synth", "--out", "d", "--images", "10", "--size", "32"]).status.success());
    assert!(amfmn_in(dir.path(), &["vocab", "--data_path", "d", "--out", "v.json"]).status.success());
    let caps_path = dir.path().join("d/train_caps.txt");
    let mut lines: Vec<String> = std::fs::read_to_string(&caps_path).unwrap().lines().map(String::from).collect();
    lines[2] = String::new();
    lines[6] = "   ".into();
    std::fs::write(&caps_path, lines.join("\n") + "\n").unwrap();
    let opt = write_options(dir.path(), "d", "v.json");
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", opt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "train_caps.txt: 2 blank caption(s) on line(s) 3, 7; each is encoded as padding, like the original does"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shipped_option_files_parse() {
    for name in ["RSITMD_AMFMN.yaml", "RSICD_AMFMN.yaml", "demo_AMFMN.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("option").join(name);
        let o = amfmn::options::Options::load(&path, &[]).unwrap();
        assert_eq!(o.model.embed.embed_dim, 512, "{name}");
    }
    let help = stdout(&amfmn(&["--help"]));
    for sub in ["vocab", "synth", "inspect"] {
        assert!(help.contains(sub), "{help}");
    }
}

#[test]
fn synth_never_touches_files_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A dataset folder named the way RSITMD names its files.
    std::fs::create_dir_all(d.join("rs/images")).unwrap();
    for (name, content) in [("images/airport_1.tif", "user image"), ("train_caps.txt", "user captions\n")] {
        std::fs::write(d.join("rs").join(name), content).unwrap();
    }
    let user_files = files_of(&d.join("rs"));
    let synth = |extra: &[&str]| {
        let mut args = vec!["synth", "--out", "rs", "--images", "10", "--size", "32", "--format", "png"];
        args.extend_from_slice(extra);
        amfmn_in(d, &args)
    };
    assert_one_line_error(&synth(&[]), "rs is not empty");
    assert!(stderr(&synth(&[])).contains("give --force"));
    assert_eq!(files_of(&d.join("rs")), user_files, "nothing touched");

    let out = synth(&["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(d.join("rs/images/airport_1.tif")).unwrap(), b"user image", "not a synth name");
    assert!(std::fs::read_to_string(d.join("rs/train_caps.txt")).unwrap().lines().count() == 40, "replaced (--force)");

    // Its own folder: a second run replaces and removes only what synth wrote.
    std::fs::write(d.join("rs/images/notes.txt"), "mine").unwrap();
    let out = amfmn_in(d, &["synth", "--out", "rs", "--images", "20", "--size", "32", "--format", "jpg"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let images: Vec<String> = files_of(&d.join("rs/images")).into_iter().map(|(n, _)| n).collect();
    assert_eq!(images.iter().filter(|n| n.ends_with(".jpg")).count(), 20, "{images:?}");
    assert!(!images.iter().any(|n| n.ends_with(".png")), "the first run's images are gone: {images:?}");
    assert!(images.contains(&"airport_1.tif".to_string()) && images.contains(&"notes.txt".to_string()));

    // A synth output edited by hand is not replaced without --force.
    std::fs::write(d.join("rs/test_caps.txt"), "edited\n").unwrap();
    let out = amfmn_in(d, &["synth", "--out", "rs", "--images", "20", "--size", "32", "--format", "jpg"]);
    assert_one_line_error(
        &out,
        "test_caps.txt exists and amfmn did not write it as synth output (or it changed since)",
    );
    assert_eq!(std::fs::read_to_string(d.join("rs/test_caps.txt")).unwrap(), "edited\n");
}

#[test]
fn vocab_and_inspect_respect_the_users_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(amfmn_in(d, &["synth", "--out", "d", "--images", "10", "--size", "32"]).status.success());
    std::fs::write(d.join("v.json"), "a user's vocabulary").unwrap();
    let vocab = |extra: &[&str]| {
        let mut args = vec!["vocab", "--data_path", "d", "--out", "v.json"];
        args.extend_from_slice(extra);
        amfmn_in(d, &args)
    };
    assert_one_line_error(&vocab(&[]), "v.json exists and amfmn did not write it as vocab output");
    assert_eq!(std::fs::read_to_string(d.join("v.json")).unwrap(), "a user's vocabulary");
    assert!(vocab(&["--force"]).status.success());
    assert!(vocab(&[]).status.success(), "its own output is replaced");

    // File names of a split stay inside dataset.image_path.
    let opt = write_options(d, "d", "v.json");
    std::fs::write(d.join("secret.png"), "not an image of the set").unwrap();
    let names = d.join("d/train_filename.txt");
    let mut lines: Vec<String> = std::fs::read_to_string(&names).unwrap().lines().map(String::from).collect();
    lines[1] = "../../secret.png".into();
    std::fs::write(&names, lines.join("\n") + "\n").unwrap();
    let out = amfmn_in(d, &["inspect", "--path_opt", opt.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "train_filename.txt: `../../secret.png` is not a relative path inside the images folder",
    );
}

#[test]
fn inspect_decodes_every_image_and_lists_the_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(amfmn_in(d, &["synth", "--out", "d", "--images", "20", "--size", "32"]).status.success());
    assert!(amfmn_in(d, &["vocab", "--data_path", "d", "--out", "v.json", "--threshold", "2"]).status.success());
    let opt = write_options(d, "d", "v.json");
    // A JPEG cut short (its pixels would decode as grey) and a PNG that is not one.
    let jpeg = d.join("d/images/residential_1.jpg");
    let bytes = std::fs::read(&jpeg).unwrap();
    std::fs::write(&jpeg, &bytes[..bytes.len() * 2 / 3]).unwrap();
    std::fs::write(d.join("d/images/parking_2.png"), b"not a png").unwrap();
    let out = amfmn_in(d, &["inspect", "--path_opt", opt.to_str().unwrap()]);
    assert_one_line_error(&out, "2 of 20 images cannot be decoded (listed above)");
    let listed = stdout(&out);
    assert!(listed.contains("unreadable") && listed.contains("residential_1.jpg"), "{listed}");
    assert!(listed.contains("truncated") && listed.contains("parking_2.png"), "{listed}");
}

#[test]
fn hostile_option_files_end_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // "Billion laughs": ten levels of ten aliases each.
    let mut lines = vec![r#"a: &a ["x","x","x","x","x","x","x","x","x","x"]"#.to_string()];
    for level in 1..10u8 {
        let (name, previous) = ((b'a' + level) as char, (b'a' + level - 1) as char);
        lines.push(format!("{name}: &{name} [{}]", vec![format!("*{previous}"); 10].join(",")));
    }
    lines.push("model: *j".into());
    std::fs::write(dir.path().join("bomb.yaml"), lines.join("\n")).unwrap();
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", "bomb.yaml"]);
    assert_one_line_error(&out, "bomb.yaml: not valid YAML: repetition limit exceeded");
    let deep = "a:\n".to_string() + &"- ".repeat(100_000) + "x\n";
    std::fs::write(dir.path().join("deep.yaml"), deep).unwrap();
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", "deep.yaml"]);
    assert_one_line_error(&out, "deep.yaml: not valid YAML");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml"), dir.path().join("o.yaml"))
        .unwrap();
    let out = amfmn_in(dir.path(), &["inspect", "--path_opt", "o.yaml", "--set", "model.embed.embed_dim=99999999"]);
    assert_one_line_error(&out, "model.embed.embed_dim: 99999999 is more than this model can allocate sensibly");
}

/// Runs exec/run_amfmn.sh with a stand-in binary that records each call (`CUDA_VISIBLE_DEVICES`
/// and the arguments) and makes `train` exit with `train_exit`.
fn run_script(card: Option<&str>, train_exit: i32, args: &[&str]) -> (std::process::Output, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (stub, calls) = (dir.path().join("amfmn"), dir.path().join("calls"));
    let script = format!(
        "#!/bin/sh\necho \"${{CUDA_VISIBLE_DEVICES-unset}} $*\" >> '{}'\n[ \"$1\" = train ] && exit {train_exit}\nexit 0\n",
        calls.display()
    );
    std::fs::write(&stub, script).unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("exec/run_amfmn.sh"));
    command.arg("rsitmd").args(args).env("AMFMN", &stub).env("CUDA_VISIBLE_DEVICES", "3");
    if let Some(card) = card {
        command.env("CARD", card);
    }
    let out = command.output().unwrap();
    let calls = std::fs::read_to_string(&calls).unwrap_or_default().lines().map(str::to_owned).collect();
    (out, calls)
}

#[test]
fn the_training_script_passes_shared_flags_to_test_and_stops_when_train_fails() {
    let opt = "--path_opt option/RSITMD_AMFMN.yaml";
    let (out, calls) = run_script(None, 0, &["--set", "optim.lr=0.001", "--device", "cuda", "--overwrite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        calls,
        [
            format!("3 vocab {opt} --set optim.lr=0.001 --splits train,test --threshold 5 --if-missing"),
            format!("3 inspect {opt} --set optim.lr=0.001"),
            format!("3 train {opt} --set optim.lr=0.001 --device cuda --overwrite"),
            format!("3 test {opt} --set optim.lr=0.001 --device cuda"),
        ]
    );
    let (out, calls) = run_script(Some("1"), 130, &[]);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.iter().all(|c| c.starts_with("1 ")), "{calls:?}");
}

/// A kernel event of a Chrome trace, as libtorch's profiler writes it.
fn kernel(cat: &str, name: &str, ts: f64, dur: f64) -> serde_json::Value {
    serde_json::json!({ "ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur })
}

/// The whitespace-separated values of the row of `out` that starts with `label`.
fn row<'a>(out: &'a str, label: &str) -> Vec<&'a str> {
    let line = out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no row {label}: {out}"));
    line[label.len()..].split_whitespace().collect()
}

#[test]
fn the_trace_summary_splits_device_time_by_kind_of_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let ours = serde_json::json!({ "traceEvents": [
        kernel("cpu_op", "aten::conv2d", 0.0, 10.0),
        kernel("kernel", "void cudnn::engines::sm90_xmma_fprop_implicit_gemm_bf16<int, (int)3>(cudnn::Params<float>)", 5.0, 100.0),
        kernel("kernel", "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float> >(int, at::native::CUDAFunctor_add<float>)", 105.0, 20.0),
        kernel("gpu_memcpy", "Memcpy HtoD (Pinned -> Device)", 200.0, 30.0),
        kernel("kernel", "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4> >(int)", 300.0, 50.0),
        kernel("kernel", "void cudnn::ops::nchwToNhwcKernel<float, float, float, false, true>(float const*, float*)", 400.0, 10.0),
        kernel("kernel", "sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32", 410.0, 40.0),
        serde_json::json!({ "ph": "i", "cat": "kernel", "name": "an instant, no duration", "ts": 900.0 }),
    ]});
    // Two kernels on two streams overlapping for 60 µs: busy 140 µs of 200 µs of kernels.
    let theirs = serde_json::json!({ "traceEvents": [
        kernel("cpu_op", "aten::mm", 0.0, 5.0),
        kernel("kernel", "void at::native::(anonymous namespace)::gru_cell_forward<float, float, int, 1>(int)", 10.0, 100.0),
        kernel("kernel", "void at::native::batch_norm_collect_statistics_kernel<at::native::InvStd, float, float, float, int>(int)", 50.0, 100.0),
    ]});
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&a, ours.to_string()).unwrap();
    std::fs::write(&b, theirs.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("exec/trace_summary.py");
    let summary =
        |args: &[String]| std::process::Command::new(common::python()).arg(&script).args(args).output().unwrap();
    let out =
        summary(&[format!("amfmn={}", a.display()), format!("PyTorch={}", b.display()), "--top".into(), "3".into()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(row(&text, "kernels (ms)"), ["amfmn", "PyTorch"]);
    assert_eq!(row(&text, "convolution"), ["0.10", "0.00"], "an implicit GEMM of cuDNN is a convolution");
    assert_eq!(row(&text, "matrix product"), ["0.04", "0.00"]);
    assert_eq!(row(&text, "layout (NCHW/NHWC)"), ["0.01", "0.00"]);
    assert_eq!(row(&text, "optimizer"), ["0.05", "0.00"]);
    assert_eq!(row(&text, "copy, fill"), ["0.03", "0.00"]);
    assert_eq!(row(&text, "elementwise"), ["0.02", "0.00"]);
    assert_eq!(row(&text, "recurrence (GRU cell)"), ["0.00", "0.10"]);
    assert_eq!(row(&text, "batch norm"), ["0.00", "0.10"]);
    assert_eq!(row(&text, "GPU time, all kernels (ms)"), ["0.25", "0.20"]);
    assert_eq!(row(&text, "kernels, copies, fills"), ["6", "2"]);
    assert_eq!(row(&text, "GPU busy (ms)"), ["0.25", "0.14"]);
    assert_eq!(row(&text, "span of the work (ms)"), ["0.45", "0.15"]);
    assert_eq!(row(&text, "GPU busy / span"), ["56", "%", "93", "%"]);
    assert!(!text.contains("pooling"), "kinds no trace has are left out: {text}");
    let ours_top: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("amfmn: the 3")).skip(1).take(3).collect();
    assert_eq!(ours_top.len(), 3, "{text}");
    assert!(ours_top[0].ends_with("convolution            sm90_xmma_fprop_implicit_gemm_bf16<int, (int)3>"), "{text}");
    assert!(ours_top[1].ends_with("multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4> >"), "{text}");
    let zipped = dir.path().join("a.json.gz");
    let gzip = std::process::Command::new("gzip").arg("-k").arg(&a).output().unwrap();
    assert!(gzip.status.success());
    let out = summary(&[format!("amfmn={}", zipped.display())]);
    assert_eq!(row(&stdout(&out), "GPU time, all kernels (ms)"), ["0.25"], "a gzipped trace: {}", stderr(&out));
    let cpu = dir.path().join("cpu.json");
    std::fs::write(&cpu, serde_json::json!({ "traceEvents": [kernel("cpu_op", "aten::mm", 0.0, 5.0)] }).to_string())
        .unwrap();
    let out = summary(&[format!("amfmn={}", cpu.display())]);
    assert!(out.status.success() && stdout(&out).contains("no GPU kernels"), "{}", stdout(&out));
    assert!(!summary(&["no-label.json".into()]).status.success());
}
