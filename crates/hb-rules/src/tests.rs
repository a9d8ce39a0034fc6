//! Planner tests: the action graph (names, kinds, edges) each rule expands into, for
//! throwaway workspaces and for demosite, and a rule defined here to show that the
//! [`Rule`] trait and one registration are all a rule needs. Nothing here runs pip or
//! bubblewrap; the test rule's deb is built for real from pure actions.

use std::path::Path;

use hb_config::{ConfigError, Label, Package, Workspace};
use hb_engine::Graph;
use serde::Deserialize;
use toml::Spanned;

use crate::actions::render::RenderJob;
use crate::providers::InstallTree;
use crate::rule::{Cx, Providers, Rule, Rules};
use crate::{PlanOptions, RulesError, plan};

/// One line per action: `name (kind) <- dependency names`.
fn render(g: &Graph) -> Vec<String> {
    g.nodes
        .iter()
        .map(|n| {
            let deps: Vec<&str> = n.deps.iter().map(|&d| g.nodes[d].name.as_str()).collect();
            if deps.is_empty() {
                format!("{} ({})", n.name, n.kind())
            } else {
                format!("{} ({}) <- {}", n.name, n.kind(), deps.join(", "))
            }
        })
        .collect()
}

/// A root lock for the default platform with one package (nothing is fetched).
fn fake_root_lock() -> String {
    let p = hb_platform::DEFAULT;
    hb_root::RootLock {
        roots: vec![hb_root::Root {
            platform: p.name.to_string(),
            extra: Vec::new(),
            inputs: hb_root::inputs_digest(p),
            package: vec![hb_root::RootPackage {
                name: "libc6".into(),
                version: "2.36-9".into(),
                architecture: "amd64".into(),
                file: "libc6_2.36-9_amd64.deb".into(),
                size: 1,
                sha256: "0".repeat(64),
            }],
        }],
    }
    .render()
}

/// The root actions python_app adds for the default platform of [`fake_root_lock`].
const ROOT_ACTIONS: [&str; 2] =
    ["fetch libc6_2.36-9_amd64.deb (deb_fetch)", "root bookworm-amd64 (root) <- fetch libc6_2.36-9_amd64.deb"];

struct Ws(tempfile::TempDir);

impl Ws {
    fn new(files: &[(&str, &str)]) -> Ws {
        let d = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Ws(d)
    }

