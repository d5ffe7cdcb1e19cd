//! Configuration errors that point at the file, line, column and key at fault.
//!
//! The `toml` crate reports a byte span with each error; validation problems carry the key
//! path instead. Both are mapped onto the parsed document ([`Document`]) to find the line
//! and the key, so every message reads the same way whichever stage found it.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::validate::{KeyPath, Problem, Segment};

/// A 1-based line and column (columns count characters, as editors do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` of `text` (clamped to the text).
    pub fn of_offset(text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the file; `None` when the problem is a missing table or key with nowhere
    /// better to point.
    pub location: Option<Location>,
    /// The key at fault as a path (`cache.inactive_timeout`, `collector[1].mtu`); `None`
    /// for TOML syntax errors.
    pub key: Option<String>,
    /// What is wrong, naming the key and its table.
    pub message: String,
}

/// Why a configuration was not loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: PathBuf, error: io::Error },
    /// The text is not TOML, or not a valid configuration: every problem found, in file
    /// order (syntax and type errors stop at the first, as the parser does).
    Invalid {
        origin: String,
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The problems found (empty for [`ConfigError::Read`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                // io::Error's text ends in "(os error 2)": noise for an operator.
                let text = error.to_string();
                let text = match text.rfind(" (os error ") {
                    Some(i) if text.ends_with(')') => &text[..i],
                    _ => &text,
                };
                write!(f, "cannot read {}: {text}", path.display())
            }
            ConfigError::Invalid {
                origin,
                diagnostics,
            } => {
                for (i, d) in diagnostics.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    match d.location {
                        Some(at) => write!(f, "{origin}:{at}: {}", d.message)?,
                        None => write!(f, "{origin}: {}", d.message)?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { error, .. } => Some(error),
            ConfigError::Invalid { .. } => None,
        }
    }
}

/// The parsed document, kept to map spans to keys and keys to spans.
pub(crate) struct Document<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Document<'a> {
    /// Parses `text`; a syntax error comes back as a diagnostic.
    pub(crate) fn parse(text: &'a str) -> Result<Document<'a>, Diagnostic> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Document { text, root }),
            Err(e) => Err(syntax_diagnostic(text, &e)),
        }
    }

    fn location(&self, offset: usize) -> Location {
        Location::of_offset(self.text, offset)
    }

    /// The deepest key whose name or value covers `offset`. A table's span is only its
    /// header (`[cache]`), not its body, so every table is searched, not just the ones
    /// whose span covers the offset.
    fn path_at(&self, offset: usize) -> KeyPath {
        let mut path = Vec::new();
        find_in_table(self.root.get_ref(), offset, &mut path);
        KeyPath(path)
    }

    /// The span of `path`'s value, or of its deepest ancestor present in the file (the
    /// table header of a key left at its default); `None` if not even the table is.
    fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut best = None;
        let mut current: Option<&Spanned<DeValue<'_>>> = None;
        for segment in &path.0 {
            let next = match (segment, current.map(Spanned::get_ref)) {
                (Segment::Key(k), None) => self.root.get_ref().get(k.as_str()),
                (Segment::Key(k), Some(DeValue::Table(t))) => t.get(k.as_str()),
                (Segment::Index(i), Some(DeValue::Array(a))) => a.get(*i),
                _ => None,
            };
            match next {
                Some(value) => {
                    best = Some(value.span());
                    current = Some(value);
                }
                None => break,
            }
        }
        best
    }

    /// Where the key at `path` itself is written (its name, not its value), if it is.
    pub(crate) fn key_location(&self, path: &KeyPath) -> Option<Location> {
        let (last, parent) = path.0.split_last()?;
        let Segment::Key(name) = last else {
            return self.span_of(path).map(|s| self.location(s.start));
        };
        let table = if parent.is_empty() {
            Some(self.root.get_ref())
        } else {
            let mut current: Option<&Spanned<DeValue<'_>>> = None;
            for segment in parent {
                current = match (segment, current.map(Spanned::get_ref)) {
                    (Segment::Key(k), None) => self.root.get_ref().get(k.as_str()),
                    (Segment::Key(k), Some(DeValue::Table(t))) => t.get(k.as_str()),
                    (Segment::Index(i), Some(DeValue::Array(a))) => a.get(*i),
                    _ => None,
                };
                current?;
            }
            match current.map(Spanned::get_ref) {
                Some(DeValue::Table(t)) => Some(t),
                _ => None,
            }
        }?;
        let (key, _) = table.get_key_value(name.as_str())?;
        Some(self.location(key.span().start))
    }

    /// A validation problem, located at its key's value.
    pub(crate) fn problem_diagnostic(&self, problem: &Problem) -> Diagnostic {
        Diagnostic {
            location: self.span_of(&problem.path).map(|s| self.location(s.start)),
            key: (!problem.path.0.is_empty()).then(|| problem.path.to_string()),
            message: problem.to_string(),
        }
    }

    /// A deserialisation error (wrong type, bad value), reworded to name the key and its
    /// table. Unknown keys never get here: they are collected apart (`unknown.rs`).
    pub(crate) fn de_diagnostic(&self, error: &toml::de::Error) -> Diagnostic {
        let span = error.span();
        let location = span.as_ref().map(|s| self.location(s.start));
        let path = span.map_or_else(|| KeyPath(Vec::new()), |s| self.path_at(s.start));
        let raw = error.message();

        let mut message = reword(raw);
        if message.starts_with("expected an array")
            && matches!(path.0.as_slice(), [Segment::Key(k)] if k == "port" || k == "collector")
        {
            let k = path.to_string();
            message.push_str(&format!(" (write each as a [[{k}]] table)"));
        }
        let message = match path.subject() {
            Some(subject) => format!("{subject}: {message}"),
            None => message,
        };
        Diagnostic {
            location,
            key: (!path.0.is_empty()).then(|| path.to_string()),
            message,
        }
    }
}

