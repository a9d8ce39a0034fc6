//! The control member's text files: the `control` stanza (fields in the caller's order,
//! multi-line values folded the deb822 way), `md5sums` (sorted bytewise by path), and the
//! `Installed-Size` estimate computed the way dpkg-gencontrol computes it.

use crate::DebError;
use crate::tar::{TarEntry, TarKind};
use std::fmt::Write as _;

/// A control stanza: fields in the order they are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlFile {
    /// `(name, value)` pairs; values may span several lines.
    pub fields: Vec<(String, String)>,
}

impl ControlFile {
    /// Renders the stanza with [`render_control`].
    pub fn render(&self) -> Result<String, DebError> {
        render_control(&self.fields)
    }
}

fn bad(name: &str, reason: &'static str) -> DebError {
    DebError::ControlField { name: name.to_string(), reason }
}

/// Renders `Name: value` lines. A value's first line follows the name (for `Description`
/// it is the synopsis); each further line is written with one leading space, and empty
/// (or all-whitespace) lines as ` .`. Rejects field names that are empty, start with '#'
/// or '-', or contain ':', whitespace or non-ASCII; values that are empty, contain
/// control characters other than tab, or contain a line that is just "."; and an empty
/// first line for `Description` (the synopsis is required).
pub fn render_control(fields: &[(String, String)]) -> Result<String, DebError> {
    let mut out = String::new();
    for (name, value) in fields {
        if name.is_empty() {
            return Err(bad(name, "empty field name"));
        }
        if name.starts_with('#') || name.starts_with('-') {
            return Err(bad(name, "field name may not start with '#' or '-'"));
        }
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(bad(name, "field name must be printable ASCII without ':' or spaces"));
        }
        if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(bad(name, "value contains a control character"));
        }
        let value = value.trim_end_matches('\n');
        let mut lines = value.split('\n');
        let first = lines.next().unwrap_or("").trim();
        let rest: Vec<&str> = lines.collect();
        if first.is_empty() && rest.is_empty() {
            return Err(bad(name, "empty value"));
        }
        if first.is_empty() && name.eq_ignore_ascii_case("Description") {
            return Err(bad(name, "the description synopsis (first line) is empty"));
        }
        if first.is_empty() {
            let _ = writeln!(out, "{name}:");
        } else {
            let _ = writeln!(out, "{name}: {first}");
        }
        for line in rest {
            let line = line.trim_end();
            if line.trim_start().is_empty() {
                out.push_str(" .\n");
            } else if line.trim() == "." {
                return Err(bad(name, "a continuation line may not be just '.'"));
            } else {
                let _ = writeln!(out, " {line}");
            }
        }
    }
    Ok(out)
}

/// `Installed-Size` in KiB as dpkg-gencontrol (dpkg 1.21) computes it: for regular files
/// and symlinks `ceil(lstat size / 1024)` (a symlink's size is its target's length, so
/// usually 1; an empty file counts 0), and 1 for every other object, directories
/// included (the root directory too, as its `find` visits it). Hard links do not occur
/// in hb packages.
pub fn installed_size_kib(entries: &[TarEntry]) -> u64 {
    entries
        .iter()
        .map(|e| match &e.kind {
            TarKind::Dir => 1,
            TarKind::File { size } => size.div_ceil(1024),
            TarKind::Symlink { target } => (target.len() as u64).div_ceil(1024),
        })
        .sum()
}

/// The `md5sums` file: `hex  path\n` per file, sorted bytewise by path. Paths are given
/// without a leading "./" or "/" (any such prefix is stripped).
pub fn md5sums(files: &[(String, [u8; 16])]) -> String {
    let mut sorted: Vec<(&str, &[u8; 16])> =
        files.iter().map(|(p, d)| (p.trim_start_matches("./").trim_start_matches('/'), d)).collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (path, digest) in sorted {
        for b in digest {
            let _ = write!(out, "{b:02x}");
        }
        let _ = writeln!(out, "  {path}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::tests::{dir, file, symlink};

    fn f(n: &str, v: &str) -> (String, String) {
        (n.to_string(), v.to_string())
    }

    #[test]
    fn renders_fields_in_order() {
        let out = render_control(&[
            f("Package", "demosite"),
            f("Version", "1.0-1"),
            f("Description", "A demo\nLong text here.\n\nSecond paragraph.\n"),
            f("Conffiles", "\n/etc/a 0123\n/etc/b 4567"),
        ])
        .expect("render");
        assert_eq!(
            out,
            "Package: demosite\nVersion: 1.0-1\nDescription: A demo\n Long text here.\n .\n \
             Second paragraph.\nConffiles:\n /etc/a 0123\n /etc/b 4567\n"
        );
    }

    #[test]
    fn rejects_bad_fields() {
        for (n, v) in [
            ("", "x"),
            ("Bad Name", "x"),
            ("Bad:Name", "x"),
            ("#x", "x"),
            ("Package", ""),
            ("Package", "a\rb"),
            ("Description", "\nno synopsis"),
            ("Description", "s\n."),
        ] {
            assert!(render_control(&[f(n, v)]).is_err(), "{n:?} {v:?}");
        }
    }

    #[test]
    fn installed_size_like_dpkg_gencontrol() {
        let e = vec![
            dir(""),
            dir("usr"),
            file("usr/empty", 0),
            file("usr/one", 1),
            file("usr/k", 1024),
            file("usr/k1", 1025),
            symlink("usr/l", "one"),
        ];
        // dirs 1 each, empty file 0, 1 B -> 1, 1024 B -> 1, 1025 B -> 2, symlink 1.
        assert_eq!(installed_size_kib(&e), 7);
    }

    #[test]
    fn md5sums_sorted_bytewise() {
        let out = md5sums(&[
            ("usr/b".to_string(), [0xab; 16]),
            ("./usr/B".to_string(), [0x01; 16]),
            ("usr/a".to_string(), [0; 16]),
        ]);
        assert_eq!(
            out,
            format!("{}  usr/B\n{}  usr/a\n{}  usr/b\n", "01".repeat(16), "00".repeat(16), "ab".repeat(16))
        );
    }
}
