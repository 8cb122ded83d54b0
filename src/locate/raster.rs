//! The image primitives of the SeLo metrics (docs/LOCALISATION.md, Indicators), each exactly as the authors'
//! OpenCV / SciPy / scikit-image calls compute it: OpenCV's polygon fill, OpenCV's normalised
//! box filter on u8, SciPy's maximum filter, and scikit-image's 8-connected labelling.
//! Images are row-major `u8` buffers of `height × width`.

/// A row-major 8-bit image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Gray {
    /// An image of `width × height` pixels of `value`.
    pub fn filled(width: usize, height: usize, value: u8) -> Gray {
        Gray { width, height, pixels: vec![value; width * height] }
    }

    /// The pixel at column `x`, row `y`.
    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }

    fn set(&mut self, x: i64, y: i64, value: u8) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = value;
        }
    }
}

/// OpenCV's 8-connected line (its `LineIterator`, left to right) from `p1` to `p2`, drawn with
/// `value`; pixels outside the image are skipped.
fn line8(image: &mut Gray, p1: (i64, i64), p2: (i64, i64), value: u8) {
    let ((x1, y1), (x2, y2)) = if p2.0 < p1.0 { (p2, p1) } else { (p1, p2) };
    let dx = x2 - x1;
    let y_step = if y2 < y1 { -1 } else { 1 };
    let dy = (y2 - y1).abs();
    let steep = dy > dx;
    let (major, minor) = if steep { (dy, dx) } else { (dx, dy) };
    let mut err = major - 2 * minor;
    let (mut x, mut y) = (x1, y1);
    for _ in 0..=major {
        image.set(x, y, value);
        let diagonal = err < 0;
        err += -2 * minor + if diagonal { 2 * major } else { 0 };
        match (steep, diagonal) {
            (false, false) => x += 1,
            (false, true) => (x, y) = (x + 1, y + y_step),
            (true, false) => y += y_step,
            (true, true) => (x, y) = (x + 1, y + y_step),
        }
    }
}

/// One non-horizontal polygon edge of the scanline fill: rows `y0..y1` (the lower end
/// excluded), x in 16.16 fixed point at row `y0`, and its step per row.
struct Edge {
    y0: i64,
    y1: i64,
    x: i64,
    dx: i64,
}

/// Fills `polygons` (vertices `[x, y]`, truncated to integers) together with `value`, as
/// OpenCV's `fillPoly` does: every edge is drawn as an 8-connected line, then each row is
/// filled by the even-odd rule over the edges of all polygons at once, from `ceil` of the left
/// crossing to `floor` of the right one (crossings in 16.16 fixed point). So the interior of an
/// overlap of two polygons stays empty.
pub fn fill_polygons(image: &mut Gray, polygons: &[Vec<[f64; 2]>], value: u8) {
    let mut edges = Vec::new();
    for polygon in polygons {
        let points: Vec<(i64, i64)> = polygon.iter().map(|p| (p[0] as i64, p[1] as i64)).collect();
        for (i, &p0) in points.iter().enumerate() {
            let p1 = points[(i + 1) % points.len()];
            line8(image, p0, p1, value);
            if p0.1 == p1.1 {
                continue;
            }
            let (top, bottom) = if p0.1 < p1.1 { (p0, p1) } else { (p1, p0) };
            let dx = ((p1.0 - p0.0) << 16) / (p1.1 - p0.1);
            edges.push(Edge { y0: top.1, y1: bottom.1, x: top.0 << 16, dx });
        }
    }
    let rows = edges.iter().map(|e| e.y0).min().unwrap_or(0)..edges.iter().map(|e| e.y1).max().unwrap_or(0);
    let height = image.height as i64;
    for y in rows.filter(|&y| (0..height).contains(&y)) {
        let mut crossings: Vec<i64> =
            edges.iter().filter(|e| e.y0 <= y && y < e.y1).map(|e| e.x + e.dx * (y - e.y0)).collect();
        crossings.sort_unstable();
        for pair in crossings.chunks_exact(2) {
            let left = (pair[0] + (1 << 16) - 1) >> 16;
            let right = pair[1] >> 16;
            for x in left.max(0)..=right.min(image.width as i64 - 1) {
                image.set(x, y, value);
            }
        }
    }
}

/// OpenCV's `BORDER_REFLECT_101` index: `… c b | a b c …` (the edge pixel not repeated).
pub(super) fn reflect_101(mut p: i64, len: usize) -> usize {
    let len = len as i64;
    if len == 1 {
        return 0;
    }
    while p < 0 || p >= len {
        p = if p < 0 { -p } else { 2 * len - 2 - p };
    }
    p as usize
}

