//! Recall metrics of SPEC §7 on an images × captions score matrix.
//!
//! Ranks are 0-based positions in a descending sort of the scores. Ties: of equal scores, the
//! lower caption (or image) index ranks first, which is what a stable descending sort gives.

use serde::{Deserialize, Serialize};

/// The recalls (in %), median and mean ranks of both directions, and their mean recall mR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[allow(non_snake_case)]
pub struct Metrics {
    pub r1i: f64,
    pub r5i: f64,
    pub r10i: f64,
    pub medri: f64,
    pub meanri: f64,
    pub r1t: f64,
    pub r5t: f64,
    pub r10t: f64,
    pub medrt: f64,
    pub meanrt: f64,
    pub mR: f64,
}

/// R@1, R@5, R@10, medr = floor(median) + 1 and meanr = mean + 1 of 0-based ranks.
fn summarize(ranks: &[usize]) -> (f64, f64, f64, f64, f64) {
    let n = ranks.len() as f64;
    let recall = |k: usize| 100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / n;
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    let m = sorted.len();
    let median = if m % 2 == 1 { sorted[m / 2] as f64 } else { (sorted[m / 2 - 1] + sorted[m / 2]) as f64 / 2.0 };
    let mean = ranks.iter().sum::<usize>() as f64 / n;
    (recall(1), recall(5), recall(10), median.floor() + 1.0, mean + 1.0)
}

/// Position of entry `target` in a stable descending sort of `scores`.
fn rank_of(scores: impl Iterator<Item = f32>, target: usize, value: f32) -> usize {
    scores.enumerate().filter(|&(k, s)| s > value || (s == value && k < target)).count()
}

/// Image-to-text ranks: for each image, the best rank of its `per_image` captions among all
/// captions. `scores` is row-major `[n_images, n_captions]`.
pub fn i2t_ranks(scores: &[f32], n_images: usize, n_captions: usize, per_image: usize) -> Vec<usize> {
    (0..n_images)
        .map(|i| {
            let row = &scores[i * n_captions..(i + 1) * n_captions];
            (i * per_image..(i + 1) * per_image)
                .map(|c| rank_of(row.iter().copied(), c, row[c]))
                .min()
                .expect("every image has captions")
        })
        .collect()
}

/// Text-to-image ranks: for each caption, the rank of its image among all images.
pub fn t2i_ranks(scores: &[f32], n_images: usize, n_captions: usize, per_image: usize) -> Vec<usize> {
    (0..n_captions)
        .map(|c| {
            let image = c / per_image;
            let column = (0..n_images).map(|i| scores[i * n_captions + c]);
            rank_of(column, image, scores[image * n_captions + c])
        })
        .collect()
}

impl Metrics {
    /// Metrics of a row-major `[n_images, n_images * per_image]` score matrix; caption k belongs
    /// to image k / per_image.
    pub fn from_scores(scores: &[f32], n_images: usize, per_image: usize) -> Metrics {
        let n_captions = n_images * per_image;
        assert_eq!(scores.len(), n_images * n_captions, "score matrix of {n_images} x {n_captions}");
        let (r1i, r5i, r10i, medri, meanri) = summarize(&i2t_ranks(scores, n_images, n_captions, per_image));
        let (r1t, r5t, r10t, medrt, meanrt) = summarize(&t2i_ranks(scores, n_images, n_captions, per_image));
        Metrics {
            r1i,
            r5i,
            r10i,
            medri,
            meanri,
            r1t,
            r5t,
            r10t,
            medrt,
            meanrt,
            mR: (r1i + r5i + r10i + r1t + r5t + r10t) / 6.0,
        }
    }

