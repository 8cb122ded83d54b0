//! The SeLo indicators of a probability map against annotated regions (docs/LOCALISATION.md, Indicators), exactly
//! as the authors' `SLM.py` computes them: Rsu (salient-area proportion), Ras (attention
//! shift), Rda (discrete attention) and their mean indicator Rmi.

use anyhow::{bail, Result};

use super::raster::{box_filter, component_centroids, fill_polygons, maximum_filter, Gray};

/// SLM's parameters (its lines 23–34 and the literals of `_get_prob_center_in_gray`).
pub mod parameters {
    /// β of Rsu.
    pub const BETA_SU: f64 = 0.707;
    /// ε of Rsu.
    pub const EPSILON: f64 = 1e-7;
    /// A region's radius is this times the mean vertex distance from its centre.
    pub const EXPAND: f64 = 1.5;
    /// Passes of the box filter.
    pub const FILTER_PASSES: usize = 5;
    /// Side of the box filter.
    pub const BOX: usize = 50;
    /// Side of the maximum filter that finds peaks.
    pub const PEAK_WINDOW: usize = 1000;
    /// Smallest map value a kept centre may have.
    pub const CENTRE_THRESHOLD: f64 = 0.5;
    /// β of Ras.
    pub const BETA_AS: f64 = 3.0;
    /// η of Rda.
    pub const ETA_DA: f64 = 0.5;
    /// Weights of Rsu, 1 − Ras and Rda in Rmi.
    pub const RMI_WEIGHTS: [f64; 3] = [0.4, 0.35, 0.25];
}

use parameters::*;

/// A region's circle: the truncated vertex mean and the expanded mean vertex distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Region {
    pub center: (i64, i64),
    pub radius: i64,
}

impl Region {
    /// The circle of a polygon (vertices `[x, y]`, duplicates counted).
    pub fn of(polygon: &[[f64; 2]]) -> Region {
        let n = polygon.len() as f64;
        let cx = (polygon.iter().map(|p| p[0]).sum::<f64>() / n) as i64;
        let cy = (polygon.iter().map(|p| p[1]).sum::<f64>() / n) as i64;
        let mean = polygon.iter().map(|p| (p[0] - cx as f64).hypot(p[1] - cy as f64)).sum::<f64>() / n;
        Region { center: (cx, cy), radius: (EXPAND * mean) as i64 }
    }

    fn distance(&self, point: (usize, usize)) -> f64 {
        (point.0 as f64 - self.center.0 as f64).hypot(point.1 as f64 - self.center.1 as f64)
    }

    /// The centres within the circle (distance ≤ radius).
    fn inside<'c>(&self, centres: &'c [(usize, usize)]) -> Vec<&'c (usize, usize)> {
        centres.iter().filter(|&&c| self.distance(c) <= self.radius as f64).collect()
    }
}

/// The indicators of one sample, and what they were computed from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Indicators {
    pub rsu: f64,
    pub ras: f64,
    pub rda: f64,
    pub rmi: f64,
    /// The predicted attention centres `(x, y)`, by descending map value.
    pub centers: Vec<(usize, usize)>,
    pub regions: Vec<Region>,
}

/// The predicted attention centres of a probability map (docs/LOCALISATION.md, Indicators): peaks of the 5× box
/// filtered map over a 1000-pixel window, one centroid per 8-connected group of peaks, sorted
/// stably by the unsmoothed map's value, those ≥ 0.5 kept.
pub fn attention_centres(map: &Gray) -> Vec<(usize, usize)> {
    let mut smooth = map.clone();
    for _ in 0..FILTER_PASSES {
        smooth = box_filter(&smooth, BOX);
    }
    let peaks = maximum_filter(&smooth, PEAK_WINDOW);
    let mask: Vec<bool> = smooth.pixels.iter().zip(&peaks.pixels).map(|(&g, &m)| g == m && g > 0).collect();
    let mut centres = component_centroids(map.width, map.height, &mask);
    let value = |c: &(usize, usize)| map.at(c.0, c.1) as f64 / 255.0;
    centres.sort_by(|a, b| value(b).total_cmp(&value(a)));
    centres.retain(|c| value(c) >= CENTRE_THRESHOLD);
    centres
}

