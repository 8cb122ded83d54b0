//! Hostile and careless inputs, tried as an attacker or a careless user would: crafted manifests,
//! links planted at temporary names, outputs that name one file twice, huge coordinates, counts
//! and sizes, decompression and pickle bombs, FIFOs named like images, runaway captions and
//! thread counts, inputs that used to give silently wrong results, and hostile file names. Every
//! run must end in one `error:` line (or a correct result) within 20 s, without a panic or a
//! signal; every child stays under 3 GiB resident (checked from the kernel's accounting of the
//! test's children); no file outside an output folder is written or removed.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The longest a hostile run may take.
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// The most resident memory any child may reach.
const MEMORY_LIMIT_KB: i64 = 3 << 20;

/// What every test reads: a fresh checkpoint, a 1024x1024 scene with its annotation, and the
/// files `tests/reference/hostile_files.py` crafts (made once per test binary).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        common::fresh_checkpoint(d);
        std::fs::create_dir(d.join("scenes")).unwrap();
        let noise =
            image::RgbImage::from_fn(1024, 1024, |x, y| image::Rgb([(x * 7 % 251) as u8, (y * 13 % 241) as u8, 90]));
        noise.save(d.join("scenes/scene.png")).unwrap();
        let points = "[[[100, 100], [400, 100], [400, 300], [100, 300]]]";
        let case = format!(r#"{{"caption": "two white houses", "jpg_name": "scene.png", "points": {points}}}"#);
        std::fs::write(d.join("anno.json"), format!("[{case}]")).unwrap();
        common::run_reference("hostile_files.py", &[d.to_str().unwrap(), "1024", "1024"]);
        Fixture { dir }
    })
}

