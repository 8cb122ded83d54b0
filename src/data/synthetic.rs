//! A synthetic remote-sensing set in the precomp layout: procedurally drawn aerial-like scenes of
//! ten classes, each image with its own attributes (object counts, colours, positions,
//! orientations) that its five captions and keywords describe, so retrieval has to read the
//! attributes, not only the class. Same seed → identical files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{ImageFormat, Rgb, RgbImage};
use rand_chacha::ChaCha8Rng;

use crate::fsutil::{write_atomic, write_atomic_with};
use crate::rng::{self, below};

/// Which file formats the images are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthFormat {
    /// `.tif`, `.jpg` and `.png` in turn.
    Mixed,
    Tif,
    Jpg,
    Png,
}

/// Settings of `amfmn synth`.
#[derive(Debug, Clone, Copy)]
pub struct SynthConfig {
    pub images: usize,
    pub size: u32,
    pub seed: u64,
    pub format: SynthFormat,
}

/// Counts of what was written, for the summary table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SynthSummary {
    /// Images per (class, split).
    pub per_class: BTreeMap<&'static str, [usize; 2]>,
    /// Images per file extension.
    pub per_format: BTreeMap<&'static str, usize>,
    pub captions: [usize; 2],
    pub caption_words: usize,
    pub keywords: usize,
}

const CAPTIONS_PER_IMAGE: usize = 5;
const NUMBERS: [&str; 13] =
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];

#[derive(Debug, Clone, Copy, PartialEq)]
struct Colour {
    name: &'static str,
    rgb: [u8; 3],
}

const RED: Colour = Colour { name: "red", rgb: [178, 44, 38] };
const WHITE: Colour = Colour { name: "white", rgb: [232, 232, 228] };
const GRAY: Colour = Colour { name: "gray", rgb: [128, 128, 124] };
const BLUE: Colour = Colour { name: "blue", rgb: [48, 92, 186] };
const GREEN: Colour = Colour { name: "green", rgb: [62, 140, 58] };
const YELLOW: Colour = Colour { name: "yellow", rgb: [214, 190, 70] };
const BROWN: Colour = Colour { name: "brown", rgb: [128, 92, 56] };
const BLACK: Colour = Colour { name: "black", rgb: [30, 30, 32] };

#[derive(Debug, Clone, Copy, PartialEq)]
enum Orientation {
    Horizontal,
    Vertical,
    Diagonal,
}

impl Orientation {
    fn word(self) -> &'static str {
        match self {
            Orientation::Horizontal => "horizontal",
            Orientation::Vertical => "vertical",
            Orientation::Diagonal => "diagonal",
        }
    }
    fn adverb(self) -> &'static str {
        match self {
            Orientation::Horizontal => "from left to right",
            Orientation::Vertical => "from top to bottom",
            Orientation::Diagonal => "diagonally",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Left,
    Right,
    Top,
    Bottom,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
            Side::Top => "top",
            Side::Bottom => "bottom",
        }
    }
}

/// One scene: its class and the attributes drawn and described.
#[derive(Debug, Clone, PartialEq)]
enum Scene {
    Farmland { fields: usize, crop: Colour, farmhouse: Option<Side>, road: Option<Orientation> },
    Residential { houses: usize, roof: Colour, in_rows: bool, pool: bool, road: Orientation },
    ParkingLot { cars: usize, car: Colour, side: Side, trees: bool },
    Harbour { boats: usize, boat: Colour, water: Side, piers: usize },
    BaseballField { fields: usize, trees: bool, buildings: bool },
    Airport { planes: usize, runway: Orientation, terminal: Side },
    Forest { river: bool, road: Option<Orientation>, clearing: bool },
    River { flow: Orientation, bridges: usize, sandy: bool, boats: usize },
    StorageTanks { tanks: usize, tank: Colour, in_rows: bool },
    TennisCourts { courts: usize, court: Colour, trees: bool },
}

/// Class names, in the order images cycle through them.
pub const CLASSES: [&str; 10] = [
    "farmland",
    "residential",
    "parking",
    "harbour",
    "baseballfield",
    "airport",
    "forest",
    "river",
    "storagetanks",
    "tenniscourt",
];

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[below(rng, items.len())]
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng::uniform(rng, 0.0, 1.0) < p
}

fn range(rng: &mut ChaCha8Rng, lo: usize, hi: usize) -> usize {
    lo + below(rng, hi - lo + 1)
}