/// Rsu: 1 − exp(−β · (mean P inside the mask ÷ mean P outside)); refuses an empty mask.
pub fn rsu(map: &Gray, mask: &Gray) -> Result<f64> {
    let (mut inside, mut total, mut area) = (0f64, 0f64, 0f64);
    for (&p, &m) in map.pixels.iter().zip(&mask.pixels) {
        let p = p as f64 / 255.0;
        total += p;
        if m > 0 {
            inside += p;
            area += 1.0;
        }
    }
    if area == 0.0 {
        bail!("the regions cover no pixel of the map");
    }
    let pixels = (map.width * map.height) as f64;
    Ok(1.0 - (-BETA_SU * (inside / (total - inside + EPSILON)) * ((pixels - area) / area)).exp())
}

/// Ras: how far the centres inside each region's circle lie from its centre, mapped through
/// `(e^{3u} − 1)/(e^3 − 1)`; 1 when there is no centre at all.
pub fn ras(regions: &[Region], centres: &[(usize, usize)]) -> f64 {
    if centres.is_empty() || regions.is_empty() {
        return 1.0;
    }
    let shifts = regions.iter().map(|region| {
        let near = region.inside(centres);
        let offset = if near.is_empty() {
            region.radius as f64
        } else {
            near.iter().map(|&&c| region.distance(c)).sum::<f64>() / near.len() as f64
        };
        offset / region.radius as f64
    });
    let u = shifts.sum::<f64>() / regions.len() as f64;
    ((BETA_AS * u).exp() - 1.0) / (BETA_AS.exp() - 1.0)
}

/// Rda: per region, 0 or 1 for zero or one centre inside its circle, else how tightly several
/// centres gather (always below 0.64); the mean over regions.
pub fn rda(regions: &[Region], centres: &[(usize, usize)]) -> f64 {
    let per_region = regions.iter().map(|region| {
        let near = region.inside(centres);
        if near.len() <= 1 {
            return near.len() as f64;
        }
        let n = near.len() as f64;
        let mean_x = near.iter().map(|c| c.0 as f64).sum::<f64>() / n;
        let mean_y = near.iter().map(|c| c.1 as f64).sum::<f64>() / n;
        let spread = near.iter().map(|c| (c.0 as f64 - mean_x).hypot(c.1 as f64 - mean_y)).sum::<f64>() / n;
        ETA_DA * (1.0 - spread / region.radius as f64) + (-ETA_DA * (n + 2.0)).exp()
    });
    per_region.sum::<f64>() / regions.len().max(1) as f64
}

