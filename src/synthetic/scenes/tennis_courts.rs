//! The `tenniscourt` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// TennisCourts scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TennisCourts {
    courts: usize,
    court: Colour,
    trees: bool,
}

impl TennisCourts {
    pub fn sample(rng: &mut ChaCha8Rng) -> TennisCourts {
        TennisCourts { courts: range(rng, 1, 4), court: pick(rng, &[GREEN, BLUE, RED]), trees: chance(rng, 0.5) }
    }
}

impl Scene for TennisCourts {
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let TennisCourts { courts, court, trees } = *self;
        let mut sentences = Vec::new();
        let court_words = plural(courts, "tennis court", "tennis courts");
        sentences.push(format!("{} {} {court_words} are side by side.", number_word(courts), court.name));
        sentences.push(format!(
            "there {} {} {} {court_words}.",
            if courts == 1 { "is" } else { "are" },
            number_word(courts),
            court.name
        ));
        sentences.push(format!(
            "the {} {court_words} {} surrounded by {}.",
            court.name,
            if courts == 1 { "is" } else { "are" },
            if trees { "trees" } else { "a gray road" }
        ));
        sentences.push(format!("{} {} {court_words} with white lines.", number_word(courts), court.name));
        sentences.push(format!("some {} courts {} a road.", court.name, near(rng)));
        sentences.push(format!("{} {court_words} for playing tennis.", number_word(courts)));

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let TennisCourts { court, trees, .. } = *self;
        let mut keywords = vec!["tennis court".to_owned(), format!("{} court", court.name)];
        if trees {
            keywords.push("trees".into());
        }
        keywords
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let TennisCourts { courts, court, trees } = *self;
        let mut canvas = Canvas::new(size, [120, 120, 118], rng, 6.0);
        for i in 0..courts {
            let x = 0.1 + i as f32 * 0.22;
            canvas.rect(x, 0.25, x + 0.18, 0.75, jitter(rng, court));
            canvas.band(x, 0.5, x + 0.18, 0.5, 0.01, WHITE.rgb);
            canvas.band(x + 0.02, 0.27, x + 0.02, 0.73, 0.006, WHITE.rgb);
            canvas.band(x + 0.16, 0.27, x + 0.16, 0.73, 0.006, WHITE.rgb);
        }
        if trees {
            canvas.trees(rng, 12, [0.0, 0.82, 1.0, 1.0], 0.04);
            canvas.trees(rng, 12, [0.0, 0.0, 1.0, 0.18], 0.04);
        }
        canvas.image
    }
}