/// SciPy's `reflect` (symmetric) index: `… b a | a b …` (the edge pixel repeated).
fn reflect_symmetric(p: i64, len: usize) -> usize {
    let period = 2 * len as i64;
    let q = p.rem_euclid(period);
    if q < len as i64 {
        q as usize
    } else {
        (period - 1 - q) as usize
    }
}

/// OpenCV's normalised `boxFilter` on u8 with a `size × size` window (anchor at the centre:
/// rows `y − size/2 … y + (size−1)/2`), reflect-101 border, each mean rounded half to even as
/// its SIMD path does (a float32 product).
pub fn box_filter(image: &Gray, size: usize) -> Gray {
    let (w, h) = (image.width, image.height);
    let before = (size / 2) as i64;
    let mut rows = vec![0u32; w * h];
    for y in 0..h {
        let line = &image.pixels[y * w..(y + 1) * w];
        let value = |x: i64| line[reflect_101(x, w)] as u32;
        let mut sum: u32 = (-before..size as i64 - before).map(value).sum();
        for x in 0..w as i64 {
            rows[y * w + x as usize] = sum;
            sum = sum + value(x + size as i64 - before) - value(x - before);
        }
    }
    let scale = 1.0f32 / (size * size) as f32;
    let mut out = Gray::filled(w, h, 0);
    for x in 0..w {
        let value = |y: i64| rows[reflect_101(y, h) * w + x];
        let mut sum: u32 = (-before..size as i64 - before).map(value).sum();
        for y in 0..h as i64 {
            out.pixels[y as usize * w + x] = ((sum as f32) * scale).round_ties_even().min(255.0) as u8;
            sum = sum + value(y + size as i64 - before) - value(y - before);
        }
    }
    out
}

/// The running maximum of `values` over windows of `size` starting at each index (van Herk /
/// Gil–Werman: block prefix and suffix maxima, O(1) per value); `values.len() − size + 1` results.
fn sliding_max(values: &[u8], size: usize) -> Vec<u8> {
    let n = values.len();
    let (mut prefix, mut suffix) = (values.to_vec(), values.to_vec());
    for i in 1..n {
        if i % size != 0 {
            prefix[i] = prefix[i].max(prefix[i - 1]);
        }
    }
    for i in (0..n.saturating_sub(1)).rev() {
        if (i + 1) % size != 0 {
            suffix[i] = suffix[i].max(suffix[i + 1]);
        }
    }
    (0..=n - size).map(|i| suffix[i].max(prefix[i + size - 1])).collect()
}

/// SciPy's `maximum_filter(image, size)` with mode `reflect` (symmetric border): the maximum
/// over rows `y − size/2 … y + (size−1)/2` and the same columns. Separable: rows, then columns.
pub fn maximum_filter(image: &Gray, size: usize) -> Gray {
    let (w, h) = (image.width, image.height);
    let before = (size / 2) as i64;
    let padded = |len: usize, get: &dyn Fn(usize) -> u8| -> Vec<u8> {
        (-before..len as i64 + size as i64 - 1 - before).map(|p| get(reflect_symmetric(p, len))).collect()
    };
    let mut rows = Gray::filled(w, h, 0);
    for y in 0..h {
        let line = padded(w, &|x| image.pixels[y * w + x]);
        rows.pixels[y * w..(y + 1) * w].copy_from_slice(&sliding_max(&line, size));
    }
    let mut out = Gray::filled(w, h, 0);
    for x in 0..w {
        let column = sliding_max(&padded(h, &|y| rows.pixels[y * w + x]), size);
        for (y, value) in column.into_iter().enumerate() {
            out.pixels[y * w + x] = value;
        }
    }
    out
}

/// The centroids of the 8-connected components of the pixels where `mask` holds, in the raster
/// order of each component's first pixel (scikit-image's `label` with connectivity 2), each
/// `(mean column, mean row)` truncated to integers.
pub fn component_centroids(width: usize, height: usize, mask: &[bool]) -> Vec<(usize, usize)> {
    let mut seen = vec![false; mask.len()];
    let mut centroids = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let (mut stack, mut sum_x, mut sum_y, mut count) = (vec![start], 0u64, 0u64, 0u64);
        while let Some(p) = stack.pop() {
            let (x, y) = (p % width, p / width);
            (sum_x, sum_y, count) = (sum_x + x as u64, sum_y + y as u64, count + 1);
            for (nx, ny) in neighbours(x, y, width, height) {
                let q = ny * width + nx;
                if mask[q] && !seen[q] {
                    seen[q] = true;
                    stack.push(q);
                }
            }
        }
        centroids.push(((sum_x as f64 / count as f64) as usize, (sum_y as f64 / count as f64) as usize));
    }
    centroids
}

