//! The team cache on a Remote Execution API server: a real BuildGrid (PyPI `buildgrid`,
//! CAS + ByteStream + action cache on disk storage, loopback, no auth) in its own venv.
//! CI fills it; a colleague with an empty cache, another checkout and no package index
//! builds nothing and gets the same deb; a 30 MB file goes through ByteStream; a blob
//! corrupted on the server's disk is discarded and rebuilt; a server killed while hb
//! uploads costs one warning and changes no byte.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{NO_INDEX, Ws, run, sha256, show};

const DEB: &str = "hb-out/demosite/demosite_0.1.0_amd64.deb";
const BUILDGRID: &str = "buildgrid==0.9.1";

/// The venv holding BuildGrid, made once per machine (BuildGrid needs Python >= 3.13).
pub(crate) fn buildgrid_venv() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let python = python313(&home)
        .expect("BuildGrid needs Python >= 3.13: install one (pyenv install 3.13) or put python3.13 on PATH");
    crate::harness::cached_venv("buildgrid-0.9.1", &python, &[BUILDGRID])
}

fn python313(home: &Path) -> Option<PathBuf> {
    let pyenv = home.join(".pyenv/versions");
    let mut found: Vec<PathBuf> = hb_fs::read_dir_sorted(&pyenv)
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.path().join("bin/python3"))
        .filter(|p| {
            p.parent().and_then(|b| b.parent()).and_then(|v| v.file_name()).is_some_and(|v| {
                let v = v.to_string_lossy();
                let mut parts = v.split('.');
                parts.next() == Some("3") && parts.next().and_then(|m| m.parse::<u32>().ok()).is_some_and(|m| m >= 13)
            }) && p.exists()
        })
        .collect();
    found.sort();
    found.pop().or_else(|| {
        let ok = Command::new("python3.13").arg("--version").output().is_ok_and(|o| o.status.success());
        ok.then(|| PathBuf::from("python3.13"))
    })
}

