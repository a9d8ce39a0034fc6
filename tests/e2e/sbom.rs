//! The SBOMs written next to every deb: valid by third-party validators (PyPI's
//! `spdx-tools` and `cyclonedx-python-lib`, installed once per machine into a venv in
//! the test target directory), listing every locked wheel with the lock's sha256, and
//! byte-identical from two cold builds under another path, umask and clock, as is the
//! signed provenance. `hb provenance verify` accepts the deb and refuses a changed
//! deb, an untrusted signer and inputs that disagree with the lock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::{Ws, run, show};

const DEB: &str = "hb-out/demosite/demosite_0.1.0_amd64.deb";
const SPDX: &str = "hb-out/demosite/demosite_0.1.0_amd64.spdx.json";
const CDX: &str = "hb-out/demosite/demosite_0.1.0_amd64.cdx.json";
const PROVENANCE: &str = "hb-out/demosite/demosite_0.1.0_amd64.intoto.jsonl";

/// A new signing key in `dir`; returns its file and public key.
fn keygen(ws: &Ws, name: &str) -> (PathBuf, String) {
    let file = ws.path(name);
    let out = ws.ok(&["cache", "keygen", "--out", file.to_str().unwrap()]);
    (file, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A venv with the validators, made once per machine.
fn validators() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sbom-validators");
        if dir.join("bin/pyspdxtools").exists() {
            return dir;
        }
        // A venv records its path, so it is made where it stays; a half-made one
        // (no pyspdxtools yet) is cleared and made again.
        run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&dir));
        run(Command::new(dir.join("bin/pip")).args([
            "install",
            "--quiet",
            "spdx-tools",
            "cyclonedx-python-lib[json-validation]",
        ]));
        dir
    })
}

const CDX_CHECK: &str = "import sys\nfrom cyclonedx.schema import SchemaVersion\nfrom cyclonedx.validation.json import JsonStrictValidator\nerrors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\nif errors:\n    print(errors)\n    sys.exit(1)\n";

fn spdx_valid(path: &Path) -> std::process::Output {
    Command::new(validators().join("bin/pyspdxtools")).arg("-i").arg(path).output().unwrap()
}

fn cdx_valid(path: &Path) -> std::process::Output {
    Command::new(validators().join("bin/python")).args(["-c", CDX_CHECK]).arg(path).output().unwrap()
}

