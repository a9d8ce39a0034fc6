//! Comparing two parsed debs into an ordered list of [`Difference`]s and rendering it.
//!
//! Order: the ar container, control fields (in A's order, then fields only in B),
//! control files by name, then data entries by path (for each path: kind, mode, owner,
//! mtime, link target, content).
//!
//! Derived data is not reported twice. `md5sums` and `Installed-Size` follow from the
//! data member, whose differences are already reported entry by entry:
//! - each side's `md5sums` is checked against that side's own data (md5 of each regular
//!   file; conffiles may be left out, as dh_md5sums does). When both sides are
//!   consistent, its text is not compared at all; a side that is inconsistent gives
//!   `ControlFile { name: "md5sums", change: Metadata { "md5sums does not match the data
//!   of a: …" } }`, unless both sides have the same md5sums text with the same problems
//!   (then A and B do not differ there). A `md5sums` present on one side only is
//!   `Added`/`Removed`.
//! - `Installed-Size` is compared with what dpkg-gencontrol computes from each side's
//!   data ([`Deb::computed_installed_size`]). Differing values are reported only if a
//!   side is missing the field or disagrees with its own data.
//!
//! Two files that are not byte-identical but show no difference above (compression
//! level, xz block layout, tar header encoding, entry or field order) give exactly one
//! `Container` difference saying which members' bytes differ and whether their
//! uncompressed tar streams are equal. Byte-identical files are recognized by hashing
//! them before parsing anything.

use crate::content::{FileDiff, MemberChange, compare_contents, push_indented, unified_diff};
use crate::deb::{ArMember, Content, DataEntry, Deb, EntryKind, read_deb};
use crate::time::iso8601_utc;
use crate::{DiffError, content};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// One difference between two debs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Difference {
    /// The ar container itself: member names/order/headers or compression differ (e.g.
    /// "data.tar.xz vs data.tar.zst"), or only compressed bytes differ.
    Container {
        /// What differs.
        detail: String,
    },
    /// A field of the `control` file (`None`: absent on that side).
    ControlField {
        /// Field name as spelled in A (or B if only there).
        field: String,
        /// Value in A.
        a: Option<String>,
        /// Value in B.
        b: Option<String>,
    },
    /// A control member file other than `control` (postinst, conffiles...; `md5sums`
    /// only when it is inconsistent with its own deb's data, or present on one side),
    /// or metadata (mode, owner, mtime) of any control member file.
    ControlFile {
        /// File name, e.g. "postinst".
        name: String,
        /// How it differs.
        change: MemberChange,
    },
    /// Only in B.
    Added {
        /// dpkg path, e.g. "/etc/demosite/config.cfg".
        path: String,
    },
    /// Only in A.
    Removed {
        /// dpkg path.
        path: String,
    },
    /// file/directory/symlink/hardlink/…
    Kind {
        /// dpkg path.
        path: String,
        /// Kind in A.
        a: String,
        /// Kind in B.
        b: String,
    },
    /// Permission bits, "0644" vs "0755".
    Mode {
        /// dpkg path.
        path: String,
        /// Mode in A.
        a: String,
        /// Mode in B.
        b: String,
    },
    /// "root:root (0:0)" vs "me:me (1000:1000)".
    Owner {
        /// dpkg path.
        path: String,
        /// Owner in A.
        a: String,
        /// Owner in B.
        b: String,
    },
    /// ISO 8601 UTC and raw seconds: "2023-11-14T22:13:20Z (1700000000)".
    Mtime {
        /// dpkg path.
        path: String,
        /// Mtime in A.
        a: String,
        /// Mtime in B.
        b: String,
    },
    /// Symlink or hard link target.
    LinkTarget {
        /// dpkg path.
        path: String,
        /// Target in A.
        a: String,
        /// Target in B.
        b: String,
    },
    /// A regular file's content.
    Content {
        /// dpkg path.
        path: String,
        /// How the bytes differ.
        diff: FileDiff,
    },
}

