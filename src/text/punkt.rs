//! Sentence splitting equal to NLTK's untrained `PunktSentenceTokenizer()`.
//!
//! With empty Punkt parameters (no abbreviations, collocations, sentence starters or
//! orthographic statistics) the algorithm reduces to: a `.`, `?` or `!` followed by whitespace
//! or closing punctuation ends a sentence, except after an ellipsis, and except after a single
//! letter or a number followed by a lower-case word or punctuation (or, for a single letter, by
//! an upper-case word). Closing quotes and brackets after the break stay with the sentence.
//! Offsets are byte offsets into the text; every rule below mirrors one step of
//! `nltk/tokenize/punkt.py` (NLTK 3.10).

use std::sync::LazyLock;

use fancy_regex::Regex;

use super::python::{is_python_space, python_rstrip};

/// Characters that end a sentence.
const SENT_END: [char; 3] = ['.', '?', '!'];

/// `PunktLanguageVars._re_non_word_chars`: characters that cannot appear within words.
fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// Closing punctuation moved onto the preceding sentence (`re_boundary_realignment`).
fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '\u{2018}' | '\u{2019}' | '\u{201c}' | '\u{201d}' | '\u{ab}' | '\u{bb}')
}

/// `PunktLanguageVars._word_tokenize_fmt`: splits punctuation other than periods off words.
static WORD_TOKENIZER: LazyLock<Regex> = LazyLock::new(|| {
    let non_word = r#"[)";}\]*:@'({\[\x{2018}\x{2019}\x{201c}\x{201d}\x{ab}\x{bb}?!]"#;
    let multi_char = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)";
    let word_start = r#"[^("`{\[:;&#*@)}\]\-,]"#;
    let end = r"(?=\n?\z)";
    let pattern = format!(
        r"{multi_char}|(?={word_start})\S+?(?=\s|{end}|{non_word}|{multi_char}|,(?:{end}|\s|{non_word}|{multi_char}))|\S"
    );
    Regex::new(&pattern).expect("valid punkt word pattern")
});

/// `PunktToken._RE_NUMERIC`.
static NUMERIC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-?[.,]?\d[\d,.\-]*\.?(?=\n?\z)").expect("valid pattern"));

/// `PunktToken._RE_INITIAL`: a single letter followed by a period.
static INITIAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[^\W\d]\.(?=\n?\z)").expect("valid pattern"));

/// A word token with the annotations of the two Punkt passes.
struct Token<'a> {
    tok: &'a str,
    period_final: bool,
    sentbreak: bool,
}

impl<'a> Token<'a> {
    fn new(tok: &'a str) -> Self {
        let mut token = Token { tok, period_final: tok.ends_with('.'), sentbreak: false };
        token.first_pass();
        token
    }

    /// `_first_pass_annotation` with an empty abbreviation list: sentence-end characters and
    /// period-final words break; ellipses (which end in `..`) do not, and no later rule makes
    /// them break.
    fn first_pass(&mut self) {
        let tok = self.tok;
        self.sentbreak = (tok.len() == 1 && tok.starts_with(SENT_END)) || (self.period_final && !tok.ends_with(".."));
    }

    /// `PunktToken.type`: the lower-cased token, numbers collapsed to `##number##`.
    fn type_(&self) -> String {
        let lower = self.tok.to_lowercase();
        if NUMERIC.is_match(&lower).unwrap_or(false) {
            "##number##".to_owned()
        } else {
            lower
        }
    }

    fn type_no_period(&self) -> String {
        let t = self.type_();
        if t.chars().count() > 1 && t.ends_with('.') {
            t[..t.len() - 1].to_owned()
        } else {
            t
        }
    }

    fn first_char(&self) -> char {
        self.tok.chars().next().expect("tokens are non-empty")
    }

    /// `_ortho_heuristic` with no orthographic statistics: `Some(false)` when the token
    /// cannot start a sentence, `None` when unknown (it is never certain that one does).
    fn may_start_sentence(&self) -> Option<bool> {
        if self.tok.len() == 1 && ";:,.!?".contains(self.tok) {
            return Some(false);
        }
        if self.first_char().is_lowercase() {
            return Some(false);
        }
        None
    }
}

