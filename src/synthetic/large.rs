//! Large synthetic scenes for semantic localisation (docs/LOCALISATION.md, Synthetic scenes): a canvas tiled with
//! filler classes, 1–3 target tiles of one class and one attribute set, distractors of other
//! classes and one hard distractor (the target's class with other attributes), all pasted at
//! positions off the SeLo crop grids; the queries that name them and `annotations/anno.json` in
//! the benchmark's format. Same seed → identical files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use image::{Rgb, RgbImage};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use super::scenes::{Scene, CLASSES};
use super::{capitalize, write_image};
use crate::fsutil::owned::Outputs;
use crate::rng::{self, below};

/// Image formats of the scenes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SceneFormat {
    Png,
    Tif,
    Jpg,
}

impl SceneFormat {
    fn extension(self) -> &'static str {
        match self {
            SceneFormat::Png => "png",
            SceneFormat::Tif => "tif",
            SceneFormat::Jpg => "jpg",
        }
    }
}

/// Settings of `amfmn synth-scenes`.
#[derive(Debug, Clone, Copy)]
pub struct LargeScenesConfig {
    pub scenes: usize,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    pub format: SceneFormat,
}

/// Classes that tile the background (farmland, residential, forest, river).
const FILLERS: [usize; 4] = [0, 1, 6, 7];
/// Classes of targets and distractors (parking, harbour, baseball field, airport, storage tanks,
/// tennis courts).
const OBJECTS: [usize; 6] = [2, 3, 4, 5, 8, 9];
/// Sides of target tiles.
const TARGET_SIDES: [usize; 4] = [256, 384, 512, 768];
/// The background grid's cell side.
const CELL: usize = 512;
/// Every crop boundary of the steps 128..768 and their half offsets is a multiple of this.
const GRID: usize = 64;
/// Free pixels kept between object tiles and to the border.
const GAP: usize = 24;

/// A tile on the scene: `[r0, r1) × [c0, c1)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Placement {
    pub rows: [usize; 2],
    pub columns: [usize; 2],
}

impl Placement {
    fn apart(&self, other: &Placement) -> bool {
        self.rows[1] + GAP <= other.rows[0]
            || other.rows[1] + GAP <= self.rows[0]
            || self.columns[1] + GAP <= other.columns[0]
            || other.columns[1] + GAP <= self.columns[0]
    }

    /// The tile's outline as the benchmark stores it: 4 float vertices `[x, y]`, clockwise from
    /// the top-left, on its outermost pixels.
    pub fn polygon(&self) -> Vec<[f64; 2]> {
        let (x0, y0) = (self.columns[0] as f64, self.rows[0] as f64);
        let (x1, y1) = (self.columns[1] as f64 - 1.0, self.rows[1] as f64 - 1.0);
        vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    }
}

/// One placed tile, for `scenes.json`.
#[derive(Debug, Clone, Serialize)]
struct Tile {
    role: &'static str,
    class: &'static str,
    attributes: String,
    #[serde(flatten)]
    placement: Placement,
}

/// One localisation case: the query and the tiles it names.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub caption: String,
    pub keywords: Vec<String>,
    /// Indices into the scene's tiles.
    pub tiles: Vec<usize>,
}

/// A composed scene.
struct Composed {
    image: RgbImage,
    tiles: Vec<Tile>,
    cases: Vec<Case>,
}

/// What `synth-scenes` wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LargeScenesSummary {
    /// Per scene: file name, object tiles, cases.
    pub scenes: Vec<(String, usize, usize)>,
    pub annotations: PathBuf,
}

