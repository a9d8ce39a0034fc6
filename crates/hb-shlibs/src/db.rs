//! A root's library database: its packages' `symbols` files (deb-symbols(5): a header
//! `SONAME TEMPLATE`, alternative templates on `|` lines, `*` fields, and one
//! ` SYMBOL@VERSION MINVER [TEMPLATE-ID]` line per symbol, maybe with tags) and
//! `shlibs` files (`LIBRARY SOVERSION RELATION`). Symbols tagged `(c++)` or `(regex)`
//! need demangling or pattern matching and are not matched: the library's oldest
//! version still applies to them. `(symver)` entries match every symbol of that version.

use std::collections::BTreeMap;

use crate::compare;

/// One library of a symbols file.
#[derive(Clone, Debug, Default)]
pub struct LibSymbols {
    /// The dependency templates: the header's, then the `|` alternatives.
    templates: Vec<String>,
    /// `name@VERSION` → (minimum version, template id).
    symbols: BTreeMap<String, (String, usize)>,
    /// Symbol version names matched whole (`(symver)` entries) → (minimum, template id).
    symvers: BTreeMap<String, (String, usize)>,
    /// The oldest minimum version of any symbol.
    smallest: String,
}

impl LibSymbols {
    pub fn template(&self, id: usize) -> &str {
        self.templates.get(id).or(self.templates.first()).map_or("", String::as_str)
    }

    pub fn smallest(&self) -> &str {
        &self.smallest
    }

    /// The minimum version and template id a symbol (`name@VERSION`) needs.
    pub fn lookup(&self, symbol: &str) -> Option<(&str, usize)> {
        if let Some((v, id)) = self.symbols.get(symbol) {
            return Some((v, *id));
        }
        let version = symbol.rsplit_once('@').map(|(_, v)| v)?;
        self.symvers.get(version).map(|(v, id)| (v.as_str(), *id))
    }
}

/// Every library the root's packages describe.
#[derive(Clone, Debug, Default)]
pub struct Db {
    symbols: BTreeMap<String, LibSymbols>,
    /// (library name, so version) → relation.
    shlibs: BTreeMap<(String, String), String>,
}

/// `libfoo.so.5` → (`libfoo`, `5`); `libfoo-1.2.so` → (`libfoo`, `1.2`), as dpkg splits them.
pub fn split_soname(soname: &str) -> Option<(String, String)> {
    if let Some((name, version)) = soname.split_once(".so.") {
        return Some((name.to_string(), version.to_string()));
    }
    let stem = soname.strip_suffix(".so")?;
    let (name, version) = stem.rsplit_once('-')?;
    version.starts_with(|c: char| c.is_ascii_digit()).then(|| (name.to_string(), version.to_string()))
}

impl Db {
    pub fn symbols(&self, soname: &str) -> Option<&LibSymbols> {
        self.symbols.get(soname)
    }

    pub fn shlibs(&self, soname: &str) -> Option<&str> {
        self.shlibs.get(&split_soname(soname)?).map(String::as_str)
    }

    /// Adds a package's symbols file. Lines it cannot read are passed over, as dpkg's
    /// own parser would refuse the file at build time already.
    pub fn add_symbols(&mut self, _package: &str, text: &str) {
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(alt) = line.strip_prefix('|') {
                if let Some(lib) = current.as_ref().and_then(|c| self.symbols.get_mut(c)) {
                    lib.templates.push(alt.trim().to_string());
                }
                continue;
            }
            if line.starts_with('*') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                let Some(lib) = current.as_ref().and_then(|c| self.symbols.get_mut(c)) else { continue };
                add_symbol(lib, line.trim());
                continue;
            }
            let mut words = line.splitn(2, char::is_whitespace);
            let (Some(soname), Some(template)) = (words.next(), words.next()) else { continue };
            let lib = self.symbols.entry(soname.to_string()).or_default();
            lib.templates = vec![template.trim().to_string()];
            current = Some(soname.to_string());
        }
    }

    /// Adds a package's shlibs file (`udeb:` and other typed lines are for other
    /// package types and passed over).
    pub fn add_shlibs(&mut self, _package: &str, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or_default();
            if first.ends_with(':') {
                continue;
            }
            let mut words = line.splitn(3, char::is_whitespace);
            if let (Some(name), Some(version), Some(relation)) = (words.next(), words.next(), words.next()) {
                self.shlibs
                    .entry((name.to_string(), version.to_string()))
                    .or_insert_with(|| relation.trim().to_string());
            }
        }
    }
}

/// One ` [(tags)]SYMBOL MINVER [ID]` line.
fn add_symbol(lib: &mut LibSymbols, line: &str) {
    let (tags, rest) = match line.strip_prefix('(') {
        Some(r) => match r.split_once(')') {
            Some((tags, rest)) => (tags, rest),
            None => return,
        },
        None => ("", line),
    };
    let tags: Vec<&str> = tags.split('|').map(str::trim).collect();
    if tags.iter().any(|t| *t == "c++" || *t == "regex") || rest.starts_with('"') {
        return;
    }
    let mut words = rest.split_whitespace();
    let (Some(symbol), Some(minver)) = (words.next(), words.next()) else { return };
    let id = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    if lib.smallest.is_empty() || compare(minver, &lib.smallest).is_lt() {
        lib.smallest = minver.to_string();
    }
    if tags.contains(&"symver") {
        lib.symvers.insert(symbol.to_string(), (minver.to_string(), id));
    } else {
        lib.symbols.insert(symbol.to_string(), (minver.to_string(), id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonames_split_like_dpkg() {
        assert_eq!(split_soname("libpq.so.5"), Some(("libpq".into(), "5".into())));
        assert_eq!(split_soname("libfoo-1.2.so"), Some(("libfoo".into(), "1.2".into())));
        assert_eq!(split_soname("libfoo.so"), None);
    }

    #[test]
    fn tags_and_symver_entries() {
        let mut db = Db::default();
        db.add_symbols(
            "libx1",
            "libx.so.1 libx1 #MINVER#\n (symver)LIBX_2 2.0\n (optional|arch=amd64)x_new@LIBX_3 3.0\n (c++)\"x::y()@Base\" 1.0\n x_old@Base 0.9\n",
        );
        let lib = db.symbols("libx.so.1").unwrap();
        assert_eq!(lib.lookup("anything@LIBX_2"), Some(("2.0", 0)));
        assert_eq!(lib.lookup("x_new@LIBX_3"), Some(("3.0", 0)));
        assert_eq!(lib.lookup("x_old@Base"), Some(("0.9", 0)));
        assert_eq!(lib.smallest(), "0.9");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_read_without_panicking(text in "\\PC{0,300}") {
            let mut db = Db::default();
            db.add_symbols("p", &text);
            db.add_shlibs("p", &text);
            let _ = db.symbols("libc.so.6").map(|l| l.lookup("memcpy@GLIBC_2.14"));
        }
    }
}
