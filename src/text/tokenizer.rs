//! Captions to tokens exactly as the original `data.py` / `vocab.py` did it:
//! `nltk.word_tokenize(caption.lower())` on the stripped line, then the punctuation filter.

use super::punkt::sentences;
use super::treebank::word_tokenize_sentence;

/// Tokens the original drops after tokenization (docs/ARCHITECTURE.md, Text).
pub const PUNCTUATION: [&str; 16] = [",", ".", ":", ";", "?", "(", ")", "[", "]", "&", "!", "*", "@", "#", "$", "%"];

/// `nltk.word_tokenize(text)`: Punkt sentences (untrained), then the Treebank word rules on each.
pub fn word_tokenize(text: &str) -> Vec<String> {
    sentences(text).into_iter().flat_map(word_tokenize_sentence).collect()
}

/// The tokens of one caption line: ASCII whitespace stripped and ASCII letters lower-cased (the
/// original lower-cased the raw bytes, which leaves non-ASCII letters as they are), tokenized,
/// punctuation tokens removed.
pub fn caption_tokens(caption: &str) -> Vec<String> {
    let line = caption.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    word_tokenize(&line.to_ascii_lowercase()).into_iter().filter(|t| !PUNCTUATION.contains(&t.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_pipeline_lowercases_and_drops_punctuation() {
        assert_eq!(
            caption_tokens("  Two white houses (near a road), 3.5 m apart; it's a port.\r\n"),
            ["two", "white", "houses", "near", "a", "road", "3.5", "m", "apart", "it", "'s", "a", "port"]
        );
    }

    #[test]
    fn every_sentence_loses_its_final_period() {
        assert_eq!(caption_tokens("A field. A road."), ["a", "field", "a", "road"]);
        assert!(caption_tokens("   ").is_empty());
    }
}
