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
    ws.write("demosite/BUILD.toml", &text.replace("dest = \"/etc/demosite\"", "dest = \"/etc/demosite\"\nsrcz = 1"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    let line = text.lines().position(|l| l.starts_with("dest = \"/etc/demosite\"")).unwrap() + 2;
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
    ws.write("demosite/BUILD.toml", &text.replace("\":config\"]", "\":confg\"]"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("did you mean `//demosite:config`") && err.contains("demosite/BUILD.toml:"), "{err}");
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
    assert!(err.contains("action `//demosite:config` failed"), "{err}");
    assert!(err.contains("`config.cfg`") && err.contains("demosite/BUILD.toml:"), "{err}");
    assert_no_outputs(&ws);
}
