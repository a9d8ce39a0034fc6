//! Bad input: every error names the file, line and column or the label at fault, exits
//! non-zero, and leaves nothing in hb-out/.

use crate::harness::Ws;

fn assert_no_outputs(ws: &Ws) {
    let out = ws.path("hb-out");
    let files: Vec<_> = walk(&out);
    assert!(files.is_empty(), "hb-out holds {files:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = hb_fs::read_dir_sorted(dir) {
        for e in rd {
            let p = e.path();
            if p.is_dir() {
                v.extend(walk(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

#[test]
fn malformed_build_file_points_at_line_and_column() {
    let ws = Ws::demosite();
    let text = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &text.replace("module = \"demosite:app\"", "module = \"demosite:app\"\nsrcz = 1"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    let line = text.lines().position(|l| l.starts_with("module = \"demosite:app\"")).unwrap() + 2;
    assert!(err.contains(&format!("demosite/BUILD.toml:{line}:1")), "{err}");
    assert!(err.contains("unknown field `srcz`") && err.contains("srcz = 1"), "{err}");
    assert_no_outputs(&ws);

    ws.write("demosite/BUILD.toml", "[[deb]\nname = \"x\"\n");
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("demosite/BUILD.toml:1:"), "{err}");
    assert_no_outputs(&ws);
}

#[test]
fn bad_values_are_located() {
    let ws = Ws::demosite();
    let text = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &text.replace("version = \"0.1.0\"", "version = \"v0.1\""));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("invalid Debian version") && err.contains("demosite/BUILD.toml:"), "{err}");
}

#[test]
fn unknown_labels_suggest_close_names() {
    let ws = Ws::demosite();
    let err = ws.fails(&["build", "//demosite:dep"]);
    assert!(err.contains("did you mean `//demosite:deb`"), "{err}");
    let err = ws.fails(&["build", "//demosit:deb"]);
    assert!(err.contains("did you mean `//demosite`"), "{err}");
    let text = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &text.replace("deps = [\":app\"]", "deps = [\":ap\"]"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("did you mean `//demosite:app`") && err.contains("demosite/BUILD.toml:"), "{err}");
    assert_no_outputs(&ws);
}

#[test]
fn dependency_cycles_are_printed() {
    let ws = Ws::empty();
    let deb = |name: &str, dep: &str| {
        format!(
            "[[deb]]\nname = \"{name}\"\nversion = \"1\"\nmaintainer = \"m <m@example.org>\"\ndescription = \"d\"\ndeps = [\"{dep}\"]\n"
        )
    };
    ws.write("loop/BUILD.toml", &(deb("a", ":b") + &deb("b", "//other:c")));
    ws.write("other/BUILD.toml", &deb("c", "//loop:a"));
    let err = ws.fails(&["build", "//loop:a"]);
    assert!(err.contains("dependency cycle: //loop:a -> //loop:b -> //other:c -> //loop:a"), "{err}");
    assert!(err.contains("other/BUILD.toml:6:"), "{err}");
    assert_no_outputs(&ws);
}

#[test]
fn a_failing_action_names_itself_and_leaves_no_output() {
    let ws = Ws::demosite();
    std::fs::remove_file(ws.path("demosite/config.cfg")).unwrap();
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("action `//demosite:deb config` failed"), "{err}");
    assert!(err.contains("`config.cfg`") && err.contains("demosite/BUILD.toml:"), "{err}");
    assert_no_outputs(&ws);
}

/// demosite with its `[deb.service]` table edited by `edit`.
fn with_service(edit: impl Fn(&str) -> String) -> Ws {
    let ws = Ws::demosite();
    let text = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &edit(&text));
    ws
}

fn line_of(ws: &Ws, needle: &str) -> usize {
    let text = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} not in BUILD.toml")) + 1
}

#[test]
fn bad_service_settings_are_rejected_with_their_location() {
    let ws = with_service(|t| t.replace("port = 8000", "port = 70000"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains(&format!("demosite/BUILD.toml:{}:8", line_of(&ws, "port = 70000"))), "{err}");
    assert_no_outputs(&ws);

    let ws = with_service(|t| t.replace("# user = \"demosite\"", "user = \"Web User\""));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains(&format!("demosite/BUILD.toml:{}:8", line_of(&ws, "user = \"Web User\""))), "{err}");
    assert!(err.contains("adduser"), "{err}");

    let ws = with_service(|t| t.replace("bind = \"127.0.0.1\"", "bind = \"localhost:80\""));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("IP address") && err.contains("demosite/BUILD.toml:"), "{err}");

    // A server the app does not lock, or whose worker it does not lock.
    for server in ["server = \"uvicorn\"", "server = \"gunicorn-uvicorn\""] {
        let ws = with_service(|t| t.replace("port = 8000", &format!("port = 8000\n{server}")));
        let err = ws.fails(&["build", "//demosite:deb"]);
        assert!(err.contains("the service runs uvicorn, but //demosite:app does not depend on it"), "{err}");
        assert!(err.contains("run `hb lock //demosite:app`") && err.contains("demosite/BUILD.toml:"), "{err}");
    }
    let ws = with_service(|t| t.replace("port = 8000", "port = 8000\ncommand = [\"bin/serve\"]"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("must be an absolute path"), "{err}");
    let ws = with_service(|t| t.replace("port = 8000", "port = 8000\nserver = \"uvicorn\"\ncommand = [\"/x\"]"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("exclude each other"), "{err}");

    // Config modes and secrets.
    for (setting, says) in [
        ("config_mode = \"0666\"", "may not let every user write"),
        ("config_mode = \"rw-r-----\"", "octal mode"),
        ("config_group = \"www-data\"", "goes with `config_mode`"),
        ("secrets = [\"../etc/shadow\"]", "plain file name"),
        ("secrets = [\"key\", \"key\"]", "listed twice"),
        ("on_configure = [\"{prefix}/bin/python -m {modul}\"]", "unknown placeholder `{modul}`"),
        ("on_configure = [\"  \"]", "non-empty shell command"),
        (
            "command = [\"{prefix}/bin/waitress-serve\", \"--listen={bind}\", \"a b\"]",
            "may not be empty or hold white space",
        ),
        ("command = [\"{prefix}/bin/x\", \"--app={app}\"]", "unknown placeholder `{app}`"),
        ("options = { bind = \"0.0.0.0:80\" }", "set by hb from [deb.service]"),
        ("options = { \"--timeout\" = 3 }", "written without `--`"),
        ("options = { timeout = \"$(reboot)\" }", "may not be empty or hold white space"),
        ("worker_class = \"x.Y\"\nserver = \"uvicorn\"", "setting of `server = \"gunicorn\"`"),
    ] {
        let ws = with_service(|t| t.replace("port = 8000", &format!("port = 8000\n{setting}")));
        let err = ws.fails(&["build", "//demosite:deb"]);
        assert!(
            err.contains(says)
                && err.contains(&format!("demosite/BUILD.toml:{}:", line_of(&ws, setting.lines().next().unwrap()))),
            "{setting}: {err}"
        );
        assert_no_outputs(&ws);
    }
}

#[test]
fn own_maintainer_scripts_without_a_place_for_hbs_part_are_rejected_with_their_location() {
    let add = |t: &str| format!("{t}\n[deb.scripts]\npostinst = \"postinst.sh\"\n");
    for (script, says) in [
        ("#!/bin/sh\nset -e\necho mine\n", "has no `#HB#` line"),
        ("#!/bin/sh\n#HB#\n#HB#\n", "has 2 `#HB#` lines"),
        ("set -e\n#HB#\n", "must start with an interpreter line"),
    ] {
        let ws = with_service(add);
        ws.write("demosite/postinst.sh", script);
        let err = ws.fails(&["build", "//demosite:deb"]);
        let line = line_of(&ws, "postinst = \"postinst.sh\"");
        assert!(err.contains(says) && err.contains(&format!("demosite/BUILD.toml:{line}:")), "{script}: {err}");
        assert_no_outputs(&ws);
    }
    let ws = with_service(|t| format!("{t}\n[deb.scripts]\nconfig = \"x.sh\"\n"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("unknown field `config`") && err.contains("postinst"), "{err}");
}

#[test]
fn template_overrides_that_do_not_render_are_rejected_with_their_location() {
    let add = |t: &str| format!("{t}\n[deb.templates]\n\"init.d\" = \"my-init.j2\"\n");
    let ws = with_service(add);
    ws.write("demosite/my-init.j2", "#!/bin/sh\necho {{ service.no_such_setting }}\n");
    let err = ws.fails(&["build", "//demosite:deb"]);
    let line = line_of(&ws, "\"init.d\" = \"my-init.j2\"");
    assert!(
        err.contains("template `init.d` does not render") && err.contains(&format!("demosite/BUILD.toml:{line}:")),
        "{err}"
    );
    assert!(err.contains("no_such_setting") || err.contains("undefined"), "{err}");
    assert_no_outputs(&ws);

    ws.write("demosite/my-init.j2", "#!/bin/sh\n{% if service %}\necho unterminated\n");
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(
        err.contains("template `init.d` does not render") && err.contains(&format!("demosite/BUILD.toml:{line}:")),
        "{err}"
    );

    let ws = with_service(|t| format!("{t}\n[deb.templates]\n\"inti.d\" = \"x.j2\"\n"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("no template named `inti.d`") && err.contains("init.d"), "{err}");

    // A working override is used.
    let ws = with_service(add);
    ws.write("demosite/my-init.j2", "#!/bin/sh\n# custom init for {{ package }} on {{ service.bind }}\n");
    ws.ok(&["build", "//demosite:deb"]);
    let x = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb"))
        .arg(x.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(x.path().join("etc/init.d/demosite")).unwrap(),
        "#!/bin/sh\n# custom init for demosite on 127.0.0.1:8000\n"
    );
}

#[test]
fn an_unknown_platform_or_rule_is_located_and_lists_the_known_ones() {
    let ws = Ws::demosite();
    let root = std::fs::read_to_string(ws.path("BUILD.toml")).unwrap();
    ws.write("BUILD.toml", &root.replace("platform = \"bookworm-amd64\"", "platform = \"bookworm-armhf\""));
    let err = ws.fails(&["build", "//demosite:deb"]);
    let line = root.lines().position(|l| l.starts_with("platform =")).unwrap() + 1;
    assert!(err.contains(&format!("BUILD.toml:{line}:12")), "{err}");
    assert!(err.contains("unknown platform `bookworm-armhf`; known: bookworm-amd64"), "{err}");
    assert_no_outputs(&ws);

    ws.write("BUILD.toml", &root);
    let text = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &text.replace("[[python_app]]", "[[pyhton_app]]"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("unknown rule `pyhton_app`; did you mean `[[python_app]]`?"), "{err}");
    assert!(err.contains(&format!("demosite/BUILD.toml:{}:3", line_of(&ws, "[[pyhton_app]]"))), "{err}");
    assert_no_outputs(&ws);
}

#[test]
fn hostile_filesystem_symlinks_and_odd_names_never_reach_the_package() {
    use std::os::unix::ffi::OsStrExt;
    let ws = Ws::demosite();
    let text = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    let files = "\n[[files]]\nname = \"data\"\nsrcs = [\"data/**/*\"]\ndest = \"/usr/share/demosite\"\n";
    ws.write(
        "demosite/BUILD.toml",
        &format!("{}{files}", text.replace("deps = [\":app\"]", "deps = [\":app\", \":data\"]")),
    );
    ws.write("demosite/data/ok.txt", "fine\n");
    // A link out of the package: the build machine's /etc must never be packaged.
    std::os::unix::fs::symlink("/etc", ws.path("demosite/data/etcdir")).unwrap();
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("data/etcdir is a symlink (to /etc)") && err.contains("demosite/BUILD.toml:"), "{err}");
    assert_no_outputs(&ws);
    std::fs::remove_file(ws.path("demosite/data/etcdir")).unwrap();
    std::os::unix::fs::symlink("../../BUILD.toml", ws.path("demosite/data/up.cfg")).unwrap();
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("data/up.cfg is a symlink"), "{err}");
    std::fs::remove_file(ws.path("demosite/data/up.cfg")).unwrap();
    // A name that is not UTF-8 is refused, shown escaped, rather than renamed or dropped.
    let odd = ws.path("demosite/data").join(std::ffi::OsStr::from_bytes(b"bad\xff.txt"));
    std::fs::write(&odd, "x").unwrap();
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains(r"bad\xFF.txt") && err.contains("not a UTF-8 file name"), "{err}");
    assert_no_outputs(&ws);
    std::fs::remove_file(&odd).unwrap();
    ws.ok(&["build", "//demosite:deb"]);
}

#[test]
fn command_line_mistakes_say_what_is_wrong() {
    let ws = Ws::demosite();
    let err = ws.fails(&["-C", "/nonexistent-dir", "build", "//demosite:deb"]);
    assert!(err.contains("-C /nonexistent-dir: no such directory"), "{err}");
    // An empty HB_CACHE_DIR counts as unset (no error about a flag never given).
    let out = ws.cmd().args(["query"]).env("HB_CACHE_DIR", "").output().unwrap();
    assert!(out.status.success(), "{}", crate::harness::show(&out));
    // A huge -j is capped, with a warning, not a thread storm.
    let out = ws.ok(&["build", "-j", "100000", "//demosite:deb"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("using -j 256"));
    let err = ws.fails(&["build", "-j", "0", "//demosite:deb"]);
    assert!(err.contains("-j 0"), "{err}");
    // Nothing to verify is said, not a panic.
    let empty = Ws::empty();
    let err = empty.fails(&["verify", "//..."]);
    assert!(err.contains("names no target"), "{err}");
    // A file error names its cause once.
    let err = ws.fails(&["build", "--cache-dir", "/proc/hb-cache", "//demosite:deb"]);
    let cause = err.lines().next().unwrap_or_default().to_string();
    assert!(cause.contains("/proc/hb-cache"), "{err}");
    let first = cause.find("(os error").unwrap_or(0);
    assert!(!cause[first + 1..].contains("(os error"), "the cause is repeated: {err}");
}