/// The comparison of two deb files.
#[derive(Debug, serde::Serialize)]
pub struct DebReport {
    /// Path of A as given.
    pub a: String,
    /// Path of B as given.
    pub b: String,
    /// Whether the files are byte-identical (then `differences` is empty).
    pub identical: bool,
    /// What differs, in the order described in the module doc.
    pub differences: Vec<Difference>,
}

fn file_digest(path: &Path) -> Result<(u64, blake3::Hash), DiffError> {
    let mut f = hb_fs::open(path)?;
    let mut h = blake3::Hasher::new();
    let n = io::copy(&mut f, &mut h).map_err(|e| hb_fs::FsError::new("reading", path, e))?;
    Ok((n, h.finalize()))
}

/// Compares the debs at `a` and `b`.
pub fn diff_debs(a: &Path, b: &Path) -> Result<DebReport, DiffError> {
    let (sa, b3a) = file_digest(a)?;
    let (sb, b3b) = file_digest(b)?;
    if sa == sb && b3a == b3b {
        return Ok(DebReport {
            a: a.display().to_string(),
            b: b.display().to_string(),
            identical: true,
            differences: vec![],
        });
    }
    let da = read_deb(a)?;
    let db = read_deb(b)?;
    Ok(compare_debs(&da, &db))
}

/// Compares two parsed debs (see the module doc).
pub fn compare_debs(a: &Deb, b: &Deb) -> DebReport {
    let identical = a.size == b.size && a.blake3 == b.blake3;
    let mut differences = Vec::new();
    if !identical {
        container(a, b, &mut differences);
        control_fields(a, b, &mut differences);
        control_files(a, b, &mut differences);
        data(a, b, &mut differences);
        if differences.is_empty() {
            differences.push(Difference::Container { detail: unexplained(a, b) });
        }
    }
    DebReport { a: a.path.display().to_string(), b: b.path.display().to_string(), identical, differences }
}

/// The role of an ar member, used to pair members whose names differ only by compression.
fn role(name: &str) -> &str {
    if name.starts_with("control.tar") {
        "control.tar"
    } else if name.starts_with("data.tar") {
        "data.tar"
    } else {
        name
    }
}

fn container(a: &Deb, b: &Deb, out: &mut Vec<Difference>) {
    let mut push = |detail: String| out.push(Difference::Container { detail });
    // Header field differences, grouped so that one clock skew is one line: (fields, members).
    let mut headers: Vec<(String, Vec<&str>)> = Vec::new();
    for ma in &a.members {
        let Some(mb) = b.members.iter().find(|m| role(&m.name) == role(&ma.name)) else {
            push(format!("ar member {} only in a", ma.name));
            continue;
        };
        if ma.name != mb.name {
            push(format!("{} vs {}", ma.name, mb.name));
        }
        let mut fields = Vec::new();
        for (what, fa, fb) in [
            ("mtime", &ma.mtime, &mb.mtime),
            ("uid", &ma.uid, &mb.uid),
            ("gid", &ma.gid, &mb.gid),
            ("mode", &ma.mode, &mb.mode),
        ] {
            if fa != fb {
                fields.push(format!("{what} {fa} vs {fb}"));
            }
        }
        if !fields.is_empty() {
            let fields = fields.join(", ");
            match headers.iter_mut().find(|(f, _)| *f == fields) {
                Some((_, names)) => names.push(ma.name.as_str()),
                None => headers.push((fields, vec![ma.name.as_str()])),
            }
        }
        if ma.tar_blake3.is_none() && ma.blake3 != mb.blake3 {
            match (&ma.bytes, &mb.bytes) {
                (Some(x), Some(y)) if ma.name == "debian-binary" => push(format!(
                    "debian-binary {:?} vs {:?}",
                    String::from_utf8_lossy(x).trim_end(),
                    String::from_utf8_lossy(y).trim_end()
                )),
                _ => push(format!(
                    "ar member {}: content differs ({} vs {} bytes, blake3 {} vs {})",
                    ma.name,
                    ma.size,
                    mb.size,
                    content::short_hex(&ma.blake3),
                    content::short_hex(&mb.blake3)
                )),
            }
        }
    }
    for mb in &b.members {
        if !a.members.iter().any(|m| role(&m.name) == role(&mb.name)) {
            push(format!("ar member {} only in b", mb.name));
        }
    }
    let order = |d: &Deb| d.members.iter().map(|m| role(&m.name).to_string()).collect::<Vec<_>>();
    let (oa, ob) = (order(a), order(b));
    let set = |o: &Vec<String>| o.iter().cloned().collect::<BTreeSet<_>>();
    if oa != ob && set(&oa) == set(&ob) {
        let names = |d: &Deb| d.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
        push(format!("ar member order {} vs {}", names(a), names(b)));
    }
    for (fields, names) in headers {
        push(format!("ar header of {}: {fields}", names.join(", ")));
    }
}

