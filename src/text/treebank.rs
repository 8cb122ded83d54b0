//! Word tokenization equal to NLTK's `NLTKWordTokenizer` (the improved Treebank rules that
//! `nltk.word_tokenize` applies to each sentence), NLTK 3.10.
//!
//! Each rule is one regular-expression substitution, applied in NLTK's order. Python's `$`
//! (end of text, or before a final newline) is written `(?=\n?\z)`.

use std::sync::LazyLock;

use fancy_regex::Regex;

use super::python::python_split;

/// One substitution rule: pattern and replacement (`${n}` refers to groups).
struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

fn rule(pattern: &str, replacement: &'static str) -> Rule {
    let pattern = pattern.replace("$END", r"(?=\n?\z)");
    Rule { pattern: Regex::new(&pattern).expect("valid tokenizer pattern"), replacement }
}

impl Rule {
    /// The text with every match replaced; past the regex engine's backtracking limit (only on
    /// pathological lines, which the readers refuse) the text is left as it is.
    fn apply(&self, text: &str) -> String {
        match self.pattern.try_replacen(text, 0, self.replacement) {
            Ok(replaced) => replaced.into_owned(),
            Err(_) => text.to_owned(),
        }
    }
}

/// The rules of `NLTKWordTokenizer.tokenize` before the text is padded with spaces.
static RULES_BEFORE_PADDING: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        // Starting quotes.
        rule(r"([«“‘„]|[`]+)", " ${1} "),
        rule(r#"^""#, "``"),
        rule(r"(``)", " ${1} "),
        rule(r#"([ (\[{<])("|'{2})"#, "${1} `` "),
        rule(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", "${1} "),
        // Punctuation.
        rule(r#"([^.])(\.)([\])}>"'»”’ ]*+)\s*$END"#, "${1} ${2} ${3} "),
        rule(r"([:,])([^\d])", " ${1} ${2}"),
        rule(r"([:,])$END", " ${1} "),
        rule(r"\.{2,}", " ${0} "),
        rule(r"[;@#$%&]", " ${0} "),
        rule(r"[\x{2012}-\x{2015}]", " ${0} "),
        rule(r#"([^.])(\.)([\])}>"']*)\s*$END"#, "${1} ${2}${3} "),
        rule(r"[?!]", " ${0} "),
        rule(r"([^'])' ", "${1} ' "),
        rule(r"[*]", " ${0} "),
        // Parentheses and brackets, double dashes.
        rule(r"[\]\[(){}<>]", " ${0} "),
        rule(r"--", " -- "),
    ]
});

/// Ending quotes and contractions, applied after padding the text with one space each side.
static RULES_AFTER_PADDING: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    // `(?=\s)` in CONTRACTIONS2 uses Python's `re`, whose `\s` also has U+001C..U+001F.
    let re_space = r"[\s\x{1c}-\x{1f}]";
    vec![
        rule(r"([»”’])", " ${1} "),
        rule(r"''", " '' "),
        rule(r#"""#, " '' "),
        rule(r"\s+", " "),
        rule(r"([^' ])('[sS]|'[mM]|'[dD]|') ", "${1} ${2} "),
        rule(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "${1} ${2} "),
        rule(r"(?i)\b(can)(not)\b", " ${1} ${2} "),
        rule(r"(?i)\b(d)('ye)\b", " ${1} ${2} "),
        rule(r"(?i)\b(gim)(me)\b", " ${1} ${2} "),
        rule(r"(?i)\b(gon)(na)\b", " ${1} ${2} "),
        rule(r"(?i)\b(got)(ta)\b", " ${1} ${2} "),
        rule(r"(?i)\b(lem)(me)\b", " ${1} ${2} "),
        rule(r"(?i)\b(more)('n)\b", " ${1} ${2} "),
        rule(&format!(r"(?i)\b(wan)(na)(?={re_space})"), " ${1} ${2} "),
        rule(r"(?i) ('t)(is)\b", " ${1} ${2} "),
        rule(r"(?i) ('t)(was)\b", " ${1} ${2} "),
    ]
});

/// Tokenizes one sentence like `NLTKWordTokenizer().tokenize(sentence)`.
pub fn word_tokenize_sentence(sentence: &str) -> Vec<String> {
    let mut text = sentence.to_owned();
    for rule in RULES_BEFORE_PADDING.iter() {
        text = rule.apply(&text);
    }
    text = format!(" {text} ");
    for rule in RULES_AFTER_PADDING.iter() {
        text = rule.apply(&text);
    }
    python_split(&text).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Vec<String> {
        word_tokenize_sentence(s)
    }

    #[test]
    fn nltk_docstring_example() {
        let s = "Good muffins cost $3.88 (roughly 3,36 euros)\nin New York.  Please buy me\ntwo of them.\nThanks.";
        assert_eq!(
            tok(s),
            [
                "Good", "muffins", "cost", "$", "3.88", "(", "roughly", "3,36", "euros", ")", "in", "New", "York.",
                "Please", "buy", "me", "two", "of", "them.", "Thanks", "."
            ]
        );
    }

    #[test]
    fn contractions_and_quotes() {
        assert_eq!(tok("they can't say \"cannot\"."), ["they", "ca", "n't", "say", "``", "can", "not", "''", "."]);
        assert_eq!(tok("it's the planes' runway"), ["it", "'s", "the", "planes", "'", "runway"]);
    }
}
