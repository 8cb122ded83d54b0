//! The Porter stemmer as NLTK's `PorterStemmer()` runs it (mode `NLTK_EXTENSIONS`, NLTK 3.10),
//! used by the dynamic margin's prior similarity (docs/ARCHITECTURE.md, Loss).

/// Words NLTK maps directly (its `pool` of irregular forms).
const IRREGULAR: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Consonant flag of every letter: `y` is a consonant at the start or after a vowel.
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let consonant = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(consonant);
    }
    flags
}

fn is_consonant(w: &[char], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// m: the number of vowel-consonant sequences.
fn measure(w: &[char]) -> usize {
    consonant_flags(w).windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(w: &[char]) -> bool {
    consonant_flags(w).iter().any(|&c| !c)
}

fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// *o: consonant-vowel-consonant ending, the last not w, x or y (or, NLTK's extension, a
/// two-letter vowel-consonant word).
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let s: Vec<char> = suffix.chars().collect();
    w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
}

fn replace_suffix(w: &[char], suffix: &str, replacement: &str) -> Vec<char> {
    let mut out = w[..w.len() - suffix.chars().count()].to_vec();
    out.extend(replacement.chars());
    out
}

/// A suffix rule: `(suffix, replacement, condition on the stem)`.
type Rule<'a> = (&'a str, &'a str, Option<&'a dyn Fn(&[char]) -> bool>);

/// NLTK's `_apply_rule_list`: the first rule whose suffix matches decides (applies if its
/// condition holds, otherwise leaves the word).
fn apply_rules(w: &[char], rules: &[Rule]) -> Vec<char> {
    for &(suffix, replacement, condition) in rules {
        if ends_with(w, suffix) {
            let stem = replace_suffix(w, suffix, "");
            return if condition.is_none_or(|c| c(&stem)) {
                let mut out = stem;
                out.extend(replacement.chars());
                out
            } else {
                w.to_vec()
            };
        }
    }
    w.to_vec()
}

fn positive_measure(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn step1a(w: &[char]) -> Vec<char> {
    if ends_with(w, "ies") && w.len() == 4 {
        return replace_suffix(w, "ies", "ie");
    }
    apply_rules(w, &[("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])
}

fn step1b(w: &[char]) -> Vec<char> {
    if ends_with(w, "ied") {
        return replace_suffix(w, "ied", if w.len() == 4 { "ie" } else { "i" });
    }
    if ends_with(w, "eed") {
        let stem = replace_suffix(w, "eed", "");
        return if measure(&stem) > 0 { replace_suffix(w, "eed", "ee") } else { w.to_vec() };
    }
    let Some(stem) = ["ed", "ing"].iter().find_map(|suffix| {
        ends_with(w, suffix).then(|| replace_suffix(w, suffix, "")).filter(|stem| contains_vowel(stem))
    }) else {
        return w.to_vec();
    };
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if ends_with(&stem, suffix) {
            return replace_suffix(&stem, suffix, replacement);
        }
    }
    if ends_double_consonant(&stem) {
        let last = *stem.last().expect("non-empty");
        return if matches!(last, 'l' | 's' | 'z') { stem } else { stem[..stem.len() - 1].to_vec() };
    }
    if measure(&stem) == 1 && ends_cvc(&stem) {
        let mut out = stem;
        out.push('e');
        return out;
    }
    stem
}

fn step1c(w: &[char]) -> Vec<char> {
    let condition = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[("y", "i", Some(&condition))])
}

fn step2(w: &[char]) -> Vec<char> {
    if ends_with(w, "alli") && positive_measure(&replace_suffix(w, "alli", "")) {
        return step2(&replace_suffix(w, "alli", "al"));
    }
    let pm: &dyn Fn(&[char]) -> bool = &positive_measure;
    let logi = |_: &[char]| positive_measure(&w[..w.len() - 3]);
    apply_rules(
        w,
        &[
            ("ational", "ate", Some(pm)),
            ("tional", "tion", Some(pm)),
            ("enci", "ence", Some(pm)),
            ("anci", "ance", Some(pm)),
            ("izer", "ize", Some(pm)),
            ("bli", "ble", Some(pm)),
            ("alli", "al", Some(pm)),
            ("entli", "ent", Some(pm)),
            ("eli", "e", Some(pm)),
            ("ousli", "ous", Some(pm)),
            ("ization", "ize", Some(pm)),
            ("ation", "ate", Some(pm)),
            ("ator", "ate", Some(pm)),
            ("alism", "al", Some(pm)),
            ("iveness", "ive", Some(pm)),
            ("fulness", "ful", Some(pm)),
            ("ousness", "ous", Some(pm)),
            ("aliti", "al", Some(pm)),
            ("iviti", "ive", Some(pm)),
            ("biliti", "ble", Some(pm)),
            ("fulli", "ful", Some(pm)),
            ("logi", "log", Some(&logi)),
        ],
    )
}

fn step3(w: &[char]) -> Vec<char> {
    let pm: &dyn Fn(&[char]) -> bool = &positive_measure;
    apply_rules(
        w,
        &[
            ("icate", "ic", Some(pm)),
            ("ative", "", Some(pm)),
            ("alize", "al", Some(pm)),
            ("iciti", "ic", Some(pm)),
            ("ical", "ic", Some(pm)),
            ("ful", "", Some(pm)),
            ("ness", "", Some(pm)),
        ],
    )
}

fn step4(w: &[char]) -> Vec<char> {
    let m1 = |stem: &[char]| measure(stem) > 1;
    let m1: &dyn Fn(&[char]) -> bool = &m1;
    let ion = |stem: &[char]| measure(stem) > 1 && matches!(stem.last(), Some('s' | 't'));
    apply_rules(
        w,
        &[
            ("al", "", Some(m1)),
            ("ance", "", Some(m1)),
            ("ence", "", Some(m1)),
            ("er", "", Some(m1)),
            ("ic", "", Some(m1)),
            ("able", "", Some(m1)),
            ("ible", "", Some(m1)),
            ("ant", "", Some(m1)),
            ("ement", "", Some(m1)),
            ("ment", "", Some(m1)),
            ("ent", "", Some(m1)),
            ("ion", "", Some(&ion)),
            ("ou", "", Some(m1)),
            ("ism", "", Some(m1)),
            ("ate", "", Some(m1)),
            ("iti", "", Some(m1)),
            ("ous", "", Some(m1)),
            ("ive", "", Some(m1)),
            ("ize", "", Some(m1)),
        ],
    )
}

fn step5a(w: &[char]) -> Vec<char> {
    if ends_with(w, "e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w.to_vec()
}

fn step5b(w: &[char]) -> Vec<char> {
    let condition = |_: &[char]| measure(&w[..w.len() - 1]) > 1;
    apply_rules(w, &[("ll", "l", Some(&condition))])
}

/// The stem of `word` (lower-cased first), equal to `nltk.stem.PorterStemmer().stem(word)`.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, to)) = IRREGULAR.iter().find(|(from, _)| *from == lower) {
        return (*to).to_owned();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let w: Vec<char> = lower.chars().collect();
    let w = step5b(&step5a(&step4(&step3(&step2(&step1c(&step1b(&step1a(&w))))))));
    w.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_of_the_paper_and_nltk() {
        for (word, want) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("buildings", "build"),
            ("skies", "sky"),
            ("dying", "die"),
            ("generously", "gener"),
            ("is", "is"),
        ] {
            assert_eq!(stem(word), want, "{word}");
        }
    }
}