/// Appends to `path` the deepest key of `table` covering `offset`; false if none does.
fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Segment>) -> bool {
    for (key, value) in table.iter() {
        path.push(Segment::Key(key.get_ref().to_string()));
        if find_in_value(value.get_ref(), offset, path)
            || key.span().contains(&offset)
            || value.span().contains(&offset)
        {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &DeValue<'_>, offset: usize, path: &mut Vec<Segment>) -> bool {
    match value {
        DeValue::Table(table) => find_in_table(table, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                if find_in_value(item.get_ref(), offset, path) || item.span().contains(&offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}

fn syntax_diagnostic(text: &str, error: &toml::de::Error) -> Diagnostic {
    let span = error.span();
    let mut message = format!("invalid TOML: {}", error.message());
    if error.message() == "duplicate key"
        && let Some(s) = &span
        && let Some(key) = text.get(s.clone())
    {
        message = format!("invalid TOML: duplicate key `{}`", key.trim());
    }
    Diagnostic {
        location: span.map(|s| Location::of_offset(text, s.start)),
        key: None,
        message,
    }
}

/// Rewords serde's type errors for operators: "invalid type: string \"15\", expected
/// u64" becomes "expected a whole number, found string \"15\"".
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        return format!(
            "expected {}, found {}",
            describe_expected(expected),
            describe_found(found)
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        let value = found
            .strip_prefix("integer `")
            .and_then(|v| v.strip_suffix('`'));
        if let (Some(value), Some(max)) = (value, integer_max(expected)) {
            return if value.starts_with('-') {
                format!("{value} is negative; expected a whole number from 0 to {max}")
            } else {
                format!("{value} is too large; expected a whole number from 0 to {max}")
            };
        }
        return format!("expected {}, found {}", describe_expected(expected), found);
    }
    message.to_string()
}

fn integer_max(rust_type: &str) -> Option<u64> {
    Some(match rust_type {
        "u8" => u8::MAX.into(),
        "u16" => u16::MAX.into(),
        "u32" => u32::MAX.into(),
        "u64" | "usize" => i64::MAX as u64, // TOML integers are 64-bit signed
        _ => return None,
    })
}

fn describe_found(found: &str) -> &str {
    match found {
        "map" => "a table",
        "sequence" => "an array",
        s => s,
    }
}

fn describe_expected(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number".into(),
        "i8" | "i16" | "i32" | "i64" => "an integer".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        s if s.starts_with("struct ") => "a table".into(),
        s => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines_and_character_columns() {
        let text = "a = 1\n# é comment\nbb = 2\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::of_offset(text, 4),
            Location { line: 1, column: 5 }
        );
        let bb = text.find("bb").unwrap();
        assert_eq!(
            Location::of_offset(text, bb),
            Location { line: 3, column: 1 }
        );
        // "# é comment": 'c' is the 5th character but the 6th byte of its line.
        let c = text.find("comment").unwrap();
        assert_eq!(
            Location::of_offset(text, c),
            Location { line: 2, column: 5 }
        );
        assert_eq!(
            Location::of_offset(text, 10_000),
            Location { line: 4, column: 1 }
        );
    }

    #[test]
    fn serde_messages_are_reworded() {
        assert_eq!(
            reword("invalid type: string \"15\", expected u64"),
            "expected a whole number, found string \"15\""
        );
        assert_eq!(
            reword("invalid value: integer `70000`, expected u16"),
            "70000 is too large; expected a whole number from 0 to 65535"
        );
        assert_eq!(
            reword("invalid value: integer `-1`, expected u32"),
            "-1 is negative; expected a whole number from 0 to 4294967295"
        );
        assert_eq!(
            reword("invalid type: integer `3`, expected struct CacheSection"),
            "expected a table, found integer `3`"
        );
        assert_eq!(reword("something else"), "something else");
    }
}