/// The four indicators of a probability map (`u8`, value/255) against `polygons`.
pub fn evaluate(map: &Gray, polygons: &[Vec<[f64; 2]>]) -> Result<Indicators> {
    for (k, polygon) in polygons.iter().enumerate() {
        super::annotations::check_polygon(polygon).map_err(|e| anyhow::anyhow!("polygon {k} {e}"))?;
    }
    let mut mask = Gray::filled(map.width, map.height, 0);
    fill_polygons(&mut mask, polygons, 1);
    let rsu = rsu(map, &mask)?;
    let regions: Vec<Region> = polygons.iter().map(|p| Region::of(p)).collect();
    let centers = attention_centres(map);
    let (ras, rda) = (ras(&regions, &centers), rda(&regions, &centers));
    let [w_su, w_as, w_da] = RMI_WEIGHTS;
    let rmi = w_su * rsu + w_as * (1.0 - ras) + w_da * rda;
    Ok(Indicators { rsu, ras, rda, rmi, centers, regions })
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 1600;
    const H: usize = 1200;

    /// A block of a test map: its value, its rows and its columns (inclusive ranges).
    type Block = (u8, (usize, usize), (usize, usize));

    /// A map of `background` with `blocks` painted in order.
    fn map(background: u8, blocks: &[Block]) -> Gray {
        let mut map = Gray::filled(W, H, background);
        for &(value, (r0, r1), (c0, c1)) in blocks {
            for y in r0..=r1 {
                map.pixels[y * W + c0..=y * W + c1].fill(value);
            }
        }
        map
    }

    fn rect(x0: f64, y0: f64, x1: f64, y1: f64) -> Vec<[f64; 2]> {
        vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    }

    /// One golden case of docs/LOCALISATION.md: the mask size, the centres, Rsu, Rda, Ras, Rmi.
    fn check(
        case: &str,
        map: Gray,
        polygons: &[Vec<[f64; 2]>],
        mask_px: usize,
        centres: &[(usize, usize)],
        want: [f64; 4],
    ) {
        let mut mask = Gray::filled(W, H, 0);
        fill_polygons(&mut mask, polygons, 1);
        assert_eq!(mask.pixels.iter().filter(|&&m| m > 0).count(), mask_px, "{case}: mask");
        let got = evaluate(&map, polygons).unwrap();
        assert_eq!(got.centers, centres, "{case}: centres");
        for (name, value, expected) in
            [("Rsu", got.rsu, want[0]), ("Rda", got.rda, want[1]), ("Ras", got.ras, want[2]), ("Rmi", got.rmi, want[3])]
        {
            assert!((value - expected).abs() <= 5e-7, "{case}: {name} {value} vs {expected}");
        }
    }

    #[test]
    fn golden_cases_a_to_d() {
        let one = [rect(900.0, 300.0, 1200.0, 600.0)];
        check(
            "A",
            map(30, &[(220, (280, 620), (880, 1220)), (255, (400, 500), (1000, 1100))]),
            &one,
            90601,
            &[(1052, 452)],
            [0.992145, 1.0, 0.001417, 0.996362],
        );
        check(
            "B",
            map(20, &[(200, (100, 300), (100, 300)), (240, (800, 1000), (1200, 1400))]),
            &[rect(100.0, 100.0, 300.0, 300.0), rect(600.0, 600.0, 800.0, 800.0)],
            80802,
            &[(1302, 902), (202, 202)],
            [0.956359, 0.5, 0.187172, 0.792033],
        );
        check("C", map(0, &[]), &one, 90601, &[], [0.0, 0.0, 1.0, 0.0]);
        check(
            "D",
            map(10, &[(120, (200, 1000), (200, 1400)), (250, (300, 400), (300, 400)), (250, (800, 900), (1200, 1300))]),
            &[rect(200.0, 200.0, 1400.0, 1000.0)],
            962001,
            &[(352, 352), (1252, 852)],
            [0.999830, 0.397231, 0.166250, 0.791052],
        );
    }

    #[test]
    fn golden_cases_e_to_h() {
        let one = [rect(900.0, 300.0, 1200.0, 600.0)];
        check(
            "E",
            map(30, &[(230, (300, 700), (300, 700))]),
            &[rect(300.0, 300.0, 600.0, 600.0), rect(450.0, 450.0, 750.0, 750.0)],
            136200,
            &[(502, 502)],
            [0.976158, 1.0, 0.090119, 0.958921],
        );
        check(
            "F",
            map(0, &[(255, (300, 600), (900, 1200))]),
            &one,
            90601,
            &[(1052, 452)],
            [1.0, 1.0, 0.001417, 0.999504],
        );
        check("G", map(255, &[(0, (300, 600), (900, 1200))]), &one, 90601, &[(767, 617)], [0.0, 0.0, 1.0, 0.0]);
        check("H", map(128, &[]), &one, 90601, &[(799, 599)], [0.506879, 1.0, 0.770262, 0.533160]);
    }

    #[test]
    fn region_circles_are_truncated_vertex_means() {
        assert_eq!(Region::of(&rect(900.0, 300.0, 1200.0, 600.0)), Region { center: (1050, 450), radius: 318 });
        assert_eq!(Region::of(&rect(200.0, 200.0, 1400.0, 1000.0)), Region { center: (800, 600), radius: 1081 });
        assert_eq!(Region::of(&rect(100.0, 100.0, 300.0, 300.0)), Region { center: (200, 200), radius: 212 });
    }

    #[test]
    fn bad_regions_are_refused() {
        let map = Gray::filled(20, 20, 9);
        let err = evaluate(&map, &[vec![[1.0, 1.0], [5.0, 5.0]]]).unwrap_err().to_string();
        assert_eq!(err, "polygon 0 has 2 vertices; a region needs at least 3");
        let err = evaluate(&map, &[rect(30.0, 30.0, 40.0, 40.0)]).unwrap_err().to_string();
        assert_eq!(err, "the regions cover no pixel of the map");
    }
}
