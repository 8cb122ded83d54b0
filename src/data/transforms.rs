//! Image transforms of the original `data.py`, computed like torchvision on PIL images:
//! train = resize (bilinear) → random rotation → random crop → to float → normalize;
//! eval = resize → to float → normalize.
//!
//! The resize reproduces Pillow's two-pass fixed-point bilinear resampling and the rotation
//! Pillow's nearest-neighbour affine transform, so outputs equal torchvision's bit for bit on
//! the same decoded pixels. The same integer arithmetic also runs on batches of tensors
//! ([`apply_on`]), so a CUDA model transforms its batches on the device with the host's values.

use image::RgbImage;
use rand::Rng;
use tch::{Device, Kind, Tensor};

use crate::device::upload;
use crate::rng;

/// ImageNet channel means of `transforms.Normalize`.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations of `transforms.Normalize`.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Fixed-point precision of Pillow's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// What happens to a decoded image before it enters the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Resize to `resize`², rotate by a uniform angle in `rotation` degrees, crop `crop`² at a
    /// uniform position.
    Train { resize: u32, crop: u32, rotation: [f64; 2] },
    /// Resize to `size`².
    Eval { size: u32 },
}

impl Transform {
    /// Side of the square output.
    pub fn output_size(&self) -> u32 {
        match *self {
            Transform::Train { crop, .. } => crop,
            Transform::Eval { size } => size,
        }
    }

    /// Number of floats of one output image (`3 * size * size`).
    pub fn output_len(&self) -> usize {
        let s = self.output_size() as usize;
        3 * s * s
    }

    /// Side of the square resize the transform starts with.
    pub fn resize_size(&self) -> u32 {
        match *self {
            Transform::Train { resize, .. } => resize,
            Transform::Eval { size } => size,
        }
    }

    /// The random choices of one sample, drawn from `rng` in torchvision's order (the angle,
    /// then the crop's top and left); none for evaluation.
    pub fn draw(&self, rng: &mut impl Rng) -> Draw {
        match *self {
            Transform::Train { resize, crop, rotation } => {
                let angle =
                    if rotation[0] == rotation[1] { rotation[0] } else { rng::uniform(rng, rotation[0], rotation[1]) };
                let top = rng::below(rng, (resize - crop + 1) as usize) as u32;
                let left = rng::below(rng, (resize - crop + 1) as usize) as u32;
                Draw { angle, top, left }
            }
            Transform::Eval { .. } => Draw::default(),
        }
    }

    /// Transforms `image` into `out` (`[3, size, size]` normalized f32), drawing random choices
    /// from `rng`.
    pub fn apply(&self, image: &RgbImage, rng: &mut impl Rng, out: &mut [f32]) {
        self.apply_drawn(image, self.draw(rng), out);
    }

    /// [`Transform::apply`] with the random choices already drawn.
    pub fn apply_drawn(&self, image: &RgbImage, draw: Draw, out: &mut [f32]) {
        let resized = resize_bilinear(image, self.resize_size(), self.resize_size());
        if draw.angle.rem_euclid(360.0) == 0.0 {
            to_chw(&resized, draw.left, draw.top, self.output_size(), out);
        } else {
            to_chw(&rotate_nearest(&resized, draw.angle), draw.left, draw.top, self.output_size(), out);
        }
    }
}

/// The random choices of one training sample: the rotation in degrees (counter-clockwise) and
/// the crop's top-left corner in the resized image. All zero for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Draw {
    pub angle: f64,
    pub top: u32,
    pub left: u32,
}

/// The normalized value of each level in each channel: `(v / 255 − mean) / std` in f32, like
/// `ToTensor` + `Normalize`.
pub fn normalization_table() -> [[f32; 256]; 3] {
    let mut table = [[0f32; 256]; 3];
    for (c, row) in table.iter_mut().enumerate() {
        for (v, entry) in row.iter_mut().enumerate() {
            *entry = (v as f32 / 255.0 - MEAN[c]) / STD[c];
        }
    }
    table
}