/// Starts `bgd server start` with `config` (written to `dir/buildgrid.yml`, its log to
/// `dir/buildgrid.log`) and waits until it listens on `port`.
pub(crate) fn spawn_bgd(venv: &Path, dir: &Path, config: &str, port: u16) -> Child {
    let file = dir.join("buildgrid.yml");
    std::fs::write(&file, config).unwrap();
    let log = std::fs::File::create(dir.join("buildgrid.log")).unwrap();
    let child = Command::new(venv.join("bin/bgd"))
        .args(["server", "start"])
        .arg(&file)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "BuildGrid did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("buildgrid.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// A running BuildGrid, killed on drop.
struct BuildGrid {
    child: Child,
    url: String,
    storage: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A test CA with a server certificate for 127.0.0.1 and a client certificate (PEM
/// files made by openssl in `dir`).
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "[server]\nsubjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n\
         [client]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .args(["-days", "30", "-subj", "/CN=hb test CA", "-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.pem")));
    for name in ["server", "client"] {
        run(Command::new("openssl")
            .arg("req")
            .args(ec)
            .args(["-subj", &format!("/CN=hb test {name}")])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.csr"))));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-set_serial", if name == "server" { "2" } else { "3" }])
            .arg("-in")
            .arg(dir.join(format!("{name}.csr")))
            .arg("-CA")
            .arg(dir.join("ca.pem"))
            .arg("-CAkey")
            .arg(dir.join("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .args(["-extensions", name])
            .arg("-out")
            .arg(dir.join(format!("{name}.pem"))));
    }
    Pki {
        ca: dir.join("ca.pem"),
        server: (dir.join("server.pem"), dir.join("server.key")),
        client: (dir.join("client.pem"), dir.join("client.key")),
    }
}

impl BuildGrid {
    fn start() -> BuildGrid {
        BuildGrid::start_with(None)
    }

    /// With `tls`, the server speaks TLS with its certificate and requires a client
    /// certificate from the CA.
    fn start_with(tls: Option<&Pki>) -> BuildGrid {
        let venv = buildgrid_venv();
        let tmp = tempfile::tempdir().unwrap();
        let storage = tmp.path().join("cas");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let channel = match tls {
            None => "    insecure-mode: true\n".to_string(),
            Some(p) => format!(
                "    insecure-mode: false\n    credentials:\n      tls-server-key: {}\n      tls-server-cert: {}\n      tls-client-certs: {}\n",
                p.server.1.display(),
                p.server.0.display(),
                p.ca.display()
            ),
        };
        let template = std::fs::read_to_string(crate::harness::repo().join("cache/buildgrid/buildgrid.yml")).unwrap();
        let config = template
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@STORAGE@", &storage.display().to_string())
            .replace("    insecure-mode: true\n", &channel);
        let child = spawn_bgd(&venv, tmp.path(), &config, port);
        let scheme = if tls.is_some() { "grpcs" } else { "grpc" };
        BuildGrid { child, url: format!("{scheme}://127.0.0.1:{port}/main"), storage, _tmp: tmp }
    }

    /// Where BuildGrid's disk storage keeps the blob with this SHA-256.
    fn blob(&self, sha256: &str) -> PathBuf {
        self.storage.join("cas/objects").join(&sha256[..2]).join(&sha256[2..])
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A signing key pair: (secret key file, public key hex).
fn keygen(dir: &Path) -> (String, String) {
    let (file, public) = crate::harness::keygen(dir, "writer");
    (file.display().to_string(), public)
}

/// demosite with a 30 MB incompressible file (bigger than any batch request, so it can
/// only travel through ByteStream), packed with zstd to keep the test quick.
fn with_payload() -> Ws {
    let ws = Ws::demosite();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    let build = build.replace("deps = [\":app\"]", "deps = [\":app\", \":payload\"]\ncompression = \"zstd\"");
    let payload = "\n[[files]]\nname = \"payload\"\nsrcs = [\"payload/*\"]\ndest = \"/usr/share/demosite\"\n";
    ws.write("demosite/BUILD.toml", &(build + payload));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(30 << 20);
    while bytes.len() < 30 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::create_dir_all(ws.path("demosite/payload")).unwrap();
    std::fs::write(ws.path("demosite/payload/blob.bin"), bytes).unwrap();
    ws
}

fn build(ws: &Ws, url: &str, env: &[(&str, &str)], args: &[&str]) -> (serde_json::Value, String, Vec<String>) {
    crate::harness::build_with_remote(ws, url, env, args)
}

#[test]
fn a_colleague_builds_nothing_from_buildgrid_and_bad_servers_change_no_byte() {
    let grid = BuildGrid::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keygen(keys.path());
    let writer = [("HB_REMOTE_SIGNING_KEY_FILE", key.as_str())];
    let mut reader = NO_INDEX.to_vec();
    reader.push(("HB_REMOTE_TRUSTED_KEYS", &public));

    // CI fills the server.
    let a = with_payload();
    let (report, sha_a, warnings) = build(&a, &grid.url, &writer, &[]);
    assert!(report["executed"].as_u64().unwrap() > 10, "{report}");
    assert!(warnings.is_empty(), "{warnings:?}");
    // BuildGrid speaks SHA-256 only: the deb is there under its SHA-256, and the 30 MB
    // file (larger than BuildGrid's 4 MiB batch limit) came through ByteStream whole.
    let deb_blob = grid.blob(&sha_a);
    assert!(deb_blob.is_file(), "the deb is not stored under its SHA-256");
    let payload = sha256(&a.path("demosite/payload/blob.bin"));
    assert_eq!(sha256(&grid.blob(&payload)), payload);

    // A colleague: another checkout path, an empty cache, no package index.
    let b = with_payload();
    assert_ne!(a.root, b.root);
    let (report, sha_b, warnings) = build(&b, &grid.url, &reader, &["--remote-read-only"]);
    assert_eq!(report["executed"], 0, "{report}");
    assert!(report["remote"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(sha_a, sha_b);
    assert!(warnings.is_empty(), "{warnings:?}");

    // The server's disk flips a byte of the deb: detected, discarded, rebuilt.
    let mut bytes = std::fs::read(&deb_blob).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&deb_blob, bytes).unwrap();
    let c = with_payload();
    let (report, sha_c, warnings) = build(&c, &grid.url, &reader, &["--remote-read-only"]);
    assert_eq!(sha_c, sha_a);
    assert!(report["executed"].as_u64().unwrap() >= 1, "{report}");
    assert!(warnings.iter().any(|w| w.contains("corrupt bytes")), "{warnings:?}");
}

#[test]
fn buildgrid_killed_while_hb_uploads_is_one_warning_and_the_same_bytes() {
    // The bytes to expect: demosite built with no remote at all.
    let reference = Ws::demosite();
    reference.ok(&["build", "//demosite:deb"]);
    let want = sha256(&reference.path(DEB));

    let mut grid = BuildGrid::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = keygen(keys.path());
    let ws = Ws::demosite();
    let child = ws
        .cmd()
        .args(["build", "--json", "//demosite:deb"])
        .env("HB_REMOTE_CACHE", &grid.url)
        .env("HB_REMOTE_SIGNING_KEY_FILE", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until uploads are under way, then pull the plug.
    let start = Instant::now();
    while hb_fs::walk_sorted(&grid.storage)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
        < 20
    {
        assert!(start.elapsed() < Duration::from_secs(120), "nothing was uploaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    grid.kill();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings: Vec<&str> = report["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(warnings.len(), 1, "{report}");
    assert!(warnings[0].contains("unreachable"), "{warnings:?}");
    assert_eq!(sha256(&ws.path(DEB)), want);
}

#[test]
fn grpcs_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let grid = BuildGrid::start_with(Some(&pki));
    let (key, public) = keygen(dir.path());
    let ca = pki.ca.display().to_string();
    let (cert, cert_key) = (pki.client.0.display().to_string(), pki.client.1.display().to_string());
    let tls = [
        ("HB_REMOTE_TLS_CA_FILE", ca.as_str()),
        ("HB_REMOTE_TLS_CERT_FILE", cert.as_str()),
        ("HB_REMOTE_TLS_KEY_FILE", cert_key.as_str()),
    ];

    let a = Ws::demosite();
    let mut writer = tls.to_vec();
    writer.push(("HB_REMOTE_SIGNING_KEY_FILE", &key));
    let (report, sha_a, warnings) = build(&a, &grid.url, &writer, &[]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(report["executed"].as_u64().unwrap() > 10, "{report}");
    assert!(grid.blob(&sha_a).is_file(), "nothing reached the server over TLS");

    let b = Ws::demosite();
    let mut reader = tls.to_vec();
    reader.extend_from_slice(NO_INDEX);
    reader.push(("HB_REMOTE_TRUSTED_KEYS", &public));
    let (report, sha_b, warnings) = build(&b, &grid.url, &reader, &["--remote-read-only"]);
    assert_eq!((report["executed"].as_u64(), sha_b, warnings.len()), (Some(0), sha_a, 0), "{report}");

    // Without the client certificate the server closes the handshake: one warning, and
    // the edited config is built locally.
    b.write("demosite/config.cfg", "TAGLINE = \"no certificate\"\n");
    let (_, _, warnings) = build(&b, &grid.url, &[("HB_REMOTE_TLS_CA_FILE", &ca)], &["--remote-read-only"]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("unreachable"), "{warnings:?}");
}
