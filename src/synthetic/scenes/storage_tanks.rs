//! The `storagetanks` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// StorageTanks scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StorageTanks {
    tanks: usize,
    tank: Colour,
    in_rows: bool,
}

impl StorageTanks {
    pub fn sample(rng: &mut ChaCha8Rng) -> StorageTanks {
        StorageTanks { tanks: range(rng, 2, 9), tank: pick(rng, &[WHITE, GRAY]), in_rows: chance(rng, 0.5) }
    }
}

impl Scene for StorageTanks {
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let StorageTanks { tanks, tank, in_rows } = *self;
        let mut sentences = Vec::new();
        let layout = if in_rows { "arranged in rows" } else { "scattered around" };
        sentences.push(format!("{} {} storage tanks are {layout}.", number_word(tanks), tank.name));
        sentences.push(format!("there are {} round {} tanks on the gray ground.", number_word(tanks), tank.name));
        sentences.push(format!("{} cylindrical {} tanks in an industrial area.", number_word(tanks), tank.name));
        sentences.push(format!("the {} oil tanks are {layout}.", tank.name));
        sentences.push(format!("some {} storage tanks stand {} a road.", tank.name, near(rng)));
        sentences.push(format!("{} {} circles are storage tanks.", number_word(tanks), tank.name));

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let StorageTanks { tank, .. } = *self;
        vec!["storage tanks".to_owned(), format!("{} tank", tank.name)]
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let StorageTanks { tanks, tank, in_rows } = *self;
        let mut canvas = Canvas::new(size, [140, 138, 130], rng, 6.0);
        for i in 0..tanks {
            let (x, y) = if in_rows {
                (0.18 + (i % 3) as f32 * 0.32, 0.18 + (i / 3) as f32 * 0.32)
            } else {
                (rng::uniform(rng, 0.12, 0.88) as f32, rng::uniform(rng, 0.12, 0.88) as f32)
            };
            let colour = jitter(rng, tank);
            canvas.disc(x, y, 0.11, colour);
            canvas.disc(x, y, 0.03, colour.map(|v| v.saturating_sub(40)));
        }
        canvas.image
    }
}
