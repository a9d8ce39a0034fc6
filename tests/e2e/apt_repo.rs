//! Publishing: an `[[apt_repo]]` of demosite, signed with an OpenPGP key made by gpg,
//! served by a real HTTP server on loopback. A fresh bookworm root with the key in
//! `/etc/apt/keyrings` and a `signed-by` source updates with no warning and installs
//! and starts the service with `apt-get`; a tampered `Packages` makes `apt-get update`
//! fail. Two builds with separate caches give the same repository, signatures included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::harness::{Chroot, Ws, get, run, show};

const REPO: &str = "hb-out/demosite/repo";

/// An OpenPGP signing key made by gpg in `dir`: (armored secret key, binary public key).
fn gpg_key(dir: &Path) -> (PathBuf, PathBuf) {
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    run(Command::new("chmod").arg("700").arg(&home));
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.arg("--homedir").arg(&home).args(["--batch", "--passphrase", ""]).args(args);
        c
    };
    run(&mut gpg(&["--quick-gen-key", "hb test repository <repo@example.org>", "ed25519", "sign", "never"]));
    let secret = dir.join("repo-secret.asc");
    let public = dir.join("repo.gpg");
    let out = gpg(&["--export-secret-keys", "--armor"]).output().unwrap();
    std::fs::write(&secret, out.stdout).unwrap();
    let out = gpg(&["--export"]).output().unwrap();
    std::fs::write(&public, out.stdout).unwrap();
    (secret, public)
}

/// `python3 -m http.server` serving `dir` on `port`, killed on drop.
struct Server(Child);

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server(child);
        get(&format!("http://127.0.0.1:{port}/dists/stable/Release"));
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn with_repo(ws: &Ws) {
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write(
        "demosite/BUILD.toml",
        &format!(
            "{build}\n[[apt_repo]]\nname = \"repo\"\ndebs = [\":deb\"]\nsuite = \"stable\"\norigin = \"hb test\"\ndescription = \"demosite, built by hb\"\n"
        ),
    );
}

#[test]
fn a_signed_repository_installs_with_apt_and_a_tampered_index_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = gpg_key(keys.path());
    let ws = Ws::demosite();
    with_repo(&ws);
    let out = ws.cmd().args(["build", "//demosite:repo"]).env("HB_APT_SIGNING_KEY_FILE", &secret).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let repo = ws.path(REPO);
    for f in ["dists/stable/InRelease", "dists/stable/Release.gpg", "dists/stable/main/binary-amd64/Packages.xz"] {
        assert!(repo.join(f).is_file(), "{f} is missing");
    }

    // The same repository from another cache, signatures included.
    let again = Ws::demosite();
    with_repo(&again);
    let out = again.cmd().args(["build", "//demosite:repo"]).env("HB_APT_SIGNING_KEY_FILE", &secret).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    for f in ["dists/stable/InRelease", "dists/stable/Release.gpg", "dists/stable/Release"] {
        assert_eq!(std::fs::read(repo.join(f)).unwrap(), std::fs::read(again.path(REPO).join(f)).unwrap(), "{f}");
    }

    // A fresh bookworm root that knows only this repository.
    let chroot = Chroot::new();
    chroot.ok("mkdir -p /etc/apt/keyrings /etc/apt/disabled && mv /etc/apt/sources.list /etc/apt/disabled/ && rm -f /etc/apt/sources.list.d/*");
    std::fs::copy(&public, chroot.path("/etc/apt/keyrings/hb-test.gpg")).unwrap();
    let _server = Server::start(&repo, 8053);
    std::fs::write(
        chroot.path("/etc/apt/sources.list.d/hb.list"),
        "deb [signed-by=/etc/apt/keyrings/hb-test.gpg] http://127.0.0.1:8053/ stable main\n",
    )
    .unwrap();
    let update = chroot.ok("apt-get update 2>&1");
    assert!(!update.lines().any(|l| l.starts_with("W:") || l.starts_with("E:")), "{update}");
    chroot.ok("DEBIAN_FRONTEND=noninteractive apt-get install -y demosite 2>&1");
    chroot.ok("/etc/init.d/demosite start");
    assert!(get("http://127.0.0.1:8000/").contains("Built by hb, byte for byte."));
    chroot.ok("/etc/init.d/demosite stop");

    // A Packages file changed after signing: apt refuses the index.
    let tampered = keys.path().join("tampered");
    run(Command::new("cp").arg("-r").arg(&repo).arg(&tampered));
    let packages = tampered.join("dists/stable/main/binary-amd64/Packages");
    let text = std::fs::read_to_string(&packages).unwrap();
    std::fs::write(&packages, text.replacen("Version: 0.1.0", "Version: 0.1.1", 1)).unwrap();
    std::fs::remove_file(tampered.join("dists/stable/main/binary-amd64/Packages.xz")).unwrap();
    let _bad = Server::start(&tampered, 8054);
    std::fs::write(
        chroot.path("/etc/apt/sources.list.d/hb.list"),
        "deb [signed-by=/etc/apt/keyrings/hb-test.gpg] http://127.0.0.1:8054/ stable main\n",
    )
    .unwrap();
    chroot.ok("rm -rf /var/lib/apt/lists/*");
    let out = chroot.sh("apt-get update 2>&1");
    let text = show(&out);
    assert!(!out.status.success() || text.contains("E:"), "a tampered Packages was accepted:\n{text}");
    assert!(text.contains("Hash Sum mismatch") || text.contains("File has unexpected size"), "{text}");
}
