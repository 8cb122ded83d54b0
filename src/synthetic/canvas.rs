//! Drawing for the synthetic scenes: colours, directions and sides that captions name, and a
//! canvas in unit coordinates (0..1) with the shapes the scene classes are drawn from.

use image::{Rgb, RgbImage};
use rand_chacha::ChaCha8Rng;

use crate::rng::{self, below};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Colour {
    pub name: &'static str,
    pub rgb: [u8; 3],
}

pub const RED: Colour = Colour { name: "red", rgb: [178, 44, 38] };
pub const WHITE: Colour = Colour { name: "white", rgb: [232, 232, 228] };
pub const GRAY: Colour = Colour { name: "gray", rgb: [128, 128, 124] };
pub const BLUE: Colour = Colour { name: "blue", rgb: [48, 92, 186] };
pub const GREEN: Colour = Colour { name: "green", rgb: [62, 140, 58] };
pub const YELLOW: Colour = Colour { name: "yellow", rgb: [214, 190, 70] };
pub const BROWN: Colour = Colour { name: "brown", rgb: [128, 92, 56] };
pub const BLACK: Colour = Colour { name: "black", rgb: [30, 30, 32] };

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Orientation {
    Horizontal,
    Vertical,
    Diagonal,
}

impl Orientation {
    pub fn word(self) -> &'static str {
        match self {
            Orientation::Horizontal => "horizontal",
            Orientation::Vertical => "vertical",
            Orientation::Diagonal => "diagonal",
        }
    }
    pub fn adverb(self) -> &'static str {
        match self {
            Orientation::Horizontal => "from left to right",
            Orientation::Vertical => "from top to bottom",
            Orientation::Diagonal => "diagonally",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Side {
    Left,
    Right,
    Top,
    Bottom,
}

impl Side {
    pub fn word(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
            Side::Top => "top",
            Side::Bottom => "bottom",
        }
    }
}

/// A canvas in unit coordinates (0..1) over an RGB image.
pub struct Canvas {
    pub image: RgbImage,
    size: f32,
}

impl Canvas {
    pub fn new(size: u32, ground: [u8; 3], rng: &mut ChaCha8Rng, grain: f32) -> Canvas {
        let mut image = RgbImage::new(size, size);
        for p in image.pixels_mut() {
            let noise = (rng::uniform(rng, -1.0, 1.0) as f32) * grain;
            *p = Rgb(ground.map(|c| (c as f32 + noise).clamp(0.0, 255.0) as u8));
        }
        Canvas { image, size: size as f32 }
    }

    fn px(&self, v: f32) -> i64 {
        (v * self.size).round() as i64
    }

    fn put(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.image.width() && (y as u32) < self.image.height() {
            self.image.put_pixel(x as u32, y as u32, Rgb(rgb));
        }
    }

    /// Axis-aligned rectangle from (x0, y0) to (x1, y1), unit coordinates.
    pub fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, rgb: [u8; 3]) {
        for y in self.px(y0.min(y1))..self.px(y0.max(y1)).max(self.px(y0.min(y1)) + 1) {
            for x in self.px(x0.min(x1))..self.px(x0.max(x1)).max(self.px(x0.min(x1)) + 1) {
                self.put(x, y, rgb);
            }
        }
    }

    pub fn disc(&mut self, cx: f32, cy: f32, r: f32, rgb: [u8; 3]) {
        let (c_x, c_y, r_px) = (cx * self.size, cy * self.size, (r * self.size).max(0.8));
        for y in (c_y - r_px).floor() as i64..=(c_y + r_px).ceil() as i64 {
            for x in (c_x - r_px).floor() as i64..=(c_x + r_px).ceil() as i64 {
                let (dx, dy) = (x as f32 + 0.5 - c_x, y as f32 + 0.5 - c_y);
                if dx * dx + dy * dy <= r_px * r_px {
                    self.put(x, y, rgb);
                }
            }
        }
    }

    /// A band of width `w` along the segment (x0, y0)-(x1, y1).
    pub fn band(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, w: f32, rgb: [u8; 3]) {
        let s = self.size;
        let (ax, ay, bx, by) = (x0 * s, y0 * s, x1 * s, y1 * s);
        let half = (w * s / 2.0).max(0.7);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(1e-6);
        for y in 0..self.image.height() as i64 {
            for x in 0..self.image.width() as i64 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0);
                let (qx, qy) = (ax + t * dx - px, ay + t * dy - py);
                if qx * qx + qy * qy <= half * half {
                    self.put(x, y, rgb);
                }
            }
        }
    }

    /// A road (or river) of width `w` across the whole image, at `at` across its direction.
    pub fn road(&mut self, orientation: Orientation, at: f32, w: f32, rgb: [u8; 3]) {
        match orientation {
            Orientation::Horizontal => self.band(0.0, at, 1.0, at, w, rgb),
            Orientation::Vertical => self.band(at, 0.0, at, 1.0, w, rgb),
            Orientation::Diagonal => self.band(0.0, 1.0 - at + 0.5, 1.0, 0.5 - at, w, rgb),
        }
    }

    pub fn trees(&mut self, rng: &mut ChaCha8Rng, n: usize, area: [f32; 4], r: f32) {
        for _ in 0..n {
            let x = rng::uniform(rng, area[0] as f64, area[2] as f64) as f32;
            let y = rng::uniform(rng, area[1] as f64, area[3] as f64) as f32;
            let shade = 40 + below(rng, 40) as u8;
            self.disc(x, y, r, [shade / 2, shade + 50, shade / 2]);
        }
    }
}

/// Jitters a colour a little so objects of one colour are not identical.
pub fn jitter(rng: &mut ChaCha8Rng, c: Colour) -> [u8; 3] {
    let offset = below(rng, 21) as i16 - 10;
    c.rgb.map(|v| (v as i16 + offset).clamp(0, 255) as u8)
}

/// Region of the side `side` of width `w` (unit coordinates x0, y0, x1, y1).
pub fn side_region(side: Side, w: f32) -> [f32; 4] {
    match side {
        Side::Left => [0.0, 0.0, w, 1.0],
        Side::Right => [1.0 - w, 0.0, 1.0, 1.0],
        Side::Top => [0.0, 0.0, 1.0, w],
        Side::Bottom => [0.0, 1.0 - w, 1.0, 1.0],
    }
}
