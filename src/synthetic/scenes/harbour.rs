//! The `harbour` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// Harbour scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Harbour {
    boats: usize,
    boat: Colour,
    water: Side,
    piers: usize,
}

impl Harbour {
    pub fn sample(rng: &mut ChaCha8Rng) -> Harbour {
        Harbour {
            boats: range(rng, 1, 7),
            boat: pick(rng, &[WHITE, RED, YELLOW]),
            water: pick(rng, &SIDES),
            piers: range(rng, 1, 3),
        }
    }
}

impl Scene for Harbour {
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let Harbour { boats, boat, water, piers } = *self;
        let mut sentences = Vec::new();
        let port = pick(rng, &["harbour", "port"]);
        sentences.push(format!(
            "{} {} {} are moored in the {port}.",
            number_word(boats),
            boat.name,
            plural(boats, "boat", "boats")
        ));
        sentences.push(format!("the water of the {port} is on the {} side.", water.word()));
        sentences.push(format!("{} {} stretch into the water.", number_word(piers), plural(piers, "pier", "piers")));
        sentences.push(format!(
            "{} {} {} are docked {} the {}.",
            number_word(boats),
            boat.name,
            plural(boats, "ship", "ships"),
            near(rng),
            plural(piers, "pier", "piers")
        ));
        sentences.push(format!("a {port} with {} piers and blue water on the {}.", number_word(piers), water.word()));
        sentences.push(format!("several {} boats float in the dark blue water.", boat.name));

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let Harbour { boat, .. } = *self;
        vec!["port".to_owned(), format!("{} boat", boat.name), "pier".into()]
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let Harbour { boats, boat, water, piers } = *self;
        let mut canvas = Canvas::new(size, [150, 140, 120], rng, 8.0);
        let w = side_region(water, 0.6);
        canvas.rect(w[0], w[1], w[2], w[3], [30, 60, 110]);
        let vertical = matches!(water, Side::Left | Side::Right);
        for p in 0..piers {
            let at = (p as f32 + 1.0) / (piers as f32 + 1.0);
            if vertical {
                canvas.rect(w[0], at - 0.02, w[2], at + 0.02, [170, 160, 140]);
            } else {
                canvas.rect(at - 0.02, w[1], at + 0.02, w[3], [170, 160, 140]);
            }
        }
        for _ in 0..boats {
            let x = rng::uniform(rng, (w[0] + 0.05) as f64, (w[2] - 0.05) as f64) as f32;
            let y = rng::uniform(rng, (w[1] + 0.05) as f64, (w[3] - 0.05) as f64) as f32;
            let (hw, hh) = if vertical { (0.06, 0.02) } else { (0.02, 0.06) };
            canvas.rect(x - hw, y - hh, x + hw, y + hh, jitter(rng, boat));
        }
        canvas.image
    }
}
