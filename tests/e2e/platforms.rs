//! Platforms and target roots: one workspace builds bookworm and trixie, amd64 and
//! arm64, every build step running in hb's own pinned root, so the bytes do not depend
//! on the machine: the same debs come out of a Debian 12 host and a Debian 13 one, and
//! with the host's Python hidden or replaced. Each deb installs and serves in a fresh
//! root of its own release and architecture (arm64 under qemu-user).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{
    Chroot, Root, Ws, apt_dir, get, hb_bin, platform_root, run, sha256, show, trixie_build_host, wheelhouse,
};

const PLATFORMS: [(&str, &str); 4] =
    [("bookworm-amd64", "amd64"), ("bookworm-arm64", "arm64"), ("trixie-amd64", "amd64"), ("trixie-arm64", "arm64")];

/// A port no other test serves on (tests run in parallel).
const PORT: u16 = 8053;

fn demosite_on_its_own_port() -> Ws {
    let ws = Ws::demosite();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    assert!(build.contains("port = 8000"));
    ws.write("demosite/BUILD.toml", &build.replace("port = 8000", &format!("port = {PORT}")));
    ws
}

fn deb_of(root: &Path, platform: &str, arch: &str) -> PathBuf {
    root.join(format!("hb-out/{platform}/demosite/demosite_0.1.0_{arch}.deb"))
}

fn field(deb: &Path, name: &str) -> String {
    run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)).trim().to_string()
}