    /// A python_app package `app` with `deps`, locked with fake hashes (nothing is fetched).
    fn with_app(extra: &[(&str, &str)], runtime: &[&str], build: &[&str]) -> Ws {
        let ws = Ws::new(extra);
        let quoted = |v: &[&str]| v.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ");
        let pyproject = format!(
            "[project]\nname = \"Tiny_App\"\nversion = \"1\"\ndependencies = [{}]\n[build-system]\nrequires = [{}]\nbuild-backend = \"setuptools.build_meta\"\n",
            quoted(runtime),
            quoted(build)
        );
        ws.write("app/pyproject.toml", &pyproject);
        ws.write("app/tiny.py", "app = None\n");
        let target = crate::rules::python_app::wheel_target(hb_platform::DEFAULT);
        let id = crate::actions::python::target_id(&target);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let file = |name: &str, role| hb_fetch::LockedFile {
            name: name.to_string(),
            version: "1.0".to_string(),
            role,
            file: format!("{name}-1.0-py3-none-any.whl"),
            sha256: "0".repeat(64),
            targets: Vec::new(),
            pure: false,
        };
        let mut packages: Vec<_> = runtime.iter().map(|n| file(n, hb_fetch::Role::Runtime)).collect();
        packages.extend(build.iter().map(|n| file(n, hb_fetch::Role::Build)));
        let targets = vec![id];
        let lock =
            hb_fetch::Lock { inputs: hb_fetch::inputs_digest(&s(runtime), &s(build), &targets, ""), targets, packages };
        ws.write("app/hb.lock", &lock.render("//app:app"));
        ws.write(hb_root::ROOT_LOCK, &fake_root_lock());
        ws
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.0.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn plan(&self, rules: &Rules, label: &str) -> Result<crate::Plan, RulesError> {
        plan_at(self.0.path(), rules, label)
    }
}

fn plan_at(root: &Path, rules: &Rules, label: &str) -> Result<crate::Plan, RulesError> {
    let mut ws = Workspace::open(root, &rules.schemas())?;
    plan(&mut ws, rules, &[Label::parse(label, None).unwrap()], &PlanOptions::default())
}

const WORKSPACE: &str = "[workspace]\n";
const APP: &str = "[[python_app]]\nname = \"app\"\nsrcs = [\"*.py\"]\nmodule = \"tiny:app\"\n";
const DEB: &str = "[[deb]]\nname = \"deb\"\npackage = \"tiny\"\nversion = \"1.0\"\nmaintainer = \"m <m@example.org>\"\ndescription = \"tiny\"\n";

#[test]
fn files_is_one_action() {
    let ws = Ws::new(&[
        ("BUILD.toml", WORKSPACE),
        ("etc/BUILD.toml", "[[files]]\nname = \"conf\"\nsrcs = [\"*.conf\"]\ndest = \"/etc/x\"\n"),
    ]);
    let p = ws.plan(&Rules::builtin(), "//etc:conf").unwrap();
    assert_eq!(render(&p.graph), ["//etc:conf (files)"]);
    let label = Label::parse("//etc:conf", None).unwrap();
    assert!(p.providers[&label].get::<InstallTree>().is_some());
}

#[test]
fn python_app_fetches_builds_and_installs() {
    let ws =
        Ws::with_app(&[("BUILD.toml", WORKSPACE), ("app/BUILD.toml", APP)], &["gunicorn", "flask"], &["setuptools"]);
    let p = ws.plan(&Rules::builtin(), "//app:app").unwrap();
    assert_eq!(
        render(&p.graph),
        [
            "fetch setuptools-1.0-py3-none-any.whl (fetch)",
            "fetch flask-1.0-py3-none-any.whl (fetch)",
            "fetch gunicorn-1.0-py3-none-any.whl (fetch)",
            ROOT_ACTIONS[0],
            ROOT_ACTIONS[1],
            "//app:app wheel (py_wheel) <- fetch setuptools-1.0-py3-none-any.whl, root bookworm-amd64",
            "//app:app (py_venv) <- fetch flask-1.0-py3-none-any.whl, fetch gunicorn-1.0-py3-none-any.whl, //app:app wheel",
        ]
    );
    let info = p.providers[&Label::parse("//app:app", None).unwrap()].get::<crate::providers::PythonApp>().unwrap();
    assert_eq!(info.prefix, "/usr/lib/tiny-app");
    assert_eq!(info.entry_point, "tiny:app");
    assert_eq!(info.interpreter, "/usr/bin/python3.11");
    assert!(info.requires("gunicorn") && !info.requires("setuptools"));
}

#[test]
fn deb_with_a_service_and_shared_fetches() {
    let build = format!(
        "{APP}[[python_app]]\nname = \"other\"\nsrcs = [\"*.py\"]\nmodule = \"tiny:app\"\nprefix = \"/opt/other\"\n{DEB}deps = [\":app\", \":other\"]\n[deb.service]\napp = \":app\"\n"
    );
    let ws = Ws::with_app(&[("BUILD.toml", WORKSPACE), ("app/BUILD.toml", &build)], &["gunicorn"], &["setuptools"]);
    std::fs::copy(ws.0.path().join("app/hb.lock"), ws.0.path().join("app/other.lock")).unwrap();
    ws.write(
        "app/BUILD.toml",
        &build.replace("prefix = \"/opt/other\"", "prefix = \"/opt/other\"\nlock = \"other.lock\""),
    );
    let p = ws.plan(&Rules::builtin(), "//app:deb").unwrap();
    assert_eq!(
        render(&p.graph),
        [
            "fetch setuptools-1.0-py3-none-any.whl (fetch)",
            "fetch gunicorn-1.0-py3-none-any.whl (fetch)",
            ROOT_ACTIONS[0],
            ROOT_ACTIONS[1],
            "//app:app wheel (py_wheel) <- fetch setuptools-1.0-py3-none-any.whl, root bookworm-amd64",
            "//app:app (py_venv) <- fetch gunicorn-1.0-py3-none-any.whl, //app:app wheel",
            // Both apps lock the same files and run in one root: each is fetched once.
            "//app:other wheel (py_wheel) <- fetch setuptools-1.0-py3-none-any.whl, root bookworm-amd64",
            "//app:other (py_venv) <- fetch gunicorn-1.0-py3-none-any.whl, //app:other wheel",
            "//app:deb render (render)",
            "//app:deb layout (deb_layout) <- //app:app, //app:other, //app:deb render",
            "//app:deb shlibdeps (deb_shlibdeps) <- //app:deb layout, root bookworm-amd64",
            "//app:deb control (deb_control) <- //app:deb layout, //app:app, //app:other, //app:deb shlibdeps",
            "//app:deb data (deb_data) <- //app:deb layout",
            "//app:deb pack (deb_pack) <- //app:deb control, //app:deb data",
            "//app:deb (deb_sbom) <- //app:deb pack, //app:app, //app:other",
        ]
    );
    let deb = p.providers[&Label::parse("//app:deb", None).unwrap()].get::<crate::providers::DebPackage>().unwrap();
    assert_eq!(deb.file_name, "tiny_1.0_amd64.deb");
}

#[test]
fn deb_errors_point_at_the_build_file() {
    let ws = Ws::with_app(&[("BUILD.toml", WORKSPACE)], &["flask"], &["setuptools"]);
    let cases = [
        // The served app must be in deps.
        (format!("{APP}{DEB}[deb.service]\napp = \":app\"\n"), "must also be in `deps`", "app/BUILD.toml:12:7"),
        // It must run gunicorn.
        (format!("{APP}{DEB}deps = [\":app\"]\n[deb.service]\napp = \":app\"\n"), "does not depend on it", ":13:7"),
        // A package cannot contain a package.
        (format!("{DEB}deps = [\":inner\"]\n{}", DEB.replace("\"deb\"", "\"inner\"")), "list it in `depends`", ":7:9"),
    ];
    for (text, message, at) in cases {
        ws.write("app/BUILD.toml", &text);
        let err = ws.plan(&Rules::builtin(), "//app:deb").err().expect("planning fails").to_string();
        assert!(err.contains(message) && err.contains(at), "{text}\n---\n{err}");
    }
}

#[test]
fn demosite_plans_without_pip_or_bwrap() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = plan_at(&root, &Rules::builtin(), "//demosite:deb").unwrap();
    let lock = hb_fetch::Lock::parse(
        &std::fs::read_to_string(root.join("demosite/hb.lock")).unwrap(),
        Path::new("demosite/hb.lock"),
    )
    .unwrap();
    let id = crate::rules::python_app::wheel_target(hb_platform::DEFAULT).id();
    let fetch = |role| -> Vec<String> { lock.files_for(role, &id).map(|f| format!("fetch {}", f.file)).collect() };
    let (build, runtime) = (fetch(hb_fetch::Role::Build), fetch(hb_fetch::Role::Runtime));
    let lines = render(&p.graph);
    let mut expected: Vec<String> = build.iter().chain(&runtime).map(|f| format!("{f} (fetch)")).collect();
    // The root of the default platform, from the repository's hb-root.lock.
    let roots = hb_root::RootLock::load(&root).unwrap().unwrap();
    let debs: Vec<String> =
        roots.root("bookworm-amd64").unwrap().package.iter().map(|p| format!("fetch {}", p.file)).collect();
    expected.extend(debs.iter().map(|d| format!("{d} (deb_fetch)")));
    expected.push(format!("root bookworm-amd64 (root) <- {}", debs.join(", ")));
    expected.push(format!("//demosite:app wheel (py_wheel) <- {}, root bookworm-amd64", build.join(", ")));
    expected.push(format!("//demosite:app (py_venv) <- {}, //demosite:app wheel", runtime.join(", ")));
    expected.extend(
        [
            "//demosite:deb config (files)",
            "//demosite:deb render (render)",
            "//demosite:deb layout (deb_layout) <- //demosite:app, //demosite:deb config, //demosite:deb render",
            "//demosite:deb shlibdeps (deb_shlibdeps) <- //demosite:deb layout, root bookworm-amd64",
            "//demosite:deb control (deb_control) <- //demosite:deb layout, //demosite:app, //demosite:deb shlibdeps",
            "//demosite:deb data (deb_data) <- //demosite:deb layout",
            "//demosite:deb pack (deb_pack) <- //demosite:deb control, //demosite:deb data",
            "//demosite:deb (deb_sbom) <- //demosite:deb pack, //demosite:app",
        ]
        .map(String::from),
    );
    assert_eq!(lines, expected);
    assert!(runtime.iter().any(|f| f.contains("gunicorn")), "{runtime:?}");
}

