//! `apt_repo`: a signed apt repository of built debs, as `apt` reads it over HTTP:
//! `pool/COMPONENT/<initial>/<package>/<file>.deb`,
//! `dists/SUITE/COMPONENT/binary-ARCH/Packages` (and `.xz`), `dists/SUITE/Release`
//! with the indexes' sizes and MD5/SHA256 sums, and its OpenPGP signatures `InRelease`
//! (clearsigned) and `Release.gpg` (detached, armored).
//!
//! Everything but the signatures is hb's own deterministic text. The signatures are
//! made by the build machine's `gpg` (a declared tool: its digest is in the key) with
//! the declared secret key imported into a throwaway home, and the clock frozen at the
//! repository's `Date` (or the key's creation, if later): ed25519 and RSA signatures
//! are deterministic, so the same inputs, key and gpg give the same bytes. Why gpg:
//! apt verifies with gpgv, so signing with the same implementation is what is certain
//! to verify, and the key stays in the format teams already keep it in.

use std::path::{Path, PathBuf};
use std::process::Command;

use hb_engine::{Action, AnyInput, Ctx, Inputs, JobError, Output, Source, Tool, encode_args};
use hb_store::{EntryKind, Tree, TreeEntry};
use serde::Serialize;

/// One deb of the repository: the action whose tree holds it, and its file name.
#[derive(Clone, Debug)]
pub struct RepoDeb {
    pub deb: AnyInput,
    pub file_name: String,
    pub package: String,
    pub architecture: String,
}

/// What the Release file says about the repository.
#[derive(Clone, Debug, Serialize)]
pub struct RepoMeta {
    pub suite: String,
    pub codename: String,
    pub component: String,
    pub architectures: Vec<String>,
    pub origin: String,
    pub label: String,
    pub description: Option<String>,
    pub date: u64,
}

/// The signing key: its file (read when the action runs, never part of the key) and a
/// digest of its bytes (part of the key, so another key signs again).
#[derive(Clone, Debug)]
pub struct RepoKey {
    pub file: PathBuf,
    pub digest: String,
}

pub struct AptRepoJob {
    pub label: String,
    /// The directory of `hb-out/<package>/` the repository is written to (the target's name).
    pub dir: String,
    pub debs: Vec<RepoDeb>,
    pub meta: RepoMeta,
    pub key: Option<RepoKey>,
}

fn fail(label: &str, why: impl std::fmt::Display) -> JobError {
    JobError::Failed(format!("{label}: {why}"))
}

