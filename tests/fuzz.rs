//! Bounded mutation fuzzing of every file reader: start from valid files, apply seeded random
//! truncations, bit flips and rewrites of header and length fields (0, huge, negative,
//! wrapping), and read the result. A reader must return a value or an error that names the
//! file; it must never panic, and never abort or exhaust memory: each reader runs in a child
//! process (this test binary again) under an address-space limit, so an abort or an
//! out-of-memory death fails the test with the reader's name.
//!
//! `AMFMN_FUZZ_MUTATIONS` sets the mutations per reader (default 300); `exec/fuzz.sh N` runs
//! N by hand.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

use amfmn::fsutil::owned::Outputs;
use amfmn::rng::below;
use rand_chacha::ChaCha8Rng;

/// The readers, each with a valid seed file and how to read one.
const READERS: [&str; 16] = [
    "npy",
    "npy-rows",
    "pickle",
    "npz",
    "safetensors",
    "index",
    "vocab",
    "options",
    "precomp",
    "release",
    "image",
    "pth-zip",
    "pth-legacy",
    "annotations",
    "crop-codes",
    "manifest",
];

/// Extra address space a reader may take above what the process holds when it starts.
const MEMORY_HEADROOM: u64 = 3 << 30;

fn mutations() -> usize {
    std::env::var("AMFMN_FUZZ_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// A uniform number in `lo..hi`.
fn within(rng: &mut ChaCha8Rng, lo: usize, hi: usize) -> usize {
    lo + below(rng, hi - lo)
}

/// A mutation of `seed`: a truncation, bit flips, a rewritten binary length field, a rewritten
/// decimal number, or a repeated chunk.
fn mutate(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    if bytes.is_empty() {
        return bytes;
    }
    match within(rng, 0, 5) {
        4 => {
            // A number written as text (npy headers, JSON, YAML, pickle lines): 0, huge, negative.
            let digits: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i].is_ascii_digit()).collect();
            if let Some(&at) = digits.get(within(rng, 0, digits.len().max(1))) {
                let end = (at..bytes.len()).find(|&i| !bytes[i].is_ascii_digit()).unwrap_or(bytes.len());
                let numbers = ["0", "99999999999", "18446744073709551615", "-1", "4294967296"];
                bytes.splice(at..end, numbers[within(rng, 0, numbers.len())].bytes());
            }
        }
        0 => bytes.truncate(within(rng, 0, bytes.len())),
        1 => {
            for _ in 0..within(rng, 1, 8) {
                let at = within(rng, 0, bytes.len());
                bytes[at] ^= 1 << within(rng, 0, 8);
            }
        }
        2 => {
            // A length or size field near the start: 0, huge, negative, wrapping.
            let values: [u64; 6] = [0, u64::MAX, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1 << 40];
            let value = values[within(rng, 0, values.len())];
            let width = [2usize, 4, 8][within(rng, 0, 3)];
            let at = within(rng, 0, bytes.len().min(256));
            for (k, b) in value.to_le_bytes().iter().take(width).enumerate() {
                if let Some(slot) = bytes.get_mut(at + k) {
                    *slot = *b;
                }
            }
        }
        _ => {
            let start = within(rng, 0, bytes.len());
            let end = (start + within(rng, 1, 64)).min(bytes.len());
            let chunk = bytes[start..end].to_vec();
            for _ in 0..within(rng, 1, 50) {
                bytes.splice(start..start, chunk.iter().copied());
            }
        }
    }
    bytes
}

