//! Whole-package tests: debs built here with hb-deb's writer (plus a patched header for
//! foreign owners), written to a temp dir, read back and compared with `diff_debs`.

use crate::{Difference, FileDiff, MemberChange, diff_debs, read_deb};
use hb_deb::{Compression, TarEntry, TarKind};
use md5::Digest as _;
use std::path::{Path, PathBuf};

const MTIME: u64 = 1_700_000_000;

#[derive(Clone)]
struct Item {
    entry: TarEntry,
    content: Vec<u8>,
    mtime: u64,
    /// (uid/gid, user/group name) written instead of root.
    owner: Option<(u32, &'static str)>,
}

fn file(path: &str, content: &[u8], mode: u32) -> Item {
    Item {
        entry: TarEntry { path: path.into(), kind: TarKind::File { size: content.len() as u64 }, mode },
        content: content.to_vec(),
        mtime: MTIME,
        owner: None,
    }
}

fn dir(path: &str) -> Item {
    Item {
        entry: TarEntry { path: path.into(), kind: TarKind::Dir, mode: 0o755 },
        content: vec![],
        mtime: MTIME,
        owner: None,
    }
}

fn symlink(path: &str, target: &str) -> Item {
    Item {
        entry: TarEntry { path: path.into(), kind: TarKind::Symlink { target: target.into() }, mode: 0o777 },
        content: vec![],
        mtime: MTIME,
        owner: None,
    }
}

/// Everything a test deb is made of.
#[derive(Clone)]
struct Spec {
    items: Vec<Item>,
    /// Control fields; "Installed-Size" is inserted after "Maintainer" unless given.
    fields: Vec<(String, String)>,
    compression: Compression,
    /// Control member files besides control and md5sums: (name, content, mode).
    extra_control: Vec<(String, Vec<u8>, u32)>,
    /// Replaces the computed md5sums text.
    md5sums: Option<String>,
    /// Data tar split into this many xz blocks / gzip members.
    chunks: usize,
}

fn patch_owner(header: &mut [u8], id: u32, name: &str) {
    for range in [108..116, 116..124] {
        header[range].copy_from_slice(format!("{id:07o}\0").as_bytes());
    }
    for start in [265, 297] {
        header[start..start + 32].fill(0);
        header[start..start + name.len()].copy_from_slice(name.as_bytes());
    }
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn tar(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for it in items {
        let mut h = Vec::new();
        hb_deb::write_header(&mut h, &it.entry, it.mtime).expect("header");
        if let Some((id, name)) = it.owner {
            let last = h.len() - 512;
            patch_owner(&mut h[last..], id, name);
        }
        out.extend_from_slice(&h);
        out.extend_from_slice(&it.content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    hb_deb::write_end(&mut out).expect("end");
    out
}

fn compress(tar: &[u8], c: Compression, chunks: usize) -> Vec<u8> {
    let chunk_len = (tar.len() / 512).div_ceil(chunks.max(1)) * 512;
    let parts: Vec<&[u8]> = tar.chunks(chunk_len.max(512)).collect();
    let mut out = Vec::new();
    match c {
        Compression::Xz => {
            out.extend_from_slice(&hb_deb::xz::stream_header());
            let infos: Vec<_> = parts
                .iter()
                .map(|p| hb_deb::xz::compress_block(&mut &p[..], p.len() as u64, &mut out).expect("xz").0)
                .collect();
            out.extend_from_slice(&hb_deb::xz::index_and_footer(&infos));
        }
        Compression::Gzip => {
            for p in parts {
                hb_deb::gzip::compress_member(&mut &p[..], &mut out).expect("gzip");
            }
        }
        Compression::Zstd => {
            hb_deb::zstd_frame::compress(&mut &tar[..], &mut out, 3).expect("zstd");
        }
    }
    out
}

fn build(spec: &Spec) -> Vec<u8> {
    let entries: Vec<TarEntry> = spec.items.iter().map(|i| i.entry.clone()).collect();
    let mut fields = spec.fields.clone();
    if !fields.iter().any(|(n, _)| n == "Installed-Size") {
        let at = fields.iter().position(|(n, _)| n == "Maintainer").map_or(fields.len(), |i| i + 1);
        fields.insert(at, ("Installed-Size".into(), hb_deb::installed_size_kib(&entries).to_string()));
    }
    let control = hb_deb::render_control(&fields).expect("control");
    let sums: Vec<(String, [u8; 16])> = spec
        .items
        .iter()
        .filter(|i| matches!(i.entry.kind, TarKind::File { .. }))
        .map(|i| (i.entry.path.clone(), md5::Md5::digest(&i.content).into()))
        .collect();
    let md5sums = spec.md5sums.clone().unwrap_or_else(|| hb_deb::md5sums(&sums));
    let mut control_items = vec![dir(""), file("control", control.as_bytes(), 0o644)];
    control_items.push(file("md5sums", md5sums.as_bytes(), 0o644));
    for (name, content, mode) in &spec.extra_control {
        control_items.push(file(name, content, *mode));
    }
    let c = spec.compression;
    let control_member = compress(&tar(&control_items), c, 1);
    let data_member = compress(&tar(&spec.items), c, spec.chunks);
    hb_deb::write_deb(
        Vec::new(),
        MTIME,
        c,
        (control_member.len() as u64, &mut &control_member[..]),
        (data_member.len() as u64, &mut &data_member[..]),
    )
    .expect("deb")
}

fn base() -> Spec {
    let f = |n: &str, v: &str| (n.to_string(), v.to_string());
    Spec {
        items: vec![
            dir(""),
            dir("etc"),
            dir("etc/demo"),
            file("etc/demo/config.cfg", b"alpha\nbeta\n", 0o644),
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
            symlink("usr/bin/t", "tool"),
            file("usr/lib/blob.bin", &[0, 1, 2, 3, 4, 5], 0o644),
        ],
        fields: vec![
            f("Package", "demo"),
            f("Version", "0.1.0"),
            f("Architecture", "all"),
            f("Maintainer", "hb tests <hb@example.invalid>"),
            f("Section", "web"),
            f("Description", "demo package\nFor hb-diff's tests."),
        ],
        compression: Compression::Xz,
        extra_control: vec![("postinst".into(), b"#!/bin/sh\nset -e\n".to_vec(), 0o755)],
        md5sums: None,
        chunks: 1,
    }
}

fn item<'a>(spec: &'a mut Spec, path: &str) -> &'a mut Item {
    spec.items.iter_mut().find(|i| i.entry.path == path).expect("item")
}

fn set_field(spec: &mut Spec, name: &str, value: &str) {
    match spec.fields.iter_mut().find(|(n, _)| n == name) {
        Some(f) => f.1 = value.into(),
        None => spec.fields.push((name.into(), value.into())),
    }
}

fn write(dir: &Path, name: &str, spec: &Spec) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, build(spec)).expect("write deb");
    p
}