fn installed_size_consistent(d: &Deb) -> bool {
    d.field("Installed-Size").and_then(|v| v.trim().parse::<u64>().ok()) == Some(d.computed_installed_size())
}

fn control_fields(a: &Deb, b: &Deb, out: &mut Vec<Difference>) {
    for (name, va) in &a.control_fields {
        let vb = b.field(name);
        if vb == Some(va.as_str()) {
            continue;
        }
        if name.eq_ignore_ascii_case("Installed-Size")
            && vb.is_some()
            && installed_size_consistent(a)
            && installed_size_consistent(b)
        {
            continue;
        }
        out.push(Difference::ControlField { field: name.clone(), a: Some(va.clone()), b: vb.map(str::to_string) });
    }
    for (name, vb) in &b.control_fields {
        if a.field(name).is_none() {
            out.push(Difference::ControlField { field: name.clone(), a: None, b: Some(vb.clone()) });
        }
    }
}

fn mtime_text(secs: i64) -> String {
    format!("{} ({secs})", iso8601_utc(secs))
}

/// Kind, mode, owner and mtime differences of a control member file, as one text.
fn control_metadata(ea: &DataEntry, eb: &DataEntry) -> Option<String> {
    let mut what = Vec::new();
    if ea.kind.describe() != eb.kind.describe() {
        what.push(format!("kind {} vs {}", ea.kind.describe(), eb.kind.describe()));
    }
    if ea.mode != eb.mode {
        what.push(format!("mode {:04o} vs {:04o}", ea.mode, eb.mode));
    }
    if ea.owner() != eb.owner() {
        what.push(format!("owner {} vs {}", ea.owner(), eb.owner()));
    }
    if ea.mtime != eb.mtime {
        what.push(format!("mtime {} vs {}", mtime_text(ea.mtime), mtime_text(eb.mtime)));
    }
    (!what.is_empty()).then(|| what.join("; "))
}

fn content_diff(name: &str, ca: &Content, cb: &Content) -> Option<FileDiff> {
    if ca.same_as(cb) {
        return None;
    }
    match (ca, cb) {
        (Content::Bytes(x), Content::Bytes(y)) => compare_contents(name, x, y),
        _ => Some(FileDiff::Binary {
            size_a: ca.size(),
            size_b: cb.size(),
            blake3_a: ca.blake3(),
            blake3_b: cb.blake3(),
            first_difference: None,
        }),
    }
}