/// `Tue, 14 Nov 2023 22:13:20 UTC`, as Release files date themselves.
fn release_date(t: u64) -> String {
    let (_, rfc) = crate::service::rfc2822(t);
    rfc.replace("+0000", "UTC")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An xz stream of `data` (one block, pinned compressor).
fn xz(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = hb_deb::xz::stream_header().to_vec();
    let (info, _) =
        hb_deb::xz::compress_block(&mut &data[..], data.len() as u64, &mut out).map_err(|e| e.to_string())?;
    out.extend(hb_deb::xz::index_and_footer(&[info]));
    Ok(out)
}

/// The pool path of a deb: `pool/main/d/demosite/demosite_0.1.0_amd64.deb`
/// (`lib` packages go under `libX/`, as Debian's archive does).
pub fn pool_path(component: &str, package: &str, file: &str) -> String {
    let take = if package.starts_with("lib") && package.len() > 3 { 4 } else { 1 };
    let initial = package.get(..take).unwrap_or(package);
    format!("pool/{component}/{initial}/{package}/{file}")
}

impl Action for AptRepoJob {
    type Facts = ();
    const KIND: &'static str = "apt_repo";
    /// 2: Packages.xz with a dictionary sized to it.
    const VERSION: u32 = 2;
    fn args(&self) -> Vec<u8> {
        let files: Vec<&str> = self.debs.iter().map(|d| d.file_name.as_str()).collect();
        encode_args(&(&self.dir, &self.meta, files, self.key.as_ref().map(|k| &k.digest)))
    }
    fn inputs(&self) -> Vec<AnyInput> {
        self.debs.iter().map(|d| d.deb).collect()
    }
    fn tools(&self, ctx: &Ctx) -> Result<Vec<Tool>, JobError> {
        if self.key.is_none() {
            return Ok(Vec::new());
        }
        let gpg = "/usr/bin/gpg";
        let info = ctx.source_file(Path::new(gpg)).map_err(|_| {
            fail(&self.label, "signing the repository needs gpg (apt install gnupg), which is not installed")
        })?;
        Ok(vec![Tool { path: gpg.to_string(), digest: info.digest }])
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let label = &self.label;
        let m = &self.meta;
        let tmp = tempfile::tempdir_in(ctx.store.tmp_dir())
            .map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a directory in", &ctx.store.tmp_dir(), e)))?;
        let mut entries = Vec::new();
        let mut by_arch: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut debs = self.debs.clone();
        debs.sort_by(|a, b| (&a.package, &a.file_name).cmp(&(&b.package, &b.file_name)));
        for d in &debs {
            let tree = inputs.tree(d.deb)?;
            let Some((digest, size)) = tree.entries().iter().find_map(|e| match &e.kind {
                EntryKind::File { digest, size } if e.path == d.file_name => Some((*digest, *size)),
                _ => None,
            }) else {
                return Err(fail(label, format!("the deb action holds no {}", d.file_name)));
            };
            // Streamed to disk and through both hashes: a deb may be larger than memory
            // should hold.
            let path = tmp.path().join(&d.file_name);
            let (md5, sha256) = {
                use md5::Digest as _;
                let mut r = ctx.store.open_blob(&digest)?;
                let mut f =
                    std::fs::File::create(&path).map_err(|e| JobError::Fs(hb_fs::FsError::new("writing", &path, e)))?;
                let (mut m, mut s) = (md5::Md5::new(), sha2::Sha256::new());
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = std::io::Read::read(&mut r, &mut buf)?;
                    let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
                    m.update(chunk);
                    s.update(chunk);
                    std::io::Write::write_all(&mut f, chunk)
                        .map_err(|e| JobError::Fs(hb_fs::FsError::new("writing", &path, e)))?;
                }
                (hex(&m.finalize()), hex(&s.finalize()))
            };
            let parsed = hb_diff::deb::read_deb(&path).map_err(|e| fail(label, format!("{}: {e}", d.file_name)))?;
            let pool = pool_path(&m.component, &d.package, &d.file_name);
            let mut stanza = String::new();
            for (k, v) in &parsed.control_fields {
                stanza.push_str(&format!("{k}: {v}\n"));
            }
            stanza.push_str(&format!("Filename: {pool}\nSize: {size}\nMD5sum: {md5}\nSHA256: {sha256}\n"));
            let arches: Vec<String> =
                if d.architecture == "all" { m.architectures.clone() } else { vec![d.architecture.clone()] };
            for a in arches {
                by_arch.entry(a).or_default().push(stanza.clone());
            }
            entries.push(TreeEntry::file(format!("{}/{pool}", self.dir), digest, size, false));
        }
        // The indexes, and the Release listing them.
        let mut index_files: Vec<(String, Vec<u8>)> = Vec::new();
        for arch in &m.architectures {
            let stanzas = by_arch.get(arch).cloned().unwrap_or_default();
            let text = stanzas.join("\n").into_bytes();
            let dir = format!("{}/binary-{arch}", m.component);
            let compressed = xz(&text).map_err(|e| fail(label, e))?;
            index_files.push((format!("{dir}/Packages"), text));
            index_files.push((format!("{dir}/Packages.xz"), compressed));
        }
        let mut release =
            format!("Origin: {}\nLabel: {}\nSuite: {}\nCodename: {}\n", m.origin, m.label, m.suite, m.codename);
        release.push_str(&format!("Date: {}\n", release_date(m.date)));
        release.push_str(&format!("Architectures: {}\nComponents: {}\n", m.architectures.join(" "), m.component));
        if let Some(d) = &m.description {
            release.push_str(&format!("Description: {d}\n"));
        }
        release.push_str("MD5Sum:\n");
        for (name, bytes) in &index_files {
            use md5::Digest as _;
            release.push_str(&format!(" {} {:>8} {name}\n", hex(&md5::Md5::digest(bytes)), bytes.len()));
        }
        release.push_str("SHA256:\n");
        for (name, bytes) in &index_files {
            use sha2::Digest as _;
            release.push_str(&format!(" {} {:>8} {name}\n", hex(&sha2::Sha256::digest(bytes)), bytes.len()));
        }
        let dists = format!("{}/dists/{}", self.dir, m.suite);
        let mut put = |name: String, bytes: &[u8]| -> Result<(), JobError> {
            let d = ctx.store.put_bytes(bytes)?;
            entries.push(TreeEntry::file(name, d, bytes.len() as u64, false));
            Ok(())
        };
        for (name, bytes) in &index_files {
            put(format!("{dists}/{name}"), bytes)?;
        }
        put(format!("{dists}/Release"), release.as_bytes())?;
        if let Some(key) = &self.key {
            let (inrelease, detached) = sign(label, key, &release, m.date, tmp.path())?;
            put(format!("{dists}/InRelease"), &inrelease)?;
            put(format!("{dists}/Release.gpg"), &detached)?;
        }
        let tree = Tree::new(entries).map_err(|e| fail(label, e))?;
        let exports = tree
            .entries()
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .map(|e| e.path.clone())
            .collect();
        Ok(Output { tree, facts: (), exports })
    }
}