/// A rule that exists only in this test: `[[motd]]` installs its text as /etc/motd.
struct Motd;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MotdAttrs {
    name: Spanned<String>,
    text: Spanned<String>,
}

impl Rule for Motd {
    const KIND: &'static str = "motd";
    type Attrs = MotdAttrs;
    type Analysis = Vec<u8>;

    fn name(attrs: &MotdAttrs) -> &Spanned<String> {
        &attrs.name
    }

    fn check(pkg: &Package, attrs: &MotdAttrs) -> Result<(), ConfigError> {
        match attrs.text.get_ref().is_empty() {
            true => Err(pkg.error(attrs.text.span(), "a message of the day says something")),
            false => Ok(()),
        }
    }

    fn analyse(&self, _cx: &Cx, attrs: &MotdAttrs) -> Result<Vec<u8>, RulesError> {
        Ok(format!("{}\n", attrs.text.get_ref()).into_bytes())
    }

    fn expand(&self, cx: &mut Cx, _: &MotdAttrs, text: Vec<u8>) -> Result<Providers, RulesError> {
        let job = RenderJob { label: cx.label(), files: vec![("etc/motd".to_string(), 0o644, text)] };
        let tree = cx.actions.add(cx.label(), job).any();
        Ok(Providers::new(tree).with(InstallTree { tree }))
    }
}

