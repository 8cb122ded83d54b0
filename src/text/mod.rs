//! Text half of the pipeline: NLTK-exact tokenization, the vocabulary, caption encoding.

pub mod bleu;
pub mod porter;
mod punkt;
mod python;
pub mod stopwords;
pub mod tokenizer;
mod treebank;
pub mod vocab;

pub use punkt::sentences;
pub use tokenizer::{caption_tokens, word_tokenize};
pub use treebank::word_tokenize_sentence;
pub use vocab::Vocabulary;
