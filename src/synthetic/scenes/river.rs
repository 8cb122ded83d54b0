//! The `river` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// River scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct River {
    flow: Orientation,
    bridges: usize,
    sandy: bool,
    boats: usize,
}

impl River {
    pub fn sample(rng: &mut ChaCha8Rng) -> River {
        River {
            flow: pick(rng, &ORIENTATIONS),
            bridges: range(rng, 0, 3),
            sandy: chance(rng, 0.5),
            boats: range(rng, 0, 3),
        }
    }
}

impl Scene for River {
    fn sentences(&self, _rng: &mut ChaCha8Rng) -> Vec<String> {
        let River { flow, bridges, sandy, boats } = *self;
        let mut sentences = Vec::new();
        let banks = if sandy { "sandy" } else { "green" };
        sentences.push(format!("a river flows {} through the scene.", flow.adverb()));
        sentences.push(format!("the {} river has {banks} banks.", flow.word()));
        sentences.push(if bridges == 0 {
            "no bridge crosses the river.".to_owned()
        } else {
            format!("{} {} across the river.", number_word(bridges), plural(bridges, "bridge spans", "bridges span"))
        });
        sentences.push(format!(
            "a {} river with {} {} and {banks} banks.",
            flow.word(),
            number_word(bridges),
            plural(bridges, "bridge", "bridges")
        ));
        sentences.push(if boats == 0 {
            "there are no boats on the water.".to_owned()
        } else {
            format!("{} small {} on the river.", number_word(boats), plural(boats, "boat floats", "boats float"))
        });
        sentences.push(format!("the river is lined with {banks} land on both sides."));

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let River { bridges, boats, .. } = *self;
        let mut keywords = vec!["river".to_owned()];
        if bridges > 0 {
            keywords.push("bridge".into());
        }
        if boats > 0 {
            keywords.push("boat".into());
        }
        keywords
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let River { flow, bridges, sandy, boats } = *self;
        let bank = if sandy { [200, 180, 130] } else { GRASS };
        let mut canvas = Canvas::new(size, bank, rng, 8.0);
        canvas.road(flow, 0.5, 0.25, [40, 70, 120]);
        for b in 0..bridges {
            let at = (b as f32 + 1.0) / (bridges as f32 + 1.0);
            match flow {
                Orientation::Horizontal => canvas.band(at, 0.3, at, 0.7, 0.03, [170, 170, 165]),
                Orientation::Vertical => canvas.band(0.3, at, 0.7, at, 0.03, [170, 170, 165]),
                Orientation::Diagonal => canvas.band(at - 0.15, at - 0.15, at + 0.15, at + 0.15, 0.03, [170, 170, 165]),
            }
        }
        for i in 0..boats {
            let t = (i as f32 + 0.5) / boats as f32;
            let (x, y) = match flow {
                Orientation::Horizontal => (t, 0.5),
                Orientation::Vertical => (0.5, t),
                Orientation::Diagonal => (t, 1.0 - t),
            };
            canvas.disc(x, y, 0.025, WHITE.rgb);
        }
        canvas.image
    }
}
