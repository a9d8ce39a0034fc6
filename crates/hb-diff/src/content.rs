//! Comparison of two versions of one file's bytes, and its human rendering. The file
//! name decides the handling: `.whl`/`.zip` are compared member by member (content,
//! timestamp, mode, compression method), `.gz` is decompressed and compared as the file
//! without `.gz` (or, if the content is equal, by its header), anything else is a
//! unified text diff when both sides are UTF-8 without NUL, else a binary summary.
//! Bytes that do not parse as the container their name promises, containers whose
//! members are all equal, and members larger than [`MAX_MEMBER`] fall back to the
//! binary summary, so a difference is never lost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Cursor, Read};
use std::time::Duration;

/// Largest decompressed member (zip entry, gzip content) compared in memory; beyond it
/// the container is compared as plain bytes (also a guard against decompression bombs).
pub const MAX_MEMBER: u64 = 256 << 20;

/// How long the text diff may search for a minimal diff before settling for a coarser
/// (still correct) one.
const DIFF_TIMEOUT: Duration = Duration::from_secs(5);

/// How two versions of one file's bytes differ.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileDiff {
    /// Both sides are UTF-8 text (no NUL): a unified diff with 3 lines of context,
    /// headers "a/<name>" and "b/<name>" (the name without a leading '/').
    Text {
        /// The unified diff.
        unified: String,
    },
    /// Anything else.
    Binary {
        /// Length of side a.
        size_a: u64,
        /// Length of side b.
        size_b: u64,
        /// blake3 of side a (hex).
        blake3_a: String,
        /// blake3 of side b (hex).
        blake3_b: String,
        /// Offset of the first differing byte; when one side is a prefix of the other,
        /// the shorter length. `None` only when the bytes were not kept (large files
        /// compared by digest).
        first_difference: Option<u64>,
    },
    /// A zip (.whl, .zip) or gzip (.gz) container: the differing members, each with its
    /// own diff. A gzip file has one member named after the file without `.gz`.
    Archive {
        /// Added, removed and changed members, sorted by name.
        members: Vec<MemberDiff>,
    },
}

/// One member of a container that differs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberDiff {
    /// The member's name inside its container.
    pub name: String,
    /// How it differs.
    pub change: MemberChange,
}

/// How a member of a container (or a control file of a deb) differs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum MemberChange {
    /// Only in b.
    Added,
    /// Only in a.
    Removed,
    /// Present in both with different bytes.
    Content {
        /// How the bytes differ.
        diff: FileDiff,
    },
    /// Same bytes, different metadata.
    Metadata {
        /// e.g. "zip timestamp 2023-01-01 00:00:00 vs 2024-01-01 00:00:00", "mode 0644 vs 0755".
        what: String,
    },
}

/// `None` when `a == b`. `name` decides the container handling (see the module doc).
pub fn compare_contents(name: &str, a: &[u8], b: &[u8]) -> Option<FileDiff> {
    if a == b {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let container = if lower.ends_with(".whl") || lower.ends_with(".zip") {
        compare_zip(a, b)
    } else if lower.ends_with(".gz") {
        compare_gzip(name, a, b)
    } else {
        None
    };
    Some(container.unwrap_or_else(|| plain(name, a, b)))
}

/// A text diff if both sides are text, else a binary summary.
fn plain(name: &str, a: &[u8], b: &[u8]) -> FileDiff {
    match (as_text(a), as_text(b)) {
        (Some(ta), Some(tb)) => FileDiff::Text { unified: unified_diff(name, ta, tb) },
        _ => binary(a, b),
    }
}

fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// A unified diff of two texts with 3 lines of context and "a/<name>", "b/<name>" headers.
pub(crate) fn unified_diff(name: &str, a: &str, b: &str) -> String {
    let name = name.trim_start_matches('/');
    let diff =
        similar::TextDiff::configure().algorithm(similar::Algorithm::Myers).timeout(DIFF_TIMEOUT).diff_lines(a, b);
    diff.unified_diff().context_radius(3).header(&format!("a/{name}"), &format!("b/{name}")).to_string()
}

/// The binary summary of two byte strings held in memory.
pub(crate) fn binary(a: &[u8], b: &[u8]) -> FileDiff {
    let first = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    FileDiff::Binary {
        size_a: a.len() as u64,
        size_b: b.len() as u64,
        blake3_a: blake3::hash(a).to_hex().to_string(),
        blake3_b: blake3::hash(b).to_hex().to_string(),
        first_difference: Some(first as u64),
    }
}

/// Reads at most [`MAX_MEMBER`] bytes; `None` if there are more or reading fails.
fn read_bounded(r: &mut dyn Read) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    r.take(MAX_MEMBER + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= MAX_MEMBER).then_some(out)
}

