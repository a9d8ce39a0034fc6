//! Source locations in BUILD.toml files and their rendering: `file:line:col` followed by
//! the offending line and a caret under the span, the way compilers show errors.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A span in a file, resolved to line and column (both 1-based) for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    /// The text of the line holding the span's start.
    pub line_text: String,
    /// How many characters to underline (at least 1).
    pub width: usize,
}

impl Location {
    pub fn from_span(file: &Path, text: &str, span: Range<usize>) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let col = text[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        let width = text[start..end].chars().count().max(1);
        Location {
            file: file.to_path_buf(),
            line,
            col,
            line_text: text[line_start..line_end].trim_end_matches('\r').to_string(),
            width,
        }
    }
}

impl fmt::Display for Location {
    /// `file:line:col`, then the snippet on the following lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        writeln!(f, "{}:{}:{}", self.file.display(), self.line, self.col)?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{num} | {}", self.line_text)?;
        write!(f, "{pad} | {}{}", " ".repeat(self.col - 1), "^".repeat(self.width))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbad key = 2\n";
        let loc = Location::from_span(Path::new("x/BUILD.toml"), text, 10..13);
        assert_eq!((loc.line, loc.col, loc.width), (2, 5, 3));
        assert_eq!(loc.to_string(), "x/BUILD.toml:2:5\n  |\n2 | bad key = 2\n  |     ^^^");
    }
}
