//! The scene classes of the synthetic set. Each class is one file: its attributes, how they are
//! sampled, the sentences and keywords that describe them, and how the scene is drawn. Adding a
//! class is adding its file and its line in [`CLASSES`].

mod airport;
mod baseball_field;
mod farmland;
mod forest;
mod harbour;
mod parking_lot;
mod residential;
mod river;
mod storage_tanks;
mod tennis_courts;

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

pub(super) use super::canvas::*;
use crate::rng::{self, below};

/// A sampled scene of one class.
pub trait Scene: std::fmt::Debug {
    /// Candidate sentences describing the scene (more than five, all different).
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String>;
    /// 1-5 keywords: the class and the salient objects.
    fn keywords(&self) -> Vec<String>;
    /// The scene as a `size` x `size` image.
    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage;
}

/// A scene class: its name (the prefix of its file names) and how a scene of it is sampled.
pub struct SceneClass {
    pub name: &'static str,
    pub sample: fn(&mut ChaCha8Rng) -> Box<dyn Scene>,
}

/// The classes, in the order images cycle through them.
pub const CLASSES: [SceneClass; 10] = [
    SceneClass { name: "farmland", sample: |rng| Box::new(farmland::Farmland::sample(rng)) },
    SceneClass { name: "residential", sample: |rng| Box::new(residential::Residential::sample(rng)) },
    SceneClass { name: "parking", sample: |rng| Box::new(parking_lot::ParkingLot::sample(rng)) },
    SceneClass { name: "harbour", sample: |rng| Box::new(harbour::Harbour::sample(rng)) },
    SceneClass { name: "baseballfield", sample: |rng| Box::new(baseball_field::BaseballField::sample(rng)) },
    SceneClass { name: "airport", sample: |rng| Box::new(airport::Airport::sample(rng)) },
    SceneClass { name: "forest", sample: |rng| Box::new(forest::Forest::sample(rng)) },
    SceneClass { name: "river", sample: |rng| Box::new(river::River::sample(rng)) },
    SceneClass { name: "storagetanks", sample: |rng| Box::new(storage_tanks::StorageTanks::sample(rng)) },
    SceneClass { name: "tenniscourt", sample: |rng| Box::new(tennis_courts::TennisCourts::sample(rng)) },
];

/// Road and background colours shared by the classes.
const ROAD: [u8; 3] = [110, 110, 108];
const GRASS: [u8; 3] = [86, 136, 70];
const SIDES: [Side; 4] = [Side::Left, Side::Right, Side::Top, Side::Bottom];
const ORIENTATIONS: [Orientation; 3] = [Orientation::Horizontal, Orientation::Vertical, Orientation::Diagonal];
const NUMBERS: [&str; 13] =
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[below(rng, items.len())]
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng::uniform(rng, 0.0, 1.0) < p
}

/// A whole number in `lo..=hi`.
fn range(rng: &mut ChaCha8Rng, lo: usize, hi: usize) -> usize {
    lo + below(rng, hi - lo + 1)
}

/// "next to", "beside", ... at random.
fn near(rng: &mut ChaCha8Rng) -> &'static str {
    pick(rng, &["next to", "beside", "near", "close to"])
}

/// A count in words (twelve at most).
fn number_word(k: usize) -> &'static str {
    NUMBERS[k.min(12)]
}

/// `one` for a count of 1, else `many`.
fn plural(k: usize, one: &str, many: &str) -> String {
    if k == 1 {
        one.to_owned()
    } else {
        many.to_owned()
    }
}
