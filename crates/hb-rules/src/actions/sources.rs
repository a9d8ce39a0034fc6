//! Finding a package's source files by pattern, safely. A pattern is a path relative to
//! the package directory whose components may hold `*`, `?`, `[...]` (never matching
//! `/`) or be `**` (any number of directories); a trailing `/**` means everything below.
//! Matching walks the directories the pattern can reach without following symlinks, and
//! refuses, naming the path:
//! - a symlink the pattern matches or would descend through (a link could lead out of
//!   the package: `data/etc -> /etc`);
//! - a name that is not UTF-8 where the pattern looks (it could not be packaged under
//!   its own name).
//!
//! `__pycache__` directories and `.pyc` files are skipped: hb compiles bytecode on the
//! target.

use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};

const OPTIONS: MatchOptions =
    MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

/// Why a pattern could not be matched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid pattern `{pattern}`: {message}")]
    Pattern { pattern: String, message: String },
    #[error(
        "{path} is a symlink (to {target}): hb never follows symlinks in sources, since they can lead out of the package; copy the file into the package or name the real file"
    )]
    Symlink { path: String, target: String },
    #[error("{path:?} is not a UTF-8 file name, which a package cannot hold under its own name; rename it")]
    NotUtf8 { path: PathBuf },
    #[error("{0}")]
    Io(#[from] hb_fs::FsError),
}

/// A pattern split into its literal leading directories and the rest.
struct Split<'a> {
    literal: Vec<&'a str>,
    rest: Vec<Pattern>,
    recursive: bool,
}

fn is_glob(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

fn split(pattern: &str) -> Result<Split<'_>, SourceError> {
    let bad = |message: String| SourceError::Pattern { pattern: pattern.to_string(), message };
    let mut comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if comps.last() == Some(&"**") {
        comps.push("*");
    }
    let n = comps.iter().position(|c| is_glob(c)).unwrap_or(comps.len());
    let rest = comps[n..].iter().map(|c| Pattern::new(c).map_err(|e| bad(e.to_string()))).collect::<Result<_, _>>()?;
    Ok(Split { literal: comps[..n].to_vec(), recursive: comps[n..].contains(&"**"), rest })
}

/// Whether the components of `rel` (below the literal prefix) match `pats`, where a `**`
/// stands for any number of components. With `prefix`, whether `rel` could be a
/// directory holding a match. A table over (pattern, component) positions, so any
/// number of `**` costs at most `pats.len() * rel.len()` component matches.
fn matches(pats: &[Pattern], rel: &[&str], prefix: bool) -> bool {
    let (np, nr) = (pats.len(), rel.len());
    // at[i][j]: do pats[i..] match rel[j..]?
    let mut at = vec![vec![false; nr + 1]; np + 1];
    at[np][nr] = true;
    for i in (0..np).rev() {
        at[i][nr] = prefix;
        for j in (0..nr).rev() {
            at[i][j] = if pats[i].as_str() == "**" {
                at[i + 1][j] || at[i][j + 1]
            } else {
                pats[i].matches_with(rel[j], OPTIONS) && at[i + 1][j + 1]
            };
        }
    }
    at[0][0]
}

/// Whether `pattern` matches the relative path `rel` (a file's path, never a pattern).
pub fn pattern_matches(pattern: &str, rel: &str) -> Result<bool, SourceError> {
    let s = split(pattern)?;
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let Some(rest) = comps.strip_prefix(s.literal.as_slice()) else { return Ok(false) };
    if s.rest.is_empty() {
        return Ok(rest.is_empty());
    }
    Ok(!rest.is_empty() && matches(&s.rest, rest, false))
}

/// `dir` joined with the literal components, `None` when something is missing; a
/// symlink among them is an error.
fn literal_path(dir: &Path, comps: &[&str]) -> Result<Option<PathBuf>, SourceError> {
    let mut base = dir.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        base.push(c);
        match std::fs::symlink_metadata(&base) {
            Ok(m) if m.file_type().is_symlink() => return Err(symlink(&comps[..=i].join("/"), &base)),
            Ok(_) => {}
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(base))
}

/// The file `rel` (a path, never a pattern) under `dir`, if it is a regular file.
pub fn find_file(dir: &Path, rel: &str) -> Result<Option<(String, PathBuf)>, SourceError> {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let Some(path) = literal_path(dir, &comps)? else { return Ok(None) };
    Ok(hb_fs::metadata(&path)?.is_file().then(|| (comps.join("/"), path)))
}

/// The files under `dir` that `pattern` matches: (relative path, absolute path), sorted.
pub fn find(dir: &Path, pattern: &str) -> Result<Vec<(String, PathBuf)>, SourceError> {
    let s = split(pattern)?;
    let Some(base) = literal_path(dir, &s.literal)? else { return Ok(Vec::new()) };
    let prefix = s.literal.join("/");
    if s.rest.is_empty() {
        let ok = hb_fs::metadata(&base)?.is_file() && !skipped(&prefix);
        return Ok(if ok { vec![(prefix, base)] } else { Vec::new() });
    }
    let mut walk = hb_fs::walk_sorted(&base).min_depth(1);
    if !s.recursive {
        walk = walk.max_depth(s.rest.len());
    }
    let mut out = Vec::new();
    let mut it = walk.into_iter();
    while let Some(entry) = it.next() {
        let entry = entry.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| base.clone());
            hb_fs::FsError::new("listing", &path, e.into())
        })?;
        let below = entry.path().strip_prefix(&base).unwrap_or(entry.path());
        let Some(below) = below.to_str() else { return Err(SourceError::NotUtf8 { path: entry.path().to_path_buf() }) };
        let comps: Vec<&str> = below.split('/').collect();
        let rel = if prefix.is_empty() { below.to_string() } else { format!("{prefix}/{below}") };
        let kind = entry.file_type();
        if kind.is_symlink() {
            // Refused if it is a match, or a directory (the pattern would look inside).
            let into_dir = entry.path().is_dir() && matches(&s.rest, &comps, true);
            if into_dir || matches(&s.rest, &comps, false) {
                return Err(symlink(&rel, entry.path()));
            }
        } else if kind.is_dir() {
            if skipped(&rel) || !matches(&s.rest, &comps, true) {
                it.skip_current_dir();
            }
        } else if kind.is_file() && matches(&s.rest, &comps, false) && !skipped(&rel) {
            out.push((rel, entry.path().to_path_buf()));
        }
    }
    Ok(out)
}

