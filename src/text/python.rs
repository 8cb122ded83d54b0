//! Python string semantics the NLTK port depends on.

/// Python's `str.isspace()`: Unicode White_Space plus the separators U+001C..U+001F.
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.rstrip()`.
pub fn python_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_python_space)
}

/// Python's `str.split()` without arguments.
pub fn python_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_python_space).filter(|part| !part.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_count_as_space() {
        assert_eq!(python_split("a\u{1f}b  c\u{3000}d").collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert_eq!(python_rstrip("ab \u{1c}\n"), "ab");
        assert!(!is_python_space('\u{200b}'));
    }
}
