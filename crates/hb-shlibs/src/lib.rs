//! Depends of a package from its ELF files, as `dpkg-shlibdeps` computes them: each
//! object's `DT_NEEDED` libraries are mapped to the packages of a root through their
//! `symbols` files (the dependency template, versioned by the newest symbol the object
//! uses, never below the library's oldest) or, without one, their `shlibs` files;
//! libraries the package ships itself (a wheel's vendored `.libs`) are skipped; a
//! library no package provides is an error naming the object. Pure: it is given bytes
//! and returns relations.

mod db;
mod elf;
mod version;

use std::collections::{BTreeMap, BTreeSet};

pub use db::Db;
pub use elf::{ElfObject, is_elf, read};
pub use version::compare;

#[derive(Debug, thiserror::Error)]
pub enum ShlibsError {
    #[error("{path}: not a readable ELF object: {why}")]
    Elf { path: String, why: String },
    #[error(
        "{object} needs the library {soname}, which no package of the target root provides (no symbols or shlibs file names it) and the package does not ship"
    )]
    NotFound { object: String, soname: String },
}

/// The dependencies of `objects` (path, object): sorted relations like
/// `libc6 (>= 2.14)`. `shipped` are the sonames the package itself holds.
pub fn depends(
    objects: &[(String, ElfObject)],
    shipped: &BTreeSet<String>,
    db: &Db,
) -> Result<Vec<String>, ShlibsError> {
    // Dependency template → the minimum version it needs ("" for none).
    let mut deps: BTreeMap<String, String> = BTreeMap::new();
    let raise = |deps: &mut BTreeMap<String, String>, template: &str, version: &str| {
        let cur = deps.entry(template.to_string()).or_default();
        if cur.is_empty() || (!version.is_empty() && compare(version, cur).is_gt()) {
            *cur = version.to_string();
        }
    };
    for (path, obj) in objects {
        let mut with_symbols = Vec::new();
        for soname in &obj.needed {
            if shipped.contains(soname) {
                continue;
            }
            if let Some(lib) = db.symbols(soname) {
                raise(&mut deps, lib.template(0), lib.smallest());
                with_symbols.push((soname.as_str(), lib));
            } else if let Some(relation) = db.shlibs(soname) {
                deps.entry(relation.to_string()).or_default();
            } else {
                return Err(ShlibsError::NotFound { object: path.clone(), soname: soname.clone() });
            }
        }
        for sym in &obj.undefined {
            // The first needed library whose symbols file has it, in DT_NEEDED order.
            if let Some((lib, minver, dep)) = with_symbols.iter().find_map(|(_, lib)| {
                let (minver, dep) = lib.lookup(sym)?;
                Some((lib, minver, dep))
            }) {
                raise(&mut deps, lib.template(dep), minver);
            }
        }
    }
    Ok(render(&deps))
}