fn diff(a: &Spec, b: &Spec) -> crate::DebReport {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pa = write(tmp.path(), "a.deb", a);
    let pb = write(tmp.path(), "b.deb", b);
    diff_debs(&pa, &pb).expect("diff")
}

fn set_content(spec: &mut Spec, path: &str, content: &[u8]) {
    let it = item(spec, path);
    it.content = content.to_vec();
    it.entry.kind = TarKind::File { size: content.len() as u64 };
}

#[test]
fn identical_files() {
    let r = diff(&base(), &base());
    assert!(r.identical);
    assert!(r.differences.is_empty());
    assert!(r.render().ends_with("are byte-identical\n"), "{}", r.render());
}

#[test]
fn mode_content_and_field_give_exactly_three_differences() {
    let a = base();
    let mut b = base();
    item(&mut b, "usr/bin/tool").entry.mode = 0o644;
    // Crosses a KiB boundary, so Installed-Size and md5sums differ too (derived: not reported).
    let old = format!("alpha\n{}\n", "p".repeat(1008));
    let new = format!("beta\n{}\nomega-omega\n", "p".repeat(1008));
    set_content(&mut b, "etc/demo/config.cfg", new.as_bytes());
    let mut a = a;
    set_content(&mut a, "etc/demo/config.cfg", old.as_bytes());
    set_field(&mut b, "Section", "misc");
    assert_ne!(build(&a).len(), 0);

    let r = diff(&a, &b);
    let unified = format!(
        "--- a/etc/demo/config.cfg\n+++ b/etc/demo/config.cfg\n@@ -1,2 +1,3 @@\n-alpha\n+beta\n {}\n+omega-omega\n",
        "p".repeat(1008)
    );
    assert!(!r.identical);
    assert_eq!(
        r.differences,
        vec![
            Difference::ControlField { field: "Section".into(), a: Some("web".into()), b: Some("misc".into()) },
            Difference::Content { path: "/etc/demo/config.cfg".into(), diff: FileDiff::Text { unified } },
            Difference::Mode { path: "/usr/bin/tool".into(), a: "0755".into(), b: "0644".into() },
        ]
    );
    let shown = r.render();
    assert!(shown.contains("3 differences"), "{shown}");
    assert!(shown.contains("control field Section: web → misc\n"), "{shown}");
    assert!(shown.contains("mode /usr/bin/tool: 0755 → 0644\n"), "{shown}");
    assert!(shown.contains("content /etc/demo/config.cfg:\n    --- a/etc/demo/config.cfg\n"), "{shown}");
    assert!(shown.contains("\n    -alpha\n    +beta\n"), "{shown}");
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["differences"][1]["what"], "content");
    assert_eq!(json["differences"][1]["diff"]["kind"], "text");
}

