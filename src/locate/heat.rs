//! From crop scores to a probability map, as the authors' SeLo v1 pipeline does it (docs/LOCALISATION.md,
//! Pipeline): multi-scale crops on two grids per step, the per-pixel mean of the scores of the
//! crops covering each pixel, min–max normalisation truncated to u8, and a median filter.
//!
//! The mean is computed on the compressed grid of crop edges (every crop edge is a cell edge,
//! so each cell is covered by the same crops), which takes memory for the cells, not the pixels.

use std::collections::BTreeSet;

use super::raster::{reflect_101, Gray};

/// A crop: rows `r0..r1` and columns `c0..c1` (ends excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rect {
    pub r0: usize,
    pub r1: usize,
    pub c0: usize,
    pub c1: usize,
}

/// The intervals of one grid along a side of `n` pixels: starts `offset, offset + step, …`
/// below `n`; an interval that would reach the border is moved to `[n − step, n)`.
fn intervals(n: usize, step: usize, offset: usize) -> Vec<(usize, usize)> {
    (offset..n)
        .step_by(step)
        .map(|start| if start + step >= n { (n - step, n) } else { (start, start + step) })
        .collect()
}

/// The crops of a `height × width` scene for `steps`, in order: per step, grid A (offset 0)
/// then grid B (offset `step − step/2`), rows × columns of the same grid, a rectangle already
/// listed not listed again. Steps larger than a side of the scene are skipped.
pub fn crops(height: usize, width: usize, steps: &[usize]) -> Vec<Rect> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &step in steps.iter().filter(|&&s| s > 0 && s <= height && s <= width) {
        for offset in [0, step - step / 2] {
            for &(r0, r1) in &intervals(height, step, offset) {
                for &(c0, c1) in &intervals(width, step, offset) {
                    let rect = Rect { r0, r1, c0, c1 };
                    if seen.insert(rect) {
                        out.push(rect);
                    }
                }
            }
        }
    }
    out
}

/// How many crops [`crops`] lists at most for a `height × width` scene (duplicates counted),
/// computed without listing them.
pub fn crop_count(height: usize, width: usize, steps: &[usize]) -> u64 {
    let per_side = |n: usize, step: usize, offset: usize| n.saturating_sub(offset).div_ceil(step) as u64;
    steps
        .iter()
        .filter(|&&s| s > 0 && s <= height && s <= width)
        .flat_map(|&step| [0, step - step / 2].map(|offset| (step, offset)))
        .map(|(step, offset)| per_side(height, step, offset).saturating_mul(per_side(width, step, offset)))
        .fold(0u64, u64::saturating_add)
}

/// The per-pixel mean of crop scores, on the compressed grid of crop edges: cell `(i, j)`
/// covers rows `rows[i]..rows[i+1]` and columns `columns[j]..columns[j+1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanMap {
    pub rows: Vec<usize>,
    pub columns: Vec<usize>,
    /// Mean score of each cell (row-major over cells); NaN where no crop covers it.
    pub means: Vec<f64>,
    /// How many crops cover each cell.
    pub counts: Vec<u32>,
}

impl MeanMap {
    /// Accumulates `scores[k]` over `crops[k]` in a `height × width` scene: the sum and the count
    /// of every cell, then their quotient.
    pub fn new(height: usize, width: usize, crops: &[Rect], scores: &[f64]) -> MeanMap {
        let edges = |ends: &mut dyn Iterator<Item = usize>, n: usize| -> Vec<usize> {
            let set: BTreeSet<usize> = ends.chain([0, n]).collect();
            set.into_iter().collect()
        };
        let rows = edges(&mut crops.iter().flat_map(|c| [c.r0, c.r1]), height);
        let columns = edges(&mut crops.iter().flat_map(|c| [c.c0, c.c1]), width);
        let cells = |edges: &[usize], a: usize, b: usize| {
            edges.binary_search(&a).unwrap_or(0)..edges.binary_search(&b).unwrap_or(0)
        };
        let stride = columns.len() - 1;
        let mut sums = vec![0f64; (rows.len() - 1) * stride];
        let mut counts = vec![0u32; sums.len()];
        for (crop, score) in crops.iter().zip(scores) {
            for i in cells(&rows, crop.r0, crop.r1) {
                for j in cells(&columns, crop.c0, crop.c1) {
                    sums[i * stride + j] += score;
                    counts[i * stride + j] += 1;
                }
            }
        }
        let means = sums.iter().zip(&counts).map(|(&s, &n)| if n == 0 { f64::NAN } else { s / n as f64 }).collect();
        MeanMap { rows, columns, means, counts }
    }