/// Writes `config.scenes` scenes with their annotations and `scenes.json` to `out`; refuses a
/// folder holding files amfmn did not write there unless `force`.
pub fn write_scenes(out: &Path, config: LargeScenesConfig, force: bool) -> Result<LargeScenesSummary> {
    if !(1..=10_000).contains(&config.scenes) {
        bail!("--scenes {}: give 1 to 10000 scenes", config.scenes);
    }
    if config.width.min(config.height) < 1024 || config.width.max(config.height) > 16384 {
        bail!("--size {}x{}: each side must be 1024..=16384 pixels", config.width, config.height);
    }
    let mut outputs = Outputs::new(out, "synth-scenes", force)?;
    let names: Vec<String> = (0..config.scenes).map(|k| format!("{k}.{}", config.format.extension())).collect();
    let annotations = out.join("annotations").join("anno.json");
    let record = out.join("scenes.json");
    for path in names.iter().map(|n| out.join("scenes").join(n)).chain([annotations.clone(), record.clone()]) {
        outputs.check(&path)?;
    }
    std::fs::create_dir_all(out.join("scenes"))?;
    std::fs::create_dir_all(out.join("annotations"))?;
    let progress = crate::report::progress(config.scenes as u64, "composing scenes");
    let (mut anno, mut scenes, mut summary) = (Vec::new(), Vec::new(), LargeScenesSummary::default());
    let mut written = HashSet::new();
    for (k, name) in names.iter().enumerate() {
        let composed = compose(config, k);
        let path = out.join("scenes").join(name);
        write_image(&mut outputs, &path, &composed.image, config.format.extension())?;
        written.insert(path);
        for case in &composed.cases {
            let points: Vec<Vec<[f64; 2]>> =
                case.tiles.iter().map(|&t| composed.tiles[t].placement.polygon()).collect();
            anno.push(json!({"caption": case.caption, "jpg_name": name, "points": points}));
        }
        let objects = composed.tiles.iter().filter(|t| t.role != "background").count();
        summary.scenes.push((name.clone(), objects, composed.cases.len()));
        scenes.push(json!({"file": name, "width": config.width, "height": config.height,
            "rng_stream": ["seed", "synth-scenes", k], "tiles": composed.tiles, "cases": composed.cases}));
        progress.inc(1);
    }
    progress.finish_and_clear();
    outputs.write(&annotations, serde_json::to_string_pretty(&anno)?.as_bytes())?;
    let description = json!({"seed": config.seed, "rng": "ChaCha8, one stream per scene from the seed and the scene's index",
        "scenes": scenes});
    outputs.write(&record, serde_json::to_string_pretty(&description)?.as_bytes())?;
    written.extend([annotations.clone(), record]);
    let stale = outputs.remove_stale(&written)?;
    if let Some(warning) = stale.kept_warning() {
        crate::report::warn(warning);
    }
    outputs.finish()?;
    summary.annotations = annotations;
    Ok(summary)
}

/// Composes scene `k`: background, targets, distractors, cases.
fn compose(config: LargeScenesConfig, k: usize) -> Composed {
    let mut rng = rng::stream(config.seed, &[rng::tag::SYNTH_SCENES, k as u64]);
    let mut composed = Composed {
        image: RgbImage::from_pixel(config.width as u32, config.height as u32, Rgb([104, 112, 92])),
        tiles: Vec::new(),
        cases: Vec::new(),
    };
    background(&mut composed, &mut rng);
    let target_class = OBJECTS[below(&mut rng, OBJECTS.len())];
    let target = (CLASSES[target_class].sample)(&mut rng);
    let largest = TARGET_SIDES.iter().filter(|&&s| 3 * s <= config.width.min(config.height)).count().max(1);
    let mut taken = Vec::new();
    let wanted = 1 + below(&mut rng, 3);
    let mut targets = Vec::new();
    for _ in 0..wanted {
        let side = TARGET_SIDES[below(&mut rng, largest)];
        targets.extend(paste(&mut composed, &mut rng, &mut taken, target.as_ref(), target_class, side, "target"));
    }
    let hard = loop {
        let other = (CLASSES[target_class].sample)(&mut rng);
        if format!("{other:?}") != format!("{target:?}") {
            break other;
        }
    };
    paste(&mut composed, &mut rng, &mut taken, hard.as_ref(), target_class, 256, "hard distractor");
    let caption = distinct_sentence(target.as_ref(), hard.as_ref(), &mut rng);
    composed.cases.push(Case { caption, keywords: target.keywords(), tiles: targets });
    let mut others: Vec<usize> = OBJECTS.iter().copied().filter(|&c| c != target_class).collect();
    rng::shuffle(&mut rng, &mut others);
    let distractors = 2 + below(&mut rng, 3);
    let named = 1 + below(&mut rng, 2);
    for (i, &class) in others.iter().take(distractors).enumerate() {
        let scene = (CLASSES[class].sample)(&mut rng);
        let side = [256, 384][below(&mut rng, 2)];
        let placed = paste(&mut composed, &mut rng, &mut taken, scene.as_ref(), class, side, "distractor");
        if let Some(tile) = placed.filter(|_| i < named) {
            let sentences = scene.sentences(&mut rng);
            let caption = sentences[below(&mut rng, sentences.len())].clone();
            composed.cases.push(Case { caption, keywords: scene.keywords(), tiles: vec![tile] });
        }
    }
    composed
}

