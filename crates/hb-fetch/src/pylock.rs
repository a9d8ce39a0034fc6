//! Writing a lock as a PEP 751 `pylock.toml`, so other installers (pip, uv) install
//! exactly what hb installs. Every target's runtime files (one environment each), each recorded by
//! `path` (relative to the lock, in a wheel directory hb fills beside it) with its
//! size and sha256, never by URL, so the file names no index host. Packages, keys and
//! arrays are in a fixed order: the same lock always writes the same bytes.

use std::fmt::Write as _;

use hb_python::Target;

use crate::{Lock, LockedFile, Role, sdist};

/// A file of the lock as the pylock names it: its path relative to the lock file and
/// its size.
pub struct Placed<'a> {
    pub file: &'a LockedFile,
    pub path: String,
    pub size: u64,
}

/// TOML basic string with the escapes TOML requires.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The runtime files of `lock` for `targets`, in package order, each with a target it
/// serves. One pylock lists every target's wheels under one package entry, so a
/// package must have one version on every target (else hb would need markers).
pub fn runtime_files(lock: &Lock, targets: &[Target]) -> Result<Vec<(LockedFile, Target)>, String> {
    let mut out: Vec<(LockedFile, Target)> = Vec::new();
    for t in targets {
        let id = t.id();
        for f in lock.files_for(Role::Runtime, &id) {
            if let Some((other, _)) =
                out.iter().find(|(o, _)| hb_python::normalize(&o.name) == hb_python::normalize(&f.name))
                && other.version != f.version
            {
                return Err(format!(
                    "{} is {} for one target and {} for {}; a pylock.toml without markers holds one version: write it for fewer platforms (`hb lock --format pylock --platform NAME`)",
                    f.name,
                    other.version,
                    f.version,
                    t.describe()
                ));
            }
            if !out.iter().any(|(o, _)| o.file == f.file) {
                out.push((f.clone(), t.clone()));
            }
        }
    }
    out.sort_by(|(a, _), (b, _)| {
        (hb_python::normalize(&a.name), &a.file).cmp(&(hb_python::normalize(&b.name), &b.file))
    });
    Ok(out)
}

/// The `pylock.toml` text for `targets`, each file at its placed path.
pub fn render(targets: &[Target], placed: &[Placed<'_>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Written by `hb lock --format pylock` from hb.lock; install with");
    let _ = writeln!(out, "# `uv pip install -r pylock.toml` (or pip >= 26.1) on one of its environments.");
    let _ = writeln!(out, "lock-version = \"1.0\"");
    let envs: Vec<String> = targets
        .iter()
        .map(|t| {
            quote(&format!(
                "sys_platform == 'linux' and platform_machine == '{}' and python_version == '{}.{}' and implementation_name == 'cpython'",
                t.arch, t.python.0, t.python.1
            ))
        })
        .collect();
    let _ = writeln!(out, "environments = [{}]", envs.join(", "));
    if let Some((major, minor)) = targets.iter().map(|t| t.python).min() {
        let _ = writeln!(out, "requires-python = {}", quote(&format!(">={major}.{minor}")));
    }
    let _ = writeln!(out, "created-by = \"hb\"");
    let mut i = 0;
    while let Some(first) = placed.get(i) {
        let name = hb_python::normalize(&first.file.name);
        let group: Vec<&Placed<'_>> = placed
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|p| hb_python::normalize(&p.file.name) == name)
            .collect();
        i += group.len();
        let _ = writeln!(out, "\n[[packages]]\nname = {}\nversion = {}", quote(&name), quote(&first.file.version));
        let entry = |p: &Placed<'_>| {
            format!(
                "{{name = {}, path = {}, size = {}, hashes = {{sha256 = {}}}}}",
                quote(&p.file.file),
                quote(&p.path),
                p.size,
                quote(&p.file.sha256)
            )
        };
        let (sdists, wheels): (Vec<&&Placed<'_>>, Vec<&&Placed<'_>>) =
            group.iter().partition(|p| sdist::is_sdist(&p.file.file));
        if !wheels.is_empty() {
            let _ = writeln!(out, "wheels = [");
            for w in wheels {
                let _ = writeln!(out, "    {},", entry(w));
            }
            let _ = writeln!(out, "]");
        }
        if let Some(s) = sdists.first() {
            let _ = writeln!(out, "sdist = {}", entry(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, version: &str, file: &str) -> LockedFile {
        LockedFile {
            name: name.into(),
            version: version.into(),
            role: Role::Runtime,
            file: file.into(),
            sha256: "ab".repeat(32),
            targets: Vec::new(),
            pure: false,
        }
    }

    #[test]
    fn a_pylock_names_paths_sizes_and_hashes_never_urls() {
        let target = Target { python: (3, 11), glibc: (2, 36), arch: "x86_64".into() };
        let a = file("Flask", "3.1.0", "flask-3.1.0-py3-none-any.whl");
        let b = file("psycopg2", "2.9.10", "psycopg2-2.9.10.tar.gz");
        let placed = [
            Placed { file: &a, path: "wheels/flask-3.1.0-py3-none-any.whl".into(), size: 10 },
            Placed { file: &b, path: "wheels/psycopg2-2.9.10.tar.gz".into(), size: 20 },
        ];
        let text = render(std::slice::from_ref(&target), &placed);
        let doc: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(doc["lock-version"].as_str(), Some("1.0"));
        assert_eq!(doc["requires-python"].as_str(), Some(">=3.11"));
        let packages = doc["packages"].as_array().unwrap();
        assert_eq!(packages[0]["name"].as_str(), Some("flask"));
        let wheel = &packages[0]["wheels"][0];
        assert_eq!(wheel["path"].as_str(), Some("wheels/flask-3.1.0-py3-none-any.whl"));
        assert_eq!(wheel["size"].as_integer(), Some(10));
        assert_eq!(wheel["hashes"]["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(packages[1]["sdist"]["name"].as_str(), Some("psycopg2-2.9.10.tar.gz"));
        assert!(!text.contains("url") && !text.contains("://"), "{text}");
        assert_eq!(render(std::slice::from_ref(&target), &placed), text);
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