    /// The element-wise mean of several results (the k-fold average).
    pub fn mean(all: &[Metrics]) -> Metrics {
        let n = all.len() as f64;
        let avg = |f: fn(&Metrics) -> f64| all.iter().map(f).sum::<f64>() / n;
        Metrics {
            r1i: avg(|m| m.r1i),
            r5i: avg(|m| m.r5i),
            r10i: avg(|m| m.r10i),
            medri: avg(|m| m.medri),
            meanri: avg(|m| m.meanri),
            r1t: avg(|m| m.r1t),
            r5t: avg(|m| m.r5t),
            r10t: avg(|m| m.r10t),
            medrt: avg(|m| m.medrt),
            meanrt: avg(|m| m.meanrt),
            mR: avg(|m| m.mR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: sort each row/column with an explicit stable descending sort and look up.
    fn brute(scores: &[f32], n_images: usize, per: usize) -> (Vec<usize>, Vec<usize>) {
        let n_caps = n_images * per;
        let order = |values: Vec<f32>| {
            let mut idx: Vec<usize> = (0..values.len()).collect();
            idx.sort_by(|&a, &b| values[b].partial_cmp(&values[a]).unwrap());
            idx
        };
        let i2t = (0..n_images)
            .map(|i| {
                let o = order(scores[i * n_caps..(i + 1) * n_caps].to_vec());
                (i * per..(i + 1) * per).map(|c| o.iter().position(|&x| x == c).unwrap()).min().unwrap()
            })
            .collect();
        let t2i = (0..n_caps)
            .map(|c| {
                let o = order((0..n_images).map(|i| scores[i * n_caps + c]).collect());
                o.iter().position(|&x| x == c / per).unwrap()
            })
            .collect();
        (i2t, t2i)
    }

    #[test]
    fn perfect_scores_give_full_recall() {
        let (n, per) = (4, 5);
        let scores: Vec<f32> =
            (0..n).flat_map(|i| (0..n * per).map(move |c| if c / per == i { 1.0 } else { 0.0 })).collect();
        let m = Metrics::from_scores(&scores, n, per);
        assert_eq!((m.r1i, m.r1t, m.mR, m.medri, m.meanrt), (100.0, 100.0, 100.0, 1.0, 1.0));
    }

    #[test]
    fn reversed_scores_rank_last() {
        // 2 images, 1 caption each: each image scores the other's caption higher.
        let m = Metrics::from_scores(&[0.0, 1.0, 1.0, 0.0], 2, 1);
        assert_eq!((m.r1i, m.r5i, m.r1t, m.medri, m.meanri, m.medrt), (0.0, 100.0, 0.0, 2.0, 2.0, 2.0));
    }

    #[test]
    fn ties_rank_the_lower_index_first() {
        // Every score equal: image i's best caption i*per sits at position i*per; caption c's
        // image c/per at position c/per.
        let (n, per) = (3, 2);
        let m = Metrics::from_scores(&vec![0.5; n * n * per], n, per);
        assert_eq!(i2t_ranks(&[0.5; 18], 3, 6, 2), [0, 2, 4]);
        assert_eq!(t2i_ranks(&[0.5; 18], 3, 6, 2), [0, 0, 1, 1, 2, 2]);
        assert!((m.r1i - 100.0 / 3.0).abs() < 1e-12 && (m.r1t - 100.0 / 3.0).abs() < 1e-12);
        // Median of ranks [0, 2, 4] is 2 → medr 3; [0,0,1,1,2,2] median 1 → 2.
        assert_eq!((m.medri, m.medrt), (3.0, 2.0));
    }

    #[test]
    fn random_matrices_equal_brute_force() {
        let mut rng = crate::rng::stream(5, &[]);
        for (n, per) in [(7, 5), (12, 3), (20, 5)] {
            let scores: Vec<f32> = (0..n * n * per).map(|_| (crate::rng::below(&mut rng, 20) as f32) / 10.0).collect();
            let (i2t, t2i) = brute(&scores, n, per);
            assert_eq!(i2t_ranks(&scores, n, n * per, per), i2t);
            assert_eq!(t2i_ranks(&scores, n, n * per, per), t2i);
            let m = Metrics::from_scores(&scores, n, per);
            let (r1, r5, r10, medr, meanr) = summarize(&t2i);
            assert_eq!((m.r1t, m.r5t, m.r10t, m.medrt, m.meanrt), (r1, r5, r10, medr, meanr));
        }
    }

    #[test]
    fn median_of_an_even_count_is_floored() {
        // ranks 0, 1, 2, 5 → median 1.5 → floor 1 → medr 2; mean 2 → meanr 3.
        assert_eq!(summarize(&[0, 1, 2, 5]), (25.0, 75.0, 100.0, 2.0, 3.0));
    }
}