/// How a bounded run ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `amfmn args` in `dir`; a run that outlasts [`TIME_LIMIT`] is killed and fails the test.
fn run_in(dir: &Path, args: &[&str]) -> Run {
    let logs = tempfile::tempdir().unwrap();
    let (out, err) = (logs.path().join("out"), logs.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_amfmn"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIME_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("amfmn {args:?} still runs after {TIME_LIMIT:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    let run = Run { code: status.code(), stdout: read(&out), stderr: read(&err) };
    assert!(!run.stderr.contains("panicked"), "amfmn {args:?} panicked: {}", run.stderr);
    assert!(run.code.is_some(), "amfmn {args:?} died of a signal: {}", run.stderr);
    run
}

fn run(args: &[&str]) -> Run {
    run_in(fixture().dir.path(), args)
}

/// Asserts one `error:` line that contains `needle`, and a failing exit.
fn refused(run: &Run, needle: &str) {
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("warning:")).collect();
    assert!(matches!(run.code, Some(1 | 2)), "expected a refusal, got {:?}: {}", run.code, run.stderr);
    assert_eq!(lines.len(), 1, "one error line expected: {}", run.stderr);
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

fn succeeded(run: &Run) {
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

/// Every child of this test process so far stayed under [`MEMORY_LIMIT_KB`] resident.
fn children_within_memory() {
    // SAFETY: getrusage only fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage
    };
    assert!(usage.ru_maxrss < MEMORY_LIMIT_KB, "a child reached {} MiB resident", usage.ru_maxrss >> 10);
}

/// A user's file outside every output folder, to check it survives.
fn precious(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("victim")).unwrap();
    let path = dir.join("victim/precious.txt");
    std::fs::write(&path, "user data").unwrap();
    path
}

fn intact(path: &Path) {
    assert_eq!(std::fs::read(path).unwrap(), b"user data", "{} was changed or removed", path.display());
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo only creates a FIFO at a path this test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// `amfmn locate` of the fixture's checkpoint on `scene`, written to `out`.
fn locate_args<'a>(scene: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["locate", "--checkpoint", "ckpt", "--image", scene, "--query", "two white houses", "--out", out]
}

#[test]
fn a_manifest_never_leads_outside_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let victim = precious(d);
    let entry = |key: &str, purpose: &str| {
        format!(r#"{{"files": {{"{key}": {{"purpose": "{purpose}", "size": 9, "sha256": "{}"}}}}}}"#, "0".repeat(64))
    };
    for (key, command) in [("../victim/precious.txt", "synth"), (victim.to_str().unwrap(), "synth-scenes")] {
        std::fs::create_dir_all(d.join("out")).unwrap();
        std::fs::write(d.join("out/.amfmn-manifest.json"), entry(key, command)).unwrap();
        let out = run_in(d, &[command, "--out", "out", "--seed", "1"]);
        refused(&out, "is not a path inside its folder");
        intact(&victim);
    }
    // A folder under the output that is a link to elsewhere: nothing is removed through it.
    std::fs::remove_dir_all(d.join("out")).unwrap();
    std::fs::create_dir(d.join("out")).unwrap();
    std::os::unix::fs::symlink(d.join("victim"), d.join("out/images")).unwrap();
    std::fs::write(d.join("out/.amfmn-manifest.json"), entry("images/precious.txt", "synth")).unwrap();
    let out = run_in(d, &["synth", "--out", "out", "--images", "10", "--size", "32"]);
    refused(&out, "images is a symbolic link: amfmn writes only into real folders under out");
    intact(&victim);

    // A stale output that the user replaced since amfmn wrote it is theirs now: kept.
    std::fs::remove_dir_all(d.join("out")).unwrap();
    succeeded(&run_in(d, &["synth", "--out", "out", "--images", "20", "--size", "32"]));
    std::fs::write(d.join("out/images/airport_15.tif"), "user data").unwrap();
    let out = run_in(d, &["synth", "--out", "out", "--images", "10", "--size", "32"]);
    succeeded(&out);
    assert!(
        out.stderr.contains("warning: kept out/images/airport_15.tif: changed since amfmn wrote them"),
        "{}",
        out.stderr
    );
    intact(&d.join("out/images/airport_15.tif"));
    assert!(!d.join("out/images/forest_16.jpg").exists(), "an unchanged stale output is removed");
}

#[test]
fn links_planted_at_temporary_names_are_never_written_through() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let victim = precious(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Earlier versions wrote through `.<name>.tmp<pid>`: plant a link for each of the next pids.
    let next: i32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").unwrap().trim().parse().unwrap();
    for pid in next..next + 1000 {
        for name in ["o.png", "o.prob.png"] {
            std::os::unix::fs::symlink(&victim, out.join(format!(".{name}.tmp{pid}"))).unwrap();
        }
    }
    let o = out.join("o.png");
    let mut args = locate_args("scenes/scene.png", o.to_str().unwrap());
    args.extend(["--steps", "768", "--device", "cpu"]);
    succeeded(&run_in(f.dir.path(), &args));
    intact(&victim);
    assert!(image::open(&o).is_ok() && image::open(out.join("o.prob.png")).is_ok());
}

#[test]
fn two_outputs_naming_one_file_are_refused() {
    let f = fixture();
    let mut args = locate_args("scenes/scene.png", "same.png");
    args.extend(["--prob", "./same.png", "--device", "cpu"]);
    refused(&run(&args), "--out and --prob are the same file");
    assert!(!f.path("same.png").exists());

    let images = f.path("twins");
    std::fs::create_dir_all(&images).unwrap();
    let tile = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 30, 30]));
    tile.save(images.join("x.png")).unwrap();
    tile.save(images.join("x.jpg")).unwrap();
    let out = run(&["saliency", "--checkpoint", "ckpt", "--images", "twins", "--out", "twins_out", "--device", "cpu"]);
    refused(&out, "x.jpg's mask.png and x.png's mask.png are the same file");
}