#[test]
fn binary_content_gives_first_difference() {
    let mut b = base();
    set_content(&mut b, "usr/lib/blob.bin", &[0, 1, 2, 9, 4, 5]);
    let r = diff(&base(), &b);
    assert_eq!(r.differences.len(), 1, "{:?}", r.differences);
    let Difference::Content { path, diff: FileDiff::Binary { first_difference, size_a, size_b, .. } } =
        &r.differences[0]
    else {
        panic!("{:?}", r.differences)
    };
    assert_eq!((path.as_str(), *first_difference, *size_a, *size_b), ("/usr/lib/blob.bin", Some(3), 6, 6));
    assert!(r.render().contains("first difference at byte 3"), "{}", r.render());
}

#[test]
fn wheel_member_in_data() {
    let whl = |v: &str| {
        crate::content::tests::zip_bytes(
            &[("demo/__init__.py", format!("VERSION = '{v}'\n").as_bytes(), 0o644), ("demo/x.py", b"x = 1\n", 0o644)],
            2023,
        )
    };
    let mut a = base();
    a.items.push(file("usr/lib/demo-1.0-py3-none-any.whl", &whl("1"), 0o644));
    let mut b = base();
    b.items.push(file("usr/lib/demo-1.0-py3-none-any.whl", &whl("2"), 0o644));
    let r = diff(&a, &b);
    assert_eq!(r.differences.len(), 1, "{:?}", r.differences);
    let Difference::Content { diff: FileDiff::Archive { members }, .. } = &r.differences[0] else {
        panic!("{:?}", r.differences)
    };
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "demo/__init__.py");
    assert!(
        matches!(&members[0].change, MemberChange::Content { diff: FileDiff::Text { unified } } if unified.contains("+VERSION = '2'")),
        "{members:?}"
    );
}

