//! Sentence BLEU as NLTK's `sentence_bleu(references, hypothesis)` computes it with the default
//! weights (0.25 for 1- to 4-grams) and no smoothing.

use std::collections::HashMap;

/// BLEU-4 of `hypothesis` against `references` (token ids). Clipped n-gram precisions; a
/// precision with no match counts as the smallest positive double (NLTK's `method0`), so the
/// score is then practically 0; no unigram match gives exactly 0.
pub fn sentence_bleu(references: &[&[u32]], hypothesis: &[u32]) -> f64 {
    let mut log_sum = 0f64;
    for n in 1..=4 {
        let counts = ngram_counts(hypothesis, n);
        let mut max_ref: HashMap<&[u32], usize> = HashMap::new();
        for r in references {
            for (gram, c) in ngram_counts(r, n) {
                let entry = max_ref.entry(gram).or_insert(0);
                *entry = (*entry).max(c);
            }
        }
        let matched: usize = counts.iter().map(|(g, &c)| c.min(max_ref.get(g).copied().unwrap_or(0))).sum();
        let total: usize = counts.values().sum::<usize>().max(1);
        if n == 1 && matched == 0 {
            return 0.0;
        }
        let p = if matched > 0 { matched as f64 / total as f64 } else { f64::MIN_POSITIVE };
        log_sum += 0.25 * p.ln();
    }
    let hyp_len = hypothesis.len();
    let ref_len = references.iter().map(|r| r.len()).min_by_key(|&r| (r.abs_diff(hyp_len), r)).unwrap_or(0);
    let brevity = if hyp_len > ref_len {
        1.0
    } else if hyp_len == 0 {
        0.0
    } else {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    };
    brevity * log_sum.exp()
}

fn ngram_counts(tokens: &[u32], n: usize) -> HashMap<&[u32], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_long_sentence_scores_one() {
        let s = [1, 2, 3, 4, 5, 6];
        assert!((sentence_bleu(&[&s], &s) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn hand_computed_partial_match() {
        // hyp 1 2 3 4 5 vs ref 1 2 3 4 6: p1 4/5, p2 3/4, p3 2/3, p4 1/2, equal lengths.
        let want = (0.25 * ((0.8f64).ln() + (0.75f64).ln() + (2.0f64 / 3.0).ln() + (0.5f64).ln())).exp();
        assert!((sentence_bleu(&[&[1, 2, 3, 4, 6]], &[1, 2, 3, 4, 5]) - want).abs() < 1e-12);
    }

    #[test]
    fn no_unigram_match_is_zero_and_short_hypotheses_nearly_zero() {
        assert_eq!(sentence_bleu(&[&[1, 2, 3, 4]], &[7, 8, 9, 10]), 0.0);
        let short = sentence_bleu(&[&[1, 2, 3]], &[1, 2, 3]);
        assert!(short > 0.0 && short < 1e-70, "{short}");
    }
}