#[test]
fn geometry_sizes_and_counts_are_bounded_before_the_work() {
    let f = fixture();
    std::fs::create_dir_all(f.path("maps")).unwrap();
    image::GrayImage::from_pixel(1024, 1024, image::Luma([7])).save(f.path("maps/probmap_0.png")).unwrap();
    for vertex in ["1e12", "1e300", "-1e300"] {
        let case =
            format!(r#"[{{"caption": "a", "jpg_name": "scene.png", "points": [[[0, 0], [{vertex}, 10], [10, 50]]]}}]"#);
        let path = f.path(&format!("far{vertex}.json"));
        std::fs::write(&path, case).unwrap();
        let out = run(&["selo", "--annotations", path.to_str().unwrap(), "--heatmaps", "maps"]);
        refused(&out, "[0].points[0] has a vertex at");
    }
    let mut args = locate_args("scenes/scene.png", "steps.png");
    args.extend(["--steps", "1", "--device", "cpu"]);
    refused(&run(&args), "into 2095105 crops, more than 100000: give larger steps");
    let long = "house ".repeat(400);
    let mut args = locate_args("scenes/scene.png", "long.png");
    args[6] = &long;
    args.extend(["--steps", "768", "--device", "cpu"]);
    refused(&run(&args), "a text of 2400 characters: queries and captions are sentences of at most 2000");
    refused(&run(&["synth-scenes", "--out", "s", "--scenes", "18446744073709551615"]), "give 1 to 10000 scenes");
    refused(&run(&["synth", "--out", "s", "--images", "18446744073709551615"]), "give 10 (one per class) to 1000000");
    for (filter, needle) in [
        ("gaussian:99999999999", "the gaussian window is at most 1023 pixels wide"),
        ("median:257", "the median window is at most 255 pixels wide"),
    ] {
        let mut args = locate_args("scenes/scene.png", "filter.png");
        args.extend(["--filter", filter]);
        refused(&run(&args), needle);
    }
    refused(
        &run(&["index", "--checkpoint", "ckpt", "--images", "scenes", "--out", "w.st", "--workers", "100000"]),
        "at most 256",
    );
    children_within_memory();
}

/// A few hundred bytes whose header claims 20000x20000 pixels (a JPEG from a 16x16 one, a PNG
/// with one small IDAT).
fn claimed_huge(dir: &Path) {
    let mut jpeg = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([90, 120, 30]))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap() + 5;
    jpeg[sof..sof + 4].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]);
    std::fs::write(dir.join("big.jpg"), &jpeg).unwrap();
    let mut png = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([90, 120, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let ihdr = png.windows(4).position(|w| w == b"IHDR").unwrap();
    png[ihdr + 4..ihdr + 12].copy_from_slice(&[0, 0, 0x4E, 0x20, 0, 0, 0x4E, 0x20]);
    let crc = !png[ihdr..ihdr + 17].iter().fold(!0u32, |c, &b| {
        (0..8).fold(c ^ b as u32, |c, _| if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 })
    });
    png[ihdr + 17..ihdr + 21].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(dir.join("wide.png"), &png).unwrap();
}

#[test]
fn decoders_check_the_header_before_allocating() {
    let f = fixture();
    let bombs = f.path("bombs");
    std::fs::create_dir_all(&bombs).unwrap();
    claimed_huge(&bombs);
    for scene in ["bombs/big.jpg", "bombs/wide.png"] {
        for steps in ["2", "256,512,768"] {
            let mut args = locate_args(scene, "bomb.png");
            args.extend(["--steps", steps, "--device", "cpu"]);
            refused(&run(&args), "20000x20000 is 400000000 pixels, more than --max-pixels 200000000");
        }
    }
    let out = run(&["index", "--checkpoint", "ckpt", "--images", "bombs", "--out", "bombs.st", "--device", "cpu"]);
    refused(&out, "20000x20000 is 400000000 pixels, more than the 178956970 amfmn decodes here");
    let out = run(&["saliency", "--checkpoint", "ckpt", "--images", "bombs", "--out", "bombs_out", "--device", "cpu"]);
    refused(&out, "none of the 2 images could be read");
    let mut args = locate_args("bombs/big.jpg", "bomb.png");
    args.extend(["--max-pixels", "400000000", "--steps", "20000", "--device", "cpu"]);
    refused(&run(&args), "bytes cannot hold a baseline JPEG of 20000x20000 pixels");
    children_within_memory();
}

