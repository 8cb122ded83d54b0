//! The word vocabulary: building (docs/ARCHITECTURE.md, Text), the original JSON format, caption encoding.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::stopwords::is_stop_word;
use super::tokenizer::caption_tokens;
use crate::fsutil::owned::Outputs;

/// Words with ids `1..=len()`; id 0 is padding. The last word of a built vocabulary is `<unk>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    /// `words[i]` has id `i + 1`.
    words: Vec<String>,
    ids: HashMap<String, i64>,
    unk: i64,
}

/// The token that stands for every word not in the vocabulary.
pub const UNK: &str = "<unk>";

/// The original JSON layout: `{"word2idx": {w: id}, "idx2word": {"id": w}, "idx": next_id}`.
#[derive(Deserialize)]
struct VocabularyFile {
    word2idx: HashMap<String, i64>,
    #[serde(default)]
    idx2word: Option<HashMap<String, String>>,
    #[serde(default)]
    idx: Option<i64>,
}

impl Vocabulary {
    /// Builds the vocabulary like the original `vocab.py`: tokens of every caption minus stop
    /// words, counted; words seen at least `threshold` times in first-seen order, then `<unk>`.
    pub fn build<'a>(captions: impl IntoIterator<Item = &'a str>, threshold: usize) -> Vocabulary {
        let mut order: Vec<String> = Vec::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for caption in captions {
            for token in caption_tokens(caption) {
                if is_stop_word(&token) {
                    continue;
                }
                let count = counts.entry(token.clone()).or_insert(0);
                if *count == 0 {
                    order.push(token);
                }
                *count += 1;
            }
        }
        let mut words: Vec<String> = order.into_iter().filter(|w| counts[w] >= threshold).collect();
        words.push(UNK.to_owned());
        Self::from_words(words).expect("built words are distinct and end with <unk>")
    }

    /// A vocabulary from words in id order (ids from 1); `<unk>` must be among them.
    pub fn from_words(words: Vec<String>) -> Result<Vocabulary> {
        let mut ids = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if ids.insert(w.clone(), i as i64 + 1).is_some() {
                bail!("the word `{w}` appears twice");
            }
        }
        let unk = *ids.get(UNK).with_context(|| format!("there is no `{UNK}` entry; rebuild it with `amfmn vocab`"))?;
        Ok(Vocabulary { words, ids, unk })
    }

    /// Reads a vocabulary JSON file (the original files load unchanged).
    pub fn load(path: &Path) -> Result<Vocabulary> {
        let text = crate::fsutil::read_to_string(path)
            .with_context(|| format!("cannot read vocabulary {}; build it with `amfmn vocab`", path.display()))?;
        Self::from_json(&text).with_context(|| format!("{}: not a vocabulary file", path.display()))
    }

    /// Parses the JSON text of a vocabulary file and checks that its three parts agree.
    pub fn from_json(text: &str) -> Result<Vocabulary> {
        let file: VocabularyFile = serde_json::from_str(text)?;
        let n = file.word2idx.len();
        let mut words = vec![None; n];
        for (word, &id) in &file.word2idx {
            let slot = usize::try_from(id)
                .ok()
                .filter(|&i| (1..=n).contains(&i))
                .with_context(|| format!("word2idx: `{word}` has id {id}, expected ids 1..={n}"))?;
            if let Some(other) = words[slot - 1].replace(word.clone()) {
                bail!("word2idx: `{other}` and `{word}` share id {id}");
            }
        }
        let words: Vec<String> = words.into_iter().map(|w| w.expect("ids are a permutation of 1..=n")).collect();
        if let Some(idx2word) = &file.idx2word {
            for (i, word) in words.iter().enumerate() {
                let key = (i + 1).to_string();
                if idx2word.get(&key) != Some(word) {
                    bail!("idx2word[\"{key}\"] is {:?} but word2idx gives `{word}` that id", idx2word.get(&key));
                }
            }
            if idx2word.len() != n {
                bail!("idx2word has {} entries, word2idx {n}", idx2word.len());
            }
        }
        if let Some(idx) = file.idx {
            if idx != n as i64 + 1 {
                bail!("idx is {idx}, expected {} (number of words + 1)", n + 1);
            }
        }
        Self::from_words(words)
    }

    /// The JSON text of the original format, byte for byte what Python's `json.dump` writes.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"word2idx\": {");
        for (i, w) in self.words.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write!(out, "{}: {}", python_json_string(w), i + 1).expect("writing to a String");
        }
        out.push_str("}, \"idx2word\": {");
        for (i, w) in self.words.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write!(out, "\"{}\": {}", i + 1, python_json_string(w)).expect("writing to a String");
        }
        write!(out, "}}, \"idx\": {}}}", self.words.len() + 1).expect("writing to a String");
        out
    }

    /// Writes the JSON file as one of `outputs` (atomically; never over a file amfmn did not write).
    pub fn save(&self, outputs: &mut Outputs, path: &Path) -> Result<()> {
        outputs.write(path, self.to_json().as_bytes())
    }

    /// SHA-256 of the vocabulary's JSON (its words and their order): what checkpoints and
    /// indexes record to refuse another vocabulary of the same size.
    pub fn sha256(&self) -> String {
        crate::fsutil::sha256_hex(self.to_json().as_bytes())
    }

    /// Number of words, `<unk>` included (ids are `1..=len()`).
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when the vocabulary has no words (never for a loaded or built one).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Words in id order (`words()[i]` has id `i + 1`).
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The id of `word`, or the id of `<unk>`.
    pub fn id(&self, word: &str) -> i64 {
        self.ids.get(word).copied().unwrap_or(self.unk)
    }

    /// The id of `<unk>`.
    pub fn unk_id(&self) -> i64 {
        self.unk
    }

    /// Token ids of a caption (docs/ARCHITECTURE.md, Text); empty for a caption without tokens
    /// (a blank caption: [`crate::data::loader::pad_captions`] encodes it as the original does).
    pub fn encode(&self, caption: &str) -> Vec<i64> {
        caption_tokens(caption).iter().map(|t| self.id(t)).collect()
    }
}

