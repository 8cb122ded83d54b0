//! The tokenizer against NLTK itself (run in the project's Python environment).
//!
//! `AMFMN_TOKENIZER_CORPUS=file1:file2 cargo test --test tokenizer_nltk -- --ignored` also
//! compares every line of other caption files (e.g. the RSITMD and RSICD caption files of the
//! original release).

mod common;

use amfmn::text::word_tokenize;

/// Sentences that exercise each rule: contractions, quotes, hyphens, numbers, several
/// sentences, brackets, ellipses, abbreviations, Unicode punctuation.
const SENTENCES: &[&str] = &[
    "There is a baseball field beside the green amusement park around the red track.",
    "A green baseball field adjacent to the playground and Red Square.",
    "Two large ships loaded with cargo were moored on both sides of the gray port. Some cars are parked nearby.",
    "many planes are parked next to a long building in an airport .",
    "It's a port; the boats aren't moving, they're docked.",
    "They can't see what the planes' owners didn't say: \"cannot\" or 'won't'?",
    "I'd've thought you'll gonna wanna gimme more'n that, lemme see... 'tis true, 'twas.",
    "A side-by-side pair of 3.5-meter-wide roads -- and a well-kept lawn.",
    "Numbers: 1,000 cars, 3,36 euros, 12:30, 4.5% and $3.88 (roughly).",
    "The u.s. base lies at no. 5. a road runs north. J. Bach walked by.",
    "(A field.) Two roads [with trees] {and} <a river>!",
    "Wait... is it a port?! Yes!! Boats.",
    "He said \"go.\" Then the trucks left.",
    "Some “curly quotes” and ‘single ones’ around «guillemets» here.",
    "An en–dash, an em—dash and a figure‒dash.",
    "Trailing comma, colon: semicolon; and ampersand & at@sign #hash *star",
    "``backticks'' and ''double'' quotes.",
    "A caption with a final quote.\"",
    "ends with an abbreviation etc.",
    "several  spaces\tand tabs   between words .",
    "a.b.c. d-e f_g h/i j\\k",
    "It was 'quoted' text, isn't it?",
    "The 2nd road and the 3rd one. 4. final item.",
    "Mr. Smith's house. Dr. Who's box.",
    "...leading ellipsis and trailing ...",
    "",
    ".",
    "a . b . c .",
];

fn compare(path: &std::path::Path) -> usize {
    let expected = common::run_reference("nltk_tokenize.py", &[path.to_str().unwrap()]);
    let text = std::fs::read(path).unwrap();
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last() == Some(&&b""[..]) {
        lines.pop();
    }
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{}", path.display());
    for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
        let line = std::str::from_utf8(line).unwrap();
        let lowered = line.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}').to_ascii_lowercase();
        let got = serde_json::to_string(&word_tokenize(&lowered)).unwrap();
        let want: Vec<String> = serde_json::from_str(want).unwrap();
        assert_eq!(got, serde_json::to_string(&want).unwrap(), "{}:{}: {line:?}", path.display(), i + 1);
    }
    lines.len()
}

#[test]
fn tokens_equal_nltk_on_varied_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentences.txt");
    std::fs::write(&path, SENTENCES.join("\n") + "\n").unwrap();
    assert_eq!(compare(&path), SENTENCES.len());
}

#[test]
#[ignore = "needs AMFMN_TOKENIZER_CORPUS=file1:file2 (caption files not in the repository)"]
fn tokens_equal_nltk_on_extra_corpus() {
    let corpus = std::env::var_os("AMFMN_TOKENIZER_CORPUS").expect("AMFMN_TOKENIZER_CORPUS is set");
    for path in std::env::split_paths(&corpus) {
        let n = compare(&path);
        eprintln!("{}: {n} lines equal NLTK", path.display());
    }
}
