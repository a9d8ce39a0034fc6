//! The licence a wheel declares, as an SPDX expression hb can state in an SBOM: core
//! metadata's `License-Expression` (PEP 639), else a `License` field that is exactly
//! one SPDX identifier, else a classifier that names one licence unambiguously. Only
//! identifiers on a list of common SPDX licences are accepted, so an SBOM never states
//! an identifier a validator does not know; anything else is `None` (NOASSERTION).

/// SPDX identifiers common on PyPI (all on the SPDX licence list).
const KNOWN: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "Apache-2.0",
    "Artistic-2.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSL-1.0",
    "CC0-1.0",
    "CNRI-Python",
    "EPL-2.0",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ISC",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "MIT",
    "MIT-CMU",
    "MPL-2.0",
    "OpenSSL",
    "PSF-2.0",
    "Python-2.0",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "Zlib",
    "ZPL-2.1",
];

/// Classifiers that name exactly one licence.
const CLASSIFIERS: &[(&str, &str)] = &[
    ("License :: OSI Approved :: MIT License", "MIT"),
    ("License :: OSI Approved :: ISC License (ISCL)", "ISC"),
    ("License :: OSI Approved :: Python Software Foundation License", "PSF-2.0"),
    ("License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)", "MPL-2.0"),
    ("License :: OSI Approved :: The Unlicense (Unlicense)", "Unlicense"),
    ("License :: OSI Approved :: zlib/libpng License", "Zlib"),
    ("License :: OSI Approved :: Boost Software License 1.0 (BSL-1.0)", "BSL-1.0"),
    ("License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)", "LGPL-3.0-only"),
    ("License :: OSI Approved :: GNU General Public License v3 (GPLv3)", "GPL-3.0-only"),
    ("License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication", "CC0-1.0"),
];

/// The declared licence as an SPDX expression of known identifiers, if any.
pub fn declared(expression: Option<&str>, license: Option<&str>, classifiers: &[&str]) -> Option<String> {
    if let Some(e) = expression.map(str::trim).filter(|e| valid_expression(e)) {
        return Some(e.to_string());
    }
    if let Some(id) = license.map(str::trim).and_then(known_id) {
        return Some(id.to_string());
    }
    let named: Vec<&str> =
        classifiers.iter().filter_map(|c| CLASSIFIERS.iter().find(|(k, _)| k == &c.trim()).map(|(_, v)| *v)).collect();
    match named.as_slice() {
        [one] => Some(one.to_string()),
        _ => None,
    }
}

fn known_id(s: &str) -> Option<&'static str> {
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(s)).copied()
}

/// An expression of known identifiers joined by AND/OR/WITH, with parentheses.
fn valid_expression(e: &str) -> bool {
    if e.is_empty() || e.len() > 200 {
        return false;
    }
    let spaced = e.replace('(', " ( ").replace(')', " ) ");
    let mut depth = 0i32;
    let mut expect_id = true;
    for token in spaced.split_whitespace() {
        match token {
            "(" if expect_id => depth += 1,
            ")" if !expect_id => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            "AND" | "OR" | "WITH" if !expect_id => expect_id = true,
            id if expect_id && KNOWN.contains(&id.trim_end_matches('+')) => expect_id = false,
            id if expect_id
                && id.contains("-exception")
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)) =>
            {
                expect_id = false
            }
            _ => return false,
        }
    }
    depth == 0 && !expect_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_what_it_can_vouch_for() {
        assert_eq!(declared(Some("BSD-3-Clause"), None, &[]).as_deref(), Some("BSD-3-Clause"));
        assert_eq!(
            declared(Some("MIT OR (Apache-2.0 AND BSD-2-Clause)"), None, &[]).as_deref(),
            Some("MIT OR (Apache-2.0 AND BSD-2-Clause)")
        );
        assert_eq!(declared(Some("My-Own-License"), Some("mit"), &[]).as_deref(), Some("MIT"));
        assert_eq!(declared(None, Some("BSD"), &["License :: OSI Approved :: MIT License"]).as_deref(), Some("MIT"));
        assert_eq!(declared(None, None, &["License :: OSI Approved :: BSD License"]), None, "which BSD?");
        assert_eq!(
            declared(
                None,
                None,
                &[
                    "License :: OSI Approved :: MIT License",
                    "License :: OSI Approved :: Python Software Foundation License"
                ]
            ),
            None,
            "two licences are not an expression hb can guess"
        );
        for bad in ["MIT AND", "(MIT", "MIT)", "AND MIT", "MIT MIT", "", "MIT OR Evil-1.0"] {
            assert!(!valid_expression(bad), "{bad}");
        }
    }
}