/// A JSON string literal as Python's `json.dumps` writes it (`ensure_ascii=True`).
fn python_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").expect("writing to a String");
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_keeps_frequent_words_in_first_seen_order() {
        let caps = ["A red roof and a red car.", "The car is red.", "Red roof, red car!"];
        let v = Vocabulary::build(caps, 2);
        assert_eq!(v.words(), ["red", "roof", "car", "<unk>"]);
        assert_eq!(v.id("car"), 3);
        assert_eq!(v.id("boat"), 4);
        assert_eq!(v.encode("a red boat"), [4, 1, 4], "stop words are not in the vocabulary");
        assert_eq!(v.encode(" . "), Vec::<i64>::new(), "a blank caption has no tokens");
    }

    #[test]
    fn json_matches_python_and_round_trips() {
        let v = Vocabulary::from_words(vec!["café".into(), "\"q\"".into(), "<unk>".into()]).unwrap();
        let json = v.to_json();
        assert_eq!(
            json,
            r#"{"word2idx": {"caf\u00e9": 1, "\"q\"": 2, "<unk>": 3}, "idx2word": {"1": "caf\u00e9", "2": "\"q\"", "3": "<unk>"}, "idx": 4}"#
        );
        assert_eq!(Vocabulary::from_json(&json).unwrap(), v);
    }

    #[test]
    fn inconsistent_files_are_refused() {
        let e = |t: &str| format!("{:#}", Vocabulary::from_json(t).unwrap_err());
        assert!(e(r#"{"word2idx": {"a": 1, "b": 3}}"#).contains("`b` has id 3, expected ids 1..=2"));
        assert!(e(r#"{"word2idx": {"a": 1, "b": 1}}"#).contains("share id 1"));
        assert!(e(r#"{"word2idx": {"a": 1}}"#).contains("no `<unk>` entry"));
        assert!(e(r#"{"word2idx": {"<unk>": 1}, "idx2word": {"1": "x"}}"#).contains("idx2word[\"1\"]"));
        assert!(e(r#"{"word2idx": {"<unk>": 1}, "idx": 7}"#).contains("idx is 7, expected 2"));
        assert!(e(r#"{"words": []}"#).contains("missing field `word2idx`"));
    }
}
