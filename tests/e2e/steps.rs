//! Build steps (`[[build_step]]`): a command run in the target root with declared
//! sources, tools, outputs and a timeout, cached like every action, its outputs
//! packaged like `files`; and every way a step can go wrong, told with what to fix.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Ws, run, sha256};

const STEP: &str = r#"
[[build_step]]
name = "assets"
srcs = ["assets/*.txt"]
# A frontend-style asset build with the root's own tools (sh, tr, gzip).
cmd = ["/bin/sh", "-c", "mkdir -p {out}/css && for f in assets/*.txt; do b=$(basename $f .txt); tr a-z A-Z <$f >{out}/css/$b.css; done && gzip -n -9 -c {out}/css/app.css >{out}/app.css.gz && python3.11 -c 'import sys; print(sys.version)' >{out}/built-on && printf '#!/bin/sh\\necho hi\\n' >{out}/hello && chmod 700 {out}/hello"]
outs = ["css/", "app.css.gz", "built-on", "hello"]
dest = "/usr/share/web-assets"
timeout = 120

[[deb]]
name = "deb"
package = "web-assets"
version = "1.0"
maintainer = "hb developers <hb@example.org>"
description = "assets built by a step\nAn example of hb's build steps."
deps = [":assets"]
"#;

fn step_ws() -> Ws {
    let ws = Ws::empty();
    ws.write("web/BUILD.toml", STEP);
    ws.write("web/assets/app.txt", "body { color: red }\n");
    ws.write("web/assets/print.txt", "body { color: black }\n");
    ws
}

const DEB: &str = "hb-out/web/web-assets_1.0_amd64.deb";

#[test]
fn a_build_step_runs_in_the_target_root_and_its_outputs_are_packaged() {
    let ws = step_ws();
    ws.ok(&["build", "//web:deb"]);
    let deb = ws.path(DEB);
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()));
    let share = x.path().join("usr/share/web-assets");
    assert_eq!(std::fs::read_to_string(share.join("css/app.css")).unwrap(), "BODY { COLOR: RED }\n");
    assert_eq!(std::fs::read_to_string(share.join("css/print.css")).unwrap(), "BODY { COLOR: BLACK }\n");
    // The root's interpreter ran (the tools are the target root's, not the machine's).
    let built_on = std::fs::read_to_string(share.join("built-on")).unwrap();
    assert!(built_on.starts_with("3.11."), "{built_on}");
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let line =
        |path: &str| contents.lines().find(|l| l.ends_with(path)).unwrap_or_else(|| panic!("{path}:\n{contents}"));
    assert!(line("./usr/share/web-assets/hello").starts_with("-rwxr-xr-x root/root"), "{contents}");
    assert!(line("./usr/share/web-assets/app.css.gz").starts_with("-rw-r--r-- root/root"), "{contents}");

    // Cached: an unchanged build runs nothing; a source edit reruns the step.
    let report = ws.build_json("//web:deb");
    assert_eq!(report["executed"], 0, "{report}");
    let first = sha256(&deb);
    ws.write("web/assets/app.txt", "body { color: blue }\n");
    let report = ws.build_json("//web:deb");
    let executed = crate::harness::actions(&report, "executed");
    assert!(executed.iter().any(|a| a == "//web:assets"), "{executed:?}");
    assert_ne!(sha256(&deb), first);

    // Another checkout path and cache: the same bytes.
    ws.write("web/assets/app.txt", "body { color: red }\n");
    ws.ok(&["build", "//web:deb"]);
    assert_eq!(sha256(&deb), first);
    let other = step_ws();
    other.ok(&["build", "//web:deb"]);
    assert_eq!(sha256(&other.path(DEB)), first, "a step's result depends on where it is built");
}

#[test]
fn build_step_mistakes_say_what_went_wrong() {
    let ws = step_ws();
    let with = |cmd: &str, outs: &str, extra: &str| {
        let text = STEP
            .replace(
                STEP.lines().find(|l| l.starts_with("cmd = ")).unwrap(),
                &format!("cmd = [\"/bin/sh\", \"-c\", {cmd:?}]"),
            )
            .replace("outs = [\"css/\", \"app.css.gz\", \"built-on\", \"hello\"]", outs)
            .replace("timeout = 120", extra);
        ws.write("web/BUILD.toml", &text);
    };

    // A source changed, a stray file next to the sources.
    with("echo x >stray.txt; echo y >>assets/app.txt; mkdir -p {out}/css", "outs = [\"css/\"]", "");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("wrote outside its declared outputs"), "{err}");
    assert!(err.contains("/hb/build/src/stray.txt") && err.contains("assets/app.txt (a source, changed)"), "{err}");

    // An output it did not declare.
    with("mkdir -p {out}/css {out}/other && touch {out}/other/x", "outs = [\"css/\"]", "");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("did not declare") && err.contains("/hb/build/out/other/x"), "{err}");

    // A declared output it does not write, and one of the wrong kind.
    with("mkdir -p {out}/css", "outs = [\"css/\", \"app.js\"]", "");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("did not write the declared output `app.js`"), "{err}");
    with("mkdir -p {out}/css", "outs = [\"css\"]", "");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("declare it as `css/`"), "{err}");

    // A command that fails shows its output; one that hangs is stopped at its timeout.
    with("echo the compiler is unhappy >&2; exit 4", "outs = [\"css/\"]", "");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("failed (with status 4)") && err.contains("the compiler is unhappy"), "{err}");
    with("echo started; sleep 600", "outs = [\"css/\"]", "timeout = 2");
    let started = Instant::now();
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("ran past its timeout of 2 s") && err.contains("web/BUILD.toml:"), "{err}");
    assert!(err.contains("started"), "its output is shown: {err}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());

    // No network inside, even to this machine's loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    with(
        &format!(
            "python3.11 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)' && mkdir {{out}}/css"
        ),
        "outs = [\"css/\"]",
        "",
    );
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("ConnectionRefusedError") || err.contains("Network is unreachable"), "{err}");
    drop(listener);

    // Mistakes in the BUILD.toml are located.
    with("echo {outt}", "outs = [\"css/\"]", "");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("unknown placeholder `{outt}`") && err.contains("web/BUILD.toml:"), "{err}");
    with("true", "outs = [\"../css/\"]", "");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("clean path relative to `{out}`"), "{err}");
    with("true", "outs = [\"css/\"]", "timeout = 0");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("`timeout` is in seconds"), "{err}");
    with("{prefix}/bin/python -V", "outs = [\"css/\"]", "");
    let err = ws.fails(&["build", "//web:deb"]);
    assert!(err.contains("`tools` lists none"), "{err}");
    // With the sandbox off a step cannot run: it says so instead of running on the host.
    with("mkdir {out}/css", "outs = [\"css/\"]", "");
    let err = ws.fails(&["build", "--no-sandbox", "//web:deb"]);
    assert!(err.contains("needs the sandbox"), "{err}");
}