/// The 8 neighbours of `(x, y)` inside a `width × height` image.
fn neighbours(x: usize, y: usize, width: usize, height: usize) -> impl Iterator<Item = (usize, usize)> {
    (-1i64..=1).flat_map(move |dy| (-1i64..=1).map(move |dx| (x as i64 + dx, y as i64 + dy))).filter_map(
        move |(nx, ny)| {
            let inside = nx >= 0 && ny >= 0 && (nx as usize) < width && (ny as usize) < height;
            (inside && (nx, ny) != (x as i64, y as i64)).then_some((nx as usize, ny as usize))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(image: &Gray, value: u8) -> usize {
        image.pixels.iter().filter(|&&p| p == value).count()
    }

    fn square(x0: f64, y0: f64, x1: f64, y1: f64) -> Vec<[f64; 2]> {
        vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    }

    #[test]
    fn polygon_fill_includes_the_outline_and_is_even_odd_over_all_polygons() {
        let mut image = Gray::filled(10, 10, 0);
        fill_polygons(&mut image, &[square(1.0, 1.0, 6.0, 6.0)], 1);
        assert_eq!(count(&image, 1), 36, "corners (1,1)-(6,6), boundary included");
        let mut image = Gray::filled(1000, 1000, 0);
        fill_polygons(&mut image, &[square(300.0, 300.0, 600.0, 600.0), square(450.0, 450.0, 750.0, 750.0)], 1);
        assert_eq!(count(&image, 1), 136_200, "golden case E: the overlap's interior is not filled");
        let mut image = Gray::filled(8, 8, 0);
        fill_polygons(&mut image, &[vec![[1.9, 1.2], [6.7, 1.0], [1.0, 6.99]]], 1);
        let rows: Vec<String> = image.pixels.chunks(8).map(|r| r.iter().map(|p| p.to_string()).collect()).collect();
        assert_eq!(rows[1], "01111110", "vertices truncated to (1,1), (6,1), (1,6)");
        assert_eq!(rows[6], "01000000");
    }

    #[test]
    fn lines_step_like_opencvs_line_iterator() {
        let mut image = Gray::filled(6, 3, 0);
        line8(&mut image, (5, 2), (0, 0), 1);
        let rows: Vec<String> = image.pixels.chunks(6).map(|r| r.iter().map(|p| p.to_string()).collect()).collect();
        assert_eq!(rows, ["110000", "001100", "000011"], "drawn left to right, err = dx - 2dy");
    }

    #[test]
    fn borders_reflect_like_opencv_and_scipy() {
        let reflected: Vec<usize> = (-3..7).map(|p| reflect_101(p, 4)).collect();
        assert_eq!(reflected, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        let symmetric: Vec<usize> = (-3..7).map(|p| reflect_symmetric(p, 4)).collect();
        assert_eq!(symmetric, [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
        assert_eq!(reflect_101(-5, 1), 0);
    }

    #[test]
    fn box_filter_means_round_half_to_even() {
        // A 2x2 window covers (x-1, x) and rows (y-1, y); reflect-101 maps -1 to 1, and on a
        // one-row image both rows are that row, so each mean is (p[x-1] + p[x]) / 2.
        let image = Gray { width: 4, height: 1, pixels: vec![0, 3, 0, 1] };
        let out = box_filter(&image, 2);
        assert_eq!(out.pixels, [2, 2, 2, 0], "(3+0)/2 = 1.5 → 2, (0+1)/2 = 0.5 → 0");
    }

    #[test]
    fn maximum_filter_equals_brute_force() {
        let pixels: Vec<u8> = (0..17 * 13).map(|i| ((i * 7919) % 251) as u8).collect();
        let image = Gray { width: 17, height: 13, pixels };
        for size in [1, 2, 5, 8, 30] {
            let fast = maximum_filter(&image, size);
            let before = (size / 2) as i64;
            for y in 0..13 {
                for x in 0..17 {
                    let brute = (0..size as i64)
                        .flat_map(|dy| (0..size as i64).map(move |dx| (dx, dy)))
                        .map(|(dx, dy)| {
                            image.at(reflect_symmetric(x + dx - before, 17), reflect_symmetric(y + dy - before, 13))
                        })
                        .max()
                        .unwrap();
                    assert_eq!(fast.at(x as usize, y as usize), brute, "size {size} at ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn components_are_labelled_in_raster_order_with_8_connectivity() {
        let rows = ["..#....#", ".#.....#", "........", "##....#."];
        let mask: Vec<bool> = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
        let centroids = component_centroids(8, 4, &mask);
        assert_eq!(centroids, [(1, 0), (7, 0), (0, 3), (6, 3)], "diagonal neighbours join; centroids truncated");
    }
}