/// Runs gpg with a private home; its output on failure.
fn gpg(label: &str, home: &Path, args: &[&str]) -> Result<Vec<u8>, JobError> {
    let out = Command::new("/usr/bin/gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| fail(label, format!("cannot run gpg: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            label,
            format!("gpg {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    Ok(out.stdout)
}

/// `InRelease` and `Release.gpg` of `release`, signed by `key` at `date` (or at the
/// key's creation, if later).
fn sign(label: &str, key: &RepoKey, release: &str, date: u64, tmp: &Path) -> Result<(Vec<u8>, Vec<u8>), JobError> {
    use std::os::unix::fs::PermissionsExt;
    let home = tmp.join("gnupg");
    std::fs::create_dir(&home).map_err(|e| JobError::Fs(hb_fs::FsError::new("creating", &home, e)))?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| JobError::Fs(hb_fs::FsError::new("setting mode of", &home, e)))?;
    let key_file = key.file.display().to_string();
    gpg(label, &home, &["--import", &key_file]).map_err(|e| {
        fail(
            label,
            format!(
                "importing the signing key {key_file}: {e} (export it with `gpg --export-secret-keys --armor KEYID`)"
            ),
        )
    })?;
    let listing = String::from_utf8_lossy(&gpg(label, &home, &["--with-colons", "--list-secret-keys"])?).into_owned();
    let Some(sec) = listing.lines().find(|l| l.starts_with("sec:")) else {
        return Err(fail(label, format!("{key_file} holds no secret key")));
    };
    let created: u64 = sec.split(':').nth(5).and_then(|c| c.parse().ok()).unwrap_or(0);
    let when = date.max(created);
    let frozen = format!(
        "{}!",
        hb_diff::time::iso8601_utc(i64::try_from(when).unwrap_or(i64::MAX)).replace(['-', ':', 'Z'], "")
    );
    let release_path = tmp.join("Release");
    std::fs::write(&release_path, release)
        .map_err(|e| JobError::Fs(hb_fs::FsError::new("writing", &release_path, e)))?;
    let r = release_path.display().to_string();
    let common = ["--faked-system-time", frozen.as_str(), "--digest-algo", "SHA512", "--armor"];
    let inrelease = gpg(label, &home, &[&common[..], &["--clearsign", "--output", "-", &r]].concat())?;
    let detached = gpg(label, &home, &[&common[..], &["--detach-sign", "--output", "-", &r]].concat())?;
    Ok((inrelease, detached))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_paths_follow_the_archive() {
        assert_eq!(pool_path("main", "demosite", "demosite_1_all.deb"), "pool/main/d/demosite/demosite_1_all.deb");
        assert_eq!(pool_path("main", "libfoo1", "libfoo1_1_amd64.deb"), "pool/main/libf/libfoo1/libfoo1_1_amd64.deb");
        assert_eq!(release_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 UTC");
        let packed = xz(b"Package: x\n").unwrap();
        assert!(packed.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) && packed.ends_with(b"YZ"));
    }
}
