//! The recall metrics of the paper (R@K of both directions and their mean mR, with the
//! original's median and mean ranks; docs/ARCHITECTURE.md, Metrics) on an images × captions score matrix.
//!
//! Ranks are 0-based positions in a descending sort of the scores. Ties: of equal scores, the
//! lower caption (or image) index ranks first, which is what a stable descending sort gives.
//!
//! [`METRICS`] declares the eleven metrics once, with the names they carry in tables and JSON,
//! in the original's text log and in TensorBoard; every writer of metrics goes through it.

use std::collections::BTreeMap;

use ndarray::{ArrayView1, ArrayView2, Axis};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::table::Table;

/// One of the eleven metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricName {
    /// In tables, JSON and sidecars (`r1i`, ..., `mR`).
    pub name: &'static str,
    /// In the original's text log (`sum` for mR).
    pub log: &'static str,
    /// The original's TensorBoard tag (`rsum` for mR).
    pub board: &'static str,
    /// A recall (R@K or mR), as opposed to a median or mean rank.
    pub recall: bool,
}

const fn metric(name: &'static str, recall: bool) -> MetricName {
    MetricName { name, log: name, board: name, recall }
}

/// The eleven metrics in the original's order: image-to-text R@1, R@5, R@10, median and mean
/// rank, the same text-to-image, and mR. [`Metrics::values`] follows this order.
pub const METRICS: [MetricName; 11] = [
    metric("r1i", true),
    metric("r5i", true),
    metric("r10i", true),
    metric("medri", false),
    metric("meanri", false),
    metric("r1t", true),
    metric("r5t", true),
    metric("r10t", true),
    metric("medrt", false),
    metric("meanrt", false),
    MetricName { name: "mR", log: "sum", board: "rsum", recall: true },
];

/// The recalls (in %), median and mean ranks of both directions, and their mean recall mR.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
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
fn rank_of(scores: ArrayView1<f32>, target: usize) -> usize {
    let value = scores[target];
    scores.iter().enumerate().filter(|&(k, &s)| s > value || (s == value && k < target)).count()
}

/// Image-to-text ranks: for each image (row of `scores` `[n_images, n_captions]`), the best
/// rank of its `per_image` captions among all captions.
pub fn i2t_ranks(scores: ArrayView2<f32>, per_image: usize) -> Vec<usize> {
    scores
        .axis_iter(Axis(0))
        .enumerate()
        .map(|(i, row)| {
            (i * per_image..(i + 1) * per_image).map(|c| rank_of(row, c)).min().expect("every image has captions")
        })
        .collect()
}

/// Text-to-image ranks: for each caption (column), the rank of its image among all images.
pub fn t2i_ranks(scores: ArrayView2<f32>, per_image: usize) -> Vec<usize> {
    scores.axis_iter(Axis(1)).enumerate().map(|(c, column)| rank_of(column, c / per_image)).collect()
}

/// A results table: one row per labelled result, a column per metric of [`METRICS`].
pub fn results_table(rows: &[(String, Metrics)]) -> Table {
    let mut table = Table::new(std::iter::once("").chain(METRICS.iter().map(|m| m.name)));
    for (label, m) in rows {
        table.row(std::iter::once(label.clone()).chain(m.values().iter().map(|v| format!("{v:.2}"))));
    }
    table
}

impl Metrics {
    /// Metrics of a `[n_images, n_images * per_image]` score matrix; caption k belongs to image
    /// k / per_image.
    pub fn from_scores(scores: ArrayView2<f32>, per_image: usize) -> Metrics {
        let (n_images, n_captions) = scores.dim();
        assert_eq!(n_captions, n_images * per_image, "score matrix of {n_images} x {n_captions}");
        let (r1i, r5i, r10i, medri, meanri) = summarize(&i2t_ranks(scores, per_image));
        let (r1t, r5t, r10t, medrt, meanrt) = summarize(&t2i_ranks(scores, per_image));
        let mean_recall = (r1i + r5i + r10i + r1t + r5t + r10t) / 6.0;
        Metrics::from_values([r1i, r5i, r10i, medri, meanri, r1t, r5t, r10t, medrt, meanrt, mean_recall])
    }

    /// The values in the order of [`METRICS`].
    pub fn values(&self) -> [f64; 11] {
        [
            self.r1i,
            self.r5i,
            self.r10i,
            self.medri,
            self.meanri,
            self.r1t,
            self.r5t,
            self.r10t,
            self.medrt,
            self.meanrt,
            self.mR,
        ]
    }