#[test]
fn a_rule_needs_only_the_trait_and_a_registration() {
    let build = format!("[[motd]]\nname = \"motd\"\ntext = \"be kind\"\n{DEB}deps = [\":motd\"]\n");
    let ws = Ws::new(&[("BUILD.toml", WORKSPACE), ("pkg/BUILD.toml", &build)]);
    // Unregistered, `[[motd]]` is an unknown rule, shown where it is written.
    let err = ws.plan(&Rules::builtin(), "//pkg:deb").err().unwrap().to_string();
    assert!(err.contains("unknown rule `motd`") && err.contains("pkg/BUILD.toml:1:3"), "{err}");

    let rules = Rules::builtin().with(Motd);
    ws.write("pkg/BUILD.toml", &build.replace("be kind", ""));
    let err = ws.plan(&rules, "//pkg:deb").err().unwrap().to_string();
    assert!(err.contains("says something") && err.contains("pkg/BUILD.toml:3:8"), "{err}");

    ws.write("pkg/BUILD.toml", &build);
    let p = ws.plan(&rules, "//pkg:deb").unwrap();
    assert_eq!(render(&p.graph)[0], "//pkg:motd (render)");
    // Built for real: the package holds /etc/motd as a conffile.
    let store = hb_store::Store::open(&ws.0.path().join("cache")).unwrap();
    let stat = std::sync::Mutex::new(hb_store::stat::StatCache::load(&store, ws.0.path()));
    let opts = hb_engine::Options {
        started: std::time::Instant::now(),
        jobs: 2,
        keep_going: false,
        platform: "bookworm-amd64".into(),
        remote: None,
        executor: None,
        lazy_blobs: false,
        known: Default::default(),
    };
    let report = hb_engine::execute(&p.graph, &store, &stat, &opts, &hb_engine::Quiet);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let out = p.output(&Label::parse("//pkg:deb", None).unwrap()).unwrap();
    let deb = report.results[out.node()].as_ref().unwrap().result(&store).unwrap();
    assert_eq!(deb.exports, ["tiny_1.0_amd64.deb", "tiny_1.0_amd64.spdx.json", "tiny_1.0_amd64.cdx.json"]);
    let layout = report.results[out.node() - 4].as_ref().unwrap().result(&store).unwrap();
    assert!(layout.tree.entries().iter().any(|e| e.path == "etc/motd"));
}