#[test]
fn sboms_validate_list_every_locked_wheel_and_are_reproducible() {
    let ws = Ws::demosite();
    let (key, public) = keygen(&ws, "team.key");
    let out = ws.cmd().args(["build", "//demosite:deb"]).env("HB_PROVENANCE_SIGNING_KEY_FILE", &key).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let (spdx, cdx) = (ws.path(SPDX), ws.path(CDX));
    let out = spdx_valid(&spdx);
    assert!(out.status.success(), "pyspdxtools rejects hb's SPDX:\n{}", show(&out));
    let out = cdx_valid(&cdx);
    assert!(out.status.success(), "cyclonedx-python-lib rejects hb's CycloneDX:\n{}", show(&out));

    // The validators do reject a broken document.
    let broken = ws.path("broken.spdx.json");
    let text = std::fs::read_to_string(&spdx).unwrap();
    std::fs::write(&broken, text.replacen("\"creationInfo\"", "\"creationInformation\"", 1)).unwrap();
    assert!(!spdx_valid(&broken).status.success(), "pyspdxtools accepted a document without creationInfo");
    let broken = ws.path("broken.cdx.json");
    std::fs::write(&broken, std::fs::read_to_string(&cdx).unwrap().replacen("\"SHA-256\"", "\"SHA-999\"", 1)).unwrap();
    assert!(!cdx_valid(&broken).status.success(), "cyclonedx accepted an unknown hash algorithm");

    // Every runtime wheel of the lock, with its sha256, in both; the deb's own sha256.
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cdx_doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cdx).unwrap()).unwrap();
    let lock_text = std::fs::read_to_string(ws.path("demosite/hb.lock")).unwrap();
    let lock = hb_fetch::Lock::parse(&lock_text, Path::new("demosite/hb.lock")).unwrap();
    let target = "cp311-manylinux_2_36_x86_64";
    let packages = doc["packages"].as_array().unwrap();
    let components = cdx_doc["components"].as_array().unwrap();
    let mut listed = 0;
    for f in lock.files_for(hb_fetch::Role::Runtime, target) {
        let spdx_has = packages.iter().any(|p| {
            p["packageFileName"] == f.file.as_str() && p["checksums"][0]["checksumValue"] == f.sha256.as_str()
        });
        assert!(spdx_has, "{} ({}) is not in the SPDX document with its sha256", f.file, f.sha256);
        let cdx_has = components.iter().any(|c| {
            c["purl"] == format!("pkg:pypi/{}@{}", f.name, f.version).as_str()
                && c["hashes"][0]["content"] == f.sha256.as_str()
        });
        assert!(cdx_has, "{} is not in the CycloneDX document with its sha256", f.file);
        listed += 1;
    }
    assert!(listed >= 8, "demosite locks {listed} runtime wheels");
    let deb_sha = crate::harness::sha256(&ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb"));
    assert_eq!(packages[0]["checksums"][0]["checksumValue"], deb_sha.as_str());
    assert_eq!(cdx_doc["metadata"]["component"]["purl"], "pkg:deb/debian/demosite@0.1.0?arch=amd64&distro=bookworm");
    assert!(packages.iter().any(|p| p["name"] == "libc6"), "the target root's packages are listed");

    // A cold build elsewhere, under another umask and clock: the same documents.
    let other = Ws::demosite();
    let script =
        format!("umask 077 && exec faketime -f +2d '{}' build //demosite:deb", crate::harness::hb_bin().display());
    // hb's own environment (cache, wheelhouse, apt directory), through a shell.
    let hb = other.cmd();
    let envs: Vec<_> = hb.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))).collect();
    let shell = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&other.root)
        .envs(envs)
        .env("HB_PROVENANCE_SIGNING_KEY_FILE", &key)
        .output()
        .unwrap();
    assert!(shell.status.success(), "{}", show(&shell));
    for rel in [SPDX, CDX, PROVENANCE] {
        assert_eq!(std::fs::read(other.path(rel)).unwrap(), std::fs::read(ws.path(rel)).unwrap(), "{rel} differs");
    }

    // The provenance: accepted with the builder's key, in the workspace.
    let verify = |deb: &Path, keys: &[&str]| {
        let mut args = vec!["provenance", "verify", deb.to_str().unwrap()];
        args.push("--provenance");
        let prov = ws.path(PROVENANCE);
        args.push(prov.to_str().unwrap());
        for k in keys {
            args.push("--key");
            args.push(k);
        }
        ws.cmd().args(&args).env_remove("HB_REMOTE_TRUSTED_KEYS").output().unwrap()
    };
    let ok = verify(&ws.path(DEB), &[&public]);
    assert!(ok.status.success(), "{}", show(&ok));
    assert!(show(&ok).contains("inputs match the workspace's locks"), "{}", show(&ok));
    // Signed by a key nobody trusts.
    let (_, stranger) = keygen(&ws, "stranger.key");
    let err = show(&verify(&ws.path(DEB), &[&stranger]));
    assert!(err.contains("signed only by untrusted keys") && err.contains(&public), "{err}");
    // A deb changed by one byte.
    let mut bytes = std::fs::read(ws.path(DEB)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let changed = ws.path("changed.deb");
    std::fs::write(&changed, bytes).unwrap();
    let err = show(&verify(&changed, &[&public]));
    assert!(err.contains("is not the one the provenance describes"), "{err}");
    // A statement whose inputs disagree with the lock (a locked wheel's hash changed).
    let lock_text = std::fs::read_to_string(ws.path("demosite/hb.lock")).unwrap();
    let flask = lock.packages.iter().find(|p| p.name == "flask").unwrap();
    ws.write("demosite/hb.lock", &lock_text.replace(&flask.sha256, &"0".repeat(64)));
    let err = show(&verify(&ws.path(DEB), &[&public]));
    assert!(err.contains(&format!("{}: the provenance says sha256 {}", flask.file, flask.sha256)), "{err}");
}
