//! End-to-end checks of the whole writer against the system's dpkg-deb: a tiny package
//! whose data member is built from two separately compressed chunks (two xz blocks in one
//! stream, two gzip members) or one zstd frame, inspected, listed and extracted by
//! dpkg-deb, and written twice to check the bytes are identical.

use crate::tar::tests::{dir, file, symlink};
use crate::{ArWriter, Compression, TarEntry, TarKind, control, gzip, tar, xz, zstd_frame};
use md5::{Digest, Md5};
use std::path::Path;
use std::process::Command;

const MTIME: u64 = 1_700_000_000;
const CONTENT: &[u8] = b"hello from the data member\n";

fn tar_bytes(entries: &[(TarEntry, Vec<u8>)], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (e, data) in entries {
        tar::write_entry(&mut out, e, MTIME, &mut &data[..]).expect("entry");
    }
    if end {
        tar::write_end(&mut out).expect("end");
    }
    out
}

/// Compresses the tar chunks as one member: xz blocks in one stream, gzip members, or
/// (zstd) one frame over the concatenation.
fn compress(chunks: &[Vec<u8>], c: Compression) -> Vec<u8> {
    let mut out = Vec::new();
    match c {
        Compression::Xz => {
            out.extend_from_slice(&xz::stream_header());
            let mut infos = Vec::new();
            for ch in chunks {
                infos.push(xz::compress_block(&mut &ch[..], ch.len() as u64, &mut out).expect("xz").0);
            }
            let planned = xz::STREAM_HEADER_LEN
                + infos.iter().map(xz::block_padded_len).sum::<u64>()
                + xz::index_and_footer(&infos).len() as u64;
            out.extend_from_slice(&xz::index_and_footer(&infos));
            assert_eq!(planned, out.len() as u64);
        }
        Compression::Gzip => {
            for ch in chunks {
                gzip::compress_member(&mut &ch[..], &mut out).expect("gzip");
            }
        }
        Compression::Zstd => {
            let all = chunks.concat();
            zstd_frame::compress(&mut &all[..], &mut out, zstd_frame::DEFAULT_LEVEL).expect("zstd");
        }
    }
    out
}

fn build_deb(c: Compression) -> Vec<u8> {
    let data: Vec<(TarEntry, Vec<u8>)> = vec![
        (dir(""), vec![]),
        (dir("usr"), vec![]),
        (dir("usr/share"), vec![]),
        (dir("usr/share/doc"), vec![]),
        (dir("usr/share/doc/t"), vec![]),
        (file("usr/share/doc/t/f", CONTENT.len() as u64), CONTENT.to_vec()),
        (symlink("usr/share/doc/t/link", "f"), vec![]),
    ];
    let entries: Vec<TarEntry> = data.iter().map(|(e, _)| e.clone()).collect();
    let params = crate::ChunkParams { min_bytes: 1024, max_bytes: 2048, cut_one_in: 1 << 40 };
    let ranges = crate::plan(&entries, &params);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    let chunks: Vec<Vec<u8>> =
        ranges.iter().enumerate().map(|(i, r)| tar_bytes(&data[r.clone()], i + 1 == ranges.len())).collect();
    let data_member = compress(&chunks, c);

    let mut md5 = Vec::new();
    for (e, content) in &data {
        if let TarKind::File { .. } = e.kind {
            md5.push((e.path.clone(), <[u8; 16]>::from(Md5::digest(content))));
        }
    }
    let control_text = control::render_control(&[
        ("Package".into(), "t".into()),
        ("Version".into(), "1.0-1".into()),
        ("Architecture".into(), "all".into()),
        ("Maintainer".into(), "hb test <hb@example.invalid>".into()),
        ("Installed-Size".into(), control::installed_size_kib(&entries).to_string()),
        ("Description".into(), "test package\nBuilt by hb-deb's tests.\n\nSecond paragraph.".into()),
    ])
    .expect("control");
    let md5_text = control::md5sums(&md5);
    let control_tar = tar_bytes(
        &[
            (dir(""), vec![]),
            (file("control", control_text.len() as u64), control_text.into_bytes()),
            (file("md5sums", md5_text.len() as u64), md5_text.into_bytes()),
        ],
        true,
    );
    let control_member = compress(&[control_tar], c);

    crate::write_deb(
        Vec::new(),
        MTIME,
        c,
        (control_member.len() as u64, &mut &control_member[..]),
        (data_member.len() as u64, &mut &data_member[..]),
    )
    .expect("deb")
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let o = Command::new("dpkg-deb").args(args).arg(deb).output().expect("run dpkg-deb");
    assert!(o.status.success(), "dpkg-deb {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "dpkg-deb {args:?} warned: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check(c: Compression) {
    let deb = build_deb(c);
    assert_eq!(deb, build_deb(c), "{c:?}: not deterministic");
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("t.deb");
    std::fs::write(&path, &deb).expect("write deb");

    let info = dpkg_deb(&["--info"], &path);
    assert!(info.contains(" Package: t\n"), "{info}");
    assert!(info.contains(" Installed-Size: 7\n"), "{info}");
    assert!(info.contains("  Second paragraph.\n"), "{info}");
    assert!(info.contains(" md5sums"), "{info}");

    let contents = dpkg_deb(&["--contents"], &path);
    let names: Vec<&str> = contents.lines().filter_map(|l| l.split_whitespace().nth(5)).collect();
    assert_eq!(
        names,
        [
            "./",
            "./usr/",
            "./usr/share/",
            "./usr/share/doc/",
            "./usr/share/doc/t/",
            "./usr/share/doc/t/f",
            "./usr/share/doc/t/link"
        ],
        "{contents}"
    );
    assert!(contents.contains("root/root"), "{contents}");
    assert!(contents.contains("./usr/share/doc/t/link -> f"), "{contents}");

    let root = tmp.path().join("x");
    let o = Command::new("dpkg-deb").arg("-x").arg(&path).arg(&root).output().expect("dpkg-deb -x");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = root.join("usr/share/doc/t/f");
    assert_eq!(std::fs::read(&f).expect("extracted file"), CONTENT);
    assert_eq!(std::fs::read_link(root.join("usr/share/doc/t/link")).expect("link"), Path::new("f"));
}

#[test]
fn deb_with_xz_blocks() {
    check(Compression::Xz);
}

#[test]
fn deb_with_gzip_members() {
    check(Compression::Gzip);
}

#[test]
fn deb_with_zstd_frame() {
    check(Compression::Zstd);
}