    /// The probability map before filtering: `trunc(255 · (M − min) / (max − min))` per pixel
    /// (a NumPy cast truncates), 0 where the scores are all equal or no crop covers a pixel.
    pub fn to_u8(&self) -> Gray {
        let covered = self.means.iter().copied().filter(|m| !m.is_nan());
        let (min, max) = covered.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), m| (lo.min(m), hi.max(m)));
        let levels: Vec<u8> = self
            .means
            .iter()
            .map(|&m| if m.is_nan() || max <= min { 0 } else { (255.0 * ((m - min) / (max - min))) as u8 })
            .collect();
        let (height, width) = (self.rows[self.rows.len() - 1], self.columns[self.columns.len() - 1]);
        let stride = self.columns.len() - 1;
        let mut map = Gray::filled(width, height, 0);
        for (i, rows) in self.rows.windows(2).enumerate() {
            let line: Vec<u8> = self
                .columns
                .windows(2)
                .enumerate()
                .flat_map(|(j, cols)| std::iter::repeat_n(levels[i * stride + j], cols[1] - cols[0]))
                .collect();
            for y in rows[0]..rows[1] {
                map.pixels[y * width..(y + 1) * width].copy_from_slice(&line);
            }
        }
        map
    }
}

/// The widest median window: its histograms count in 16 bits (a 255² window holds 65,025 values).
pub const MAX_MEDIAN: usize = 255;

/// OpenCV's `medianBlur` with an odd `size × size` window (at most [`MAX_MEDIAN`]) and a replicated border, in constant
/// time per pixel (Perreault–Hébert): one histogram per column over the window's rows, slid
/// down the image, and the window's histogram slid along each row; the median is found through
/// 16 coarse bins, then the 16 fine bins of one. Horizontal stripes run on one thread per core.
pub fn median_filter(image: &Gray, size: usize) -> Gray {
    assert!(size <= MAX_MEDIAN, "median window {size} wider than {MAX_MEDIAN}: its counts would overflow");
    let mut out = Gray::filled(image.width, image.height, 0);
    let runs = ColumnRuns::of(image);
    in_stripes(&mut out.pixels, image.width, |first, stripe| median_stripe(image, &runs, size, first, stripe));
    out
}

/// Runs of identical adjacent columns (a heat map is constant between crop edges, so its 4096
/// columns form a few dozen runs): one histogram per run serves all its columns.
struct ColumnRuns {
    /// The run of each column.
    run_of: Vec<usize>,
    /// The first column of each run.
    first: Vec<usize>,
    /// The last column of each run.
    last: Vec<usize>,
}

impl ColumnRuns {
    fn of(image: &Gray) -> ColumnRuns {
        let w = image.width;
        let mut same = vec![true; w];
        same[0] = false;
        for row in image.pixels.chunks(w.max(1)) {
            for x in 1..w {
                same[x] &= row[x] == row[x - 1];
            }
        }
        let (mut run_of, mut first) = (Vec::with_capacity(w), Vec::new());
        for (x, &same) in same.iter().enumerate() {
            if !same {
                first.push(x);
            }
            run_of.push(first.len() - 1);
        }
        let last = first.iter().skip(1).map(|&f| f - 1).chain([w - 1]).collect();
        ColumnRuns { run_of, first, last }
    }
}

/// Runs `work(first row, rows)` on horizontal stripes of `rows` (rows of `width` values), one
/// stripe per core.
fn in_stripes<T: Send>(rows: &mut [T], width: usize, work: impl Fn(usize, &mut [T]) + Sync) {
    let height = rows.len() / width.max(1);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_stripe = height.div_ceil(workers).max(1);
    let work = &work;
    std::thread::scope(|s| {
        for (k, stripe) in rows.chunks_mut(per_stripe * width.max(1)).enumerate() {
            s.spawn(move || work(k * per_stripe, stripe));
        }
    });
}

/// A column's histogram: 256 fine bins in 16 segments of 16, and the 16 coarse bins (their
/// sums). A 251² window holds 63,001 values, so u16 counts suffice.
#[derive(Clone)]
struct Histogram {
    fine: [[u16; 16]; 16],
    coarse: [u16; 16],
}

impl Histogram {
    const EMPTY: Histogram = Histogram { fine: [[0; 16]; 16], coarse: [0; 16] };

    fn change(&mut self, value: u8, add: bool) {
        let (segment, bin) = (value as usize >> 4, value as usize & 15);
        let (fine, coarse) = (&mut self.fine[segment][bin], &mut self.coarse[segment]);
        (*fine, *coarse) = if add { (*fine + 1, *coarse + 1) } else { (*fine - 1, *coarse - 1) };
    }
}

