//! The dynamic margin's ingredients against NLTK (PorterStemmer, sentence_bleu) in the
//! project's Python environment, on the captions of a synthetic set.

mod common;

use std::path::Path;

use amfmn::data::{CaptionSet, PrecompSplit};
use amfmn::loss::PriorSimilarity;
use amfmn::text::porter::stem;
use amfmn::text::Vocabulary;

/// Words that exercise the stemmer's rules, beside every word of the synthetic captions.
const WORDS: &[&str] = &[
    "caresses",
    "ponies",
    "ties",
    "caress",
    "cats",
    "feed",
    "agreed",
    "disabled",
    "matting",
    "mating",
    "meeting",
    "milling",
    "messing",
    "meetings",
    "happy",
    "sky",
    "skies",
    "dying",
    "lying",
    "relational",
    "conditional",
    "rational",
    "valenci",
    "hesitanci",
    "digitizer",
    "conformabli",
    "radicalli",
    "differentli",
    "vileli",
    "analogousli",
    "vietnamization",
    "predication",
    "operator",
    "feudalism",
    "decisiveness",
    "hopefulness",
    "callousness",
    "formaliti",
    "sensitiviti",
    "sensibiliti",
    "triplicate",
    "formative",
    "formalize",
    "electriciti",
    "electrical",
    "hopeful",
    "goodness",
    "revival",
    "allowance",
    "inference",
    "airliner",
    "gyroscopic",
    "adjustable",
    "defensible",
    "irritant",
    "replacement",
    "adjustment",
    "dependent",
    "adoption",
    "homologou",
    "communism",
    "activate",
    "angulariti",
    "homologous",
    "effective",
    "bowdlerize",
    "probate",
    "rate",
    "cease",
    "controll",
    "roll",
    "generously",
    "fully",
    "logi",
    "analogi",
    "innings",
    "news",
    "exceed",
    "succeed",
    "proceeding",
    "buildings",
    "yellow",
    "playground",
    "storage",
    "parking",
    "residential",
    "runways",
    "tennis",
    "bridges",
    "a",
    "as",
    "is",
    "by",
    "yyy",
    "enjoy",
    "spying",
    "fly",
    "trying",
    "dried",
    "died",
];

#[test]
fn porter_stems_equal_nltk() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::amfmn_in(dir.path(), &["synth", "--out", "d", "--images", "50", "--size", "32"]);
    assert!(out.status.success());
    let captions = std::fs::read_to_string(dir.path().join("d/train_caps.txt")).unwrap();
    let mut words: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    words.extend(amfmn::text::word_tokenize(&captions.to_lowercase()));
    words.sort();
    words.dedup();
    let path = dir.path().join("words.txt");
    std::fs::write(&path, words.join("\n")).unwrap();
    let expected = common::run_reference("prior.py", &["--stem", path.to_str().unwrap()]);
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(expected.len(), words.len());
    for (word, want) in words.iter().zip(expected) {
        assert_eq!(stem(word), want, "{word}");
    }
}

#[test]
fn prior_similarity_equals_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::amfmn_in(dir.path(), &["synth", "--out", "d", "--images", "40", "--size", "32", "--seed", "2"]);
    assert!(out.status.success());
    let data = dir.path().join("d");
    let split = PrecompSplit::read(&data, "train", 5).unwrap();
    let vocab = Vocabulary::from_words(vec!["<unk>".into()]).unwrap();
    let set = CaptionSet::new(&split, Path::new("."), &vocab);
    let prior = PriorSimilarity::new(&set);
    let mut pairs = Vec::new();
    for image in 0..set.num_images() {
        for caption in
            [image * 5, image * 5 + 3, (image * 7 + 11) % set.num_captions(), (image * 13 + 1) % set.num_captions()]
        {
            pairs.push((image, caption));
        }
    }
    let pairs_path = dir.path().join("pairs.txt");
    std::fs::write(&pairs_path, pairs.iter().map(|(i, j)| format!("{i} {j}\n")).collect::<String>()).unwrap();
    let expected = common::run_reference(
        "prior.py",
        &[data.join("train_caps.txt").to_str().unwrap(), "5", pairs_path.to_str().unwrap()],
    );
    let mut own_image_one = 0;
    for ((i, j), want) in pairs.iter().zip(expected.lines()) {
        let want: f64 = want.parse().unwrap();
        let got = prior.prior(*i, *j);
        assert!((got - want).abs() < 1e-9, "image {i}, caption {j}: {got} vs {want}");
        assert!((0.0..=1.0).contains(&got));
        if j / 5 == *i {
            own_image_one += 1;
            assert!(got > 0.5, "a caption of the image itself: BLEU 1, overlap > 0 ({got})");
        }
    }
    assert!(own_image_one >= 2 * set.num_images());
    let matrix = prior.matrix(&[0, 1], &[0, 5]);
    assert_eq!(matrix.size(), [2, 2]);
    assert!((matrix.double_value(&[1, 0]) - prior.prior(1, 0)).abs() < 1e-6);
}
