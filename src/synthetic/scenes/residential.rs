//! The `residential` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// Residential scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Residential {
    houses: usize,
    roof: Colour,
    in_rows: bool,
    pool: bool,
    road: Orientation,
}

impl Residential {
    pub fn sample(rng: &mut ChaCha8Rng) -> Residential {
        Residential {
            houses: range(rng, 2, 9),
            roof: pick(rng, &[RED, WHITE, GRAY, BLUE]),
            in_rows: chance(rng, 0.5),
            pool: chance(rng, 0.4),
            road: pick(rng, &ORIENTATIONS[..2]),
        }
    }
}

impl Scene for Residential {
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let Residential { houses, roof, in_rows, pool, road } = *self;
        let mut sentences = Vec::new();
        let homes = pick(rng, &["houses", "buildings", "homes"]);
        let layout = if in_rows { "arranged in neat rows" } else { "scattered irregularly" };
        sentences.push(format!("{} houses with {} roofs are {layout}.", number_word(houses), roof.name));
        sentences.push(format!("this residential area has {} {} {homes}.", number_word(houses), roof.name));
        sentences.push(format!(
            "{} {} roofed {homes} stand {} a {} road.",
            number_word(houses),
            roof.name,
            near(rng),
            road.word()
        ));
        sentences.push(format!("a {} road runs {} through the residential area.", road.word(), road.adverb()));
        sentences.push(format!("the {homes} with {} roofs are {layout} along the road.", roof.name));
        if pool {
            sentences.push(format!("a blue swimming pool is {} the {} houses.", near(rng), roof.name));
        } else {
            sentences.push(format!("many {} houses and green trees form a quiet neighbourhood.", roof.name));
        }

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let Residential { roof, pool, .. } = *self;
        let mut keywords = vec!["residential".to_owned(), format!("{} roof", roof.name), "road".into()];
        if pool {
            keywords.push("swimming pool".into());
        }
        keywords
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let Residential { houses, roof, in_rows, pool, road } = *self;
        let mut canvas = Canvas::new(size, GRASS, rng, 10.0);
        canvas.road(road, 0.5, 0.08, ROAD);
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
                let off = if i % 2 == 0 { rng::uniform(rng, 0.1, 0.32) } else { rng::uniform(rng, 0.68, 0.9) } as f32;
                match road {
                    Orientation::Vertical => (off, along),
                    _ => (along, off),
                }
            };
            canvas.rect(x - 0.05, y - 0.05, x + 0.05, y + 0.05, jitter(rng, roof));
        }
        if pool {
            let (x, y) = match road {
                Orientation::Vertical => (0.9, 0.9),
                _ => (0.9, 0.08),
            };
            canvas.rect(x - 0.05, y - 0.03, x + 0.05, y + 0.03, [70, 170, 220]);
        }
        canvas.trees(rng, 6, [0.0, 0.0, 1.0, 1.0], 0.02);
        canvas.image
    }
}
