//! The `parking` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// ParkingLot scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParkingLot {
    cars: usize,
    car: Colour,
    side: Side,
    trees: bool,
}

impl ParkingLot {
    pub fn sample(rng: &mut ChaCha8Rng) -> ParkingLot {
        ParkingLot {
            cars: range(rng, 3, 12),
            car: pick(rng, &[WHITE, RED, BLUE, BLACK]),
            side: pick(rng, &[Side::Left, Side::Right]),
            trees: chance(rng, 0.5),
        }
    }
}

impl Scene for ParkingLot {
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let ParkingLot { cars, car, side, trees } = *self;
        let mut sentences = Vec::new();
        let lot = pick(rng, &["parking lot", "car park"]);
        sentences.push(format!("{} cars are parked in the {lot}.", number_word(cars)));
        sentences.push(format!("most of the {} cars in the {lot} are {}.", number_word(cars), car.name));
        sentences.push(format!("a {lot} with {} cars is on the {} side of the road.", car.name, side.word()));
        sentences.push(format!("the {lot} lies to the {} of a gray road.", side.word()));
        sentences.push(format!("{} {} vehicles are parked in rows.", number_word(cars), car.name));
        if trees {
            sentences.push(format!("some green trees grow {} the {lot}.", near(rng)));
        } else {
            sentences.push(format!("there are no trees around the {lot}.",));
        }

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let ParkingLot { car, trees, .. } = *self;
        let mut keywords = vec!["parking lot".to_owned(), format!("{} car", car.name)];
        if trees {
            keywords.push("trees".into());
        }
        keywords
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let ParkingLot { cars, car, side, trees } = *self;
        let mut canvas = Canvas::new(size, GRASS, rng, 8.0);
        let lot_x = if side == Side::Left { 0.05 } else { 0.55 };
        canvas.band(0.5, 0.0, 0.5, 1.0, 0.08, ROAD);
        canvas.rect(lot_x, 0.1, lot_x + 0.4, 0.9, [150, 150, 146]);
        for i in 0..cars {
            let (col, row) = (i % 3, i / 3);
            let x = lot_x + 0.07 + col as f32 * 0.13;
            let y = 0.15 + row as f32 * 0.18;
            let base = if below(rng, 5) == 0 { pick(rng, &[WHITE, RED, BLUE, BLACK]) } else { car };
            let colour = jitter(rng, base);
            canvas.rect(x - 0.03, y - 0.05, x + 0.03, y + 0.05, colour);
        }
        if trees {
            let other = if side == Side::Left { [0.58, 0.0, 1.0, 1.0] } else { [0.0, 0.0, 0.42, 1.0] };
            canvas.trees(rng, 14, other, 0.035);
        }
        canvas.image
    }
}