fn control_files(a: &Deb, b: &Deb, out: &mut Vec<Difference>) {
    let names: BTreeSet<&String> = a.control_files.keys().chain(b.control_files.keys()).collect();
    for name in names {
        let push = |out: &mut Vec<Difference>, change| out.push(Difference::ControlFile { name: name.clone(), change });
        let (ea, eb) = (a.control_files.get(name), b.control_files.get(name));
        match (ea, eb) {
            (Some(_), None) => push(out, MemberChange::Removed),
            (None, Some(_)) => push(out, MemberChange::Added),
            _ => {}
        }
        // Both sides wrong in the same way (same text, same problems) is no difference.
        let same_lie = || {
            ea.zip(eb).is_some_and(|(x, y)| x.content == y.content)
                && a.md5sums_problem_list() == b.md5sums_problem_list()
        };
        if name == "md5sums" && !same_lie() {
            for (side, d) in [("a", a), ("b", b)] {
                if let Some(problem) = d.md5sums_problems() {
                    let what = format!("md5sums does not match the data of {side}: {problem}");
                    push(out, MemberChange::Metadata { what });
                }
            }
        }
        let (Some(ea), Some(eb)) = (ea, eb) else { continue };
        if name != "control"
            && name != "md5sums"
            && let (Some(ca), Some(cb)) = (&ea.content, &eb.content)
            && let Some(diff) = content_diff(name, ca, cb)
        {
            push(out, MemberChange::Content { diff });
        }
        if let Some(what) = control_metadata(ea, eb) {
            push(out, MemberChange::Metadata { what });
        }
    }
}

fn data(a: &Deb, b: &Deb, out: &mut Vec<Difference>) {
    let paths: BTreeSet<&String> = a.data.keys().chain(b.data.keys()).collect();
    for path in paths {
        let (ea, eb) = match (a.data.get(path), b.data.get(path)) {
            (Some(ea), Some(eb)) => (ea, eb),
            (Some(_), None) => {
                out.push(Difference::Removed { path: path.clone() });
                continue;
            }
            (None, Some(_)) => {
                out.push(Difference::Added { path: path.clone() });
                continue;
            }
            (None, None) => continue,
        };
        let p = || path.clone();
        let (ka, kb) = (ea.kind.describe(), eb.kind.describe());
        let same_kind = ka == kb;
        if !same_kind {
            out.push(Difference::Kind { path: p(), a: ka, b: kb });
        }
        if ea.mode != eb.mode {
            out.push(Difference::Mode { path: p(), a: format!("{:04o}", ea.mode), b: format!("{:04o}", eb.mode) });
        }
        if ea.owner() != eb.owner() {
            out.push(Difference::Owner { path: p(), a: ea.owner(), b: eb.owner() });
        }
        if ea.mtime != eb.mtime {
            out.push(Difference::Mtime { path: p(), a: mtime_text(ea.mtime), b: mtime_text(eb.mtime) });
        }
        if !same_kind {
            continue;
        }
        match (&ea.kind, &eb.kind) {
            (EntryKind::Symlink { target: ta }, EntryKind::Symlink { target: tb })
            | (EntryKind::Hardlink { target: ta }, EntryKind::Hardlink { target: tb })
                if ta != tb =>
            {
                out.push(Difference::LinkTarget { path: p(), a: ta.clone(), b: tb.clone() });
            }
            _ => {}
        }
        if let (Some(ca), Some(cb)) = (&ea.content, &eb.content)
            && let Some(diff) = content_diff(path, ca, cb)
        {
            out.push(Difference::Content { path: p(), diff });
        }
    }
}

/// What differs when nothing structural does: which members' bytes, and whether their
/// uncompressed tar streams are equal.
fn unexplained(a: &Deb, b: &Deb) -> String {
    let mut parts = Vec::new();
    for ma in &a.members {
        let Some(mb) = b.members.iter().find(|m| m.name == ma.name) else { continue };
        if ma.blake3 == mb.blake3 {
            continue;
        }
        parts.push(member_bytes_differ(ma, mb));
    }
    if parts.is_empty() {
        return format!(
            "the files differ ({} vs {} bytes) outside the members' contents (ar headers or padding)",
            a.size, b.size
        );
    }
    parts.join("; ")
}

