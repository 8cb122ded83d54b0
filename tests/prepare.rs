//! `amfmn prepare` on small hand-written release files in both styles: RSITMD's (keywords,
//! train/test) and Karpathy's (RSICD: train/val/test, `filepath`), and its errors.

mod common;

use std::path::Path;

use common::{amfmn_in, stderr, stdout};

fn image(dir: &Path, name: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9])).save(path).unwrap();
}

fn sentences(prefix: &str) -> String {
    (0..5)
        .map(|i| format!(r#"{{"raw": "{prefix} caption {i} .", "tokens": ["x"], "sentid": {i}}}"#))
        .collect::<Vec<_>>()
        .join(", ")
}

const RSITMD_STYLE: &str = r#"{"images": [
  {"filename": "boat_1.tif", "imgid": 0, "split": "train", "keywords": ["port", "white boat"], "sentences": [S0]},
  {"filename": "field_2.tif", "imgid": 1, "split": "test", "keywords": ["baseball field"], "sentences": [S1]},
  {"filename": "house_3.tif", "imgid": 2, "split": "train", "keywords": ["red roof", "a, b"], "sentences": [S2]}
]}"#;

fn rsitmd_json() -> String {
    RSITMD_STYLE
        .replace("S0", &sentences("two white  boats\\nin a port"))
        .replace("S1", &sentences("a field"))
        .replace("S2", &sentences("houses"))
}

