//! The `baseballfield` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// BaseballField scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaseballField {
    fields: usize,
    trees: bool,
    buildings: bool,
}

impl BaseballField {
    pub fn sample(rng: &mut ChaCha8Rng) -> BaseballField {
        BaseballField { fields: range(rng, 1, 2), trees: chance(rng, 0.5), buildings: chance(rng, 0.5) }
    }
}

impl Scene for BaseballField {
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let BaseballField { fields, trees, buildings } = *self;
        let mut sentences = Vec::new();
        let diamond = plural(fields, "baseball field", "baseball fields");
        sentences.push(format!("{} {diamond} with brown infields.", number_word(fields)));
        sentences.push(format!(
            "there {} {} {diamond} on the green lawn.",
            if fields == 1 { "is" } else { "are" },
            number_word(fields)
        ));
        sentences.push(format!(
            "the {diamond} {} surrounded by {}.",
            if fields == 1 { "is" } else { "are" },
            if trees { "green trees" } else { "green grass" }
        ));
        if buildings {
            sentences.push(format!("some white buildings stand {} the {diamond}.", near(rng)));
            sentences.push(format!("{} {diamond} and several buildings.", number_word(fields)));
        } else {
            sentences.push(format!("no buildings are {} the {diamond}.", near(rng)));
            sentences.push(format!("{} {diamond} in an open green area.", number_word(fields)));
        }
        sentences.push(format!(
            "a {} fan shaped field for playing baseball.",
            if fields == 1 { "single" } else { "pair of" }
        ));

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let BaseballField { trees, buildings, .. } = *self;
        let mut keywords = vec!["baseball field".to_owned()];
        if trees {
            keywords.push("trees".into());
        }
        if buildings {
            keywords.push("buildings".into());
        }
        keywords
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let BaseballField { fields, trees, buildings } = *self;
        let mut canvas = Canvas::new(size, GRASS, rng, 8.0);
        for f in 0..fields {
            let cx = if fields == 1 { 0.5 } else { 0.28 + 0.44 * f as f32 };
            canvas.disc(cx, 0.55, 0.2, [100, 170, 80]);
            canvas.disc(cx, 0.62, 0.09, [170, 120, 80]);
            canvas.rect(cx - 0.02, 0.6, cx + 0.02, 0.64, WHITE.rgb);
        }
        if trees {
            canvas.trees(rng, 16, [0.0, 0.0, 1.0, 0.25], 0.035);
        }
        if buildings {
            for i in 0..3 {
                let x = 0.15 + i as f32 * 0.35;
                canvas.rect(x - 0.07, 0.88, x + 0.07, 0.98, jitter(rng, WHITE));
            }
        }
        canvas.image
    }
}