impl Scene {
    fn sample(class: usize, rng: &mut ChaCha8Rng) -> Scene {
        let sides = [Side::Left, Side::Right, Side::Top, Side::Bottom];
        let orientations = [Orientation::Horizontal, Orientation::Vertical, Orientation::Diagonal];
        match class {
            0 => Scene::Farmland {
                fields: range(rng, 2, 6),
                crop: pick(rng, &[GREEN, YELLOW, BROWN]),
                farmhouse: chance(rng, 0.5).then(|| pick(rng, &sides)),
                road: chance(rng, 0.5).then(|| pick(rng, &orientations[..2])),
            },
            1 => Scene::Residential {
                houses: range(rng, 2, 9),
                roof: pick(rng, &[RED, WHITE, GRAY, BLUE]),
                in_rows: chance(rng, 0.5),
                pool: chance(rng, 0.4),
                road: pick(rng, &orientations[..2]),
            },
            2 => Scene::ParkingLot {
                cars: range(rng, 3, 12),
                car: pick(rng, &[WHITE, RED, BLUE, BLACK]),
                side: pick(rng, &[Side::Left, Side::Right]),
                trees: chance(rng, 0.5),
            },
            3 => Scene::Harbour {
                boats: range(rng, 1, 7),
                boat: pick(rng, &[WHITE, RED, YELLOW]),
                water: pick(rng, &sides),
                piers: range(rng, 1, 3),
            },
            4 => {
                Scene::BaseballField { fields: range(rng, 1, 2), trees: chance(rng, 0.5), buildings: chance(rng, 0.5) }
            }
            5 => Scene::Airport {
                planes: range(rng, 1, 5),
                runway: pick(rng, &orientations),
                terminal: pick(rng, &[Side::Left, Side::Right]),
            },
            6 => Scene::Forest {
                river: chance(rng, 0.4),
                road: chance(rng, 0.5).then(|| pick(rng, &orientations[..2])),
                clearing: chance(rng, 0.4),
            },
            7 => Scene::River {
                flow: pick(rng, &orientations),
                bridges: range(rng, 0, 3),
                sandy: chance(rng, 0.5),
                boats: range(rng, 0, 3),
            },
            8 => Scene::StorageTanks {
                tanks: range(rng, 2, 9),
                tank: pick(rng, &[WHITE, GRAY]),
                in_rows: chance(rng, 0.5),
            },
            _ => Scene::TennisCourts {
                courts: range(rng, 1, 4),
                court: pick(rng, &[GREEN, BLUE, RED]),
                trees: chance(rng, 0.5),
            },
        }
    }

