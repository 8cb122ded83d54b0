//! Image decoding and transforms against PIL + torchvision (run in the project's Python
//! environment): bilinear resize, nearest rotation and the composed train/eval transforms must
//! be bit-identical on PNG, TIFF and JPEG inputs (baseline and progressive, 4:4:4, 4:2:2 and
//! 4:2:0, grayscale, EXIF-rotated); so must the batched tensor transforms a CUDA model runs.

mod common;

use std::path::{Path, PathBuf};

use amfmn::data::image_file::load_rgb;
use amfmn::data::transforms::{apply_on, resize_bilinear, rotate_nearest, stack_levels, to_chw, Draw, Transform};
use image::{ImageFormat, RgbImage};

/// A noisy image with structure (gradients plus pseudo-random texture).
fn test_image(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(374761393) ^ y.wrapping_mul(668265263) ^ seed.wrapping_mul(2246822519))
            .wrapping_mul(3266489917);
        image::Rgb([((x * 255) / w) as u8 ^ (n >> 27) as u8, ((y * 255) / h) as u8, (n >> 24) as u8])
    })
}

fn save(dir: &Path, name: &str, img: &RgbImage, format: ImageFormat) -> PathBuf {
    let path = dir.join(name);
    img.save_with_format(&path, format).unwrap();
    path
}

/// Reference operations run in one Python process; each job writes `<dir>/ref<i>.bin`.
struct Jobs<'a> {
    dir: &'a Path,
    lines: Vec<String>,
}

impl<'a> Jobs<'a> {
    fn new(dir: &'a Path) -> Self {
        Jobs { dir, lines: Vec::new() }
    }

    /// Adds a job; returns the index of its output.
    fn add(&mut self, args: &[&str]) -> usize {
        let out = self.dir.join(format!("ref{}.bin", self.lines.len()));
        self.lines.push(format!("{} {}", args.join(" "), out.display()));
        self.lines.len() - 1
    }

    fn run(self) -> Vec<Vec<u8>> {
        let file = self.dir.join("jobs.txt");
        std::fs::write(&file, self.lines.join("\n")).unwrap();
        common::run_reference("pil_transforms.py", &[file.to_str().unwrap()]);
        (0..self.lines.len()).map(|i| std::fs::read(self.dir.join(format!("ref{i}.bin"))).unwrap()).collect()
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn bilinear_resize_is_bit_identical_to_pil() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [(256, 256, 278, 278), (300, 280, 256, 256), (17, 23, 278, 278), (600, 97, 128, 200), (64, 64, 63, 65)];
    let mut jobs = Jobs::new(dir.path());
    let mut inputs = Vec::new();
    for (i, &(w, h, tw, th)) in cases.iter().enumerate() {
        let path = save(dir.path(), &format!("in{i}.png"), &test_image(w, h, i as u32), ImageFormat::Png);
        jobs.add(&["resize", path.to_str().unwrap(), &tw.to_string(), &th.to_string()]);
        inputs.push(path);
    }
    for ((want, path), &(w, h, tw, th)) in jobs.run().iter().zip(&inputs).zip(&cases) {
        let got = resize_bilinear(&load_rgb(path).unwrap(), tw, th);
        assert_eq!(got.as_raw(), want, "{w}x{h} -> {tw}x{th}");
    }
}

#[test]
fn nearest_rotation_is_bit_identical_to_pil() {
    let dir = tempfile::tempdir().unwrap();
    let img = test_image(278, 278, 7);
    let path = save(dir.path(), "in.tif", &img, ImageFormat::Tiff);
    let odd = test_image(31, 20, 3);
    let odd_path = save(dir.path(), "odd.png", &odd, ImageFormat::Png);
    let angles = [0.0, 12.5, -30.0, 45.0, 90.0, 123.4, 180.0, 270.0, 359.9];
    let mut jobs = Jobs::new(dir.path());
    for angle in angles {
        jobs.add(&["rotate", path.to_str().unwrap(), &angle.to_string()]);
    }
    jobs.add(&["rotate", odd_path.to_str().unwrap(), "37"]);
    let outputs = jobs.run();
    for (angle, want) in angles.iter().zip(&outputs) {
        assert_eq!(rotate_nearest(&img, *angle).as_raw(), want, "angle {angle}");
    }
    assert_eq!(rotate_nearest(&odd, 37.0).as_raw(), &outputs[angles.len()], "non-square image");
}

#[test]
fn train_and_eval_transforms_equal_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let img = test_image(256, 256, 11);
    let path = save(dir.path(), "in.tif", &img, ImageFormat::Tiff);
    let small = test_image(200, 150, 2);
    let small_path = save(dir.path(), "small.png", &small, ImageFormat::Png);
    let cases = [(0.0, 0, 0), (17.0, 22, 3), (-64.5, 11, 22)];
    let mut jobs = Jobs::new(dir.path());
    for (angle, top, left) in cases {
        let p = path.to_str().unwrap();
        jobs.add(&["train", p, "278", "256", &angle.to_string(), &top.to_string(), &left.to_string()]);
    }
    jobs.add(&["eval", small_path.to_str().unwrap(), "128"]);
    let outputs = jobs.run();
    let train = Transform::Train { resize: 278, crop: 256, rotation: [-90.0, 90.0] };
    for ((angle, top, left), want) in cases.iter().zip(&outputs) {
        let rotated = rotate_nearest(&resize_bilinear(&img, 278, 278), *angle);
        let mut got = vec![0f32; 3 * 256 * 256];
        to_chw(&rotated, *left, *top, 256, &mut got);
        assert!(got == floats(want), "angle {angle}, crop at ({top}, {left})");
        let draw = Draw { angle: *angle, top: *top, left: *left };
        let batched = apply_on(train, &levels(&img), &[draw], tch::Device::Cpu);
        assert!(Vec::<f32>::try_from(batched.view([-1])).unwrap() == floats(want), "batched, angle {angle}");
    }
    let mut got = vec![0f32; 3 * 128 * 128];
    let eval = Transform::Eval { size: 128 };
    eval.apply(&small, &mut amfmn::rng::stream(0, &[]), &mut got);
    assert!(got == floats(&outputs[cases.len()]), "eval transform");
    let batched = apply_on(eval, &levels(&small), &[Draw::default()], tch::Device::Cpu);
    assert!(Vec::<f32>::try_from(batched.view([-1])).unwrap() == got, "batched eval transform");
}