/// Writes the valid seed of `reader` into `dir`; returns the file the mutations replace.
fn seed(reader: &str, dir: &Path) -> PathBuf {
    let write_outputs = |name: &str| (dir.join(name), Outputs::new(dir, "fuzz seed", true).unwrap());
    match reader {
        "npy" | "npy-rows" => {
            let (path, mut outputs) = write_outputs("a.npy");
            let values: Vec<f32> = (0..60).map(|v| v as f32 / 7.0).collect();
            let array = ndarray::ArrayView::from_shape((6, 10), &values).unwrap();
            amfmn::npy::write_f32(&mut outputs, &path, &array).unwrap();
            outputs.finish().unwrap();
            path
        }
        "pickle" => {
            let words = dir.join("words.txt");
            std::fs::write(&words, "red\nhouse\nboat\n<unk>").unwrap();
            common::run_reference(
                "skipthoughts_files.py",
                &[dir.to_str().unwrap(), words.to_str().unwrap(), "object2"],
            );
            for big in ["uni_skip.npz", "bi_skip.npz", "btable.npy"] {
                let _ = std::fs::remove_file(dir.join(big));
            }
            dir.join("utable.npy")
        }
        "pth-zip" | "pth-legacy" => {
            common::run_reference("torch_small.py", &[dir.to_str().unwrap()]);
            let other = if reader == "pth-zip" { "small_legacy.pth" } else { "small_zip.pth" };
            std::fs::remove_file(dir.join(other)).unwrap();
            dir.join(if reader == "pth-zip" { "small_zip.pth" } else { "small_legacy.pth" })
        }
        "npz" => {
            let path = dir.join("p.npz");
            let member = |values: &[f32], shape: (usize, usize)| {
                let mut bytes = Vec::new();
                let array = ndarray::ArrayView::from_shape(shape, values).unwrap();
                ndarray_npy::WriteNpyExt::write_npy(&array, &mut bytes).unwrap();
                bytes
            };
            let file = std::fs::File::create(&path).unwrap();
            let mut zip = zip::ZipWriter::new(file);
            for (name, deflate) in [("encoder_W.npy", true), ("encoder_b.npy", false)] {
                let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
                let options = zip::write::SimpleFileOptions::default().compression_method(method);
                zip.start_file(name, options).unwrap();
                let values: Vec<f32> = (0..24).map(|v| v as f32).collect();
                std::io::Write::write_all(&mut zip, &member(&values, (4, 6))).unwrap();
            }
            zip.finish().unwrap();
            path
        }
        "safetensors" => {
            let path = dir.join("w.safetensors");
            let tensors = amfmn::checkpoint::TensorMap::from([
                ("a".to_string(), tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2])),
                ("b".to_string(), tch::Tensor::from_slice(&[7i64, 8])),
            ]);
            amfmn::checkpoint::write_safetensors(&path, &tensors).unwrap();
            path
        }
        "index" => index_seed(dir),
        "vocab" => {
            let (path, mut outputs) = write_outputs("v.json");
            let vocab = amfmn::text::Vocabulary::from_words(
                ["red", "house", "\"quoted\"", "caf\u{e9}", "<unk>"].iter().map(|w| w.to_string()).collect(),
            )
            .unwrap();
            vocab.save(&mut outputs, &path).unwrap();
            outputs.finish().unwrap();
            path
        }
        "options" => {
            let path = dir.join("o.yaml");
            std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("option/demo_AMFMN.yaml"), &path).unwrap();
            path
        }
        "precomp" => {
            let caps: String = (0..10).map(|i| format!("caption {i} of a red house .\n")).collect();
            std::fs::write(dir.join("train_caps.txt"), caps).unwrap();
            std::fs::write(dir.join("train_filename.txt"), "a.png\nb.png\n").unwrap();
            std::fs::write(dir.join("train_keywords.txt"), "red,house\nboat\n").unwrap();
            dir.join("train_caps.txt")
        }
        "release" => {
            let sentences = |p: &str| (0..5).map(|i| format!(r#"{{"raw": "{p} {i}"}}"#)).collect::<Vec<_>>().join(", ");
            std::fs::create_dir_all(dir.join("img")).unwrap();
            for name in ["a.png", "b.png"] {
                std::fs::write(dir.join("img").join(name), "x").unwrap();
            }
            let json = format!(
                r#"{{"images": [{{"filename": "a.png", "split": "train", "keywords": ["k"], "sentences": [{}]}},
                {{"filename": "b.png", "split": "test", "keywords": ["l"], "sentences": [{}]}}]}}"#,
                sentences("a"),
                sentences("b")
            );
            std::fs::write(dir.join("r.json"), json).unwrap();
            dir.join("r.json")
        }
        "image" => {
            let path = dir.join("i.jpg");
            let noise: Vec<u8> = (0..48 * 40 * 3).map(|i| ((i * 31) % 253) as u8).collect();
            image::RgbImage::from_raw(48, 40, noise).unwrap().save(&path).unwrap();
            path
        }
        "annotations" => {
            let path = dir.join("anno.json");
            let case = |caption: &str, points: &str| {
                format!(r#"{{"caption": "{caption}", "jpg_name": "0.png", "points": [{points}]}}"#)
            };
            let cases = [
                case("a red house", "[[10, 20], [300.5, 20], [300, 210]]"),
                case("two boats", "[[0, 0], [5, 9], [9, 1], [2, 2]]"),
            ];
            std::fs::write(&path, format!("[{}]", cases.join(", "))).unwrap();
            path
        }
        "crop-codes" => {
            use amfmn::locate::codes::{CodesKey, CropCodes};
            use amfmn::locate::heat::Rect;
            let path = dir.join("c.st");
            let key = CodesKey {
                scene_sha256: "1".repeat(64),
                checkpoint_sha256: "2".repeat(64),
                steps: vec![256, 512],
                crop_resize: "cubic".into(),
                image_size: 32,
            };
            let crops = vec![Rect { r0: 0, r1: 256, c0: 0, c1: 256 }, Rect { r0: 128, r1: 384, c0: 0, c1: 256 }];
            let fv = tch::Tensor::from_slice(&[0.5f32; 8]).view([2, 4]);
            let codes = CropCodes { key, crops, gate: Some(fv.sigmoid()), fv };
            let mut outputs = Outputs::new(dir, "crop codes", true).unwrap();
            codes.save(&mut outputs, &path).unwrap();
            outputs.finish().unwrap();
            path
        }
        "manifest" => {
            let mut outputs = Outputs::new(dir, "fuzz seed", true).unwrap();
            for name in ["a.png", "sub/b.json", "c d.txt"] {
                outputs.write(&dir.join(name), name.as_bytes()).unwrap();
            }
            outputs.finish().unwrap();
            dir.join(amfmn::fsutil::owned::MANIFEST)
        }
        other => panic!("unknown reader {other}"),
    }
}