#[test]
fn pytorch_files_cannot_expand_into_gigabytes() {
    let cases = [
        ("expanded.pth", "a tensor of size [50000, 50000] holds more elements than its storage of 1"),
        ("huge_view.pth", "a tensor of size [2147483648, 2147483648] holds more elements than its storage of 1"),
        ("views.pth", "a PyTorch file without the original's `options` entry"),
        ("list_bomb.pth", "(a pickle bomb)"),
        ("storage_bomb.pth", "its tensors claim more bytes than a torch.save file of"),
        ("laughs.pth", "the options hold more than 100000 values"),
    ];
    for (file, needle) in cases {
        let pth = format!("pth/{file}");
        let out =
            run(&["locate", "--checkpoint", &pth, "--image", "scenes/scene.png", "--query", "a", "--out", "p.png"]);
        refused(&out, needle);
    }
    children_within_memory();
}

#[test]
fn npz_members_are_bounded_on_every_path() {
    let out = run(&["check-weights", "--dir_st", "st", "--type", "UniSkip"]);
    refused(&out, "checks failed (see the table above)");
    assert!(out.stdout.contains("more than the 0 bytes left"), "{}", out.stdout);
    children_within_memory();
}

#[test]
fn fifos_named_like_inputs_never_block_a_run() {
    let f = fixture();
    let images = f.path("fifos");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    image::RgbImage::from_pixel(64, 64, image::Rgb([30, 180, 40])).save(images.join("ok.png")).unwrap();
    mkfifo(&images.join("sub/f.png"));
    mkfifo(&images.join("g.png"));
    let out =
        run(&["index", "--checkpoint", "ckpt", "--images", "fifos", "--recursive", "--out", "f.st", "--device", "cpu"]);
    succeeded(&out);
    assert!(out.stderr.contains("warning: skipped sub/f.png: not a regular file"), "{}", out.stderr);
    let out = run(&["saliency", "--checkpoint", "ckpt", "--images", "fifos", "--out", "fifo_sal", "--device", "cpu"]);
    succeeded(&out);
    let out =
        run(&["saliency", "--checkpoint", "ckpt", "--image", "fifos/g.png", "--out", "fifo_sal2", "--device", "cpu"]);
    refused(&out, "none of the 1 images could be read");
    std::fs::create_dir_all(f.path("fifo_scenes")).unwrap();
    mkfifo(&f.path("fifo_scenes/scene.png"));
    let args = ["--checkpoint", "ckpt", "--out", "fifo_selo", "--device", "cpu"];
    let out = run(&[&["selo", "--annotations", "anno.json", "--images", "fifo_scenes"][..], &args].concat());
    refused(&out, "it is a FIFO, socket or device, not a regular file");
    mkfifo(&f.path("fifo_anno.json"));
    refused(&run(&["selo", "--annotations", "fifo_anno.json", "--heatmaps", "maps"]), "not a regular file");
    mkfifo(&f.path("fifo_opt.yaml"));
    refused(&run(&["inspect", "--path_opt", "fifo_opt.yaml"]), "cannot read option file fifo_opt.yaml: it is a FIFO");
    let mut args = locate_args("fifo_scenes/scene.png", "fifo.png");
    args.extend(["--device", "cpu"]);
    refused(&run(&args), "not a regular file");
}

#[test]
fn captions_and_thread_counts_are_bounded() {
    let f = fixture();
    let caption = "house ".repeat(170_000);
    let case = format!(
        r#"[{{"caption": "{caption}", "jpg_name": "scene.png", "points": [[[100, 100], [400, 100], [400, 300]]]}}]"#
    );
    std::fs::write(f.path("long_anno.json"), case).unwrap();
    let args = ["--images", "scenes", "--checkpoint", "ckpt", "--out", "long_out", "--steps", "768", "--device", "cpu"];
    let out = run(&[&["selo", "--annotations", "long_anno.json"][..], &args].concat());
    refused(&out, "case 0: a text of 1020000 characters");
    for threads in ["5000", "1000"] {
        let mut args = locate_args("scenes/scene.png", "threads.png");
        args.extend(["--threads", threads, "--device", "cpu"]);
        refused(&run(&args), "cores; give at most");
    }
    children_within_memory();
}