/// Runs the same hb binary inside a trixie root (a Debian 13 machine with its own
/// bubblewrap and apt), with its own cache, on a copy of the workspace.
fn build_all_inside_trixie(ws: &Ws) -> PathBuf {
    let root = Root::copy_of(&trixie_build_host());
    let inside = |p: &str| root.path.join(p.trim_start_matches('/'));
    crate::harness::copy_tree(&ws.root, &inside("/ws"));
    let _ = std::fs::remove_dir_all(inside("/ws/hb-out"));
    crate::harness::copy_tree(wheelhouse(), &inside("/wheelhouse"));
    // Root packages already downloaded on this machine are offered as files (each is
    // verified against the lock as if apt had fetched it).
    crate::harness::copy_tree(&apt_dir().join("debs"), &inside("/apt/debs"));
    std::fs::copy(hb_bin(), inside("/usr/local/bin/hb")).unwrap();
    run(Command::new("chmod").arg("0755").arg(inside("/usr/local/bin/hb")));
    // systemd-nspawn rather than a chroot: hb's sandbox needs namespaces, which the
    // kernel refuses inside a chroot.
    let out = Command::new("systemd-nspawn")
        .args(["--quiet", "--register=no", "--keep-unit", "--console=pipe", "--chdir=/ws"])
        .arg("-D")
        .arg(&root.path)
        .args(["--setenv=PATH=/usr/local/bin:/usr/bin:/bin", "--setenv=HOME=/root", "--setenv=NO_COLOR=1"])
        .args(["--setenv=HB_CACHE_DIR=/cache", "--setenv=HB_APT_DIR=/apt", "--setenv=PIP_FIND_LINKS=/wheelhouse"])
        // As on a build machine with qemu-user-static: binfmt_misc mounted.
        .args(["sh", "-c", "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && exec \"$@\"", "sh"])
        .args(["hb", "build", "//demosite:deb", "--platform", "all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "hb inside the trixie root failed:\n{}", show(&out));
    let dest = ws.root.join("from-trixie");
    crate::harness::copy_tree(&inside("/ws/hb-out"), &dest);
    dest
}

#[test]
fn every_platform_builds_the_same_anywhere_and_installs_and_serves() {
    let ws = demosite_on_its_own_port();
    // Built with the host's Python hidden: the build steps run the root's.
    let hidden = ws.cmd_hiding_host_python(&["build", "//demosite:deb", "--platform", "all"]);
    assert!(hidden.status.success(), "{}", show(&hidden));
    for (platform, arch) in PLATFORMS {
        let deb = deb_of(&ws.root, platform, arch);
        assert!(deb.is_file(), "{platform}: no {}", deb.display());
        assert_eq!(field(&deb, "Architecture"), arch);
        let py = if platform.starts_with("trixie") { "3.13" } else { "3.11" };
        assert!(field(&deb, "Depends").contains(&format!("python3 (>= {py}~)")), "{platform}");
        let unit = if platform.starts_with("trixie") { "./usr/lib/systemd/system/" } else { "./lib/systemd/system/" };
        let list = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
        assert!(list.contains(&format!("{unit}demosite.service")), "{platform}:\n{list}");
        assert!(list.contains(&format!("lib/python{py}/site-packages/flask/")), "{platform}");
    }
    // The default platform alone still goes where it always went.
    ws.ok(&["build", "//demosite:deb"]);
    assert_eq!(
        sha256(&ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb")),
        sha256(&deb_of(&ws.root, "bookworm-amd64", "amd64"))
    );

    // Host independence: the same binary on a Debian 13 machine gives the same bytes.
    let trixie = build_all_inside_trixie(&ws);
    for (platform, arch) in PLATFORMS {
        let here = deb_of(&ws.root, platform, arch);
        let there = trixie.join(format!("{platform}/demosite/demosite_0.1.0_{arch}.deb"));
        let diff = ws.cmd().arg("diff").arg(&here).arg(&there).output().unwrap();
        assert!(diff.status.success(), "{platform}: the trixie-hosted build differs:\n{}", show(&diff));
    }

    // Each installs and serves in a fresh root of its own release and architecture.
    // CI installs three; scripts/platforms.sh adds trixie-arm64.
    let mut install = vec!["bookworm-amd64", "trixie-amd64", "bookworm-arm64"];
    if std::env::var("HB_E2E_ALL_PLATFORMS").is_ok_and(|v| v == "1") {
        install.push("trixie-arm64");
    }
    for platform in install {
        let arch = platform.split_once('-').unwrap().1;
        let chroot = Chroot::of(Root::copy_of(&platform_root(platform)));
        std::fs::copy(deb_of(&ws.root, platform, arch), chroot.path("/tmp/demosite.deb")).unwrap();
        chroot.ok("dpkg -i /tmp/demosite.deb");
        chroot.ok("/etc/init.d/demosite start");
        let page = get(&format!("http://127.0.0.1:{PORT}/"));
        assert!(page.contains("Built by hb, byte for byte."), "{platform}: {page}");
        chroot.ok("/etc/init.d/demosite stop");
    }
}

#[test]
fn keys_of_root_actions_do_not_depend_on_the_host_python() {
    let a = Ws::demosite();
    let b = Ws::demosite();
    let fake = tempfile::tempdir().unwrap();
    for name in ["python3", "python3.11"] {
        let p = fake.path().join(name);
        std::fs::write(&p, "#!/bin/sh\necho this is not the python you want >&2\nexit 1\n").unwrap();
        run(Command::new("chmod").arg("0755").arg(&p));
    }
    let keys = |ws: &Ws, path: Option<&Path>| -> Vec<(String, String)> {
        let mut cmd = ws.cmd();
        cmd.args(["build", "--json", "//demosite:deb"]);
        if let Some(dir) = path {
            cmd.env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()));
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut v: Vec<(String, String)> = report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| ["py_wheel", "root", "deb_fetch"].contains(&x["kind"].as_str().unwrap()))
            .map(|x| (x["name"].as_str().unwrap().to_string(), x["key"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    let (ka, kb) = (keys(&a, None), keys(&b, Some(fake.path())));
    assert!(ka.iter().any(|(n, _)| n.ends_with("wheel")) && ka.iter().any(|(n, _)| n.starts_with("root ")));
    assert_eq!(ka, kb, "a different python3 on PATH changed the keys of actions that run in the root");
}

#[test]
fn platform_and_root_mistakes_say_what_to_do() {
    let ws = Ws::demosite();
    let err = ws.fails(&["build", "//demosite:deb", "--platform", "sid-amd64"]);
    assert!(err.contains("unknown platform `sid-amd64`") && err.contains("trixie-arm64"), "{err}");

    // A root package that no mirror and no cache has any more.
    let lock = std::fs::read_to_string(ws.path("hb-root.lock")).unwrap();
    let start = lock.find("name = \"libc6\"").unwrap();
    let stanza: String = lock[start..].split("\n\n").next().unwrap().to_string();
    let version = stanza.lines().find_map(|l| l.strip_prefix("version = \"")).unwrap().trim_end_matches('"');
    let gone = stanza.replace(version, "2.36-0hb1");
    ws.write("hb-root.lock", &lock.replacen(&stanza, &gone, 1));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(
        err.contains("libc6 2.36-0hb1")
            && err.contains("no longer on the mirror")
            && err.contains("hb lock --update-root"),
        "{err}"
    );

    // A .deb whose bytes are not what the lock says: refused, nothing stored.
    let sha = stanza.lines().find_map(|l| l.strip_prefix("sha256 = \"")).unwrap().trim_end_matches('"');
    let wrong = stanza.replace(sha, &"0".repeat(64));
    ws.write("hb-root.lock", &lock.replacen(&stanza, &wrong, 1));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("does not match the root lock") && err.contains("was not stored"), "{err}");
    let file = stanza.lines().find_map(|l| l.strip_prefix("file = \"")).unwrap().trim_end_matches('"');
    let real = std::fs::read(apt_dir().join("debs").join(file)).unwrap();
    let store = hb_store::Store::open(&ws.cache).unwrap();
    assert!(!store.has_blob(&hb_store::Digest::of(&real)), "the refused .deb entered the store");
    drop(store);
    ws.write("hb-root.lock", &lock);

    // An arm64 build on a machine without binfmt_misc says what to install.
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs none /proc/sys/fs/binfmt_misc && exec \"$@\"", "sh"])
        .arg(hb_bin())
        .args(["build", "//demosite:deb", "--platform", "bookworm-arm64"])
        .current_dir(&ws.root)
        .envs(ws.cmd().get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(err.contains("under emulation") && err.contains("apt install qemu-user-static binfmt-support"), "{err}");
}
