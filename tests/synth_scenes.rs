//! `amfmn synth-scenes` and the chain synth-scenes → crops → scores → map → `amfmn selo` with
//! scorers that know the answer (docs/LOCALISATION.md, Synthetic scenes): an oracle (the fraction of a crop the
//! case's polygons cover), a seeded random scorer and an anti-oracle.

mod common;

use std::path::Path;

use amfmn::locate::heat::{crops, median_filter, MeanMap, Rect};
use amfmn::rng::{stream, uniform};
use common::{amfmn_in, stderr, stdout};
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every file of a folder (recursively) with its bytes, by relative path.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A case's polygons as pixel rectangles (the generator writes axis-aligned tiles).
fn rectangles(case: &Value) -> Vec<Rect> {
    let polygons = case["points"].as_array().unwrap();
    polygons
        .iter()
        .map(|p| {
            let v = |i: usize, k: usize| p[i][k].as_f64().unwrap() as usize;
            Rect { r0: v(0, 1), r1: v(2, 1) + 1, c0: v(0, 0), c1: v(2, 0) + 1 }
        })
        .collect()
}

/// The fraction of `crop` that `targets` cover.
fn coverage(crop: &Rect, targets: &[Rect]) -> f64 {
    let overlap = |t: &Rect| {
        let rows = crop.r1.min(t.r1).saturating_sub(crop.r0.max(t.r0));
        let columns = crop.c1.min(t.c1).saturating_sub(crop.c0.max(t.c0));
        rows * columns
    };
    targets.iter().map(overlap).sum::<usize>() as f64 / ((crop.r1 - crop.r0) * (crop.c1 - crop.c0)) as f64
}

#[test]
fn same_seed_same_files_and_targets_off_the_crop_grids() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |out: &str, seed: &str| {
        let o = amfmn_in(d, &["synth-scenes", "--out", out, "--scenes", "2", "--size", "1024x1280", "--seed", seed]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let printed = run("a", "3");
    assert!(printed.contains("2 scenes of 1024x1280"), "{printed}");
    run("b", "3");
    run("c", "4");
    assert_eq!(files(&d.join("a")), files(&d.join("b")), "same seed, same bytes");
    assert_ne!(files(&d.join("a")), files(&d.join("c")));
    let scene = image::open(d.join("a/scenes/0.png")).unwrap();
    assert_eq!((scene.width(), scene.height()), (1024, 1280));

    let anno = read_json(&d.join("a/annotations/anno.json"));
    let record = read_json(&d.join("a/scenes.json"));
    let mut expected_cases = 0;
    for scene in record["scenes"].as_array().unwrap() {
        let tiles = scene["tiles"].as_array().unwrap();
        let role = |r: &str| tiles.iter().filter(move |t| t["role"] == r).collect::<Vec<_>>();
        let (targets, hard) = (role("target"), role("hard distractor"));
        assert!((1..=3).contains(&targets.len()) && hard.len() == 1, "{scene}");
        assert_eq!(hard[0]["class"], targets[0]["class"], "the hard distractor has the target's class");
        assert_ne!(hard[0]["attributes"], targets[0]["attributes"], "… with other attributes");
        assert!(targets.iter().all(|t| t["attributes"] == targets[0]["attributes"]), "one attribute set");
        assert!(role("distractor").len() >= 2);
        expected_cases += scene["cases"].as_array().unwrap().len();
    }
    let cases = anno.as_array().unwrap();
    assert_eq!(cases.len(), expected_cases);
    for case in cases {
        assert!(case["jpg_name"].as_str().unwrap().ends_with(".png"));
        for rect in rectangles(case) {
            assert!(!rect.r0.is_multiple_of(64) && !rect.c0.is_multiple_of(64), "{rect:?} starts on a crop boundary");
            assert!(rect.r1 <= 1280 && rect.c1 <= 1024);
        }
    }

    let o = amfmn_in(d, &["synth-scenes", "--out", "small", "--size", "512x512"]);
    assert_eq!(stderr(&o).trim(), "error: --size 512x512: each side must be 1024..=16384 pixels");
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/scenes.json"), "my notes").unwrap();
    let o = amfmn_in(d, &["synth-scenes", "--out", "mine", "--scenes", "1", "--size", "1024x1024"]);
    assert!(!o.status.success() && stderr(&o).contains("mine/scenes.json exists and amfmn did not write it"));
    assert_eq!(std::fs::read_to_string(d.join("mine/scenes.json")).unwrap(), "my notes");
}

/// Writes `probmap_{i}.png` for every case, each crop scored by `score(crop, case's targets)`,
/// and returns `amfmn selo --json`'s samples.
fn selo_with(d: &Path, maps: &str, score: &mut dyn FnMut(&Rect, &[Rect]) -> f64) -> Vec<Value> {
    let anno = read_json(&d.join("s/annotations/anno.json"));
    std::fs::create_dir_all(d.join(maps)).unwrap();
    for (i, case) in anno.as_array().unwrap().iter().enumerate() {
        let targets = rectangles(case);
        let all = crops(2048, 2048, &[256, 512, 768]);
        let scores: Vec<f64> = all.iter().map(|c| score(c, &targets)).collect();
        let map = median_filter(&MeanMap::new(2048, 2048, &all, &scores).to_u8(), 251);
        let gray = image::GrayImage::from_raw(2048, 2048, map.pixels).unwrap();
        gray.save(d.join(maps).join(format!("probmap_{i}.png"))).unwrap();
    }
    let args = ["selo", "--annotations", "s/annotations/anno.json", "--heatmaps", maps, "--images", "s/scenes"];
    let o = amfmn_in(d, &[&args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let json: Value = serde_json::from_str(&stdout(&o)).unwrap();
    json["samples"].as_array().unwrap().clone()
}

fn mean(samples: &[Value], key: &str) -> f64 {
    samples.iter().map(|s| s[key].as_f64().unwrap()).sum::<f64>() / samples.len() as f64
}

#[test]
fn an_oracle_scorer_finds_the_synthetic_targets_and_a_random_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = amfmn_in(d, &["synth-scenes", "--out", "s", "--scenes", "3", "--seed", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let oracle = selo_with(d, "oracle", &mut |crop, targets| coverage(crop, targets));
    let (rmi, ras) = (mean(&oracle, "rmi"), mean(&oracle, "ras"));
    let mut rng = stream(11, &[]);
    let random = selo_with(d, "random", &mut |_, _| uniform(&mut rng, 0.0, 1.0));
    let rsu = mean(&random, "rsu");
    eprintln!("{} cases: oracle Rmi {rmi:.4}, Ras {ras:.4}; random Rsu {rsu:.4}", oracle.len());
    assert!(rmi > 0.8, "oracle Rmi {rmi}");
    assert!(ras < 0.2, "oracle Ras {ras}");
    assert!((rsu - 0.5069).abs() < 0.1, "random scorer Rsu {rsu}");
    let anti = selo_with(d, "anti", &mut |crop, targets| 1.0 - coverage(crop, targets));
    for sample in &anti {
        assert_eq!(sample["ras"], 1.0, "the anti-oracle's attention is elsewhere: {sample}");
    }
}