/// `a += b` (or `-=`) bin by bin.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn merge(a: &mut [u16; 16], b: &[u16; 16], add: bool) {
    // Indexed loops over the fixed arrays vectorise; the iterator form did not (2x slower).
    if add {
        for i in 0..16 {
            a[i] = a[i].wrapping_add(b[i]);
        }
    } else {
        for i in 0..16 {
            a[i] = a[i].wrapping_sub(b[i]);
        }
    }
}

/// The window's histogram along a row: the coarse bins kept current at every step, a fine
/// segment brought up to date only when the median falls in it (Perreault–Hébert's lazy
/// update, as OpenCV's `medianBlur` does for 8 bits).
struct Window<'a> {
    /// One histogram per run of identical columns.
    columns: &'a [Histogram],
    runs: &'a ColumnRuns,
    radius: i64,
    coarse: [u16; 16],
    fine: [[u16; 16]; 16],
    /// The centre column each fine segment is current for (none yet on this row).
    current: [Option<i64>; 16],
}

impl<'a> Window<'a> {
    /// The window centred on column 0 (replicated border).
    fn new(columns: &'a [Histogram], runs: &'a ColumnRuns, radius: i64) -> Window<'a> {
        let mut window = Window { columns, runs, radius, coarse: [0; 16], fine: [[0; 16]; 16], current: [None; 16] };
        for dx in -radius..=radius {
            let column = window.column(dx);
            merge(&mut window.coarse, &column.coarse, true);
        }
        window
    }

    /// The run of column `x` (replicated border).
    fn run(&self, x: i64) -> usize {
        self.runs.run_of[x.clamp(0, self.runs.run_of.len() as i64 - 1) as usize]
    }

    fn column(&self, x: i64) -> &'a Histogram {
        &self.columns[self.run(x)]
    }

    /// Moves the window's coarse bins from centre `x − 1` to `x`.
    fn slide_to(&mut self, x: i64) {
        let (leaving, entering) = (self.column(x - self.radius - 1), self.column(x + self.radius));
        merge(&mut self.coarse, &leaving.coarse, false);
        merge(&mut self.coarse, &entering.coarse, true);
    }

    /// Brings fine segment `k` to the window centred on `x`: column by column from where it was
    /// current, or summed afresh run by run (each run's histogram times its columns in the
    /// window), whichever takes fewer additions.
    fn refresh(&mut self, k: usize, x: i64) {
        let r = self.radius;
        let runs_in_window = (self.run(x + r) - self.run(x - r) + 3) as i64;
        match self.current[k] {
            Some(c) if 2 * (x - c) <= runs_in_window => {
                for j in c + 1..=x {
                    let (leaving, entering) = (self.column(j - r - 1), self.column(j + r));
                    merge(&mut self.fine[k], &leaving.fine[k], false);
                    merge(&mut self.fine[k], &entering.fine[k], true);
                }
            }
            _ => self.sum_afresh(k, x),
        }
        self.current[k] = Some(x);
    }

    /// Fine segment `k` of the window centred on `x`, summed run by run.
    fn sum_afresh(&mut self, k: usize, x: i64) {
        let (w, r) = (self.runs.run_of.len() as i64, self.radius);
        self.fine[k] = [0; 16];
        let mut j = x - r;
        while j <= x + r {
            let run = self.run(j);
            let end = if j < 0 {
                -1
            } else if j >= w {
                x + r
            } else {
                (self.runs.last[run] as i64).min(x + r)
            };
            let count = (end - j + 1) as u16;
            for (a, &b) in self.fine[k].iter_mut().zip(&self.columns[run].fine[k]) {
                *a = a.wrapping_add(count.wrapping_mul(b));
            }
            j = end + 1;
        }
    }

    /// The value of rank `rank` (0-based) in the window centred on `x`.
    fn value_of_rank(&mut self, x: i64, rank: u32) -> u8 {
        let mut seen = 0u32;
        let k = (0..16).find(|&k| {
            seen += self.coarse[k] as u32;
            seen > rank
        });
        let Some(k) = k else { return 255 };
        seen -= self.coarse[k] as u32;
        self.refresh(k, x);
        for (bin, &n) in self.fine[k].iter().enumerate() {
            seen += n as u32;
            if seen > rank {
                return (k * 16 + bin) as u8;
            }
        }
        255
    }
}