/// One zip member as compared: its bytes and the metadata worth reporting.
struct ZipMember {
    bytes: Vec<u8>,
    timestamp: Option<String>,
    mode: Option<u32>,
    method: String,
}

fn read_zip(bytes: &[u8]) -> Option<BTreeMap<String, ZipMember>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    let mut members = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).ok()?;
        if f.size() > MAX_MEMBER {
            return None;
        }
        let timestamp = f.last_modified().map(|t| t.to_string());
        let mode = f.unix_mode();
        let method = format!("{:?}", f.compression());
        let name = f.name().to_string();
        let bytes = read_bounded(&mut f)?;
        members.insert(name, ZipMember { bytes, timestamp, mode, method });
    }
    Some(members)
}

/// Member-by-member comparison; `None` if either side is not a zip, or if no member
/// differs (the difference is then in the zip structure itself: order, comments...).
fn compare_zip(a: &[u8], b: &[u8]) -> Option<FileDiff> {
    let za = read_zip(a)?;
    let zb = read_zip(b)?;
    let mut members = Vec::new();
    let names: std::collections::BTreeSet<&String> = za.keys().chain(zb.keys()).collect();
    for name in names {
        let change = |change| MemberDiff { name: name.clone(), change };
        match (za.get(name), zb.get(name)) {
            (Some(_), None) => members.push(change(MemberChange::Removed)),
            (None, Some(_)) => members.push(change(MemberChange::Added)),
            (Some(ma), Some(mb)) => {
                if let Some(diff) = compare_contents(name, &ma.bytes, &mb.bytes) {
                    members.push(change(MemberChange::Content { diff }));
                }
                let mut what = Vec::new();
                if ma.timestamp != mb.timestamp {
                    let show = |t: &Option<String>| t.clone().unwrap_or_else(|| "(none)".into());
                    what.push(format!("zip timestamp {} vs {}", show(&ma.timestamp), show(&mb.timestamp)));
                }
                if ma.mode != mb.mode {
                    let show = |m: Option<u32>| m.map_or("(none)".into(), |m| format!("{:04o}", m & 0o7777));
                    what.push(format!("mode {} vs {}", show(ma.mode), show(mb.mode)));
                }
                if ma.method != mb.method {
                    what.push(format!("compression {} vs {}", ma.method, mb.method));
                }
                if !what.is_empty() {
                    members.push(change(MemberChange::Metadata { what: what.join("; ") }));
                }
            }
            (None, None) => {}
        }
    }
    (!members.is_empty()).then_some(FileDiff::Archive { members })
}

/// The fixed part of a gzip header that varies between compressors.
fn gzip_header_fields(bytes: &[u8]) -> Option<(u32, u8, u8)> {
    if bytes.len() < 10 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return None;
    }
    let mtime = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    Some((mtime, bytes[8], bytes[9]))
}

fn gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    gzip_header_fields(bytes)?;
    read_bounded(&mut flate2::read::MultiGzDecoder::new(bytes))
}