#[test]
fn a_duplicate_target_names_the_first_one() {
    let text = format!("{DEB}\n[[files]]\nname = \"deb\"\nsrcs = [\"x\"]\ndest = \"/x\"\n");
    let ws = Ws::new(&[("BUILD.toml", WORKSPACE), ("pkg/BUILD.toml", &text)]);
    let err = ws.plan(&Rules::builtin(), "//pkg:deb").err().unwrap().to_string();
    assert!(err.contains("declared twice (first at line 2)") && err.contains("pkg/BUILD.toml:9:8"), "{err}");
}

#[test]
fn control_fields_are_checked_where_they_are_written() {
    let ws = Ws::new(&[("BUILD.toml", WORKSPACE)]);
    let cases = [
        ("maintainer = \"m <m@example.org>\"", "maintainer = \"Just A Name\"", "a name and an email address", ":5:14"),
        ("description = \"tiny\"", "description = \"tiny\\n.\"", "just '.'", ":6:15"),
        ("description = \"tiny\"", "description = \"tiny\"\ndepends = [\"curl (>= 7.88\"]", "no closing `)`", ":7:12"),
        ("description = \"tiny\"", "description = \"tiny\"\ndepends = [\"cu~rl\"]", "not a Debian package", ":7:12"),
    ];
    for (from, to, message, at) in cases {
        ws.write("pkg/BUILD.toml", &DEB.replace(from, to));
        let err = ws.plan(&Rules::builtin(), "//pkg:deb").err().unwrap().to_string();
        assert!(err.contains(message) && err.contains(at), "{to}\n---\n{err}");
    }
    ws.write("pkg/BUILD.toml", "[[files]]\nname = \"f\"\nsrcs = [\"x\"]\ndest = \"/etc/../x\"\n");
    let err = ws.plan(&Rules::builtin(), "//pkg:f").err().unwrap().to_string();
    assert!(err.contains("clean absolute path") && err.contains("pkg/BUILD.toml:4:8"), "{err}");
}

#[test]
fn pyproject_mistakes_point_into_the_pyproject() {
    let ws = Ws::with_app(&[("BUILD.toml", WORKSPACE), ("app/BUILD.toml", APP)], &["flask"], &["setuptools"]);
    ws.write("app/pyproject.toml", "[project]\nname = \"tiny\"\ndependencies = \"flask\"\n");
    let err = ws.plan(&Rules::builtin(), "//app:app").err().unwrap().to_string();
    assert!(err.contains("app/pyproject.toml:3:16"), "{err}");
    std::fs::remove_file(ws.0.path().join("app/pyproject.toml")).unwrap();
    let err = ws.plan(&Rules::builtin(), "//app:app").err().unwrap().to_string();
    assert!(err.contains("app/pyproject.toml") && err.contains("app/BUILD.toml:2:8"), "{err}");
}