/// Writes the `side`² window at (`left`, `top`) of `image` as `[3, side, side]` normalized f32.
pub fn to_chw(image: &RgbImage, left: u32, top: u32, side: u32, out: &mut [f32]) {
    let side = side as usize;
    assert_eq!(out.len(), 3 * side * side, "output buffer of a {side}x{side} image");
    let width = image.width() as usize;
    let raw = image.as_raw();
    let table = normalization_table();
    let plane = side * side;
    for y in 0..side {
        let row = &raw[((top as usize + y) * width + left as usize) * 3..][..side * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let o = y * side + x;
            out[o] = table[0][px[0] as usize];
            out[plane + o] = table[1][px[1] as usize];
            out[2 * plane + o] = table[2][px[2] as usize];
        }
    }
}

/// u8 levels `[B, 3, S, S]` normalized where they are by looking up [`normalization_table`],
/// so the values equal the host path's bit for bit on any device.
fn normalize_levels(levels: &Tensor) -> Tensor {
    let device = levels.device();
    let table: Vec<f32> = normalization_table().iter().flatten().copied().collect();
    let table = upload(&Tensor::from_slice(&table), device);
    let offsets = Tensor::arange(3, (Kind::Int64, device)).view([1, 3, 1, 1]) * 256;
    table.take(&(levels.to_kind(Kind::Int64) + offsets))
}

/// `transform` of a batch of decoded images `levels` (`[B, H, W, 3]` u8, one size for the
/// batch) on `device`, with each row's random choices `draws`: `[B, 3, S, S]` normalized f32
/// equal bit for bit to [`Transform::apply_drawn`] of each image on the host. The levels are
/// copied without blocking (from pinned memory when the loader pinned them); the resize, the
/// rotation and the crop run as a few batched integer operations there.
pub fn apply_on(transform: Transform, levels: &Tensor, draws: &[Draw], device: Device) -> Tensor {
    assert_eq!(levels.size()[0], draws.len() as i64, "a draw per image");
    let levels = levels.to_device_(device, Kind::Uint8, true, false);
    let side = transform.resize_size();
    let resized = resize_bilinear_on(&levels, side, side);
    to_chw_on(&rotate_crop_on(&resized, draws, transform.output_size()))
}

/// u8 levels `[B, S, S, 3]` as the network's input `[B, 3, S, S]`, normalized where they are:
/// [`to_chw`] of each image, bit for bit.
pub fn to_chw_on(levels: &Tensor) -> Tensor {
    normalize_levels(&levels.permute([0, 3, 1, 2]))
}

/// Images all of size `w`×`h` stacked as `[B, h, w, 3]` u8 levels, the input of [`apply_on`].
pub fn stack_levels(images: &[RgbImage], (w, h): (u32, u32)) -> Tensor {
    let bytes = images.iter().map(|i| i.as_raw().as_slice()).collect::<Vec<_>>().concat();
    Tensor::from_slice(&bytes).view([images.len() as i64, h as i64, w as i64, 3])
}

/// [`resize_bilinear`] of a batch `[B, H, W, 3]` u8 to `[B, height, width, 3]`, where it is.
pub fn resize_bilinear_on(levels: &Tensor, width: u32, height: u32) -> Tensor {
    let size = levels.size();
    let (h_in, w_in) = (size[1] as u32, size[2] as u32);
    let across = if width != w_in { resample_on(levels, 2, w_in, width) } else { levels.shallow_clone() };
    if height != h_in {
        resample_on(&across, 1, h_in, height)
    } else {
        across
    }
}