/// The decompressed contents compared as the file without `.gz`; if they are equal,
/// the gzip header fields (or just "compressed bytes differ") as member metadata.
fn compare_gzip(name: &str, a: &[u8], b: &[u8]) -> Option<FileDiff> {
    let da = gunzip(a)?;
    let db = gunzip(b)?;
    let base = name.rsplit('/').next().unwrap_or(name);
    let inner = &base[..base.len() - 3];
    let inner_path = &name[..name.len() - 3];
    let change = match compare_contents(inner_path, &da, &db) {
        Some(diff) => MemberChange::Content { diff },
        None => {
            let (ha, hb) = (gzip_header_fields(a)?, gzip_header_fields(b)?);
            let mut what = Vec::new();
            if ha.0 != hb.0 {
                what.push(format!("gzip header mtime {} vs {}", ha.0, hb.0));
            }
            if ha.1 != hb.1 {
                what.push(format!("gzip header extra flags {} vs {}", ha.1, hb.1));
            }
            if ha.2 != hb.2 {
                what.push(format!("gzip header OS {} vs {}", ha.2, hb.2));
            }
            if what.is_empty() {
                what.push(format!(
                    "same content, compressed bytes differ ({} vs {} bytes: compression level or implementation)",
                    a.len(),
                    b.len()
                ));
            }
            MemberChange::Metadata { what: what.join("; ") }
        }
    };
    Some(FileDiff::Archive { members: vec![MemberDiff { name: inner.to_string(), change }] })
}

/// Short form of a hex digest for human output.
pub(crate) fn short_hex(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

/// Appends `text` with every line prefixed by `indent`.
pub(crate) fn push_indented(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}{line}");
    }
}

impl FileDiff {
    /// Human-readable text, every line starting with `indent`, ending with a newline.
    pub fn render(&self, indent: &str) -> String {
        let mut out = String::new();
        match self {
            FileDiff::Text { unified } => push_indented(&mut out, indent, unified),
            FileDiff::Binary { size_a, size_b, blake3_a, blake3_b, first_difference } => {
                let _ = write!(
                    out,
                    "{indent}binary: {size_a} vs {size_b} bytes, blake3 {} vs {}",
                    short_hex(blake3_a),
                    short_hex(blake3_b)
                );
                match first_difference {
                    Some(off) => {
                        let _ = writeln!(out, ", first difference at byte {off}");
                    }
                    None => out.push('\n'),
                }
            }
            FileDiff::Archive { members } => {
                for m in members {
                    m.render_into(&mut out, indent);
                }
            }
        }
        out
    }
}