    /// Candidate sentences describing the scene (more than five, all different).
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let near = |rng: &mut ChaCha8Rng| pick(rng, &["next to", "beside", "near", "close to"]);
        let n = |k: usize| NUMBERS[k.min(12)];
        let plural = |k: usize, one: &str, many: &str| if k == 1 { one.to_owned() } else { many.to_owned() };
        let mut s = Vec::new();
        match *self {
            Scene::Farmland { fields, crop, farmhouse, road } => {
                let land = pick(rng, &["farmland", "cropland", "agricultural land"]);
                s.push(format!("{} {} fields make up this {land}.", n(fields), crop.name));
                s.push(format!("the {land} is divided into {} {} plots.", n(fields), crop.name));
                s.push(format!("{} pieces of {} farmland lie side by side.", n(fields), crop.name));
                s.push(format!("many {} crops grow in {} neat fields.", crop.name, n(fields)));
                match farmhouse {
                    Some(side) => {
                        s.push(format!("a small farmhouse stands at the {} of the {} fields.", side.word(), crop.name));
                        s.push(format!("there is a house on the {} side of the {land}.", side.word()));
                    }
                    None => s.push(format!("there are no buildings in the {} {land}.", crop.name)),
                }
                match road {
                    Some(o) => s.push(format!("a {} road crosses the {} fields.", o.word(), crop.name)),
                    None => s.push(format!("no road passes through the {} fields.", crop.name)),
                }
            }
            Scene::Residential { houses, roof, in_rows, pool, road } => {
                let homes = pick(rng, &["houses", "buildings", "homes"]);
                let layout = if in_rows { "arranged in neat rows" } else { "scattered irregularly" };
                s.push(format!("{} houses with {} roofs are {layout}.", n(houses), roof.name));
                s.push(format!("this residential area has {} {} {homes}.", n(houses), roof.name));
                s.push(format!(
                    "{} {} roofed {homes} stand {} a {} road.",
                    n(houses),
                    roof.name,
                    near(rng),
                    road.word()
                ));
                s.push(format!("a {} road runs {} through the residential area.", road.word(), road.adverb()));
                s.push(format!("the {homes} with {} roofs are {layout} along the road.", roof.name));
                if pool {
                    s.push(format!("a blue swimming pool is {} the {} houses.", near(rng), roof.name));
                } else {
                    s.push(format!("many {} houses and green trees form a quiet neighbourhood.", roof.name));
                }
            }
            Scene::ParkingLot { cars, car, side, trees } => {
                let lot = pick(rng, &["parking lot", "car park"]);
                s.push(format!("{} cars are parked in the {lot}.", n(cars)));
                s.push(format!("most of the {} cars in the {lot} are {}.", n(cars), car.name));
                s.push(format!("a {lot} with {} cars is on the {} side of the road.", car.name, side.word()));
                s.push(format!("the {lot} lies to the {} of a gray road.", side.word()));
                s.push(format!("{} {} vehicles are parked in rows.", n(cars), car.name));
                if trees {
                    s.push(format!("some green trees grow {} the {lot}.", near(rng)));
                } else {
                    s.push(format!("there are no trees around the {lot}.",));
                }
            }
            Scene::Harbour { boats, boat, water, piers } => {
                let port = pick(rng, &["harbour", "port"]);
                s.push(format!(
                    "{} {} {} are moored in the {port}.",
                    n(boats),
                    boat.name,
                    plural(boats, "boat", "boats")
                ));
                s.push(format!("the water of the {port} is on the {} side.", water.word()));
                s.push(format!("{} {} stretch into the water.", n(piers), plural(piers, "pier", "piers")));
                s.push(format!(
                    "{} {} {} are docked {} the {}.",
                    n(boats),
                    boat.name,
                    plural(boats, "ship", "ships"),
                    near(rng),
                    plural(piers, "pier", "piers")
                ));
                s.push(format!("a {port} with {} piers and blue water on the {}.", n(piers), water.word()));
                s.push(format!("several {} boats float in the dark blue water.", boat.name));
            }
            Scene::BaseballField { fields, trees, buildings } => {
                let diamond = plural(fields, "baseball field", "baseball fields");
                s.push(format!("{} {diamond} with brown infields.", n(fields)));
                s.push(format!(
                    "there {} {} {diamond} on the green lawn.",
                    if fields == 1 { "is" } else { "are" },
                    n(fields)
                ));
                s.push(format!(
                    "the {diamond} {} surrounded by {}.",
                    if fields == 1 { "is" } else { "are" },
                    if trees { "green trees" } else { "green grass" }
                ));
                if buildings {
                    s.push(format!("some white buildings stand {} the {diamond}.", near(rng)));
                    s.push(format!("{} {diamond} and several buildings.", n(fields)));
                } else {
                    s.push(format!("no buildings are {} the {diamond}.", near(rng)));
                    s.push(format!("{} {diamond} in an open green area.", n(fields)));
                }
                s.push(format!(
                    "a {} fan shaped field for playing baseball.",
                    if fields == 1 { "single" } else { "pair of" }
                ));
            }
            Scene::Airport { planes, runway, terminal } => {
                let aircraft = plural(planes, "plane", "planes");
                s.push(format!(
                    "{} white {aircraft} {} near the terminal.",
                    n(planes),
                    if planes == 1 { "is" } else { "are" }
                ));
                s.push(format!("a {} runway crosses the airport.", runway.word()));
                s.push(format!("the terminal building is on the {} of the runway.", terminal.word()));
                s.push(format!("{} {aircraft} and a long {} runway.", n(planes), runway.word()));
                s.push(format!("an airport with a gray runway running {}.", runway.adverb()));
                s.push(format!(
                    "{} {} wait beside the terminal on the {}.",
                    n(planes),
                    plural(planes, "airplane", "airplanes"),
                    terminal.word()
                ));
            }
            Scene::Forest { river, road, clearing } => {
                let woods = pick(rng, &["forest", "woods"]);
                s.push(format!("dense green trees cover the {woods}."));
                s.push(match road {
                    Some(o) => format!("a {} road cuts through the dense {woods}.", o.word()),
                    None => format!("no road crosses the {woods}."),
                });
                s.push(if river {
                    format!("a narrow river winds through the {woods}.")
                } else {
                    format!("there is no water in the dark green {woods}.")
                });
                s.push(if clearing {
                    format!("a bare clearing lies in the middle of the {woods}.")
                } else {
                    format!("the {woods} has no open land in the middle.")
                });
                s.push(format!("many dark green trees grow closely together in the {woods}."));
                s.push(format!("a large {woods}{}.", if river { " with a river" } else { "" }));
            }
            Scene::River { flow, bridges, sandy, boats } => {
                let banks = if sandy { "sandy" } else { "green" };
                s.push(format!("a river flows {} through the scene.", flow.adverb()));
                s.push(format!("the {} river has {banks} banks.", flow.word()));
                s.push(if bridges == 0 {
                    "no bridge crosses the river.".to_owned()
                } else {
                    format!("{} {} across the river.", n(bridges), plural(bridges, "bridge spans", "bridges span"))
                });
                s.push(format!(
                    "a {} river with {} {} and {banks} banks.",
                    flow.word(),
                    n(bridges),
                    plural(bridges, "bridge", "bridges")
                ));
                s.push(if boats == 0 {
                    "there are no boats on the water.".to_owned()
                } else {
                    format!("{} small {} on the river.", n(boats), plural(boats, "boat floats", "boats float"))
                });
                s.push(format!("the river is lined with {banks} land on both sides."));
            }
            Scene::StorageTanks { tanks, tank, in_rows } => {
                let layout = if in_rows { "arranged in rows" } else { "scattered around" };
                s.push(format!("{} {} storage tanks are {layout}.", n(tanks), tank.name));
                s.push(format!("there are {} round {} tanks on the gray ground.", n(tanks), tank.name));
                s.push(format!("{} cylindrical {} tanks in an industrial area.", n(tanks), tank.name));
                s.push(format!("the {} oil tanks are {layout}.", tank.name));
                s.push(format!("some {} storage tanks stand {} a road.", tank.name, near(rng)));
                s.push(format!("{} {} circles are storage tanks.", n(tanks), tank.name));
            }
            Scene::TennisCourts { courts, court, trees } => {
                let c = plural(courts, "tennis court", "tennis courts");
                s.push(format!("{} {} {c} are side by side.", n(courts), court.name));
                s.push(format!("there {} {} {} {c}.", if courts == 1 { "is" } else { "are" }, n(courts), court.name));
                s.push(format!(
                    "the {} {c} {} surrounded by {}.",
                    court.name,
                    if courts == 1 { "is" } else { "are" },
                    if trees { "trees" } else { "a gray road" }
                ));
                s.push(format!("{} {} {c} with white lines.", n(courts), court.name));
                s.push(format!("some {} courts {} a road.", court.name, near(rng)));
                s.push(format!("{} {c} for playing tennis.", n(courts)));
            }
        }
        s
    }

    /// 1-5 keywords: the class and the salient objects.
    fn keywords(&self) -> Vec<String> {
        let mut k: Vec<String> = match *self {
            Scene::Farmland { crop, farmhouse, road, .. } => {
                let mut k = vec!["farmland".to_owned(), format!("{} field", crop.name)];
                if farmhouse.is_some() {
                    k.push("farmhouse".into());
                }
                if road.is_some() {
                    k.push("road".into());
                }
                k
            }
            Scene::Residential { roof, pool, .. } => {
                let mut k = vec!["residential".to_owned(), format!("{} roof", roof.name), "road".into()];
                if pool {
                    k.push("swimming pool".into());
                }
                k
            }
            Scene::ParkingLot { car, trees, .. } => {
                let mut k = vec!["parking lot".to_owned(), format!("{} car", car.name)];
                if trees {
                    k.push("trees".into());
                }
                k
            }
            Scene::Harbour { boat, .. } => vec!["port".to_owned(), format!("{} boat", boat.name), "pier".into()],
            Scene::BaseballField { trees, buildings, .. } => {
                let mut k = vec!["baseball field".to_owned()];
                if trees {
                    k.push("trees".into());
                }
                if buildings {
                    k.push("buildings".into());
                }
                k
            }
            Scene::Airport { .. } => vec!["airport".to_owned(), "plane".into(), "runway".into()],
            Scene::Forest { river, road, .. } => {
                let mut k = vec!["forest".to_owned()];
                if river {
                    k.push("river".into());
                }
                if road.is_some() {
                    k.push("road".into());
                }
                k
            }
            Scene::River { bridges, boats, .. } => {
                let mut k = vec!["river".to_owned()];
                if bridges > 0 {
                    k.push("bridge".into());
                }
                if boats > 0 {
                    k.push("boat".into());
                }
                k
            }
            Scene::StorageTanks { tank, .. } => vec!["storage tanks".to_owned(), format!("{} tank", tank.name)],
            Scene::TennisCourts { court, trees, .. } => {
                let mut k = vec!["tennis court".to_owned(), format!("{} court", court.name)];
                if trees {
                    k.push("trees".into());
                }
                k
            }
        };
        k.truncate(5);
        k
    }
}