#[test]
fn rsitmd_style_with_keywords() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["boat_1.tif", "field_2.tif", "house_3.tif"] {
        image(&d.join("img"), name);
    }
    std::fs::write(d.join("dataset_RSITMD.json"), rsitmd_json()).unwrap();
    let out = amfmn_in(d, &["prepare", "--json", "dataset_RSITMD.json", "--images", "img", "--out", "p"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let train = table.lines().find(|l| l.starts_with("train")).expect("train row");
    assert!(train.split_whitespace().eq(["train", "2", "10", "yes"]), "{table}");
    let read = |f: &str| std::fs::read_to_string(d.join("p").join(f)).unwrap();
    assert_eq!(read("train_filename.txt"), "boat_1.tif\nhouse_3.tif\n");
    assert_eq!(read("test_filename.txt"), "field_2.tif\n");
    assert_eq!(
        read("train_caps.txt").lines().next(),
        Some("two white boats in a port caption 0 ."),
        "whitespace and line breaks collapse"
    );
    assert_eq!(read("train_caps.txt").lines().count(), 10);
    assert_eq!(read("train_keywords.txt"), "port,white boat\nred roof,a  b\n");
    let split = amfmn::data::PrecompSplit::read(&d.join("p"), "train", 5).unwrap();
    assert_eq!(split.keywords.unwrap()[1], ["red roof", "a  b"]);
}

#[test]
fn karpathy_style_with_a_val_split_and_subfolders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let json = format!(
        r#"{{"dataset": "rsicd", "images": [
  {{"filename": "00001.jpg", "filepath": "a", "split": "train", "sentids": [0], "sentences": [{}]}},
  {{"filename": "00002.jpg", "filepath": "", "split": "val", "sentences": [{}]}},
  {{"filename": "00003.jpg", "split": "test", "sentences": [{}]}}
]}}"#,
        sentences("one"),
        sentences("two"),
        sentences("three")
    );
    std::fs::write(d.join("dataset_rsicd.json"), json).unwrap();
    for name in ["a/00001.jpg", "00002.jpg", "00003.jpg"] {
        image(&d.join("img"), name);
    }
    let out = amfmn_in(d, &["prepare", "--json", "dataset_rsicd.json", "--images", "img", "--out", "p"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |f: &str| std::fs::read_to_string(d.join("p").join(f)).unwrap();
    assert_eq!(read("train_filename.txt"), "a/00001.jpg\n00002.jpg\n", "val goes to train by default");
    assert!(!d.join("p/train_keywords.txt").exists());
    let out = amfmn_in(
        d,
        &["prepare", "--json", "dataset_rsicd.json", "--images", "img", "--out", "q", "--val-split", "test"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(d.join("q/test_filename.txt")).unwrap(), "00002.jpg\n00003.jpg\n");
}

#[test]
fn bad_release_files_are_named_with_their_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["boat_1.tif", "field_2.tif", "house_3.tif"] {
        image(&d.join("img"), name);
    }
    let cases = [
        ("{\"images\": [", "bad.json: images: EOF while parsing a list at line 1 column 12"),
        (r#"{"pictures": []}"#, "bad.json: missing field `images`"),
        (
            &rsitmd_json().replace(r#""raw": "houses caption 3 .""#, r#""text": "x""#),
            "bad.json: images[2].sentences[3]: missing field `raw`",
        ),
        (
            &rsitmd_json().replace(r#""split": "test""#, r#""split": 7"#),
            "bad.json: images[1].split: invalid type: integer `7`",
        ),
        (
            &rsitmd_json().replace(r#""split": "test""#, r#""split": "dev""#),
            "bad.json: images[1].split: unknown split `dev`",
        ),
        (
            &rsitmd_json().replace(r#", {"raw": "a field caption 4 .", "tokens": ["x"], "sentid": 4}"#, ""),
            "images[1] (field_2.tif) has 4 sentences, expected 5",
        ),
        (
            &rsitmd_json().replace("house_3.tif", "house_9.tif"),
            "1 of 3 images named in bad.json are not in img (first: house_9.tif)",
        ),
    ];
    for (json, needle) in cases {
        std::fs::write(d.join("bad.json"), json).unwrap();
        let out = amfmn_in(d, &["prepare", "--json", "bad.json", "--images", "img", "--out", "p"]);
        assert!(!out.status.success(), "{needle}");
        let err = stderr(&out);
        assert!(err.contains(needle), "{needle}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!d.join("p").exists(), "nothing written on error");
    }
}

#[test]
fn prepare_replaces_its_own_set_and_never_a_users_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["boat_1.tif", "field_2.tif", "house_3.tif"] {
        image(&d.join("img"), name);
    }
    std::fs::write(d.join("rsitmd.json"), rsitmd_json()).unwrap();
    let prepare = |json: &str, out: &str, extra: &[&str]| {
        let mut args = vec!["prepare", "--json", json, "--images", "img", "--out", out];
        args.extend_from_slice(extra);
        amfmn_in(d, &args)
    };
    assert!(prepare("rsitmd.json", "p", &[]).status.success());
    assert!(d.join("p/train_keywords.txt").exists() && d.join("p/test_keywords.txt").exists());
    // The same images in a release without keywords: the old keyword files go with the old set.
    let no_keywords = rsitmd_json().replace(r#""keywords": ["port", "white boat"], "#, "");
    let no_keywords = no_keywords.replace(r#""keywords": ["baseball field"], "#, "");
    let no_keywords = no_keywords.replace(r#""keywords": ["red roof", "a, b"], "#, "");
    assert!(!no_keywords.contains("keywords"));
    std::fs::write(d.join("plain.json"), no_keywords).unwrap();
    let out = prepare("plain.json", "p", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!d.join("p/train_keywords.txt").exists() && !d.join("p/test_keywords.txt").exists());
    assert!(d.join("p/train_caps.txt").exists());

    // A folder with a user's caption file: refused before anything is written.
    std::fs::create_dir_all(d.join("q")).unwrap();
    std::fs::write(d.join("q/test_caps.txt"), "mine\n").unwrap();
    let out = prepare("rsitmd.json", "q", &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("test_caps.txt exists and amfmn did not write it as prepare output") && err.contains("--force")
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!d.join("q/train_caps.txt").exists(), "nothing written");
    assert!(prepare("rsitmd.json", "q", &["--force"]).status.success());
    assert_ne!(std::fs::read_to_string(d.join("q/test_caps.txt")).unwrap(), "mine\n");
}

#[test]
fn image_names_stay_inside_the_images_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["boat_1.tif", "field_2.tif", "house_3.tif"] {
        image(&d.join("img"), name);
    }
    image(d, "outside.tif");
    std::os::unix::fs::symlink(d.join("outside.tif"), d.join("img/link.tif")).unwrap();
    for (name, needle) in [
        ("../outside.tif", "images[2]: `../outside.tif` is not a relative path inside the images folder"),
        ("/etc/hostname", "images[2]: `/etc/hostname` is not a relative path inside the images folder"),
        ("link.tif", "images[2]: `link.tif` is a link to"),
    ] {
        std::fs::write(d.join("bad.json"), rsitmd_json().replace("house_3.tif", name)).unwrap();
        let out = amfmn_in(d, &["prepare", "--json", "bad.json", "--images", "img", "--out", "p"]);
        assert!(!out.status.success(), "{name}");
        let err = stderr(&out);
        assert!(err.contains(needle) && err.contains("bad.json"), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!d.join("p").exists(), "nothing written");
    }
}