/// The median-filtered rows `first..` of `image` into `out` (whole rows).
fn median_stripe(image: &Gray, runs: &ColumnRuns, size: usize, first: usize, out: &mut [u8]) {
    let (w, h, r) = (image.width, image.height, (size / 2) as i64);
    let at = |x: usize, y: i64| image.pixels[y.clamp(0, h as i64 - 1) as usize * w + x];
    let first = first as i64;
    let mut columns = vec![Histogram::EMPTY; runs.first.len()];
    for (&x, column) in runs.first.iter().zip(&mut columns) {
        for y in first - r - 1..first + r {
            column.change(at(x, y), true);
        }
    }
    let rank = (size * size / 2) as u32;
    for (i, row) in out.chunks_mut(w).enumerate() {
        let y = first + i as i64;
        for (&x, column) in runs.first.iter().zip(&mut columns) {
            column.change(at(x, y - r - 1), false);
            column.change(at(x, y + r), true);
        }
        let mut window = Window::new(&columns, runs, r);
        for (x, pixel) in row.iter_mut().enumerate() {
            let x = x as i64;
            if x > 0 {
                window.slide_to(x);
            }
            *pixel = window.value_of_rank(x, rank);
        }
    }
}

/// OpenCV's `getGaussianKernel(size, 0)`: its fixed table up to 7 taps, else
/// σ = 0.3·((size − 1)/2 − 1) + 0.8, normalised.
fn gaussian_kernel(size: usize) -> Vec<f64> {
    match size {
        1 => return vec![1.0],
        3 => return vec![0.25, 0.5, 0.25],
        5 => return vec![0.0625, 0.25, 0.375, 0.25, 0.0625],
        7 => return vec![0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
        _ => {}
    }
    let sigma = 0.3 * ((size as f64 - 1.0) * 0.5 - 1.0) + 0.8;
    let centre = (size as f64 - 1.0) * 0.5;
    let weights: Vec<f64> = (0..size).map(|i| (-((i as f64 - centre).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f64 = weights.iter().sum();
    weights.into_iter().map(|v| v / sum).collect()
}

/// OpenCV's `GaussianBlur(map, (size, size), 0)` (SeLo v2's filter: σ 38.6 for 255):
/// separable, reflect-101 border, rounded half to even; in floating point, where OpenCV uses
/// 16-bit fixed-point weights for u8 (within a level of it, tested).
pub fn gaussian_filter(image: &Gray, size: usize) -> Gray {
    let (w, h, r) = (image.width, image.height, (size / 2) as i64);
    let kernel = gaussian_kernel(size);
    let mut rows = vec![0f32; w * h];
    in_stripes(&mut rows, w, |first, stripe| {
        for (y, out) in (first..).zip(stripe.chunks_mut(w)) {
            let line = &image.pixels[y * w..(y + 1) * w];
            for (x, value) in out.iter_mut().enumerate() {
                let taps = kernel.iter().enumerate();
                let sum: f64 = taps.map(|(k, &g)| g * line[reflect_101(x as i64 + k as i64 - r, w)] as f64).sum();
                *value = sum as f32;
            }
        }
    });
    let mut out = Gray::filled(w, h, 0);
    in_stripes(&mut out.pixels, w, |first, stripe| {
        let mut sums = vec![0f64; w];
        for (y, line) in (first..).zip(stripe.chunks_mut(w)) {
            sums.fill(0.0);
            for (k, &g) in kernel.iter().enumerate() {
                let source = &rows[reflect_101(y as i64 + k as i64 - r, h) * w..][..w];
                sums.iter_mut().zip(source).for_each(|(s, &v)| *s += g * v as f64);
            }
            line.iter_mut().zip(&sums).for_each(|(p, &s)| *p = s.round_ties_even().clamp(0.0, 255.0) as u8);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::sha256_hex;

    #[test]
    fn crop_counts_match_slm_split_image() {
        let count = |h, w, steps: &[usize]| {
            let all = crops(h, w, steps);
            let per_step: Vec<usize> = steps.iter().map(|&s| all.iter().filter(|c| c.r1 - c.r0 == s).count()).collect();
            (all.len(), per_step)
        };
        assert_eq!(count(1000, 1300, &[256, 512, 768]), (59, vec![43, 11, 5]));
        assert_eq!(count(3000, 2000, &[256, 512, 768]), (261, vec![191, 47, 23]));
        assert_eq!(count(2001, 2999, &[128, 256, 512]), (989, vec![751, 191, 47]));
        assert_eq!(intervals(1000, 256, 0), [(0, 256), (256, 512), (512, 768), (744, 1000)]);
        assert_eq!(intervals(1000, 256, 128), [(128, 384), (384, 640), (640, 896), (744, 1000)]);
    }

    /// The heat pipeline of docs/LOCALISATION.md's golden cases: a 1000x1300 scene, steps 256/512/768, dyadic scores.
    fn golden_heat() -> (MeanMap, Gray) {
        let all = crops(1000, 1300, &[256, 512, 768]);
        let score = |c: &Rect| {
            (8192.0 - (c.r0 as f64 + c.r1 as f64 - 600.0).abs() - (c.c0 as f64 + c.c1 as f64 - 1800.0).abs()) / 8192.0
        };
        let scores: Vec<f64> = all.iter().map(score).collect();
        let mean = MeanMap::new(1000, 1300, &all, &scores);
        let map = mean.to_u8();
        (mean, map)
    }

    #[test]
    fn the_heat_map_before_the_median_matches_the_golden_checksum() {
        let (mean, map) = golden_heat();
        assert_eq!((mean.counts.iter().min(), mean.counts.iter().max()), (Some(&3), Some(&14)));
        assert_eq!(sha256_hex(&map.pixels), "b5265dabf0889afdfdb88cc36e4a6c23335729e18540bdcacab970c399d6607f");
        assert_eq!(map.pixels.iter().map(|&p| p as u64).sum::<u64>(), 185_896_480);
        assert_eq!((map.at(0, 0), map.at(900, 300), map.at(1299, 999)), (98, 230, 139));
        assert_eq!(map.pixels.iter().collect::<BTreeSet<_>>().len(), 102);
    }

    #[test]
    fn the_median_filtered_map_matches_the_golden_checksum_and_indicators() {
        let (_, map) = golden_heat();
        let filtered = median_filter(&map, 251);
        assert_eq!(sha256_hex(&filtered.pixels), "a2d33eed7a8387dd43ecc4e7705b5209d9c853ef1fabac55123ff2a320c8d7c7");
        assert_eq!(filtered.pixels.iter().map(|&p| p as u64).sum::<u64>(), 185_956_609);
        let region = vec![[800.0, 200.0], [1000.0, 200.0], [1000.0, 400.0], [800.0, 400.0]];
        let got = super::super::selo::evaluate(&filtered, &[region]).unwrap();
        assert_eq!(got.centers, [(901, 66)]);
        for (value, want) in [(got.rsu, 0.686755), (got.rda, 0.0), (got.ras, 1.0), (got.rmi, 0.274702)] {
            assert!((value - want).abs() <= 5e-7, "{value} vs {want}");
        }
    }

    #[test]
    fn the_median_equals_a_sorted_window() {
        let noise: Vec<u8> = (0..23 * 19).map(|i| ((i * 7919 + i / 5) % 256) as u8).collect();
        // Runs of identical columns (0-3, 4, 5-11, 12-22), as a heat map has, with one column
        // differing in a single row.
        let runs: Vec<u8> = (0..23 * 19)
            .map(|i| {
                let (x, y) = (i % 23, i / 23);
                let run = [0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3][x];
                let value = (run * 61 + (y / 4) * 37) % 256;
                (if (x, y) == (17, 9) { 200 } else { value }) as u8
            })
            .collect();
        for pixels in [noise, runs] {
            check_median(Gray { width: 23, height: 19, pixels });
        }
    }

    fn check_median(image: Gray) {
        for size in [1, 3, 7, 25] {
            let fast = median_filter(&image, size);
            let r = (size / 2) as i64;
            for y in 0..19i64 {
                for x in 0..23i64 {
                    let mut window: Vec<u8> = (-r..=r)
                        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
                        .map(|(dx, dy)| image.at((x + dx).clamp(0, 22) as usize, (y + dy).clamp(0, 18) as usize))
                        .collect();
                    window.sort_unstable();
                    assert_eq!(fast.at(x as usize, y as usize), window[window.len() / 2], "size {size} at ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn scaling_the_scores_leaves_the_map_unchanged() {
        // Exact on these dyadic scores; in general an affine change of the scores can move a
        // value across a truncation step by a rounding of the last bit.
        let (mean, map) = golden_heat();
        let all = crops(1000, 1300, &[256, 512, 768]);
        for (a, b) in [(2.0, 1.0), (0.5, -3.0), (1024.0, 7.25)] {
            let scores: Vec<f64> = all
                .iter()
                .map(|c| {
                    let s = (8192.0
                        - (c.r0 as f64 + c.r1 as f64 - 600.0).abs()
                        - (c.c0 as f64 + c.c1 as f64 - 1800.0).abs())
                        / 8192.0;
                    a * s + b
                })
                .collect();
            let scaled = MeanMap::new(1000, 1300, &all, &scores);
            assert_eq!(scaled.counts, mean.counts);
            assert!(scaled.to_u8() == map, "a = {a}, b = {b}: the probability map changed");
        }
    }
}