/// A small index of a fresh model's shapes.
fn index_seed(dir: &Path) -> PathBuf {
    use amfmn::search::index::{Index, IndexInfo, IndexedFile};
    let info = IndexInfo {
        root: dir.to_owned(),
        files: vec![IndexedFile { path: "a.png".into(), size: 1, modified_ns: 2 }],
        checkpoint: dir.join("best.safetensors"),
        checkpoint_sha256: "0".repeat(64),
        image_size: 32,
        att_type: "soft_att".into(),
        embed_dim: 4,
        vocab_path: dir.join("v.json"),
        vocab_sha256: None,
        keywords_trained: false,
        amfmn_version: "test".into(),
    };
    let fv = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 4]);
    let index = Index { info, gate: Some(fv.sigmoid()), fv };
    let path = dir.join("i.st");
    let mut outputs = Outputs::new(dir, "index", true).unwrap();
    index.save(&mut outputs, &path).unwrap();
    outputs.finish().unwrap();
    path
}

/// Reads `path` with `reader`; the error text when it fails.
fn read(reader: &str, path: &Path) -> Result<(), String> {
    let dir = path.parent().unwrap();
    let result: anyhow::Result<()> = match reader {
        "npy" => amfmn::npy::read_f32(path).map(drop),
        "npy-rows" => amfmn::npy::read_rows(path, &[5, 0, 2]).map(drop),
        "pickle" => amfmn::npy::read_rows(path, &[1, 0]).map(drop),
        "npz" => amfmn::npy::read_npz(path).map(drop),
        "safetensors" => amfmn::checkpoint::read_safetensors(path).map(drop),
        "index" => amfmn::search::index::Index::load(path).map(drop),
        "vocab" => amfmn::text::Vocabulary::load(path).map(drop),
        "options" => amfmn::options::Options::load(path, &[]).map(drop),
        "precomp" => amfmn::data::PrecompSplit::read(dir, "train", 5).map(drop),
        "release" => {
            let layout = amfmn::data::release::ReleaseLayout {
                images: &dir.join("img"),
                val_split: amfmn::data::release::ValSplit::Train,
                captions_per_image: 5,
            };
            amfmn::data::release::read_precomp_text(path, layout).map(drop)
        }
        "image" => amfmn::data::image_file::load_rgb(path).map(drop),
        "pth-zip" | "pth-legacy" => amfmn::checkpoint::pytorch::read(path).map(drop),
        "annotations" => amfmn::locate::annotations::read(path).map(drop),
        "crop-codes" => amfmn::locate::codes::CropCodes::load(path, 4).map(drop),
        "manifest" => amfmn::fsutil::owned::Outputs::new(dir, "fuzz seed", false).map(drop),
        other => panic!("unknown reader {other}"),
    };
    result.map_err(|e| format!("{e:#}"))
}