fn skipped(rel: &str) -> bool {
    rel.split('/').any(|c| c == "__pycache__") || rel.ends_with(".pyc")
}

fn symlink(rel: &str, path: &Path) -> SourceError {
    let target = std::fs::read_link(path).map_or_else(|e| format!("? ({e})"), |t| t.display().to_string());
    SourceError::Symlink { path: rel.to_string(), target }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_matches_paths_as_find_does() {
        for (pattern, rel, want) in [
            ("src/**", "src/a/b.py", true),
            ("src/**", "src", false),
            ("src/**/*.py", "src/x.py", true),
            ("src/**/*.py", "src/a/x.html", false),
            ("README.md", "README.md", true),
            ("README.md", "docs/README.md", false),
            ("*.md", "README.md", true),
            ("*.md", "a/README.md", false),
            ("LICEN[CS]E*", "LICENSE.txt", true),
        ] {
            assert_eq!(pattern_matches(pattern, rel).unwrap(), want, "{pattern} {rel}");
        }
    }
    use std::os::unix::ffi::OsStrExt;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        d
    }

    fn names(d: &Path, pattern: &str) -> Vec<String> {
        find(d, pattern).unwrap().into_iter().map(|(r, _)| r).collect()
    }

    #[test]
    fn patterns_match_like_globs() {
        let d = tree(&["a.py", "pkg/m.py", "pkg/sub/n.py", "pkg/t/x.html", "pkg/__pycache__/m.pyc", "pkg/.h.py"]);
        let p = d.path();
        assert_eq!(names(p, "pkg/**/*.py"), ["pkg/.h.py", "pkg/m.py", "pkg/sub/n.py"]);
        assert_eq!(names(p, "pkg/*.py"), ["pkg/.h.py", "pkg/m.py"]);
        assert_eq!(names(p, "pkg/t/*.html"), ["pkg/t/x.html"]);
        assert_eq!(names(p, "pkg/**"), ["pkg/.h.py", "pkg/m.py", "pkg/sub/n.py", "pkg/t/x.html"]);
        assert_eq!(names(p, "**/*.py"), ["a.py", "pkg/.h.py", "pkg/m.py", "pkg/sub/n.py"]);
        assert_eq!(names(p, "a.py"), ["a.py"]);
        assert_eq!(names(p, "*/sub/*"), ["pkg/sub/n.py"]);
        assert!(names(p, "nothing/*").is_empty() && names(p, "pkg").is_empty());
    }

    #[test]
    fn many_double_stars_cost_no_more_than_one() {
        // Each `**` could skip or take every component: matched naively, this is
        // exponential; a hostile BUILD.toml must not hang planning.
        let deep: Vec<String> = (0..24).map(|i| format!("d{i}")).collect();
        let d = tree(&[&format!("{}/x.py", deep.join("/"))]);
        let pattern = format!("{}x.py", "**/".repeat(40));
        assert_eq!(names(d.path(), &pattern), [format!("{}/x.py", deep.join("/"))]);
        assert!(names(d.path(), &format!("{}y.py", "**/".repeat(40))).is_empty());
    }

    #[test]
    fn symlinks_are_refused_where_the_pattern_looks() {
        let d = tree(&["data/a.txt", "data/inner/b.txt", "other/c.cfg"]);
        let p = d.path();
        std::os::unix::fs::symlink("/etc", p.join("data/etcdir")).unwrap();
        std::os::unix::fs::symlink("../other/c.cfg", p.join("data/c.cfg")).unwrap();
        let err = find(p, "data/**/*").unwrap_err().to_string();
        assert!(err.contains("data/c.cfg is a symlink (to ../other/c.cfg)"), "{err}");
        let err = find(p, "data/*/passwd").unwrap_err().to_string();
        assert!(err.contains("data/etcdir is a symlink (to /etc)"), "{err}");
        let err = find(p, "data/etcdir/*").unwrap_err().to_string();
        assert!(err.contains("data/etcdir is a symlink"), "{err}");
        // Where the pattern cannot look, a symlink does not matter.
        assert_eq!(names(p, "data/*.txt"), ["data/a.txt"]);
        assert_eq!(names(p, "data/inner/*"), ["data/inner/b.txt"]);
    }

    #[test]
    fn names_that_are_not_utf8_are_refused() {
        let d = tree(&["data/ok.txt"]);
        let bad = d.path().join("data").join(std::ffi::OsStr::from_bytes(b"bad\xff.txt"));
        std::fs::write(&bad, "x").unwrap();
        let err = find(d.path(), "data/*.txt").unwrap_err().to_string();
        assert!(err.contains(r"bad\xFF.txt") && err.contains("not a UTF-8 file name"), "{err}");
        std::fs::remove_file(&bad).unwrap();
        let dir = d.path().join(std::ffi::OsStr::from_bytes(b"d\xe9"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), "x").unwrap();
        assert!(find(d.path(), "**/*").unwrap_err().to_string().contains(r"d\xE9"));
    }
}
