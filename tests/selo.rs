//! `amfmn selo` end to end: the four indicators of probability-map files against an annotation
//! file, with LOCATE.md's golden cases F (oracle) and H (flat), and the one-line refusals.

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
    assert_eq!(rows[2], "0 0.jpg 1.0000 1.0000 0.0014 0.9995", "LOCATE.md case F: {text}");
    assert_eq!(rows[3], "1 1.jpg 0.5069 1.0000 0.7703 0.5332", "LOCATE.md case H: {text}");
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