/// Tiles the canvas with filler classes on a jittered grid of 512-px cells, each a 512 tile or
/// four 256 tiles.
fn background(composed: &mut Composed, rng: &mut ChaCha8Rng) {
    let (width, height) = (composed.image.width() as usize, composed.image.height() as usize);
    for r in (0..height).step_by(CELL) {
        for c in (0..width).step_by(CELL) {
            let (r, c) = (r + below(rng, 32), c + below(rng, 32));
            let quarters: &[(usize, usize, usize)] = if rng::uniform(rng, 0.0, 1.0) < 0.5 {
                &[(0, 0, CELL)]
            } else {
                &[(0, 0, CELL / 2), (0, CELL / 2, CELL / 2), (CELL / 2, 0, CELL / 2), (CELL / 2, CELL / 2, CELL / 2)]
            };
            for &(dr, dc, side) in quarters {
                let class = FILLERS[below(rng, FILLERS.len())];
                let scene = (CLASSES[class].sample)(rng);
                let tile = scene.render(side as u32, rng);
                image::imageops::replace(&mut composed.image, &tile, (c + dc) as i64, (r + dr) as i64);
                let rows = [r + dr, (r + dr + side).min(height)];
                let columns = [c + dc, (c + dc + side).min(width)];
                if rows[0] < height && columns[0] < width {
                    let attributes = format!("{scene:?}");
                    let placement = Placement { rows, columns };
                    composed.tiles.push(Tile { role: "background", class: CLASSES[class].name, attributes, placement });
                }
            }
        }
    }
}

/// Renders `scene` at `side` and pastes it where it overlaps no other object tile and no crop
/// boundary of the SeLo grids lies on its edges; returns its tile index (`None` when 1000 draws
/// found no room).
fn paste(
    composed: &mut Composed,
    rng: &mut ChaCha8Rng,
    taken: &mut Vec<Placement>,
    scene: &dyn Scene,
    class: usize,
    side: usize,
    role: &'static str,
) -> Option<usize> {
    let (width, height) = (composed.image.width() as usize, composed.image.height() as usize);
    for _ in 0..1000 {
        let r0 = GAP + below(rng, height - side - 2 * GAP);
        let c0 = GAP + below(rng, width - side - 2 * GAP);
        let placement = Placement { rows: [r0, r0 + side], columns: [c0, c0 + side] };
        if r0.is_multiple_of(GRID) || c0.is_multiple_of(GRID) || !taken.iter().all(|t| t.apart(&placement)) {
            continue;
        }
        let tile = scene.render(side as u32, rng);
        image::imageops::replace(&mut composed.image, &tile, c0 as i64, r0 as i64);
        taken.push(placement);
        let attributes = format!("{scene:?}");
        composed.tiles.push(Tile { role, class: CLASSES[class].name, attributes, placement });
        return Some(composed.tiles.len() - 1);
    }
    None
}

/// A sentence of `target` that does not also describe `hard` (compared with the interchangeable
/// words for "near" made equal), capitalised like the synthetic set's first captions.
fn distinct_sentence(target: &dyn Scene, hard: &dyn Scene, rng: &mut ChaCha8Rng) -> String {
    let plain =
        |s: &str| ["next to", "beside", "close to", "near"].iter().fold(s.to_owned(), |acc, w| acc.replace(w, "NEAR"));
    let other: HashSet<String> = hard.sentences(rng).iter().map(|s| plain(s)).collect();
    let sentences = target.sentences(rng);
    let distinct: Vec<&String> = sentences.iter().filter(|s| !other.contains(&plain(s))).collect();
    let chosen = if distinct.is_empty() { &sentences[0] } else { distinct[below(rng, distinct.len())] };
    capitalize(chosen)
}