impl MemberDiff {
    fn render_into(&self, out: &mut String, indent: &str) {
        let name = &self.name;
        match &self.change {
            MemberChange::Added => {
                let _ = writeln!(out, "{indent}member {name}: only in b");
            }
            MemberChange::Removed => {
                let _ = writeln!(out, "{indent}member {name}: only in a");
            }
            MemberChange::Metadata { what } => {
                let _ = writeln!(out, "{indent}member {name}: {what}");
            }
            MemberChange::Content { diff } => {
                let _ = writeln!(out, "{indent}member {name}:");
                out.push_str(&diff.render(&format!("{indent}    ")));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn equal_is_none() {
        assert_eq!(compare_contents("x", b"same", b"same"), None);
    }

    #[test]
    fn text_diff_is_unified_with_changed_line() {
        let a = "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n";
        let b = "one\ntwo\nthree\nfour\nFIVE\nsix\nseven\neight\n";
        let d = compare_contents("/etc/demo/app.cfg", a.as_bytes(), b.as_bytes()).expect("differs");
        let expected = "--- a/etc/demo/app.cfg\n+++ b/etc/demo/app.cfg\n@@ -2,7 +2,7 @@\n two\n three\n four\n\
                        -five\n+FIVE\n six\n seven\n eight\n";
        assert_eq!(d, FileDiff::Text { unified: expected.into() });
        let shown = d.render("  ");
        assert!(shown.contains("  -five\n  +FIVE\n"), "{shown}");
        assert!(shown.lines().all(|l| l.starts_with("  ")), "{shown}");
    }

    #[test]
    fn binary_diff_gives_first_difference() {
        let d = compare_contents("x.bin", &[0, 1, 2, 3, 0], &[0, 1, 9, 3, 0]).expect("differs");
        let FileDiff::Binary { size_a, size_b, first_difference, blake3_a, .. } = &d else { panic!("{d:?}") };
        assert_eq!((*size_a, *size_b, *first_difference), (5, 5, Some(2)));
        assert_eq!(blake3_a, &blake3::hash(&[0, 1, 2, 3, 0]).to_hex().to_string());
        assert!(d.render("").contains("first difference at byte 2"), "{}", d.render(""));
        // A prefix: the first difference is the shorter length.
        let d = compare_contents("x.bin", &[0, 1], &[0, 1, 0]).expect("differs");
        assert!(matches!(d, FileDiff::Binary { first_difference: Some(2), .. }), "{d:?}");
        // Text on one side only is binary.
        assert!(matches!(compare_contents("t", b"text", b"te\0t"), Some(FileDiff::Binary { .. })));
    }

    pub(crate) fn zip_bytes(members: &[(&str, &[u8], u32)], year: u16) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, mode) in members {
            let time = zip::DateTime::from_date_and_time(year, 1, 1, 0, 0, 0).expect("date");
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .last_modified_time(time)
                .unix_permissions(*mode);
            w.start_file(*name, opts).expect("start");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn wheel_names_the_differing_member() {
        let a =
            zip_bytes(&[("demo/__init__.py", b"VERSION = '1'\n", 0o644), ("demo/data.bin", &[1, 2, 3], 0o644)], 2023);
        let b =
            zip_bytes(&[("demo/__init__.py", b"VERSION = '2'\n", 0o644), ("demo/data.bin", &[1, 2, 3], 0o644)], 2023);
        let d = compare_contents("demo-1.0-py3-none-any.whl", &a, &b).expect("differs");
        let unified = "--- a/demo/__init__.py\n+++ b/demo/__init__.py\n@@ -1 +1 @@\n-VERSION = '1'\n+VERSION = '2'\n";
        assert_eq!(
            d,
            FileDiff::Archive {
                members: vec![MemberDiff {
                    name: "demo/__init__.py".into(),
                    change: MemberChange::Content { diff: FileDiff::Text { unified: unified.into() } },
                }]
            }
        );
        assert!(d.render("").contains("member demo/__init__.py:\n    --- a/demo/__init__.py"), "{}", d.render(""));
    }

    #[test]
    fn zip_metadata_added_and_removed() {
        let a = zip_bytes(&[("a.txt", b"x", 0o644), ("gone", b"1", 0o644)], 2023);
        let b = zip_bytes(&[("a.txt", b"x", 0o755), ("new", b"1", 0o644)], 2024);
        let d = compare_contents("x.zip", &a, &b).expect("differs");
        let FileDiff::Archive { members } = d else { panic!("{d:?}") };
        assert_eq!(members.len(), 3, "{members:?}");
        assert_eq!(members[0].name, "a.txt");
        assert_eq!(
            members[0].change,
            MemberChange::Metadata {
                what: "zip timestamp 2023-01-01 00:00:00 vs 2024-01-01 00:00:00; mode 0644 vs 0755".into()
            }
        );
        assert_eq!(members[1], MemberDiff { name: "gone".into(), change: MemberChange::Removed });
        assert_eq!(members[2], MemberDiff { name: "new".into(), change: MemberChange::Added });
    }

    fn gz(data: &[u8], mtime: u32) -> Vec<u8> {
        let mut enc = flate2::GzBuilder::new().mtime(mtime).write(Vec::new(), flate2::Compression::best());
        enc.write_all(data).expect("write");
        enc.finish().expect("finish")
    }

    #[test]
    fn gzip_content_and_header() {
        let d = compare_contents("/usr/share/doc/x/changelog.gz", &gz(b"a\n", 0), &gz(b"b\n", 0)).expect("differs");
        let FileDiff::Archive { members } = &d else { panic!("{d:?}") };
        assert_eq!(members[0].name, "changelog");
        let MemberChange::Content { diff: FileDiff::Text { unified } } = &members[0].change else { panic!("{d:?}") };
        assert!(unified.starts_with("--- a/usr/share/doc/x/changelog\n"), "{unified}");

        let d = compare_contents("c.gz", &gz(b"a\n", 0), &gz(b"a\n", 5)).expect("differs");
        assert_eq!(
            d,
            FileDiff::Archive {
                members: vec![MemberDiff {
                    name: "c".into(),
                    change: MemberChange::Metadata { what: "gzip header mtime 0 vs 5".into() }
                }]
            }
        );
        // Not really gzip: binary.
        assert!(matches!(compare_contents("c.gz", b"\x1f\x8bxx", b"\x1f\x8byy"), Some(FileDiff::Binary { .. })));
        assert!(matches!(compare_contents("c.whl", b"PK", b"KP"), Some(FileDiff::Text { .. })));
    }
}