/// `_second_pass_annotation`: initials and numbers before a word that cannot start a
/// sentence are abbreviations, not breaks.
fn second_pass(token: &mut Token, next: &Token) {
    if !token.period_final {
        return;
    }
    let is_initial = INITIAL.is_match(token.tok).unwrap_or(false);
    if is_initial || token.type_no_period() == "##number##" {
        match next.may_start_sentence() {
            Some(false) => token.sentbreak = false,
            None if is_initial && next.first_char().is_uppercase() => token.sentbreak = false,
            _ => {}
        }
    }
}

/// `_tokenize_words` + `_annotate_tokens`: annotated word tokens of `text`.
fn annotated_tokens(text: &str) -> Vec<Token<'_>> {
    let mut tokens: Vec<Token> = text
        .split('\n')
        .filter(|line| !line.trim_matches(is_python_space).is_empty())
        .flat_map(|line| WORD_TOKENIZER.find_iter(line).map_while(Result::ok).map(|m| Token::new(m.as_str())))
        .collect();
    for i in 1..tokens.len() {
        let (head, tail) = tokens.split_at_mut(i);
        second_pass(&mut head[i - 1], &tail[0]);
    }
    tokens
}

/// `text_contains_sentbreak`: a sentence break followed by at least one more token.
fn contains_sentbreak(text: &str) -> bool {
    let tokens = annotated_tokens(text);
    tokens.iter().rev().skip(1).any(|t| t.sentbreak)
}

/// One match of `period_context_re`: a sentence-end character and what follows it.
struct EndContext {
    /// Byte offset of the sentence-end character.
    start: usize,
    /// Byte offset just past it.
    end: usize,
    /// Byte range of the lookahead `after_tok` group.
    after: (usize, usize),
    /// Start of the following token when whitespace separates it.
    next_tok: Option<usize>,
}

/// Scans `text` for the matches of `period_context_re` (a lookahead-only pattern).
fn end_contexts(text: &str) -> Vec<EndContext> {
    let mut out = Vec::new();
    for (start, c) in text.char_indices() {
        if !SENT_END.contains(&c) {
            continue;
        }
        let end = start + c.len_utf8();
        let rest = &text[end..];
        let Some(next) = rest.chars().next() else { continue };
        if is_non_word(next) {
            out.push(EndContext { start, end, after: (end, end + next.len_utf8()), next_tok: None });
            continue;
        }
        let ws_len: usize = rest.chars().take_while(|c| c.is_whitespace()).map(char::len_utf8).sum();
        if ws_len == 0 {
            continue;
        }
        let tok_len: usize = rest[ws_len..].chars().take_while(|c| !c.is_whitespace()).map(char::len_utf8).sum();
        if tok_len == 0 {
            continue;
        }
        let tok_start = end + ws_len;
        out.push(EndContext { start, end, after: (end, tok_start + tok_len), next_tok: Some(tok_start) });
    }
    out
}

/// `_get_last_whitespace_index`: last ASCII whitespace (Python's `string.whitespace`), or 0.
fn last_whitespace_index(text: &str) -> usize {
    text.bytes().rposition(|b| b" \t\n\r\x0b\x0c".contains(&b)).unwrap_or(0)
}

/// `_match_potential_end_contexts`: end contexts with the word before them, overlaps removed.
fn potential_end_contexts(text: &str) -> Vec<(EndContext, String)> {
    let mut out = Vec::new();
    let mut previous: Option<(EndContext, (usize, usize))> = None;
    let mut previous_slice = (0usize, 0usize);
    for m in end_contexts(text) {
        let before = &text[previous_slice.1..m.start];
        let index = last_whitespace_index(before);
        let word_start = if index != 0 { index + previous_slice.1 + 1 } else { previous_slice.0 };
        let word_slice = (word_start, m.start);
        if let Some((pm, ps)) = previous.take() {
            if previous_slice.1 <= word_slice.0 {
                let context =
                    format!("{}{}{}", &text[ps.0..ps.1], &text[pm.start..pm.end], &text[pm.after.0..pm.after.1]);
                out.push((pm, context));
            }
        }
        previous = Some((m, word_slice));
        previous_slice = word_slice;
    }
    if let Some((pm, ps)) = previous {
        let context = format!("{}{}{}", &text[ps.0..ps.1], &text[pm.start..pm.end], &text[pm.after.0..pm.after.1]);
        out.push((pm, context));
    }
    out
}

