//! `amfmn selo` end to end: the four indicators of probability-map files against an annotation
//! file, with the golden cases of docs/LOCALISATION.md, F (oracle) and H (flat), and the one-line refusals.

mod common;

use std::path::Path;

use common::{amfmn_in, stderr, stdout};

/// A block of a map: its value, rows and columns (inclusive ranges).
type Block = (u8, (u32, u32), (u32, u32));

/// A 1600x1200 grayscale map of `background`, with `block` painted when given.
fn save_map(path: &Path, background: u8, block: Option<Block>) {
    let map = image::GrayImage::from_fn(1600, 1200, |x, y| match block {
        Some((value, (r0, r1), (c0, c1))) if (r0..=r1).contains(&y) && (c0..=c1).contains(&x) => image::Luma([value]),
        _ => image::Luma([background]),
    });
    map.save(path).unwrap();
}

const RECT: &str = "[[900, 300], [1200, 300], [1200, 600], [900, 600]]";

fn annotations(dir: &Path, cases: &[(&str, &str)]) {
    let items: Vec<String> = cases
        .iter()
        .map(|(scene, points)| format!(r#"{{"caption": "a field", "jpg_name": "{scene}", "points": [{points}]}}"#))
        .collect();
    std::fs::write(dir.join("anno.json"), format!("[{}]", items.join(", "))).unwrap();
}

#[test]
fn selo_scores_maps_like_the_authors_slm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("maps")).unwrap();
    save_map(&d.join("maps/probmap_0.png"), 0, Some((255, (300, 600), (900, 1200))));
    save_map(&d.join("maps/probmap_1.png"), 128, None);
    annotations(d, &[("0.jpg", RECT), ("1.jpg", RECT)]);
    let out = amfmn_in(d, &["selo", "--annotations", "anno.json", "--heatmaps", "maps"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<String> = text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(rows[0], "index scene Rsu Rda Ras Rmi");
    assert_eq!(rows[2], "0 0.jpg 1.0000 1.0000 0.0014 0.9995", "golden case F: {text}");
    assert_eq!(rows[3], "1 1.jpg 0.5069 1.0000 0.7703 0.5332", "golden case H: {text}");
    assert_eq!(rows[4], "mean 0.7534 1.0000 0.3858 0.7663");

    let out = amfmn_in(d, &["selo", "--annotations", "anno.json", "--heatmaps", "maps", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["samples"][0]["centers"], serde_json::json!([[1052, 452]]));
    assert_eq!(json["samples"][1]["regions"], serde_json::json!([{"center": [1050, 450], "radius": 318}]));
    assert!((json["mean"]["rmi"].as_f64().unwrap() - (0.999504 + 0.533160) / 2.0).abs() < 1e-6, "{json}");
    assert_eq!(json["parameters"]["peak_window"], 1000);
}

#[test]
fn bad_maps_and_annotations_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("maps")).unwrap();
    std::fs::create_dir_all(d.join("scenes")).unwrap();
    save_map(&d.join("maps/probmap_0.png"), 40, Some((200, (300, 600), (900, 1200))));
    let selo = |extra: &[&str]| {
        let out = amfmn_in(d, &[&["selo", "--annotations", "anno.json", "--heatmaps", "maps"][..], extra].concat());
        assert!(!out.status.success());
        let err = stderr(&out);
        assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
        err
    };
    annotations(d, &[("0.jpg", "[[1, 1], [5, 5]]")]);
    assert!(selo(&[]).contains("anno.json: [0].points[0] has 2 vertices; a region needs at least 3"));
    std::fs::write(d.join("anno.json"), r#"[{"caption": "x", "jpg_name": "0.jpg", "points": [[[1, "a"]]]}]"#).unwrap();
    assert!(selo(&[]).contains("anno.json: [0].points[0][0][1]: invalid type"));

    annotations(d, &[("0.jpg", RECT), ("1.jpg", RECT)]);
    assert!(selo(&[]).contains("no probability map for case 1:"));
    image::RgbImage::from_pixel(1600, 1200, image::Rgb([10, 20, 30])).save(d.join("maps/probmap_1.png")).unwrap();
    assert!(selo(&[]).contains("probmap_1.png is a colour image (a pixel is [10, 20, 30])"));

    annotations(d, &[("0.jpg", RECT)]);
    image::GrayImage::new(800, 600).save(d.join("scenes/0.jpg")).unwrap();
    let err = selo(&["--images", "scenes"]);
    assert!(err.contains("probmap_0.png is 1600x1200 pixels but its scene"), "{err}");
    annotations(d, &[("0.jpg", "[[3000, 3000], [3100, 3000], [3100, 3100]]")]);
    let err = selo(&[]);
    assert!(
        err.contains("polygon 0 leaves the 1600x1200 map") && err.contains("the regions cover no pixel of the map"),
        "{err}"
    );
}

/// A random polygon: a rotated quadrilateral, or a star-shaped one of 5–9 vertices, inside a
/// `width × height` map.
fn random_polygon(rng: &mut rand_chacha::ChaCha8Rng, width: f64, height: f64) -> Vec<[f64; 2]> {
    use amfmn::rng::{below, uniform};
    let vertices = if below(rng, 2) == 0 { 4 } else { 5 + below(rng, 5) };
    let radius = uniform(rng, 60.0, 260.0);
    let (cx, cy) =
        (uniform(rng, radius + 5.0, width - radius - 5.0), uniform(rng, radius + 5.0, height - radius - 5.0));
    let turn = uniform(rng, 0.0, std::f64::consts::TAU);
    (0..vertices)
        .map(|k| {
            let angle = turn + std::f64::consts::TAU * k as f64 / vertices as f64;
            let r = if vertices == 4 { radius } else { radius * uniform(rng, 0.5, 1.0) };
            [cx + r * angle.cos(), cy + r * angle.sin()]
        })
        .collect()
}

#[test]
fn selo_equals_opencv_scipy_and_scikit_image_on_random_maps() {
    use amfmn::locate::raster::Gray;
    use amfmn::rng::{below, stream, uniform};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (width, height) = (1300usize, 1100usize);
    let mut rng = stream(5, &[]);
    let mut cases = Vec::new();
    for case in 0..8 {
        // Blobs of random height and width; case 6 is flat, case 7 all zero.
        let blobs: Vec<(f64, f64, f64, f64)> = (0..1 + below(&mut rng, 4))
            .map(|_| {
                let (x, y) = (uniform(&mut rng, 0.0, width as f64), uniform(&mut rng, 0.0, height as f64));
                (x, y, uniform(&mut rng, 40.0, 250.0), uniform(&mut rng, 0.3, 1.0))
            })
            .collect();
        let pixels: Vec<u8> = (0..width * height)
            .map(|i| {
                let (x, y) = ((i % width) as f64, (i / width) as f64);
                match case {
                    6 => 131,
                    7 => 0,
                    _ => {
                        let v: f64 = blobs
                            .iter()
                            .map(|&(bx, by, s, a)| a * (-((x - bx).powi(2) + (y - by).powi(2)) / (2.0 * s * s)).exp())
                            .sum();
                        (255.0 * v.min(1.0)) as u8
                    }
                }
            })
            .collect();
        let map = Gray { width, height, pixels };
        let path = d.join(format!("map{case}.png"));
        image::GrayImage::from_raw(width as u32, height as u32, map.pixels.clone()).unwrap().save(&path).unwrap();
        let polygons: Vec<Vec<[f64; 2]>> =
            (0..1 + below(&mut rng, 3)).map(|_| random_polygon(&mut rng, width as f64, height as f64)).collect();
        cases.push((path, map, polygons));
    }
    let json: Vec<serde_json::Value> =
        cases.iter().map(|(path, _, polygons)| serde_json::json!({"map": path, "polygons": polygons})).collect();
    std::fs::write(d.join("cases.json"), serde_json::to_string(&json).unwrap()).unwrap();
    let out = d.join("out.json");
    common::run_reference("selo_reference.py", &[d.join("cases.json").to_str().unwrap(), out.to_str().unwrap()]);
    let reference: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    for (k, ((_, map, polygons), want)) in cases.iter().zip(&reference).enumerate() {
        let mut mask = Gray::filled(width, height, 0);
        amfmn::locate::raster::fill_polygons(&mut mask, polygons, 1);
        let mask_px = mask.pixels.iter().filter(|&&m| m > 0).count();
        assert_eq!(mask_px as u64, want["mask_px"].as_u64().unwrap(), "case {k}: mask of {polygons:?}");
        let got = amfmn::locate::selo::evaluate(map, polygons).unwrap();
        let vertices: Vec<usize> = polygons.iter().map(Vec::len).collect();
        eprintln!("case {k}: vertices {vertices:?}, mask {mask_px} px, centres {:?}, Rmi {:.6}", got.centers, got.rmi);
        assert_eq!(serde_json::json!(got.centers), want["centers"], "case {k}: centres");
        for name in ["rsu", "rda", "ras", "rmi"] {
            let value = serde_json::to_value(&got).unwrap()[name].as_f64().unwrap();
            assert!((value - want[name].as_f64().unwrap()).abs() <= 1e-9, "case {k}: {name} {value} vs {}", want[name]);
        }
    }
}

/// The map filters against OpenCV's `medianBlur` (equal) and `GaussianBlur` with σ 0 (OpenCV
/// uses fixed-point weights for u8: within one level) on a smooth map with noise and edges,
/// sizes 251 and 255 on a map larger than the windows and 5/7 on one much smaller than 255.
#[test]
fn median_and_gaussian_filters_equal_opencv() {
    use amfmn::locate::heat::{gaussian_filter, median_filter};
    use amfmn::locate::raster::Gray;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = amfmn::rng::stream(5, &[]);
    for (w, h, median, gaussian) in [(700usize, 530usize, 251usize, 255usize), (90, 61, 5, 7), (120, 100, 7, 255)] {
        let pixels: Vec<u8> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64, (i / w) as f64);
                let smooth = 127.0 + 100.0 * (x / 97.0).sin() * (y / 61.0).cos();
                let edge = if x > w as f64 * 0.6 && y < h as f64 * 0.4 { 60.0 } else { 0.0 };
                (smooth + edge + amfmn::rng::uniform(&mut rng, -20.0, 20.0)).clamp(0.0, 255.0) as u8
            })
            .collect();
        let map = Gray { width: w, height: h, pixels };
        let picture = image::GrayImage::from_raw(w as u32, h as u32, map.pixels.clone()).unwrap();
        picture.save(d.join("in.png")).unwrap();
        let paths = [d.join("median.png"), d.join("gaussian.png")];
        let sizes = [median.to_string(), gaussian.to_string()];
        let input = d.join("in.png");
        let args =
            [input.to_str().unwrap(), &sizes[0], &sizes[1], paths[0].to_str().unwrap(), paths[1].to_str().unwrap()];
        common::run_reference("filters_reference.py", &args);
        let opencv = |p: &Path| image::open(p).unwrap().to_luma8().into_raw();
        assert_eq!(median_filter(&map, median).pixels, opencv(&paths[0]), "{w}x{h} median {median}");
        let ours = gaussian_filter(&map, gaussian).pixels;
        let theirs = opencv(&paths[1]);
        let apart = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        let most = ours.iter().zip(&theirs).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
        eprintln!("{w}x{h} gaussian {gaussian}: {apart} of {} values one level apart", ours.len());
        assert!(most <= 1, "{w}x{h} gaussian {gaussian}: {most} levels apart");
    }
}
