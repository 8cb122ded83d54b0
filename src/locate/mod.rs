//! Semantic localisation in large scenes (SeLo, LOCATE.md §1): the benchmark's annotations and
//! its four indicators, computed exactly as the authors' `SLM.py` does ([`selo`]) from image
//! primitives that match OpenCV, SciPy and scikit-image bit for bit ([`raster`]).

pub mod annotations;
pub mod codes;
pub mod crops;
pub mod heat;
pub mod raster;
pub mod render;
pub mod selo;

#[cfg(test)]
mod tests {
    //! The chain crops → scores → map → SeLo indicators with scorers that know the answer
    //! (LOCATE.md §1.10, test 2), on 2048² scenes with targets placed off the crop grids.

    use super::heat::{crops, median_filter, MeanMap, Rect};
    use super::selo::{evaluate, Indicators};
    use crate::rng::{below, stream, uniform};

    const SIDE: usize = 2048;

    /// 1–3 non-overlapping square targets of sides 256–768 at positions off the crop grids.
    fn targets(scene: u64) -> Vec<Rect> {
        let mut rng = stream(7, &[scene]);
        let mut placed: Vec<Rect> = Vec::new();
        let wanted = 1 + below(&mut rng, 3);
        while placed.len() < wanted {
            let side = [256, 384, 512, 768][below(&mut rng, 4)];
            let (r0, c0) = (37 + below(&mut rng, SIDE - side - 74), 37 + below(&mut rng, SIDE - side - 74));
            let rect = Rect { r0, r1: r0 + side, c0, c1: c0 + side };
            let apart = |o: &Rect| rect.r1 <= o.r0 || o.r1 <= rect.r0 || rect.c1 <= o.c0 || o.c1 <= rect.c0;
            if placed.iter().all(apart) {
                placed.push(rect);
            }
        }
        placed
    }

    /// The fraction of `crop` that the targets cover.
    fn coverage(crop: &Rect, targets: &[Rect]) -> f64 {
        let overlap = |t: &Rect| {
            let rows = crop.r1.min(t.r1).saturating_sub(crop.r0.max(t.r0));
            let columns = crop.c1.min(t.c1).saturating_sub(crop.c0.max(t.c0));
            rows * columns
        };
        targets.iter().map(overlap).sum::<usize>() as f64 / ((crop.r1 - crop.r0) * (crop.c1 - crop.c0)) as f64
    }

    /// The indicators of a scene's map when each crop gets `score(crop)`.
    fn indicators(targets: &[Rect], score: &mut dyn FnMut(&Rect) -> f64) -> Indicators {
        let all = crops(SIDE, SIDE, &[256, 512, 768]);
        let scores: Vec<f64> = all.iter().map(score).collect();
        let map = median_filter(&MeanMap::new(SIDE, SIDE, &all, &scores).to_u8(), 251);
        let polygons: Vec<Vec<[f64; 2]>> = targets
            .iter()
            .map(|t| {
                let (x0, y0, x1, y1) = (t.c0 as f64, t.r0 as f64, t.c1 as f64 - 1.0, t.r1 as f64 - 1.0);
                vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
            })
            .collect();
        evaluate(&map, &polygons).unwrap()
    }

    #[test]
    fn an_oracle_scorer_finds_the_targets_and_a_random_one_does_not() {
        let scenes: Vec<Vec<Rect>> = (0..3).map(targets).collect();
        let oracle: Vec<Indicators> = scenes.iter().map(|t| indicators(t, &mut |c| coverage(c, t))).collect();
        let mean =
            |values: &[Indicators], f: fn(&Indicators) -> f64| values.iter().map(f).sum::<f64>() / values.len() as f64;
        assert!(mean(&oracle, |i| i.rmi) > 0.8, "oracle Rmi {:?}", oracle.iter().map(|i| i.rmi).collect::<Vec<_>>());
        assert!(mean(&oracle, |i| i.ras) < 0.2, "oracle Ras {:?}", oracle.iter().map(|i| i.ras).collect::<Vec<_>>());
        let mut rng = stream(11, &[]);
        let random: Vec<Indicators> =
            scenes.iter().map(|t| indicators(t, &mut |_| uniform(&mut rng, 0.0, 1.0))).collect();
        let rsu = mean(&random, |i| i.rsu);
        eprintln!(
            "oracle: Rmi {:.4}, Ras {:.4}; random: Rsu {rsu:.4}",
            mean(&oracle, |i| i.rmi),
            mean(&oracle, |i| i.ras)
        );
        assert!((rsu - 0.5069).abs() < 0.1, "random scorer Rsu {rsu}");
        for t in &scenes {
            assert_eq!(
                indicators(t, &mut |c| 1.0 - coverage(c, t)).ras,
                1.0,
                "the anti-oracle's attention is elsewhere"
            );
        }
    }
}