/// One pass of Pillow's fixed-point bilinear resampling along `dim` of `[B, H, W, 3]` u8
/// levels, from `n_in` to `n_out`: every output index gathers its `ksize` taps at once (unused
/// taps weigh 0), sums them in i32 (exact: at most 255 · 2²² per tap) and rounds as `clip8`.
fn resample_on(levels: &Tensor, dim: i64, n_in: u32, n_out: u32) -> Tensor {
    let (bounds, coefficients, ksize) = bilinear_coefficients(n_in, n_out);
    let device = levels.device();
    let index: Vec<i64> = bounds
        .iter()
        .flat_map(|&(first, taps)| (0..ksize).map(move |k| (first + k.min(taps.saturating_sub(1))) as i64))
        .collect();
    let mut shape = vec![1i64; 5];
    shape[dim as usize] = n_out as i64;
    shape[dim as usize + 1] = ksize as i64;
    let weights = upload(&Tensor::from_slice(&coefficients), device).view(shape.as_slice());
    let mut taps = levels.size();
    taps[dim as usize] = n_out as i64;
    taps.insert(dim as usize + 1, ksize as i64);
    let gathered = levels.index_select(dim, &upload(&Tensor::from_slice(&index), device)).to_kind(Kind::Int);
    let sums = (gathered.view(taps.as_slice()) * weights).sum_dim_intlist(dim + 1, false, Kind::Int);
    ((sums + (1i64 << (PRECISION_BITS - 1))).bitwise_right_shift_tensor_scalar(PRECISION_BITS as i64))
        .clamp(0, 255)
        .to_kind(Kind::Uint8)
}

/// [`rotate_nearest`] of each square image of `[B, R, R, 3]` u8 by its draw's angle, then its
/// `crop`² window at the draw's top-left corner: `[B, crop, crop, 3]` u8, where the batch is.
fn rotate_crop_on(levels: &Tensor, draws: &[Draw], crop: u32) -> Tensor {
    let size = levels.size();
    let (b, side) = (size[0], size[1]);
    let device = levels.device();
    // Per image, (x, y) components of the crop's origin, of a step right and of a step down.
    let maps: Vec<[i64; 6]> = draws
        .iter()
        .map(|d| {
            let m = NearestMap::rotation(d.angle, side as u32, side as u32);
            let origin = |i: usize| m.origin[i] + d.left as i64 * m.per_x[i] + d.top as i64 * m.per_y[i];
            [origin(0), origin(1), m.per_x[0], m.per_x[1], m.per_y[0], m.per_y[1]]
        })
        .collect();
    let maps = upload(&Tensor::from_slice(maps.as_flattened()), device).view([b, 3, 2, 1, 1]);
    let steps = Tensor::arange(crop as i64, (Kind::Int64, device));
    let (xs, ys) = (steps.view([1, 1, -1]), steps.view([1, -1, 1]));
    // `[B, 2, crop, crop]`: the source column and row of every output pixel.
    let source =
        (maps.select(1, 0) + maps.select(1, 1) * xs + maps.select(1, 2) * ys).bitwise_right_shift_tensor_scalar(16);
    let clamped = source.clamp(0, side - 1);
    let inside = source.eq_tensor(&clamped).all_dim(1, false);
    let images = Tensor::arange(b, (Kind::Int64, device)).view([b, 1, 1]) * (side * side);
    let flat = clamped.select(1, 0) + clamped.select(1, 1) * side + images;
    let picked = levels.reshape([b * side * side, 3]).index_select(0, &flat.view([-1]));
    picked.view([b, crop as i64, crop as i64, 3]) * inside.unsqueeze(-1)
}

/// Pillow's `precompute_coeffs` for the bilinear filter, normalized to fixed point:
/// per output index the first input index, the tap count, and `ksize` taps.
fn bilinear_coefficients(in_size: u32, out_size: u32) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut coefficients = vec![0i32; out_size as usize * ksize];
    let mut taps = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, tap) in taps.iter_mut().enumerate().take(xmax) {
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            let w = if t.abs() < 1.0 { 1.0 - t.abs() } else { 0.0 };
            *tap = w;
            ww += w;
        }
        for (x, &tap) in taps.iter().enumerate().take(xmax) {
            let k = if ww != 0.0 { tap / ww } else { tap };
            let fixed = k * (1u32 << PRECISION_BITS) as f64;
            coefficients[xx * ksize + x] = if k < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    (bounds, coefficients, ksize)
}

