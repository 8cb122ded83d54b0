//! The `airport` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// Airport scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Airport {
    planes: usize,
    runway: Orientation,
    terminal: Side,
}

impl Airport {
    pub fn sample(rng: &mut ChaCha8Rng) -> Airport {
        Airport {
            planes: range(rng, 1, 5),
            runway: pick(rng, &ORIENTATIONS),
            terminal: pick(rng, &[Side::Left, Side::Right]),
        }
    }
}

impl Scene for Airport {
    fn sentences(&self, _rng: &mut ChaCha8Rng) -> Vec<String> {
        let Airport { planes, runway, terminal } = *self;
        let mut sentences = Vec::new();
        let aircraft = plural(planes, "plane", "planes");
        sentences.push(format!(
            "{} white {aircraft} {} near the terminal.",
            number_word(planes),
            if planes == 1 { "is" } else { "are" }
        ));
        sentences.push(format!("a {} runway crosses the airport.", runway.word()));
        sentences.push(format!("the terminal building is on the {} of the runway.", terminal.word()));
        sentences.push(format!("{} {aircraft} and a long {} runway.", number_word(planes), runway.word()));
        sentences.push(format!("an airport with a gray runway running {}.", runway.adverb()));
        sentences.push(format!(
            "{} {} wait beside the terminal on the {}.",
            number_word(planes),
            plural(planes, "airplane", "airplanes"),
            terminal.word()
        ));

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let Airport { .. } = *self;
        vec!["airport".to_owned(), "plane".into(), "runway".into()]
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let Airport { planes, runway, terminal } = *self;
        let mut canvas = Canvas::new(size, [150, 160, 120], rng, 6.0);
        canvas.road(runway, 0.5, 0.12, [90, 90, 92]);
        let tx = if terminal == Side::Left { 0.1 } else { 0.9 };
        canvas.rect(tx - 0.07, 0.1, tx + 0.07, 0.9, [200, 200, 205]);
        for i in 0..planes {
            let y = 0.18 + i as f32 * 0.16;
            let x = if terminal == Side::Left { 0.26 } else { 0.74 };
            canvas.rect(x - 0.06, y - 0.012, x + 0.06, y + 0.012, WHITE.rgb);
            canvas.rect(x - 0.012, y - 0.05, x + 0.012, y + 0.05, WHITE.rgb);
        }
        canvas.image
    }
}