#[test]
fn inputs_that_gave_silently_wrong_results_are_read_right_or_refused() {
    let f = fixture();
    let selo = |maps: &str, anno: &str| run(&["selo", "--annotations", anno, "--heatmaps", maps, "--json"]);
    let (deep, as_slm_reads) = (selo("map16", "anno.json"), selo("map8", "anno.json"));
    succeeded(&deep);
    let mean = |run: &Run| serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["mean"].clone();
    assert_eq!(mean(&deep), mean(&as_slm_reads), "a 16-bit map is read as OpenCV's IMREAD_GRAYSCALE reads it");

    let case = |points: &str| format!(r#"{{"caption": "a", "jpg_name": "scene.png", "points": [{points}]}}"#);
    std::fs::write(f.path("degenerate.json"), format!("[{}]", case("[[100, 100], [100, 100], [100, 100]]"))).unwrap();
    refused(&selo("maps", "degenerate.json"), "[0].points[0] has all its vertices within a pixel of their centre");
    let one = format!("[{}]", case("[[100, 100], [400, 100], [400, 300]]"));
    std::fs::write(f.path("two.json"), format!("{one}{one}")).unwrap();
    refused(&selo("maps", "two.json"), "two.json: more after the array of cases");

    let args = ["--steps", "768", "--codes", "c.st", "--device", "cpu"];
    succeeded(&run(&[&locate_args("scenes/scene.png", "codes.png")[..], &args].concat()));
    narrow_codes(&f.path("c.st"));
    refused(&run(&[&locate_args("scenes/scene.png", "codes.png")[..], &args].concat()), "do not fit its");

    let names = f.path("names");
    std::fs::create_dir_all(&names).unwrap();
    let tile = image::RgbImage::from_pixel(64, 64, image::Rgb([40, 60, 210]));
    for raw in [&b"\xff.png"[..], b"\xfe.png", b"ok.png"] {
        tile.save(names.join(std::ffi::OsStr::from_bytes(raw))).unwrap();
    }
    let out = run(&["index", "--checkpoint", "ckpt", "--images", "names", "--out", "names.st", "--device", "cpu"]);
    succeeded(&out);
    assert_eq!(out.stderr.matches("its name is not UTF-8; rename it").count(), 2, "{}", out.stderr);
    let index = amfmn::search::index::Index::load(&f.path("names.st")).unwrap();
    let indexed: Vec<&str> = index.info.files.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(indexed, ["ok.png"], "no two names merged into one");
}

/// Keeps the first 7 values of every code in a crop-code file (the key and crops unchanged) and
/// records the new file in the folder's manifest, as a user who edits it with a tool would.
fn narrow_codes(path: &Path) {
    let (tensors, metadata) = amfmn::checkpoint::tensors::read_with_metadata(path).unwrap();
    let narrowed: amfmn::checkpoint::TensorMap =
        tensors.into_iter().map(|(k, t)| (k, t.narrow(1, 0, 7).contiguous())).collect();
    let bytes = amfmn::checkpoint::tensors::serialize(&narrowed, Some(metadata)).unwrap();
    let mut outputs = amfmn::fsutil::owned::Outputs::for_file(path, "crop codes", true).unwrap();
    outputs.write(path, &bytes).unwrap();
    outputs.finish().unwrap();
}

#[test]
fn messages_never_pass_control_characters_to_the_terminal() {
    let f = fixture();
    let name = std::ffi::OsStr::from_bytes(b"red\x1b[31mname\x07.yaml");
    std::fs::write(f.path("x").with_file_name(name), "model: [").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amfmn"))
        .current_dir(f.dir.path())
        .arg("inspect")
        .arg("--path_opt")
        .arg(name)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07), "{stderr:?}");
    assert!(stderr.starts_with("error: red\\u{1b}[31mname\\u{7}.yaml: not valid YAML"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
}