fn member_bytes_differ(ma: &ArMember, mb: &ArMember) -> String {
    let sizes = format!("{} vs {} bytes", ma.size, mb.size);
    match (&ma.tar_blake3, &mb.tar_blake3) {
        (Some(x), Some(y)) if x == y => format!(
            "{}: compressed bytes differ ({sizes}) while the contents are equal (same uncompressed tar: \
             compression level, block layout or compressor version)",
            ma.name
        ),
        (Some(_), Some(_)) => format!(
            "{}: the uncompressed tar differs ({sizes} compressed) but no entry differs in content or metadata \
             (entry order, tar header encoding, or control field order/formatting)",
            ma.name
        ),
        _ => format!("{}: bytes differ ({sizes})", ma.name),
    }
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(absent)")
}

impl Difference {
    /// Which group the difference belongs to in the rendering.
    fn group(&self) -> &'static str {
        match self {
            Difference::Container { .. } => "container",
            Difference::ControlField { .. } | Difference::ControlFile { .. } => "control",
            _ => "data",
        }
    }

    fn render_into(&self, out: &mut String) {
        const INDENT: &str = "    ";
        match self {
            Difference::Container { detail } => {
                let _ = writeln!(out, "container: {detail}");
            }
            Difference::ControlField { field, a, b } => {
                let multi =
                    a.as_deref().is_some_and(|v| v.contains('\n')) || b.as_deref().is_some_and(|v| v.contains('\n'));
                if multi {
                    let _ = writeln!(out, "control field {field}:");
                    let text = |v: &Option<String>| v.as_deref().map(|v| format!("{v}\n")).unwrap_or_default();
                    push_indented(out, INDENT, &unified_diff(field, &text(a), &text(b)));
                } else {
                    let _ = writeln!(out, "control field {field}: {} → {}", show(a), show(b));
                }
            }
            Difference::ControlFile { name, change } => match change {
                MemberChange::Added => {
                    let _ = writeln!(out, "control file {name}: only in b");
                }
                MemberChange::Removed => {
                    let _ = writeln!(out, "control file {name}: only in a");
                }
                MemberChange::Metadata { what } => {
                    let _ = writeln!(out, "control file {name}: {what}");
                }
                MemberChange::Content { diff } => {
                    let _ = writeln!(out, "control file {name}:");
                    out.push_str(&diff.render(INDENT));
                }
            },
            Difference::Added { path } => {
                let _ = writeln!(out, "added {path}");
            }
            Difference::Removed { path } => {
                let _ = writeln!(out, "removed {path}");
            }
            Difference::Kind { path, a, b } => {
                let _ = writeln!(out, "kind {path}: {a} → {b}");
            }
            Difference::Mode { path, a, b } => {
                let _ = writeln!(out, "mode {path}: {a} → {b}");
            }
            Difference::Owner { path, a, b } => {
                let _ = writeln!(out, "owner {path}: {a} → {b}");
            }
            Difference::Mtime { path, a, b } => {
                let _ = writeln!(out, "mtime {path}: {a} → {b}");
            }
            Difference::LinkTarget { path, a, b } => {
                let _ = writeln!(out, "link target {path}: {a} → {b}");
            }
            Difference::Content { path, diff } => {
                let _ = writeln!(out, "content {path}:");
                out.push_str(&diff.render(INDENT));
            }
        }
    }
}

impl DebReport {
    /// Human-readable text: a headline, then the differences grouped (container,
    /// control, data) with a blank line between groups and content diffs indented.
    pub fn render(&self) -> String {
        let (a, b) = (&self.a, &self.b);
        if self.identical {
            return format!("{a} and {b} are byte-identical\n");
        }
        let n = self.differences.len();
        let mut out = format!("a: {a}\nb: {b}\n{n} difference{}:\n", if n == 1 { "" } else { "s" });
        let mut group = "";
        for d in &self.differences {
            if d.group() != group {
                group = d.group();
                out.push('\n');
            }
            d.render_into(&mut out);
        }
        out
    }
}