/// Templates with their versions as relations: `#MINVER#` becomes `(>= V)`; the same
/// package asked for twice with `>=` keeps the newer version.
fn render(deps: &BTreeMap<String, String>) -> Vec<String> {
    let mut at_least: BTreeMap<String, String> = BTreeMap::new();
    let mut other: BTreeSet<String> = BTreeSet::new();
    for (template, version) in deps {
        let minver = if version.is_empty() { String::new() } else { format!("(>= {version})") };
        let text = template.replace("#MINVER#", &minver);
        for relation in text.split(',').map(|r| r.split_whitespace().collect::<Vec<_>>().join(" ")) {
            if relation.is_empty() {
                continue;
            }
            match relation.split_once(" (>= ") {
                Some((pkg, v)) if !pkg.contains([' ', '|']) && v.ends_with(')') => {
                    let v = v.trim_end_matches(')').to_string();
                    let cur = at_least.entry(pkg.to_string()).or_default();
                    if cur.is_empty() || compare(&v, cur).is_gt() {
                        *cur = v;
                    }
                }
                _ if !relation.contains([' ', '|', '(']) => {
                    at_least.entry(relation).or_default();
                }
                _ => {
                    other.insert(relation);
                }
            }
        }
    }
    let mut out: Vec<String> = at_least
        .into_iter()
        .map(|(pkg, v)| if v.is_empty() { pkg } else { format!("{pkg} (>= {v})") })
        .chain(other)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBC: &str = "libc.so.6 libc6 #MINVER#
| libc6 (>> 2.36), libc6 (<< 2.37)
* Build-Depends-Package: libc-dev
 GLIBC_2.14@GLIBC_2.14 2.14
 GLIBC_2.2.5@GLIBC_2.2.5 2.2.5
 __cxa_finalize@GLIBC_2.2.5 2.2.5
 memcpy@GLIBC_2.14 2.14
 memcpy@GLIBC_2.2.5 2.2.5
 _dl_private@GLIBC_PRIVATE 2.36 1
libpthread.so.0 libc6 #MINVER#
 pthread_create@GLIBC_2.2.5 2.2.5
";

    fn obj(needed: &[&str], undefined: &[&str]) -> ElfObject {
        ElfObject {
            soname: None,
            needed: needed.iter().map(|s| s.to_string()).collect(),
            undefined: undefined.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn db() -> Db {
        let mut db = Db::default();
        db.add_symbols("libc6", LIBC);
        db.add_shlibs("libpq5", "libpq 5 libpq5 (>= 14~)\nudeb: libpq 5 libpq5-udeb\n");
        db
    }

    #[test]
    fn the_newest_symbol_used_sets_the_version_as_dpkg_shlibdeps_does() {
        let o = obj(
            &["libpthread.so.0", "libc.so.6"],
            &["memcpy@GLIBC_2.14", "__cxa_finalize@GLIBC_2.2.5", "PyUnicode_New@Base"],
        );
        assert_eq!(depends(&[("x.so".into(), o)], &BTreeSet::new(), &db()).unwrap(), ["libc6 (>= 2.14)"]);
        // Only the library's oldest version when no versioned symbol is used.
        let o = obj(&["libc.so.6"], &["PyUnicode_New@Base"]);
        assert_eq!(depends(&[("x.so".into(), o)], &BTreeSet::new(), &db()).unwrap(), ["libc6 (>= 2.2.5)"]);
        // A private symbol brings the alternative template.
        let o = obj(&["libc.so.6"], &["_dl_private@GLIBC_PRIVATE"]);
        assert_eq!(
            depends(&[("x.so".into(), o)], &BTreeSet::new(), &db()).unwrap(),
            ["libc6 (<< 2.37)", "libc6 (>= 2.2.5)", "libc6 (>> 2.36)"]
        );
    }

    #[test]
    fn shlibs_shipped_libraries_and_missing_ones() {
        let o = obj(&["libpq.so.5", "libvendored-abc123.so.1", "libc.so.6"], &["memcpy@GLIBC_2.14"]);
        let shipped = BTreeSet::from(["libvendored-abc123.so.1".to_string()]);
        assert_eq!(
            depends(&[("psycopg2/_psycopg.so".into(), o)], &shipped, &db()).unwrap(),
            ["libc6 (>= 2.14)", "libpq5 (>= 14~)"]
        );
        let o = obj(&["libnothere.so.3"], &[]);
        let e = depends(&[("a/b.so".into(), o)], &BTreeSet::new(), &db()).unwrap_err().to_string();
        assert!(e.contains("a/b.so needs the library libnothere.so.3"), "{e}");
    }

    #[test]
    fn versions_from_several_objects_take_the_newest() {
        let a = obj(&["libc.so.6"], &["memcpy@GLIBC_2.2.5"]);
        let b = obj(&["libc.so.6"], &["memcpy@GLIBC_2.14"]);
        assert_eq!(depends(&[("a".into(), a), ("b".into(), b)], &BTreeSet::new(), &db()).unwrap(), ["libc6 (>= 2.14)"]);
    }
}
