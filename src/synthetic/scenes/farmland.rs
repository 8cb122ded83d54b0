//! The `farmland` class.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::*;

/// Farmland scene attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Farmland {
    fields: usize,
    crop: Colour,
    farmhouse: Option<Side>,
    road: Option<Orientation>,
}

impl Farmland {
    pub fn sample(rng: &mut ChaCha8Rng) -> Farmland {
        Farmland {
            fields: range(rng, 2, 6),
            crop: pick(rng, &[GREEN, YELLOW, BROWN]),
            farmhouse: chance(rng, 0.5).then(|| pick(rng, &SIDES)),
            road: chance(rng, 0.5).then(|| pick(rng, &ORIENTATIONS[..2])),
        }
    }
}

impl Scene for Farmland {
    fn sentences(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let Farmland { fields, crop, farmhouse, road } = *self;
        let mut sentences = Vec::new();
        let land = pick(rng, &["farmland", "cropland", "agricultural land"]);
        sentences.push(format!("{} {} fields make up this {land}.", number_word(fields), crop.name));
        sentences.push(format!("the {land} is divided into {} {} plots.", number_word(fields), crop.name));
        sentences.push(format!("{} pieces of {} farmland lie side by side.", number_word(fields), crop.name));
        sentences.push(format!("many {} crops grow in {} neat fields.", crop.name, number_word(fields)));
        match farmhouse {
            Some(side) => {
                sentences.push(format!("a small farmhouse stands at the {} of the {} fields.", side.word(), crop.name));
                sentences.push(format!("there is a house on the {} side of the {land}.", side.word()));
            }
            None => sentences.push(format!("there are no buildings in the {} {land}.", crop.name)),
        }
        match road {
            Some(orientation) => {
                sentences.push(format!("a {} road crosses the {} fields.", orientation.word(), crop.name))
            }
            None => sentences.push(format!("no road passes through the {} fields.", crop.name)),
        }

        sentences
    }

    fn keywords(&self) -> Vec<String> {
        let Farmland { crop, farmhouse, road, .. } = *self;
        let mut keywords = vec!["farmland".to_owned(), format!("{} field", crop.name)];
        if farmhouse.is_some() {
            keywords.push("farmhouse".into());
        }
        if road.is_some() {
            keywords.push("road".into());
        }
        keywords
    }

    fn render(&self, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let Farmland { fields, crop, farmhouse, road } = *self;
        let mut canvas = Canvas::new(size, [120, 110, 80], rng, 6.0);
        let cols = fields.div_ceil(2);
        let rows = if fields > 1 { 2 } else { 1 };
        for i in 0..fields {
            let (col, row) = (i % cols, i / cols);
            let (w, h) = (1.0 / cols as f32, 1.0 / rows as f32);
            let x0 = col as f32 * w + 0.02;
            let y0 = row as f32 * h + 0.02;
            let colour = jitter(rng, crop);
            canvas.rect(x0, y0, x0 + w - 0.04, y0 + h - 0.04, colour);
            for stripe in 0..6 {
                let y = y0 + (stripe as f32 + 0.5) * (h - 0.04) / 6.0;
                canvas.band(x0, y, x0 + w - 0.04, y, 0.01, colour.map(|v| v.saturating_sub(25)));
            }
        }
        if let Some(orientation) = road {
            canvas.road(orientation, 0.5, 0.05, ROAD);
        }
        if let Some(side) = farmhouse {
            let r = side_region(side, 0.18);
            let (cx, cy) = ((r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0);
            canvas.rect(cx - 0.06, cy - 0.05, cx + 0.06, cy + 0.05, RED.rgb);
        }
        canvas.image
    }
}