#[test]
fn added_removed_mtime_owner_and_link_target() {
    let a = base();
    let mut b = base();
    b.items.retain(|i| i.entry.path != "usr/lib/blob.bin");
    b.items.push(file("usr/share/new.txt", b"new\n", 0o644));
    item(&mut b, "etc/demo").mtime = MTIME + 3600;
    item(&mut b, "usr/bin/tool").owner = Some((1000, "me"));
    if let TarKind::Symlink { target } = &mut item(&mut b, "usr/bin/t").entry.kind {
        *target = "other".into();
    }
    let r = diff(&a, &b);
    assert_eq!(
        r.differences,
        vec![
            Difference::Mtime {
                path: "/etc/demo".into(),
                a: "2023-11-14T22:13:20Z (1700000000)".into(),
                b: "2023-11-14T23:13:20Z (1700003600)".into()
            },
            Difference::LinkTarget { path: "/usr/bin/t".into(), a: "tool".into(), b: "other".into() },
            Difference::Owner {
                path: "/usr/bin/tool".into(),
                a: "root:root (0:0)".into(),
                b: "me:me (1000:1000)".into()
            },
            Difference::Removed { path: "/usr/lib/blob.bin".into() },
            Difference::Added { path: "/usr/share/new.txt".into() },
        ]
    );
    let shown = r.render();
    assert!(shown.contains("removed /usr/lib/blob.bin\nadded /usr/share/new.txt\n"), "{shown}");
}

#[test]
fn kind_change() {
    let mut b = base();
    item(&mut b, "usr/bin/t").entry = TarEntry { path: "usr/bin/t".into(), kind: TarKind::Dir, mode: 0o777 };
    let r = diff(&base(), &b);
    assert_eq!(
        r.differences,
        vec![Difference::Kind { path: "/usr/bin/t".into(), a: "symlink".into(), b: "directory".into() }]
    );
}

#[test]
fn lying_md5sums_is_reported() {
    let mut b = base();
    let mut sums = Vec::new();
    for i in &b.items {
        if matches!(i.entry.kind, TarKind::File { .. }) {
            sums.push((i.entry.path.clone(), <[u8; 16]>::from(md5::Md5::digest(&i.content))));
        }
    }
    sums[0].1 = [0u8; 16];
    b.md5sums = Some(hb_deb::md5sums(&sums));
    let r = diff(&base(), &b);
    let zeros = "0".repeat(32);
    let actual = crate::deb::to_hex(&md5::Md5::digest(b"alpha\nbeta\n"));
    assert_eq!(
        r.differences,
        vec![Difference::ControlFile {
            name: "md5sums".into(),
            change: MemberChange::Metadata {
                what: format!(
                    "md5sums does not match the data of b: /etc/demo/config.cfg: listed {zeros}, data has {actual}"
                )
            }
        }]
    );
}

#[test]
fn the_same_lie_on_both_sides_is_no_difference() {
    let mut a = base();
    a.md5sums = Some(format!("{}  etc/demo/config.cfg\n", "0".repeat(32)));
    let mut b = a.clone();
    set_field(&mut b, "Version", "0.1.1");
    let r = diff(&a, &b);
    assert_eq!(
        r.differences,
        vec![Difference::ControlField { field: "Version".into(), a: Some("0.1.0".into()), b: Some("0.1.1".into()) }]
    );
    assert!(r.render().contains("control field Version: 0.1.0 → 0.1.1\n"), "{}", r.render());
}

#[test]
fn inconsistent_installed_size_is_reported() {
    let mut b = base();
    b.fields.insert(4, ("Installed-Size".into(), "999".into()));
    let r = diff(&base(), &b);
    assert_eq!(
        r.differences,
        vec![Difference::ControlField { field: "Installed-Size".into(), a: Some("9".into()), b: Some("999".into()) }]
    );
}

#[test]
fn control_file_content_and_mode() {
    let mut b = base();
    b.extra_control = vec![
        ("postinst".into(), b"#!/bin/sh\nset -e\nexit 0\n".to_vec(), 0o644),
        ("prerm".into(), b"#!/bin/sh\n".to_vec(), 0o755),
    ];
    let r = diff(&base(), &b);
    assert_eq!(r.differences.len(), 3, "{:?}", r.differences);
    assert!(
        matches!(&r.differences[0], Difference::ControlFile { name, change: MemberChange::Content { diff: FileDiff::Text { .. } } } if name == "postinst")
    );
    assert_eq!(
        r.differences[1],
        Difference::ControlFile {
            name: "postinst".into(),
            change: MemberChange::Metadata { what: "mode 0755 vs 0644".into() }
        }
    );
    assert_eq!(r.differences[2], Difference::ControlFile { name: "prerm".into(), change: MemberChange::Added });
}