/// One image as a batch of decoded levels `[1, H, W, 3]` u8.
fn levels(img: &RgbImage) -> tch::Tensor {
    stack_levels(std::slice::from_ref(img), img.dimensions())
}

#[test]
fn cubic_resize_is_within_one_level_of_opencv() {
    let dir = tempfile::tempdir().unwrap();
    let img = test_image(300, 200, 4);
    let path = save(dir.path(), "in.png", &img, ImageFormat::Png);
    let sizes = [(97u32, 61u32), (150, 100), (256, 256), (451, 333)];
    let mut jobs = Jobs::new(dir.path());
    for (w, h) in sizes {
        jobs.add(&["cubic", path.to_str().unwrap(), &w.to_string(), &h.to_string()]);
    }
    for ((w, h), want) in sizes.iter().zip(jobs.run()) {
        let got = amfmn::data::transforms::resize_cubic(&img, *w, *h);
        let diffs: Vec<i32> = got.as_raw().iter().zip(&want).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let differing = diffs.iter().filter(|&&d| d > 0).count() as f64 / diffs.len() as f64;
        eprintln!("{w}x{h}: max |diff| {}, {:.2}% of values differ", diffs.iter().max().unwrap(), 100.0 * differing);
        assert!(diffs.iter().all(|&d| d <= 1), "{w}x{h}: OpenCV's fixed-point weights are within one level");
    }
}

#[test]
fn jpeg_decoding_is_bit_identical_to_pil() {
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        save(dir.path(), "a.png", &test_image(256, 256, 5), ImageFormat::Png),
        save(dir.path(), "b.png", &test_image(97, 61, 8), ImageFormat::Png),
    ];
    let mut variants = Vec::new();
    for source in &sources {
        for (subsampling, progressive, mode, orientation) in [
            (2, 0, "RGB", 0),
            (1, 0, "RGB", 0),
            (0, 0, "RGB", 0),
            (2, 1, "RGB", 0),
            (0, 1, "RGB", 0),
            (2, 0, "L", 0),
            (2, 1, "L", 0),
            (2, 0, "RGB", 6),
        ] {
            variants.push([
                source.to_str().unwrap().to_owned(),
                "87".into(),
                subsampling.to_string(),
                progressive.to_string(),
                mode.to_owned(),
                orientation.to_string(),
            ]);
        }
    }
    let mut jobs = Jobs::new(dir.path());
    let files: Vec<usize> =
        variants.iter().map(|v| jobs.add(&["jpeg", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]])).collect();
    let decoded: Vec<usize> = files
        .iter()
        .map(|&i| {
            let file = dir.path().join(format!("ref{i}.bin"));
            jobs.add(&["decode", file.to_str().unwrap()])
        })
        .collect();
    let outputs = jobs.run();
    for ((variant, file), want) in variants.iter().zip(&files).zip(&decoded) {
        let got = load_rgb(&dir.path().join(format!("ref{file}.bin"))).unwrap();
        assert!(got.as_raw() == &outputs[*want], "{variant:?}: the decoded pixels differ from PIL's");
    }
}