/// Pillow's `clip8`: rounds a fixed-point accumulator to a byte.
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Keys' cubic convolution weights (a = −0.75, OpenCV's `INTER_CUBIC`) of the four source
/// pixels around a fractional offset `t` in [0, 1).
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// For each output index of a side resized from `n_in` to `n_out`: the four source indices
/// (replicated border) and their weights, with pixel centres at half pixels.
fn cubic_taps(n_in: u32, n_out: u32) -> Vec<([usize; 4], [f32; 4])> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|o| {
            let source = (o as f32 + 0.5) * scale - 0.5;
            let base = source.floor();
            let index = |k: i64| (base as i64 + k).clamp(0, n_in as i64 - 1) as usize;
            ([index(-1), index(0), index(1), index(2)], cubic_weights(source - base))
        })
        .collect()
}

/// Bicubic resize as OpenCV's `resize(..., INTER_CUBIC)` computes it: Keys' kernel (a = −0.75),
/// half-pixel centres, replicated border, no antialiasing when shrinking, rounded and saturated
/// to u8 (in floating point, where OpenCV uses 11-bit fixed-point weights: at most one level
/// apart). The same size returns the image unchanged.
pub fn resize_cubic(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w_in, h_in) = image.dimensions();
    if (w_in, h_in) == (width, height) {
        return image.clone();
    }
    let (columns, rows) = (cubic_taps(w_in, width), cubic_taps(h_in, height));
    let src = image.as_raw();
    let mut mid = vec![0f32; h_in as usize * width as usize * 3];
    for y in 0..h_in as usize {
        let line = &src[y * w_in as usize * 3..][..w_in as usize * 3];
        for (x, (index, weight)) in columns.iter().enumerate() {
            for c in 0..3 {
                mid[(y * width as usize + x) * 3 + c] = (0..4).map(|k| weight[k] * line[index[k] * 3 + c] as f32).sum();
            }
        }
    }
    let mut out = vec![0u8; height as usize * width as usize * 3];
    for (y, (index, weight)) in rows.iter().enumerate() {
        for i in 0..width as usize * 3 {
            let value: f32 = (0..4).map(|k| weight[k] * mid[index[k] * width as usize * 3 + i]).sum();
            out[y * width as usize * 3 + i] = value.round().clamp(0.0, 255.0) as u8;
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer of the output size")
}

/// [`resize_cubic`] of a batch `[B, H, W, 3]` u8 to `[B, height, width, 3]`, where it is, bit
/// for bit: the same f32 products summed in the same order, then rounded half away from zero
/// (Rust's `f32::round`, where ATen's `round` goes to even) and saturated.
pub fn resize_cubic_on(levels: &Tensor, width: u32, height: u32) -> Tensor {
    let size = levels.size();
    let (h_in, w_in) = (size[1] as u32, size[2] as u32);
    if (w_in, h_in) == (width, height) {
        return levels.shallow_clone();
    }
    let across = cubic_pass_on(&levels.to_kind(Kind::Float), 2, w_in, width);
    let values = cubic_pass_on(&across, 1, h_in, height).clamp_min(0.0);
    let whole = values.trunc();
    let half_up = (&values - &whole).ge(0.5).to_kind(Kind::Float);
    (whole + half_up).clamp_max(255.0).to_kind(Kind::Uint8)
}

/// One pass of [`resize_cubic`] along `dim` of `[B, H, W, 3]` f32 values, from `n_in` to
/// `n_out`: the four taps of every output index gathered at once (`[4, n_out]` along `dim`) and
/// weighed, the products summed left to right.
fn cubic_pass_on(values: &Tensor, dim: i64, n_in: u32, n_out: u32) -> Tensor {
    let taps = cubic_taps(n_in, n_out);
    let device = values.device();
    let index: Vec<i64> = (0..4).flat_map(|k| taps.iter().map(move |(index, _)| index[k] as i64)).collect();
    let weight: Vec<f32> = (0..4).flat_map(|k| taps.iter().map(move |(_, weight)| weight[k])).collect();
    let mut gathered = values.size();
    gathered.splice(dim as usize..=dim as usize, [4, n_out as i64]);
    let mut weights = vec![1i64; 5];
    weights[dim as usize..=dim as usize + 1].copy_from_slice(&[4, n_out as i64]);
    let index = upload(&Tensor::from_slice(&index), device);
    let products = values.index_select(dim, &index).view(gathered.as_slice())
        * upload(&Tensor::from_slice(&weight), device).view(weights.as_slice());
    let term = |k: i64| products.select(dim, k);
    term(0) + term(1) + term(2) + term(3)
}

/// Bilinear resize equal to PIL's `Image.resize(size, BILINEAR)` (what torchvision's `Resize`
/// runs on PIL images): separable, antialiased when shrinking, horizontal pass first with an
/// 8-bit intermediate image.
pub fn resize_bilinear(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w_in, h_in) = image.dimensions();
    if (w_in, h_in) == (width, height) {
        return image.clone();
    }
    let (hb, hk, hksize) = bilinear_coefficients(w_in, width);
    let (vb, vk, vksize) = bilinear_coefficients(h_in, height);
    let first_row = vb[0].0;
    let last_row = vb[height as usize - 1].0 + vb[height as usize - 1].1;

    let src = image.as_raw();
    let (mid_rows, mid, row_offset) = if width != w_in {
        let rows = last_row - first_row;
        let mut mid = vec![0u8; rows * width as usize * 3];
        for y in 0..rows {
            let in_row = &src[(y + first_row) * w_in as usize * 3..][..w_in as usize * 3];
            let out_row = &mut mid[y * width as usize * 3..][..width as usize * 3];
            for (xx, &(xmin, xmax)) in hb.iter().enumerate() {
                let k = &hk[xx * hksize..][..xmax];
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (x, &kx) in k.iter().enumerate() {
                    let p = &in_row[(xmin + x) * 3..][..3];
                    acc[0] += p[0] as i32 * kx;
                    acc[1] += p[1] as i32 * kx;
                    acc[2] += p[2] as i32 * kx;
                }
                out_row[xx * 3..][..3].copy_from_slice(&[clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]);
            }
        }
        (rows, std::borrow::Cow::Owned(mid), first_row)
    } else {
        (h_in as usize, std::borrow::Cow::Borrowed(src.as_slice()), 0)
    };
    debug_assert!(mid_rows >= last_row - row_offset);
    if height == h_in {
        return RgbImage::from_raw(width, height, mid.into_owned()).expect("buffer of the output size");
    }
    let stride = width as usize * 3;
    let mut out = vec![0u8; height as usize * stride];
    let mut acc = vec![0i32; stride];
    for (yy, &(ymin, ymax)) in vb.iter().enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        let k = &vk[yy * vksize..][..ymax];
        for (y, &ky) in k.iter().enumerate() {
            let row = &mid[(ymin + y - row_offset) * stride..][..stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * ky;
            }
        }
        for (o, &a) in out[yy * stride..][..stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer of the output size")
}

/// Rotation equal to PIL's `Image.rotate(angle, NEAREST, expand=False)` (torchvision's
/// `RandomRotation` default): counter-clockwise by `angle` degrees about the centre, corners
/// filled with black.
pub fn rotate_nearest(image: &RgbImage, angle: f64) -> RgbImage {
    let (w, h) = image.dimensions();
    if angle.rem_euclid(360.0) == 0.0 {
        return image.clone();
    }
    let map = NearestMap::rotation(angle, w, h);
    let (w, h) = (w as usize, h as usize);
    let src = image.as_raw();
    let mut out = vec![0u8; src.len()];
    // Pillow's stepping: the same sums as `map.source`, one addition per pixel.
    let ([mut row_x, mut row_y], [a0, a3], [a1, a4]) = (map.origin, map.per_x, map.per_y);
    for row in out.chunks_exact_mut(w * 3) {
        let (mut xx, mut yy) = (row_x, row_y);
        for pixel in row.chunks_exact_mut(3) {
            let (xin, yin) = (xx >> 16, yy >> 16);
            if (0..w as i64).contains(&xin) && (0..h as i64).contains(&yin) {
                let s = (yin as usize * w + xin as usize) * 3;
                pixel.copy_from_slice(&src[s..s + 3]);
            }
            xx += a0;
            yy += a3;
        }
        row_x += a1;
        row_y += a4;
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer of the input size")
}

/// Pillow's nearest-neighbour sampling of a rotation in 16.16 fixed point: output pixel
/// (x, y) takes input pixel (`⌊(origin₀ + x·per_x₀ + y·per_y₀) / 2¹⁶⌋`,
/// `⌊(origin₁ + x·per_x₁ + y·per_y₁) / 2¹⁶⌋`), black when that lies outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearestMap {
    pub origin: [i64; 2],
    pub per_x: [i64; 2],
    pub per_y: [i64; 2],
}

impl NearestMap {
    /// The map of `Image.rotate(angle, NEAREST)` on a `w`×`h` image: Pillow's transposes at
    /// 180° (and 90°, 270° when square), its `affine_fixed` otherwise.
    pub fn rotation(angle: f64, w: u32, h: u32) -> NearestMap {
        let angle = angle.rem_euclid(360.0);
        const ONE: i64 = 1 << 16;
        let (last_x, last_y) = ((w as i64 - 1) * ONE + ONE / 2, (h as i64 - 1) * ONE + ONE / 2);
        let exact = |origin, per_x, per_y| NearestMap { origin, per_x, per_y };
        match angle {
            0.0 => exact([ONE / 2, ONE / 2], [ONE, 0], [0, ONE]),
            180.0 => exact([last_x, last_y], [-ONE, 0], [0, -ONE]),
            90.0 if w == h => exact([last_x, ONE / 2], [0, ONE], [-ONE, 0]),
            270.0 if w == h => exact([ONE / 2, last_y], [0, -ONE], [ONE, 0]),
            _ => NearestMap::affine(angle, w, h),
        }
    }

    /// Pillow's `rotate` matrix about the centre, rounded to 15 decimals, in `affine_fixed`'s
    /// 16.16 fixed point sampling at pixel centres.
    fn affine(angle: f64, w: u32, h: u32) -> NearestMap {
        let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
        let theta = -angle.to_radians();
        let round15 = |v: f64| (v * 1e15).round() / 1e15;
        let (a, b, d, e) = (round15(theta.cos()), round15(theta.sin()), round15(-theta.sin()), round15(theta.cos()));
        let c = a * -cx + b * -cy + cx;
        let f = d * -cx + e * -cy + cy;
        let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i64;
        NearestMap {
            origin: [fix(c + a * 0.5 + b * 0.5), fix(f + d * 0.5 + e * 0.5)],
            per_x: [fix(a), fix(d)],
            per_y: [fix(b), fix(e)],
        }
    }

    /// The input pixel output pixel (`x`, `y`) samples (possibly outside the image).
    pub fn source(&self, x: i64, y: i64) -> (i64, i64) {
        let at = |i: usize| (self.origin[i] + x * self.per_x[i] + y * self.per_y[i]) >> 16;
        (at(0), at(1))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cubic_resize_keeps_constants_and_linear_ramps() {
        let flat = RgbImage::from_pixel(97, 61, image::Rgb([40, 120, 250]));
        assert_eq!(resize_cubic(&flat, 31, 20), RgbImage::from_pixel(31, 20, image::Rgb([40, 120, 250])));
        assert_eq!(resize_cubic(&flat, 97, 61), flat, "the same size is a copy");
        // Keys' kernel reproduces linear functions: a ramp of 2 levels per pixel shrunk by 2
        // gives 4 levels per output pixel, away from the replicated border.
        let ramp = RgbImage::from_fn(64, 8, |x, _| image::Rgb([(2 * x) as u8, 0, 0]));
        let half = resize_cubic(&ramp, 32, 4);
        for x in 2..30 {
            assert_eq!(half.get_pixel(x, 1)[0] as u32, 4 * x + 1, "column {x}");
        }
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
        let w = cubic_weights(0.5);
        assert!((w[0] + 0.09375).abs() < 1e-6 && (w[1] - 0.59375).abs() < 1e-6, "{w:?}");
    }

    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8]))
    }

    #[test]
    fn identity_resize_and_constant_image() {
        let img = gradient(16, 12);
        assert_eq!(resize_bilinear(&img, 16, 12), img);
        let flat = RgbImage::from_pixel(10, 10, image::Rgb([9, 200, 255]));
        for (w, h) in [(23, 17), (4, 6), (10, 3)] {
            let r = resize_bilinear(&flat, w, h);
            assert_eq!(r.dimensions(), (w, h));
            assert!(r.pixels().all(|p| p.0 == [9, 200, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn upscale_by_two_interpolates_between_neighbours() {
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([if x == 0 { 0 } else { 100 }; 3]));
        let r = resize_bilinear(&img, 4, 1);
        // Output centres at input coordinates 0.25, 0.75, 1.25, 1.75 (clamped at the borders).
        assert_eq!(r.pixels().map(|p| p.0[0]).collect::<Vec<_>>(), [0, 25, 75, 100]);
    }

    #[test]
    fn quarter_turns_move_corners() {
        let img = gradient(8, 8);
        let r = rotate_nearest(&img, 90.0);
        // Counter-clockwise: the top-right corner goes to the top-left.
        assert_eq!(r.get_pixel(0, 0), img.get_pixel(7, 0));
        assert_eq!(rotate_nearest(&img, 360.0), img);
        let r45 = rotate_nearest(&img, 45.0);
        assert_eq!(r45.get_pixel(0, 0).0, [0, 0, 0], "corners are filled with black");
        assert_eq!(r45.get_pixel(4, 4), img.get_pixel(4, 4), "the centre stays");
    }

    #[test]
    fn train_transform_crops_inside_the_resized_image() {
        let t = Transform::Train { resize: 20, crop: 16, rotation: [0.0, 0.0] };
        let flat = RgbImage::from_pixel(30, 30, image::Rgb([255, 0, 128]));
        let mut out = vec![0f32; t.output_len()];
        let mut rng = crate::rng::stream(0, &[]);
        for _ in 0..20 {
            t.apply(&flat, &mut rng, &mut out);
            let expect = [(1.0 - MEAN[0]) / STD[0], (0.0 - MEAN[1]) / STD[1], (128.0 / 255.0 - MEAN[2]) / STD[2]];
            for c in 0..3 {
                assert!(out[c * 256..(c + 1) * 256].iter().all(|&v| v == expect[c]));
            }
        }
    }

    #[test]
    fn crop_offsets_cover_every_position() {
        let t = Transform::Train { resize: 6, crop: 4, rotation: [0.0, 0.0] };
        // Pixel value = column index, so the first output value tells the crop's left edge.
        let img = RgbImage::from_fn(6, 6, |x, y| image::Rgb([(x * 40) as u8, (y * 40) as u8, 0]));
        let mut out = vec![0f32; t.output_len()];
        let mut rng = crate::rng::stream(5, &[]);
        let mut lefts = std::collections::BTreeSet::new();
        let mut tops = std::collections::BTreeSet::new();
        for _ in 0..200 {
            t.apply(&img, &mut rng, &mut out);
            lefts.insert(((out[0] * STD[0] + MEAN[0]) * 255.0 / 40.0).round() as i32);
            tops.insert(((out[16] * STD[1] + MEAN[1]) * 255.0 / 40.0).round() as i32);
        }
        assert_eq!(lefts.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(tops.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    }

    fn stacked(images: &[RgbImage]) -> Tensor {
        stack_levels(images, images[0].dimensions())
    }

    #[test]
    fn batched_resize_on_device_equals_the_host_resize() {
        let device = crate::device::test_device();
        for ((w, h), (tw, th)) in [((16, 12), (23, 17)), ((40, 31), (9, 10)), ((13, 13), (13, 5)), ((7, 30), (61, 30))]
        {
            let images = [gradient(w, h), rotate_nearest(&gradient(w, h), 180.0)];
            let resized = resize_bilinear_on(&stacked(&images).to_device(device), tw, th).to_device(Device::Cpu);
            let host: Vec<RgbImage> = images.iter().map(|i| resize_bilinear(i, tw, th)).collect();
            assert!(resized.equal(&stacked(&host)), "{w}x{h} -> {tw}x{th}");
        }
    }

    #[test]
    fn rotation_maps_equal_pillows_transposes_and_its_affine_step() {
        let img = gradient(9, 9);
        assert_eq!(rotate_nearest(&img, 90.0), image::imageops::rotate270(&img));
        assert_eq!(rotate_nearest(&img, -90.0), image::imageops::rotate90(&img));
        assert_eq!(rotate_nearest(&gradient(9, 5), 180.0), image::imageops::rotate180(&gradient(9, 5)));
        // The closed form (the batched path's) picks the pixels of Pillow's stepping.
        for (angle, (w, h)) in [(33.0, (9, 5)), (90.0, (9, 9)), (180.0, (9, 5)), (-123.4, (6, 11))] {
            let (source, map) = (gradient(w, h), NearestMap::rotation(angle, w, h));
            let rotated = rotate_nearest(&source, angle);
            for (x, y, pixel) in rotated.enumerate_pixels() {
                let (xin, yin) = map.source(x as i64, y as i64);
                let inside = (0..w as i64).contains(&xin) && (0..h as i64).contains(&yin);
                let expect = if inside { *source.get_pixel(xin as u32, yin as u32) } else { image::Rgb([0; 3]) };
                assert_eq!(*pixel, expect, "angle {angle}, pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn batched_transform_on_device_equals_the_host_transform_bit_for_bit() {
        let train = Transform::Train { resize: 19, crop: 12, rotation: [-180.0, 180.0] };
        let images: Vec<RgbImage> = (0..6).map(|i| rotate_nearest(&gradient(17, 11), 60.0 * i as f64)).collect();
        let mut rng = crate::rng::stream(3, &[]);
        let mut draws: Vec<Draw> = (0..6).map(|_| train.draw(&mut rng)).collect();
        for (draw, angle) in draws.iter_mut().zip([0.0, 90.0, 180.0, 270.0, -90.0, 360.0]).take(3) {
            draw.angle = angle;
        }
        let corner = Draw { angle: 45.0, top: 7, left: 7 };
        draws[5] = corner;
        for transform in [train, Transform::Eval { size: 12 }] {
            let draws: Vec<Draw> = match transform {
                Transform::Train { .. } => draws.clone(),
                Transform::Eval { .. } => vec![Draw::default(); 6],
            };
            let mut host = vec![0f32; 6 * transform.output_len()];
            for ((image, &draw), out) in images.iter().zip(&draws).zip(host.chunks_exact_mut(transform.output_len())) {
                transform.apply_drawn(image, draw, out);
            }
            let batched = apply_on(transform, &stacked(&images), &draws, crate::device::test_device());
            let batched = batched.to_device(Device::Cpu);
            let host = Tensor::from_slice(&host).view([6, 3, 12, 12]);
            assert!(batched.equal(&host), "{transform:?}: max diff {}", (batched - host).abs().max().double_value(&[]));
        }
        assert!(draws.iter().any(|d| d.angle.rem_euclid(90.0) != 0.0), "an angle off the quarter turns: {draws:?}");
    }

    #[test]
    fn eval_transform_values_are_normalized_bytes() {
        let t = Transform::Eval { size: 8 };
        let img = gradient(8, 8);
        let mut out = vec![0f32; t.output_len()];
        t.apply(&img, &mut crate::rng::stream(0, &[]), &mut out);
        let lo = (0.0 - MEAN[0]) / STD[0];
        let hi = (1.0 - MEAN[2]) / STD[2];
        assert!(out.iter().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6));
        assert_eq!(out[8 * 8 + 3 * 8 + 2], (15.0 / 255.0 - MEAN[1]) / STD[1]);
    }
}