    /// Metrics from values in the order of [`METRICS`].
    pub fn from_values(v: [f64; 11]) -> Metrics {
        let [r1i, r5i, r10i, medri, meanri, r1t, r5t, r10t, medrt, meanrt, mean_recall] = v;
        Metrics { r1i, r5i, r10i, medri, meanri, r1t, r5t, r10t, medrt, meanrt, mR: mean_recall }
    }

    /// Each metric with its names.
    pub fn named(&self) -> impl Iterator<Item = (MetricName, f64)> {
        METRICS.into_iter().zip(self.values())
    }

    /// The element-wise mean of several results (the k-fold average).
    pub fn mean(all: &[Metrics]) -> Metrics {
        let n = all.len() as f64;
        Metrics::from_values(std::array::from_fn(|k| all.iter().map(|m| m.values()[k]).sum::<f64>() / n))
    }
}

/// JSON and sidecars: an object with the eleven names of [`METRICS`].
impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(METRICS.len()))?;
        for (metric, value) in self.named() {
            map.serialize_entry(metric.name, &value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Metrics, D::Error> {
        let map = BTreeMap::<String, f64>::deserialize(deserializer)?;
        let mut values = [0.0; 11];
        for (value, metric) in values.iter_mut().zip(METRICS) {
            *value = *map.get(metric.name).ok_or_else(|| serde::de::Error::missing_field(metric.name))?;
        }
        Ok(Metrics::from_values(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn matrix(values: &[f32], n_images: usize) -> Array2<f32> {
        Array2::from_shape_vec((n_images, values.len() / n_images), values.to_vec()).unwrap()
    }

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
        let m = Metrics::from_scores(matrix(&scores, n).view(), per);
        assert_eq!((m.r1i, m.r1t, m.mR, m.medri, m.meanrt), (100.0, 100.0, 100.0, 1.0, 1.0));
    }

    #[test]
    fn reversed_scores_rank_last() {
        // 2 images, 1 caption each: each image scores the other's caption higher.
        let m = Metrics::from_scores(matrix(&[0.0, 1.0, 1.0, 0.0], 2).view(), 1);
        assert_eq!((m.r1i, m.r5i, m.r1t, m.medri, m.meanri, m.medrt), (0.0, 100.0, 0.0, 2.0, 2.0, 2.0));
    }

    #[test]
    fn ties_rank_the_lower_index_first() {
        // Every score equal: image i's best caption i*per sits at position i*per; caption c's
        // image c/per at position c/per.
        let (n, per) = (3, 2);
        let m = Metrics::from_scores(matrix(&vec![0.5; n * n * per], n).view(), per);
        assert_eq!(i2t_ranks(matrix(&[0.5; 18], 3).view(), 2), [0, 2, 4]);
        assert_eq!(t2i_ranks(matrix(&[0.5; 18], 3).view(), 2), [0, 0, 1, 1, 2, 2]);
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
            let scores = matrix(&scores, n);
            assert_eq!(i2t_ranks(scores.view(), per), i2t);
            assert_eq!(t2i_ranks(scores.view(), per), t2i);
            let m = Metrics::from_scores(scores.view(), per);
            let (r1, r5, r10, medr, meanr) = summarize(&t2i);
            assert_eq!((m.r1t, m.r5t, m.r10t, m.medrt, m.meanrt), (r1, r5, r10, medr, meanr));
        }
    }

    #[test]
    fn median_of_an_even_count_is_floored() {
        // ranks 0, 1, 2, 5 → median 1.5 → floor 1 → medr 2; mean 2 → meanr 3.
        assert_eq!(summarize(&[0, 1, 2, 5]), (25.0, 75.0, 100.0, 2.0, 3.0));
    }

    #[test]
    fn json_uses_the_eleven_names_in_order_and_reads_back() {
        let m = Metrics::from_values(std::array::from_fn(|k| k as f64 + 0.5));
        let json = serde_json::to_string(&m).unwrap();
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, METRICS.map(|n| n.name.to_string()));
        assert_eq!(serde_json::from_str::<Metrics>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Metrics>(r#"{"r1i": 1.0}"#).unwrap_err().to_string().contains("r5i"));
        assert_eq!(m.mR, 10.5);
        assert_eq!(Metrics::mean(&[m, Metrics::default()]).r5i, 0.75);
    }
}