/// A canvas in unit coordinates (0..1) over an RGB image.
struct Canvas {
    image: RgbImage,
    size: f32,
}

impl Canvas {
    fn new(size: u32, ground: [u8; 3], rng: &mut ChaCha8Rng, grain: f32) -> Canvas {
        let mut image = RgbImage::new(size, size);
        for p in image.pixels_mut() {
            let noise = (rng::uniform(rng, -1.0, 1.0) as f32) * grain;
            *p = Rgb(ground.map(|c| (c as f32 + noise).clamp(0.0, 255.0) as u8));
        }
        Canvas { image, size: size as f32 }
    }

    fn px(&self, v: f32) -> i64 {
        (v * self.size).round() as i64
    }

    fn put(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.image.width() && (y as u32) < self.image.height() {
            self.image.put_pixel(x as u32, y as u32, Rgb(rgb));
        }
    }

    /// Axis-aligned rectangle from (x0, y0) to (x1, y1), unit coordinates.
    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, rgb: [u8; 3]) {
        for y in self.px(y0.min(y1))..self.px(y0.max(y1)).max(self.px(y0.min(y1)) + 1) {
            for x in self.px(x0.min(x1))..self.px(x0.max(x1)).max(self.px(x0.min(x1)) + 1) {
                self.put(x, y, rgb);
            }
        }
    }

    fn disc(&mut self, cx: f32, cy: f32, r: f32, rgb: [u8; 3]) {
        let (c_x, c_y, r_px) = (cx * self.size, cy * self.size, (r * self.size).max(0.8));
        for y in (c_y - r_px).floor() as i64..=(c_y + r_px).ceil() as i64 {
            for x in (c_x - r_px).floor() as i64..=(c_x + r_px).ceil() as i64 {
                let (dx, dy) = (x as f32 + 0.5 - c_x, y as f32 + 0.5 - c_y);
                if dx * dx + dy * dy <= r_px * r_px {
                    self.put(x, y, rgb);
                }
            }
        }
    }

    /// A band of width `w` along the segment (x0, y0)-(x1, y1).
    fn band(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, w: f32, rgb: [u8; 3]) {
        let s = self.size;
        let (ax, ay, bx, by) = (x0 * s, y0 * s, x1 * s, y1 * s);
        let half = (w * s / 2.0).max(0.7);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(1e-6);
        for y in 0..self.image.height() as i64 {
            for x in 0..self.image.width() as i64 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0);
                let (qx, qy) = (ax + t * dx - px, ay + t * dy - py);
                if qx * qx + qy * qy <= half * half {
                    self.put(x, y, rgb);
                }
            }
        }
    }

    fn road(&mut self, o: Orientation, at: f32, w: f32, rgb: [u8; 3]) {
        match o {
            Orientation::Horizontal => self.band(0.0, at, 1.0, at, w, rgb),
            Orientation::Vertical => self.band(at, 0.0, at, 1.0, w, rgb),
            Orientation::Diagonal => self.band(0.0, 1.0 - at + 0.5, 1.0, 0.5 - at, w, rgb),
        }
    }

    fn trees(&mut self, rng: &mut ChaCha8Rng, n: usize, area: [f32; 4], r: f32) {
        for _ in 0..n {
            let x = rng::uniform(rng, area[0] as f64, area[2] as f64) as f32;
            let y = rng::uniform(rng, area[1] as f64, area[3] as f64) as f32;
            let shade = 40 + below(rng, 40) as u8;
            self.disc(x, y, r, [shade / 2, shade + 50, shade / 2]);
        }
    }
}

