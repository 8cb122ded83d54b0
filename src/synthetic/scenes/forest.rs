//! The `forest` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// Forest scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forest {
    river: bool,
    road: Option<Orientation>,
    clearing: bool,
}

impl Forest {
    pub fn sample(rng: &mut ChaCha8Rng) -> Forest {
        Forest {
            river: chance(rng, 0.4),
            road: chance(rng, 0.5).then(|| pick(rng, &ORIENTATIONS[..2])),
            clearing: chance(rng, 0.4),
        }
    }
}

impl Scene for Forest {
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let Forest { river, road, clearing } = *self;
        let mut sentences = Vec::new();
        let woods = pick(rng, &["forest", "woods"]);
        sentences.push(format!("dense green trees cover the {woods}."));
        sentences.push(match road {
            Some(orientation) => format!("a {} road cuts through the dense {woods}.", orientation.word()),
            None => format!("no road crosses the {woods}."),
        });
        sentences.push(if river {
            format!("a narrow river winds through the {woods}.")
        } else {
            format!("there is no water in the dark green {woods}.")
        });
        sentences.push(if clearing {
            format!("a bare clearing lies in the middle of the {woods}.")
        } else {
            format!("the {woods} has no open land in the middle.")
        });
        sentences.push(format!("many dark green trees grow closely together in the {woods}."));
        sentences.push(format!("a large {woods}{}.", if river { " with a river" } else { "" }));

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let Forest { river, road, .. } = *self;
        let mut keywords = vec!["forest".to_owned()];
        if river {
            keywords.push("river".into());
        }
        if road.is_some() {
            keywords.push("road".into());
        }
        keywords
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let Forest { river, road, clearing } = *self;
        let mut canvas = Canvas::new(size, [40, 90, 40], rng, 14.0);
        canvas.trees(rng, (size as usize / 4).max(40), [0.0, 0.0, 1.0, 1.0], 0.04);
        if clearing {
            canvas.disc(0.5, 0.5, 0.15, [150, 130, 90]);
        }
        if river {
            canvas.band(0.0, 0.2, 1.0, 0.8, 0.05, [40, 70, 120]);
        }
        if let Some(orientation) = road {
            canvas.road(orientation, 0.3, 0.04, [140, 120, 90]);
        }
        canvas.image
    }
}