/// `_slices_from_text`: sentence byte ranges before realignment.
fn sentence_slices(text: &str) -> Vec<(usize, usize)> {
    let mut slices = Vec::new();
    let mut last_break = 0;
    for (m, context) in potential_end_contexts(text) {
        if contains_sentbreak(&context) {
            slices.push((last_break, m.end));
            last_break = m.next_tok.unwrap_or(m.end);
        }
    }
    slices.push((last_break, python_rstrip(text).len()));
    slices
}

/// Length of the `re_boundary_realignment` match at the start of `s`, and the length of the
/// closing punctuation it carries (the match without trailing whitespace).
fn boundary_realignment(s: &str) -> Option<(usize, usize)> {
    let mut closing_len = 0;
    for c in s.chars() {
        if !is_closing(c) {
            return None;
        }
        closing_len += c.len_utf8();
        let rest = &s[closing_len..];
        let ws_len: usize = rest.chars().take_while(|c| c.is_whitespace()).map(char::len_utf8).sum();
        if ws_len > 0 {
            return Some((closing_len + ws_len, closing_len));
        }
        if rest.starts_with("--") || rest.is_empty() || rest.starts_with('\n') {
            return Some((closing_len, closing_len));
        }
    }
    None
}

/// Splits `text` into sentences like `PunktSentenceTokenizer().tokenize(text)`.
pub fn sentences(text: &str) -> Vec<&str> {
    let slices = sentence_slices(text);
    let mut out = Vec::new();
    let mut realign = 0;
    let slice = |(a, b): (usize, usize)| if a < b { &text[a..b] } else { "" };
    for (i, &(start, stop)) in slices.iter().enumerate() {
        let s1 = (start + realign, stop);
        let Some(&s2) = slices.get(i + 1) else {
            if !slice(s1).is_empty() {
                out.push(slice(s1));
            }
            continue;
        };
        match boundary_realignment(slice(s2)) {
            Some((match_len, closing_len)) => {
                out.push(slice((s1.0, s2.0 + closing_len)));
                realign = match_len;
            }
            None => {
                realign = 0;
                if !slice(s1).is_empty() {
                    out.push(slice(s1));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_final_periods() {
        assert_eq!(sentences("a red house. two trees are near it."), ["a red house.", "two trees are near it."]);
        assert_eq!(sentences("is it a port? yes! boats."), ["is it a port?", "yes!", "boats."]);
    }

    #[test]
    fn initials_and_numbers_before_lower_case_words_do_not_split() {
        // "u.s." is neither an initial nor a number, so it ends a sentence (as in NLTK).
        assert_eq!(sentences("the u.s. army base. many planes."), ["the u.s.", "army base.", "many planes."]);
        assert_eq!(sentences("a b. c d. 3. e"), ["a b. c d.", "3. e"]);
        assert_eq!(sentences("plot no. 5. a road."), ["plot no.", "5. a road."]);
        assert_eq!(sentences("J. Bach plays. Then"), ["J. Bach plays.", "Then"]);
    }

    #[test]
    fn ellipsis_does_not_split_and_closing_quotes_stay() {
        assert_eq!(sentences("wait... then go."), ["wait... then go."]);
        assert_eq!(sentences("(a field.) two roads."), ["(a field.)", "two roads."]);
        assert_eq!(sentences("he said \"go.\" then left."), ["he said \"go.\"", "then left."]);
    }

    #[test]
    fn trailing_whitespace_and_empty_text() {
        assert_eq!(sentences("a field.   "), ["a field."]);
        assert!(sentences("").is_empty());
        assert!(sentences("   ").is_empty());
    }
}