/// Jitters a colour a little so objects of one colour are not identical.
fn jitter(rng: &mut ChaCha8Rng, c: Colour) -> [u8; 3] {
    let d = below(rng, 21) as i16 - 10;
    c.rgb.map(|v| (v as i16 + d).clamp(0, 255) as u8)
}

/// Region of the side `side` of width `w` (unit coordinates x0, y0, x1, y1).
fn side_region(side: Side, w: f32) -> [f32; 4] {
    match side {
        Side::Left => [0.0, 0.0, w, 1.0],
        Side::Right => [1.0 - w, 0.0, 1.0, 1.0],
        Side::Top => [0.0, 0.0, 1.0, w],
        Side::Bottom => [0.0, 1.0 - w, 1.0, 1.0],
    }
}

fn render(scene: &Scene, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let road_rgb = [110, 110, 108];
    let grass = [86, 136, 70];
    match *scene {
        Scene::Farmland { fields, crop, farmhouse, road } => {
            let mut c = Canvas::new(size, [120, 110, 80], rng, 6.0);
            let cols = fields.div_ceil(2);
            let rows = if fields > 1 { 2 } else { 1 };
            for i in 0..fields {
                let (col, row) = (i % cols, i / cols);
                let (w, h) = (1.0 / cols as f32, 1.0 / rows as f32);
                let x0 = col as f32 * w + 0.02;
                let y0 = row as f32 * h + 0.02;
                let colour = jitter(rng, crop);
                c.rect(x0, y0, x0 + w - 0.04, y0 + h - 0.04, colour);
                for s in 0..6 {
                    let y = y0 + (s as f32 + 0.5) * (h - 0.04) / 6.0;
                    c.band(x0, y, x0 + w - 0.04, y, 0.01, colour.map(|v| v.saturating_sub(25)));
                }
            }
            if let Some(o) = road {
                c.road(o, 0.5, 0.05, road_rgb);
            }
            if let Some(side) = farmhouse {
                let r = side_region(side, 0.18);
                let (cx, cy) = ((r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0);
                c.rect(cx - 0.06, cy - 0.05, cx + 0.06, cy + 0.05, RED.rgb);
            }
            c.image
        }
        Scene::Residential { houses, roof, in_rows, pool, road } => {
            let mut c = Canvas::new(size, grass, rng, 10.0);
            c.road(road, 0.5, 0.08, road_rgb);
            for i in 0..houses {
                let (x, y) = if in_rows {
                    let side = if i % 2 == 0 { 0.25 } else { 0.75 };
                    let along = 0.1 + (i / 2) as f32 * 0.8 / (houses.div_ceil(2) as f32);
                    match road {
                        Orientation::Vertical => (side, along + 0.05),
                        _ => (along + 0.05, side),
                    }
                } else {
                    let along = rng::uniform(rng, 0.1, 0.85) as f32;
                    let off =
                        if i % 2 == 0 { rng::uniform(rng, 0.1, 0.32) } else { rng::uniform(rng, 0.68, 0.9) } as f32;
                    match road {
                        Orientation::Vertical => (off, along),
                        _ => (along, off),
                    }
                };
                c.rect(x - 0.05, y - 0.05, x + 0.05, y + 0.05, jitter(rng, roof));
            }
            if pool {
                let (x, y) = match road {
                    Orientation::Vertical => (0.9, 0.9),
                    _ => (0.9, 0.08),
                };
                c.rect(x - 0.05, y - 0.03, x + 0.05, y + 0.03, [70, 170, 220]);
            }
            c.trees(rng, 6, [0.0, 0.0, 1.0, 1.0], 0.02);
            c.image
        }
        Scene::ParkingLot { cars, car, side, trees } => {
            let mut c = Canvas::new(size, grass, rng, 8.0);
            let lot_x = if side == Side::Left { 0.05 } else { 0.55 };
            c.band(0.5, 0.0, 0.5, 1.0, 0.08, road_rgb);
            c.rect(lot_x, 0.1, lot_x + 0.4, 0.9, [150, 150, 146]);
            for i in 0..cars {
                let (col, row) = (i % 3, i / 3);
                let x = lot_x + 0.07 + col as f32 * 0.13;
                let y = 0.15 + row as f32 * 0.18;
                let base = if below(rng, 5) == 0 { pick(rng, &[WHITE, RED, BLUE, BLACK]) } else { car };
                let colour = jitter(rng, base);
                c.rect(x - 0.03, y - 0.05, x + 0.03, y + 0.05, colour);
            }
            if trees {
                let other = if side == Side::Left { [0.58, 0.0, 1.0, 1.0] } else { [0.0, 0.0, 0.42, 1.0] };
                c.trees(rng, 14, other, 0.035);
            }
            c.image
        }
        Scene::Harbour { boats, boat, water, piers } => {
            let mut c = Canvas::new(size, [150, 140, 120], rng, 8.0);
            let w = side_region(water, 0.6);
            c.rect(w[0], w[1], w[2], w[3], [30, 60, 110]);
            let vertical = matches!(water, Side::Left | Side::Right);
            for p in 0..piers {
                let at = (p as f32 + 1.0) / (piers as f32 + 1.0);
                if vertical {
                    c.rect(w[0], at - 0.02, w[2], at + 0.02, [170, 160, 140]);
                } else {
                    c.rect(at - 0.02, w[1], at + 0.02, w[3], [170, 160, 140]);
                }
            }
            for _ in 0..boats {
                let x = rng::uniform(rng, (w[0] + 0.05) as f64, (w[2] - 0.05) as f64) as f32;
                let y = rng::uniform(rng, (w[1] + 0.05) as f64, (w[3] - 0.05) as f64) as f32;
                let (hw, hh) = if vertical { (0.06, 0.02) } else { (0.02, 0.06) };
                c.rect(x - hw, y - hh, x + hw, y + hh, jitter(rng, boat));
            }
            c.image
        }
        Scene::BaseballField { fields, trees, buildings } => {
            let mut c = Canvas::new(size, grass, rng, 8.0);
            for f in 0..fields {
                let cx = if fields == 1 { 0.5 } else { 0.28 + 0.44 * f as f32 };
                c.disc(cx, 0.55, 0.2, [100, 170, 80]);
                c.disc(cx, 0.62, 0.09, [170, 120, 80]);
                c.rect(cx - 0.02, 0.6, cx + 0.02, 0.64, WHITE.rgb);
            }
            if trees {
                c.trees(rng, 16, [0.0, 0.0, 1.0, 0.25], 0.035);
            }
            if buildings {
                for i in 0..3 {
                    let x = 0.15 + i as f32 * 0.35;
                    c.rect(x - 0.07, 0.88, x + 0.07, 0.98, jitter(rng, WHITE));
                }
            }
            c.image
        }
        Scene::Airport { planes, runway, terminal } => {
            let mut c = Canvas::new(size, [150, 160, 120], rng, 6.0);
            c.road(runway, 0.5, 0.12, [90, 90, 92]);
            let tx = if terminal == Side::Left { 0.1 } else { 0.9 };
            c.rect(tx - 0.07, 0.1, tx + 0.07, 0.9, [200, 200, 205]);
            for i in 0..planes {
                let y = 0.18 + i as f32 * 0.16;
                let x = if terminal == Side::Left { 0.26 } else { 0.74 };
                c.rect(x - 0.06, y - 0.012, x + 0.06, y + 0.012, WHITE.rgb);
                c.rect(x - 0.012, y - 0.05, x + 0.012, y + 0.05, WHITE.rgb);
            }
            c.image
        }
        Scene::Forest { river, road, clearing } => {
            let mut c = Canvas::new(size, [40, 90, 40], rng, 14.0);
            c.trees(rng, (size as usize / 4).max(40), [0.0, 0.0, 1.0, 1.0], 0.04);
            if clearing {
                c.disc(0.5, 0.5, 0.15, [150, 130, 90]);
            }
            if river {
                c.band(0.0, 0.2, 1.0, 0.8, 0.05, [40, 70, 120]);
            }
            if let Some(o) = road {
                c.road(o, 0.3, 0.04, [140, 120, 90]);
            }
            c.image
        }
        Scene::River { flow, bridges, sandy, boats } => {
            let bank = if sandy { [200, 180, 130] } else { grass };
            let mut c = Canvas::new(size, bank, rng, 8.0);
            c.road(flow, 0.5, 0.25, [40, 70, 120]);
            for b in 0..bridges {
                let at = (b as f32 + 1.0) / (bridges as f32 + 1.0);
                match flow {
                    Orientation::Horizontal => c.band(at, 0.3, at, 0.7, 0.03, [170, 170, 165]),
                    Orientation::Vertical => c.band(0.3, at, 0.7, at, 0.03, [170, 170, 165]),
                    Orientation::Diagonal => c.band(at - 0.15, at - 0.15, at + 0.15, at + 0.15, 0.03, [170, 170, 165]),
                }
            }
            for i in 0..boats {
                let t = (i as f32 + 0.5) / boats as f32;
                let (x, y) = match flow {
                    Orientation::Horizontal => (t, 0.5),
                    Orientation::Vertical => (0.5, t),
                    Orientation::Diagonal => (t, 1.0 - t),
                };
                c.disc(x, y, 0.025, WHITE.rgb);
            }
            c.image
        }
        Scene::StorageTanks { tanks, tank, in_rows } => {
            let mut c = Canvas::new(size, [140, 138, 130], rng, 6.0);
            for i in 0..tanks {
                let (x, y) = if in_rows {
                    (0.18 + (i % 3) as f32 * 0.32, 0.18 + (i / 3) as f32 * 0.32)
                } else {
                    (rng::uniform(rng, 0.12, 0.88) as f32, rng::uniform(rng, 0.12, 0.88) as f32)
                };
                let colour = jitter(rng, tank);
                c.disc(x, y, 0.11, colour);
                c.disc(x, y, 0.03, colour.map(|v| v.saturating_sub(40)));
            }
            c.image
        }
        Scene::TennisCourts { courts, court, trees } => {
            let mut c = Canvas::new(size, [120, 120, 118], rng, 6.0);
            for i in 0..courts {
                let x = 0.1 + i as f32 * 0.22;
                c.rect(x, 0.25, x + 0.18, 0.75, jitter(rng, court));
                c.band(x, 0.5, x + 0.18, 0.5, 0.01, WHITE.rgb);
                c.band(x + 0.02, 0.27, x + 0.02, 0.73, 0.006, WHITE.rgb);
                c.band(x + 0.16, 0.27, x + 0.16, 0.73, 0.006, WHITE.rgb);
            }
            if trees {
                c.trees(rng, 12, [0.0, 0.82, 1.0, 1.0], 0.04);
                c.trees(rng, 12, [0.0, 0.0, 1.0, 0.18], 0.04);
            }
            c.image
        }
    }
}

/// Five different captions for a scene, in random order.
fn captions(scene: &Scene, rng: &mut ChaCha8Rng) -> Vec<String> {
    let mut candidates = scene.sentences(rng);
    candidates.dedup();
    rng::shuffle(rng, &mut candidates);
    let mut out: Vec<String> = Vec::with_capacity(CAPTIONS_PER_IMAGE);
    for c in candidates {
        if !out.contains(&c) {
            out.push(c);
        }
        if out.len() == CAPTIONS_PER_IMAGE {
            break;
        }
    }
    assert_eq!(out.len(), CAPTIONS_PER_IMAGE, "every scene has at least five sentences");
    out.into_iter().enumerate().map(|(i, c)| if i % 2 == 0 { capitalize(&c) } else { c }).collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|f| f.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Writes a complete precomp dataset to `out`: `train_*` (one file name per image) and
/// `test_*` (one file name per caption, like RSITMD's test split; a fifth of the images), keywords,
/// and `images/`.
pub fn write_dataset(out: &Path, config: SynthConfig) -> Result<SynthSummary> {
    if config.images < 10 {
        bail!("--images {}: at least 10 images are needed (one per class)", config.images);
    }
    if !(32..=1024).contains(&config.size) {
        bail!("--size {}: expected 32..=1024 pixels", config.size);
    }
    let image_dir = out.join("images");
    std::fs::create_dir_all(&image_dir).with_context(|| format!("cannot create {}", image_dir.display()))?;
    let mut summary = SynthSummary::default();
    let mut text: [[String; 3]; 2] = Default::default();
    let progress = crate::report::progress(config.images as u64, "synthesising images");
    let mut written = std::collections::HashSet::new();
    for i in 0..config.images {
        let mut rng = rng::stream(config.seed, &[rng::tag::SYNTH, i as u64]);
        let class = i % CLASSES.len();
        let scene = Scene::sample(class, &mut rng);
        let image = render(&scene, config.size, &mut rng);
        let ext = match config.format {
            SynthFormat::Mixed => ["tif", "jpg", "png"][i % 3],
            SynthFormat::Tif => "tif",
            SynthFormat::Jpg => "jpg",
            SynthFormat::Png => "png",
        };
        let name = format!("{}_{i}.{ext}", CLASSES[class]);
        let format = match ext {
            "tif" => ImageFormat::Tiff,
            "jpg" => ImageFormat::Jpeg,
            _ => ImageFormat::Png,
        };
        let path = image_dir.join(&name);
        written.insert(name.clone());
        write_atomic_with(&path, |file| {
            let mut writer = std::io::BufWriter::new(file);
            image.write_to(&mut writer, format)?;
            Ok(())
        })?;
        let caps = captions(&scene, &mut rng);
        let keywords = scene.keywords();
        // Two images of each block of ten go to the test split, a different pair of classes in
        // each block, so every class is in both splits.
        let split = usize::from(i % 5 == (i / CLASSES.len()) % 5);
        let [caps_text, names_text, keywords_text] = &mut text[split];
        for c in &caps {
            caps_text.push_str(c);
            caps_text.push('\n');
            summary.caption_words += c.split_whitespace().count();
            if split == 1 {
                names_text.push_str(&name);
                names_text.push('\n');
            }
        }
        if split == 0 {
            names_text.push_str(&name);
            names_text.push('\n');
        }
        keywords_text.push_str(&keywords.join(","));
        keywords_text.push('\n');
        summary.per_class.entry(CLASSES[class]).or_default()[split] += 1;
        *summary.per_format.entry(ext).or_default() += 1;
        summary.captions[split] += caps.len();
        summary.keywords += keywords.len();
        progress.inc(1);
    }
    progress.finish_and_clear();
    remove_stale_images(&image_dir, &written)?;
    for (split, [caps, names, keywords]) in ["train", "test"].iter().zip(&text) {
        write_atomic(&out.join(format!("{split}_caps.txt")), caps.as_bytes())?;
        write_atomic(&out.join(format!("{split}_filename.txt")), names.as_bytes())?;
        write_atomic(&out.join(format!("{split}_keywords.txt")), keywords.as_bytes())?;
    }
    Ok(summary)
}

/// Removes images an earlier `synth` run left in `dir`: files named like `<class>_<n>.<ext>`
/// that this run did not write. Other files are left alone.
fn remove_stale_images(dir: &Path, written: &std::collections::HashSet<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|s| s.to_str()) else { continue };
        let Some((stem, ext)) = name.rsplit_once('.') else { continue };
        let Some((class, n)) = stem.rsplit_once('_') else { continue };
        let synth_like = matches!(ext, "tif" | "jpg" | "png") && CLASSES.contains(&class) && n.parse::<usize>().is_ok();
        if synth_like && !written.contains(name) {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_five_distinct_captions_and_keywords() {
        for class in 0..CLASSES.len() {
            for seed in 0..20 {
                let mut rng = rng::stream(seed, &[class as u64]);
                let scene = Scene::sample(class, &mut rng);
                let caps = captions(&scene, &mut rng);
                let mut sorted = caps.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), 5, "{scene:?}");
                let k = scene.keywords();
                assert!((1..=5).contains(&k.len()), "{k:?}");
            }
        }
    }

    #[test]
    fn same_class_images_get_different_descriptions() {
        let mut rng = rng::stream(1, &[]);
        let a = Scene::sample(1, &mut rng);
        let b = (0..10).map(|_| Scene::sample(1, &mut rng)).find(|s| s != &a).expect("attributes vary");
        let mut r = rng::stream(2, &[]);
        assert_ne!(a.sentences(&mut r), b.sentences(&mut r));
    }
}