#[test]
fn only_block_layout_differs() {
    let mut b = base();
    b.chunks = 2;
    let r = diff(&base(), &b);
    assert!(!r.identical);
    assert_eq!(r.differences.len(), 1, "{:?}", r.differences);
    let Difference::Container { detail } = &r.differences[0] else { panic!("{:?}", r.differences) };
    assert!(detail.starts_with("data.tar.xz: compressed bytes differ"), "{detail}");
    assert!(detail.contains("contents are equal"), "{detail}");
}

#[test]
fn zstd_and_gzip_debs_are_readable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut xz = base();
    xz.chunks = 3;
    let mut gz = base();
    gz.compression = Compression::Gzip;
    gz.chunks = 3;
    let mut zst = base();
    zst.compression = Compression::Zstd;
    let p_xz = write(tmp.path(), "x.deb", &xz);
    let p_gz = write(tmp.path(), "g.deb", &gz);
    let p_zst = write(tmp.path(), "z.deb", &zst);
    for p in [&p_xz, &p_gz, &p_zst] {
        let d = read_deb(p).expect("read");
        let paths: Vec<&str> = d.data.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/etc",
                "/etc/demo",
                "/etc/demo/config.cfg",
                "/usr",
                "/usr/bin",
                "/usr/bin/t",
                "/usr/bin/tool",
                "/usr/lib/blob.bin"
            ]
        );
        assert_eq!(d.field("Section"), Some("web"));
        assert_eq!(d.md5sums_problems(), None);
        assert_eq!(d.computed_installed_size().to_string(), d.field("Installed-Size").unwrap_or(""));
    }
    let r = diff_debs(&p_xz, &p_zst).expect("diff");
    assert_eq!(
        r.differences,
        vec![
            Difference::Container { detail: "control.tar.xz vs control.tar.zst".into() },
            Difference::Container { detail: "data.tar.xz vs data.tar.zst".into() },
        ]
    );
}

#[test]
fn errors_name_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path().join("not.deb");
    std::fs::write(&p, b"hello").expect("write");
    let e = read_deb(&p).expect_err("not a deb").to_string();
    assert!(e.contains("not.deb") && e.contains("ar magic"), "{e}");
    let mut bytes = build(&base());
    let len = bytes.len();
    bytes.truncate(len - 100);
    std::fs::write(&p, &bytes).expect("write");
    let e = read_deb(&p).expect_err("truncated").to_string();
    assert!(e.contains("not.deb") && e.contains("data.tar.xz"), "{e}");
    let e = diff_debs(&tmp.path().join("missing.deb"), &p).expect_err("missing").to_string();
    assert!(e.contains("missing.deb"), "{e}");
}

mod hostile {
    //! Damaged packages: whatever bytes are flipped, cut or added, reading never panics,
    //! hangs or allocates without bound; it returns a package or an error.
    use super::*;
    use proptest::prelude::*;

    fn read_bytes(bytes: &[u8]) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.deb");
        std::fs::write(&p, bytes).unwrap();
        let _ = read_deb(&p);
    }

    proptest! {
        #[test]
        fn damaged_debs_never_panic(
            compression in prop_oneof![Just(Compression::Xz), Just(Compression::Gzip), Just(Compression::Zstd)],
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            do_cut in any::<bool>(),
        ) {
            let mut spec = base();
            spec.compression = compression;
            let mut bytes = build(&spec);
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= b;
            }
            if do_cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            read_bytes(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = b"!<arch>\n".to_vec();
            bytes.extend(tail);
            read_bytes(&bytes);
        }
    }
}