/// Limits this process's address space to what it holds now plus [`MEMORY_HEADROOM`].
fn limit_memory() {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf and setrlimit only read and set process limits.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE) as u64;
        let limit = pages * page + MEMORY_HEADROOM;
        let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &rlimit), 0, "setrlimit");
    }
}

/// The child's work: every mutation of one reader's seed, under the memory limit.
#[test]
fn fuzz_worker() {
    let Ok(reader) = std::env::var("AMFMN_FUZZ_READER") else { return };
    let dir = tempfile::tempdir().unwrap();
    let seed_path = seed(&reader, dir.path());
    let valid = std::fs::read(&seed_path).unwrap();
    assert_eq!(read(&reader, &seed_path), Ok(()), "{reader}: the seed itself must read");
    limit_memory();
    let mut rng = amfmn::rng::stream(READERS.iter().position(|r| *r == reader).unwrap() as u64, &[]);
    let file_name = seed_path.file_name().unwrap().to_string_lossy().into_owned();
    let (mut errors, mut values) = (0, 0);
    for n in 0..mutations() {
        let bytes = mutate(&valid, &mut rng);
        std::fs::write(&seed_path, &bytes).unwrap();
        match catch_unwind(AssertUnwindSafe(|| read(&reader, &seed_path))) {
            Ok(Ok(())) => values += 1,
            Ok(Err(message)) => {
                let named = message.contains(&file_name) || reader == "precomp" || reader == "release";
                assert!(named && message.lines().count() == 1, "{reader} mutation {n}: unclear error {message:?}");
                errors += 1;
            }
            Err(_) => panic!("{reader} mutation {n}: the reader panicked ({} bytes)", bytes.len()),
        }
    }
    println!("fuzz {reader}: {} mutations, {errors} errors, {values} read", mutations());
}

#[test]
fn every_reader_survives_mutated_files() {
    if std::env::var("AMFMN_FUZZ_READER").is_ok() {
        return;
    }
    let mut failures = Vec::new();
    for reader in READERS {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "fuzz_worker", "--nocapture", "--test-threads", "1"])
            .env("AMFMN_FUZZ_READER", reader)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let summary = text.lines().find_map(|l| l.find("fuzz ").map(|at| &l[at..]));
        match summary {
            Some(summary) if out.status.success() => println!("{summary}"),
            _ => failures.push(format!(
                "{reader}: {:?}\n{}",
                out.status,
                text.lines().rev().take(15).collect::<Vec<_>>().join("\n")
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