#[test]
fn timestamps_a_package_cannot_hold_are_refused() {
    let ws = Ws::new(&[("BUILD.toml", "[workspace]\nsource_date_epoch = 99999999999\n")]);
    let err = ws.plan(&Rules::builtin(), "//:x").err().unwrap().to_string();
    assert!(err.contains("BUILD.toml:2:21") && err.contains("source_date_epoch must be between"), "{err}");
    ws.write("BUILD.toml", WORKSPACE);
    ws.write("pkg/BUILD.toml", &format!("{DEB}source_date_epoch = 0\n"));
    let err = ws.plan(&Rules::builtin(), "//pkg:deb").err().unwrap().to_string();
    assert!(err.contains("pkg/BUILD.toml:7:21") && err.contains("1980"), "{err}");
}

mod hostile {
    //! Any text, and any damage to demosite's BUILD.toml: reading it gives targets or an
    //! error with a location, never a panic.
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) {
        let schemas = Rules::builtin().schemas();
        let _ =
            Package::parse("pkg", Path::new("/nonexistent/pkg"), Path::new("pkg/BUILD.toml"), text.into(), &schemas);
    }

    proptest! {
        #[test]
        fn any_text_is_targets_or_an_error(text in "\\PC*") {
            parse(&text);
        }

        #[test]
        fn damaged_build_files_are_targets_or_an_error(
            at in any::<prop::sample::Index>(),
            with in "[\\[\\]{}=\"'#\\n a-z0-9.:/*,]{0,6}",
            cut in any::<bool>(),
        ) {
            let good = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demosite/BUILD.toml")).unwrap();
            let mut i = at.index(good.len());
            while !good.is_char_boundary(i) {
                i -= 1;
            }
            let text = if cut { good[..i].to_string() } else { format!("{}{with}{}", &good[..i], &good[i..]) };
            parse(&text);
            parse(&format!("[workspace]\n{text}"));
        }
    }
}

#[test]
fn the_server_and_its_worker_class_must_be_locked() {
    let ws = Ws::with_app(&[("BUILD.toml", WORKSPACE)], &["gunicorn"], &["setuptools"]);
    let svc = |extra: &str| format!("{APP}{DEB}deps = [\":app\"]\n[deb.service]\napp = \":app\"\n{extra}");
    let cases = [
        ("server = \"uvicorn\"\n", "the service runs uvicorn, but //app:app does not depend on it"),
        ("worker_class = \"uvicorn.workers.UvicornWorker\"\n", "the service runs uvicorn, but"),
        ("server = \"uvicorn\"\nworker_class = \"x.Y\"\n", "`worker_class` is a setting of `server = \"gunicorn\"`"),
        ("server = \"gunicorn-uvicorn\"\n", "the service runs uvicorn, but //app:app does not depend on it"),
        ("command = [\"{prefix}/bin/x\", \"{bnd}\"]\n", "unknown placeholder `{bnd}`"),
        ("worker_class = \"not a path\"\n", "dotted Python path"),
        ("server = \"apache\"\n", "unknown variant `apache`"),
    ];
    for (extra, message) in cases {
        ws.write("app/BUILD.toml", &svc(extra));
        let err = ws.plan(&Rules::builtin(), "//app:deb").err().expect("refused").to_string();
        assert!(err.contains(message) && err.contains("app/BUILD.toml:"), "{extra}\n---\n{err}");
    }
    ws.write("app/BUILD.toml", &svc("worker_class = \"gunicorn.workers.gthread.ThreadWorker\"\n"));
    assert!(ws.plan(&Rules::builtin(), "//app:deb").is_ok());
}
