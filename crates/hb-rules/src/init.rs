//! `hb init`: a first BUILD.toml for a Python project, written from what its
//! pyproject.toml and sources say. The sources are left to the pyproject (no `srcs`,
//! see `crate::pyproject`); the entry point is guessed from the code (a Django
//! `wsgi.py`, a `FastAPI(`/`Starlette(` or `Flask(` object at module level), and so is
//! the server (gunicorn for WSGI, uvicorn for ASGI). Every guess is returned with what to
//! check, for the CLI to print. It writes nothing itself.

use std::path::Path;

use toml::Value;

/// What `hb init` found and would write.
#[derive(Debug)]
pub struct Init {
    /// The BUILD.toml text (with `[workspace]` first when `workspace` is set).
    pub build_file: String,
    /// The deb package's name.
    pub package: String,
    /// What was guessed, and what the user should check, one line each.
    pub notes: Vec<String>,
    /// Whether it should build as written; `false` when a note names something the
    /// user must fix first (no entry point found, the server not a dependency, no
    /// platform with the Python the project needs).
    pub ready: bool,
}

/// The kind of app an entry point serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Wsgi,
    Asgi,
}

/// A guessed entry point.
#[derive(Debug)]
struct Entry {
    module: String,
    kind: Kind,
    why: String,
    /// `DJANGO_SETTINGS_MODULE`, for a Django project.
    django_settings: Option<String>,
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// A Debian package name from a project name (lowercase; `_` and `.` as `-`).
fn debian_name(project: &str) -> String {
    let mut n: String = project
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.' { c } else { '-' })
        .collect();
    n = n.replace('_', "-").trim_matches('-').to_string();
    if n.len() < 2 { format!("{n}-app") } else { n }
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Python files of the derived sources, as (dotted module, text), sorted.
fn python_modules(dir: &Path, patterns: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in patterns {
        let Ok(found) = crate::actions::sources::find(dir, p) else { continue };
        for (rel, path) in found {
            let Some(stem) = rel.strip_suffix(".py") else { continue };
            let Ok(text) = hb_fs::read_to_string(&path) else { continue };
            let stem = stem.strip_prefix("src/").unwrap_or(stem);
            let module = stem.strip_suffix("/__init__").unwrap_or(stem).replace('/', ".");
            out.push((module, text));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// A module-level `NAME = Call(` in `text`: the name.
fn assigned_call(text: &str, calls: &[&str]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with([' ', '\t', '#']) {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else { continue };
        let (name, value) = (name.trim(), value.trim());
        let ident = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident && calls.iter().any(|c| value.starts_with(&format!("{c}("))) {
            return Some(name.to_string());
        }
    }
    None
}

/// The entry point the code suggests, most specific first.
fn guess_entry(modules: &[(String, String)]) -> Option<Entry> {
    // Django: a wsgi module made by startproject.
    for (module, text) in modules {
        if let Some(name) = assigned_call(text, &["get_wsgi_application"]) {
            let settings = text.lines().find_map(|l| {
                let rest = l.split("DJANGO_SETTINGS_MODULE").nth(1)?;
                // setdefault("DJANGO_SETTINGS_MODULE", "x.settings"): the value after the comma.
                let rest = rest.get(rest.find(',')? + 1..)?;
                let start = rest.find(['"', '\''])?;
                let q = rest.get(start..start + 1)?;
                let rest = rest.get(start + 1..)?;
                Some(rest.get(..rest.find(q)?)?.to_string())
            });
            return Some(Entry {
                module: format!("{module}:{name}"),
                kind: Kind::Wsgi,
                why: format!("a Django WSGI application in {module}"),
                django_settings: settings,
            });
        }
    }
    for (calls, kind, what) in [
        (&["FastAPI", "Starlette", "Quart", "Litestar"][..], Kind::Asgi, "an ASGI application"),
        (&["Flask", "Bottle", "Falcon", "falcon.App", "Pyramid"][..], Kind::Wsgi, "a WSGI application"),
    ] {
        for (module, text) in modules {
            if let Some(name) = assigned_call(text, calls) {
                return Some(Entry {
                    module: format!("{module}:{name}"),
                    kind,
                    why: format!("{what} (`{name} = …(`) in {module}"),
                    django_settings: None,
                });
            }
        }
    }
    None
}

/// Whether the project's dependencies name `dist`.
fn depends_on(doc: &Value, dist: &str) -> bool {
    let deps = get(doc, &["project", "dependencies"]).and_then(Value::as_array).cloned().unwrap_or_default();
    deps.iter().filter_map(Value::as_str).any(|d| {
        let name: String = d.chars().take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
        hb_python::normalize(&name) == dist
    })
}

/// Works out the BUILD.toml for the project in `dir` (whose pyproject is `doc`).
/// `workspace`: also write the `[workspace]` table (no workspace above `dir`).
pub fn init(doc: &Value, dir: &Path, workspace: bool) -> Result<Init, String> {
    // Poetry's own format reads as the [project] table it stands for.
    let doc = &crate::poetry::with_project(doc).map_err(|e| format!("pyproject.toml: {e}"))?;
    let name = get(doc, &["project", "name"]).and_then(Value::as_str).ok_or(
        "pyproject.toml has no [project] name (nor Poetry's [tool.poetry] name): add a [project] table (PEP 621)",
    )?;
    let backend =
        get(doc, &["build-system", "build-backend"]).and_then(Value::as_str).unwrap_or("setuptools.build_meta");
    let project = hb_python::normalize(name);
    let derived = crate::pyproject::sources(doc, dir, &project, backend)?;
    let patterns: Vec<String> = derived.iter().map(|d| d.pattern.clone()).collect();
    let mut notes = vec![format!(
        "sources: what pyproject.toml names ({}); list `srcs` in [[python_app]] to choose them yourself",
        patterns.join(", ")
    )];
    let modules = python_modules(dir, &patterns);
    let entry = guess_entry(&modules);
    let package = debian_name(&project);
    let version = get(doc, &["project", "version"]).and_then(Value::as_str).unwrap_or("0.1.0");
    if get(doc, &["project", "version"]).is_none() {
        notes
            .push("version: the project's version is dynamic; the package says 0.1.0: set `version` in [[deb]]".into());
    }
    let description = get(doc, &["project", "description"]).and_then(Value::as_str).unwrap_or(name);
    // Debian's Maintainer is who maintains it: `maintainers` first, else an author.
    let person = |key: &str| {
        get(doc, &["project", key]).and_then(Value::as_array).and_then(|people| {
            people.iter().find_map(|a| {
                let n = a.get("name").and_then(Value::as_str)?;
                let e = a.get("email").and_then(Value::as_str)?;
                Some(format!("{n} <{e}>"))
            })
        })
    };
    let author = person("maintainers").or_else(|| person("authors"));
    let maintainer = author.clone().unwrap_or_else(|| "Jane Doe <jane@example.org>".to_string());
    if author.is_none() {
        notes.push(
            "maintainer: no maintainer or author with an email in pyproject.toml; set `maintainer` in [[deb]]".into(),
        );
    }
    let mut ready = true;
    let mut out = String::new();
    out.push_str(&format!("# {package}: written by `hb init` from pyproject.toml; check the guesses below.\n\n"));
    if workspace {
        let (platform, note, fits) = platform_for(get(doc, &["project", "requires-python"]).and_then(Value::as_str));
        ready &= fits;
        if let Some(note) = note {
            notes.push(note);
        }
        out.push_str(&format!(
            "[workspace]\nplatform = {}   # {}: Python {}\n\n",
            quoted(platform.name),
            platform.name,
            platform.python_full
        ));
    }
    out.push_str("[[python_app]]\nname = \"app\"\n# No `srcs`: the sources are what pyproject.toml names.\n");
    let (module, server) = match &entry {
        Some(e) => {
            notes.push(format!("entry point: {} ({})", e.module, e.why));
            (e.module.clone(), if e.kind == Kind::Asgi { "uvicorn" } else { "gunicorn" })
        }
        None => {
            let guess = format!("{}:app", project.replace('-', "_"));
            notes.push(format!(
                "entry point: none found (no Django wsgi.py, no FastAPI/Starlette/Flask object at module level); `{guess}` is a placeholder: set `module`"
            ));
            ready = false;
            (guess, "gunicorn")
        }
    };
    out.push_str(&format!("module = {}   # the entry point {server} serves\n", quoted(&module)));
    match existing_lock(dir) {
        Some(Found::Readable(rel)) => {
            out.push_str(&format!("runtime_lock = {}   # the project's own lock: its versions\n", quoted(&rel)));
            notes.push(format!(
                "runtime: the versions of {rel}, the project's own lock (runtime_lock), not a fresh resolution"
            ));
        }
        Some(Found::Export { file, command }) => notes.push(format!(
            "runtime: {file} is not read by hb; to keep its versions, run `{command}` and set \
             `runtime_lock = \"requirements.txt\"` in [[python_app]] (hb resolves afresh until then)"
        )),
        None => {}
    }
    out.push('\n');
    if !depends_on(doc, server) {
        notes.push(format!(
            "server: {server} serves it but is not in [project] dependencies: add \"{server}\" there, then run `hb lock`"
        ));
        ready = false;
    }
    let mut desc = description.lines().next().unwrap_or(name).trim().to_string();
    if desc.is_empty() {
        desc = name.to_string();
    }
    out.push_str("[[deb]]\nname = \"deb\"\n");
    out.push_str(&format!("package = {}\nversion = {}\n", quoted(&package), quoted(version)));
    out.push_str(&format!("maintainer = {}\n", quoted(&maintainer)));
    out.push_str(&format!(
        "description = {}\n",
        quoted(&format!("{desc}\n{name} packaged with its virtualenv as a system service by hb."))
    ));
    if let Some(l) = get(doc, &["project", "license"]).and_then(Value::as_str) {
        out.push_str(&format!("license = {}\n", quoted(l)));
    }
    out.push_str("deps = [\":app\"]\n\n[deb.service]\napp = \":app\"\n");
    if server == "uvicorn" {
        out.push_str("server = \"uvicorn\"             # ASGI\n");
    }
    out.push_str("port = 8000\n");
    if let Some(settings) = entry.as_ref().and_then(|e| e.django_settings.as_ref()) {
        out.push_str(&format!("environment = {{ DJANGO_SETTINGS_MODULE = {} }}\n", quoted(settings)));
        out.push_str(
            "secrets = [\"secret_key\"]             # read it from $NAME_STATE_DIR/secret_key in settings.py\n",
        );
        out.push_str("on_configure = [\"{prefix}/bin/django-admin migrate --noinput\"]\n");
        notes.push(
            "Django: migrate runs at install (on_configure); a secret key is generated at install; add a [[build_step]] for collectstatic (see the README)".into(),
        );
    }
    notes.push(format!(
        "service: {package} on 127.0.0.1:8000 as the system user {package}; change `port` in [deb.service]"
    ));
    Ok(Init { build_file: out, package, notes, ready })
}

/// A lock the project already has.
enum Found {
    /// One `runtime_lock` reads, relative to the project directory.
    Readable(String),
    /// One hb cannot read, and the command exporting it as a hashed requirements file.
    Export { file: String, command: String },
}

/// The project's own lock, in the order hb prefers them: `pylock.toml`, `uv.lock`
/// (the project's, else that of the uv workspace above it), a requirements file with
/// hashes; else a Poetry or PDM lock to export.
fn existing_lock(dir: &Path) -> Option<Found> {
    let has = |rel: &str| dir.join(rel).is_file();
    if has("pylock.toml") {
        return Some(Found::Readable("pylock.toml".into()));
    }
    if has("uv.lock") {
        return Some(Found::Readable("uv.lock".into()));
    }
    // A uv workspace: the lock sits at the root whose pyproject has [tool.uv.workspace].
    let mut up = String::new();
    for ancestor in dir.ancestors().skip(1).take(8) {
        up.push_str("../");
        let workspace_root = hb_fs::read_to_string(&ancestor.join("pyproject.toml"))
            .ok()
            .and_then(|t| toml::from_str::<Value>(&t).ok())
            .is_some_and(|d| get(&d, &["tool", "uv", "workspace"]).is_some());
        if workspace_root && ancestor.join("uv.lock").is_file() {
            return Some(Found::Readable(format!("{up}uv.lock")));
        }
    }
    let hashed = hb_fs::read_dir_sorted(dir).ok()?.into_iter().find_map(|e| {
        let name = e.file_name().to_str()?.to_string();
        let fits = name.starts_with("requirements") && name.ends_with(".txt");
        (fits && hb_fs::read_to_string(&e.path()).is_ok_and(|t| t.contains("--hash="))).then_some(name)
    });
    if let Some(name) = hashed {
        return Some(Found::Readable(name));
    }
    if has("poetry.lock") {
        return Some(Found::Export {
            file: "poetry.lock".into(),
            command: "poetry export --format requirements.txt --output requirements.txt".into(),
        });
    }
    if has("pdm.lock") {
        return Some(Found::Export { file: "pdm.lock".into(), command: "pdm export --output requirements.txt".into() });
    }
    None
}

/// The platform a new workspace builds for: the first amd64 one (then any) whose Python
/// meets `requires-python`, with a note when that is not the default; and whether one
/// does.
fn platform_for(requires_python: Option<&str>) -> (&'static hb_platform::Platform, Option<String>, bool) {
    use std::str::FromStr;
    let default = hb_platform::DEFAULT;
    let Some(rp) = requires_python else { return (default, None, true) };
    let Ok(spec) = pep508_rs::pep440_rs::VersionSpecifiers::from_str(rp) else {
        return (
            default,
            Some(format!("requires-python `{rp}` is not a version specifier; fix it in pyproject.toml")),
            false,
        );
    };
    let fits = |p: &&&hb_platform::Platform| {
        pep508_rs::pep440_rs::Version::from_str(p.python_full).is_ok_and(|v| spec.contains(&v))
    };
    let all = hb_platform::PLATFORMS;
    let pick =
        all.iter().filter(fits).find(|p| p.architecture == default.architecture).or_else(|| all.iter().find(fits));
    match pick {
        Some(p) if p.name == default.name => (p, None, true),
        Some(p) => (
            p,
            Some(format!(
                "platform: {} (Python {}), the first whose Python meets requires-python {rp}; {} has {}",
                p.name, p.python_full, default.name, default.python_full
            )),
            true,
        ),
        None => (
            default,
            Some(format!(
                "platform: no platform hb builds for has a Python that meets requires-python {rp} ({}); the build will fail",
                all.iter().map(|p| format!("{} has {}", p.name, p.python_full)).collect::<Vec<_>>().join(", ")
            )),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (f, text) in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    fn doc(d: &Path) -> Value {
        toml::from_str(&std::fs::read_to_string(d.join("pyproject.toml")).unwrap()).unwrap()
    }

    #[test]
    fn the_projects_own_lock_is_taken() {
        let app = "[project]\nname = \"svc\"\nversion = \"1\"\ndependencies = [\"flask\", \"gunicorn\"]\n";
        let code = ("services/svc/svc/__init__.py", "from flask import Flask\napp = Flask(__name__)\n");
        // A member of a uv workspace: the root's lock.
        let d = project(&[
            ("pyproject.toml", "[tool.uv.workspace]\nmembers = [\"services/*\"]\n"),
            ("uv.lock", "version = 1\n"),
            ("services/svc/pyproject.toml", app),
            code,
        ]);
        let dir = d.path().join("services/svc");
        let made = init(&doc(&dir), &dir, true).unwrap();
        assert!(made.build_file.contains("runtime_lock = \"../../uv.lock\""), "{}", made.build_file);
        // A hashed requirements file, preferred to nothing; a Poetry lock is named for export.
        let d = project(&[
            ("pyproject.toml", app),
            ("requirements.txt", "flask==3.0.0 --hash=sha256:00\n"),
            ("svc/__init__.py", code.1),
        ]);
        let made = init(&doc(d.path()), d.path(), true).unwrap();
        assert!(made.build_file.contains("runtime_lock = \"requirements.txt\""), "{}", made.build_file);
        let d = project(&[("pyproject.toml", app), ("poetry.lock", "x"), ("svc/__init__.py", code.1)]);
        let made = init(&doc(d.path()), d.path(), true).unwrap();
        assert!(!made.build_file.contains("runtime_lock"), "{}", made.build_file);
        assert!(made.notes.iter().any(|n| n.contains("poetry export")), "{:?}", made.notes);
    }

    #[test]
    fn the_platform_meets_requires_python_and_maintainers_come_first() {
        let d = project(&[
            (
                "pyproject.toml",
                "[project]\nname = \"svc\"\nversion = \"1\"\nrequires-python = \">=3.12\"\ndependencies = [\"flask\", \"gunicorn\"]\nauthors = [{name = \"Ann\", email = \"ann@example.org\"}]\nmaintainers = [{name = \"Ops\"}, {name = \"Bo\", email = \"bo@example.org\"}]\n",
            ),
            ("svc/__init__.py", "from flask import Flask\napp = Flask(__name__)\n"),
        ]);
        let made = init(&doc(d.path()), d.path(), true).unwrap();
        assert!(made.build_file.contains("platform = \"trixie-amd64\""), "{}", made.build_file);
        assert!(made.build_file.contains("maintainer = \"Bo <bo@example.org>\""), "{}", made.build_file);
        assert!(made.notes.iter().any(|n| n.contains("the first whose Python meets")), "{:?}", made.notes);
        assert!(made.ready, "{:?}", made.notes);

        let (_, note, fits) = platform_for(Some(">=3.99"));
        assert!(!fits && note.is_some_and(|n| n.contains("will fail")));
        assert_eq!(platform_for(Some(">=3.11")).0.name, hb_platform::DEFAULT.name);
    }

    #[test]
    fn a_fastapi_project_gets_uvicorn_and_its_app() {
        let d = project(&[
            (
                "pyproject.toml",
                "[project]\nname = \"My_Service\"\nversion = \"1.2\"\ndependencies = [\"fastapi\", \"uvicorn[standard]\"]\nauthors = [{name = \"Ann\", email = \"ann@example.org\"}]\n[build-system]\nbuild-backend = \"hatchling.build\"\n",
            ),
            ("src/my_service/__init__.py", ""),
            ("src/my_service/main.py", "from fastapi import FastAPI\n\napi = FastAPI(title=\"x\")\n"),
        ]);
        let i = init(&doc(d.path()), d.path(), true).unwrap();
        assert_eq!(i.package, "my-service");
        let parsed: Value = toml::from_str(&i.build_file).unwrap();
        assert_eq!(get(&parsed, &["python_app"]).unwrap()[0]["module"].as_str(), Some("my_service.main:api"));
        assert_eq!(get(&parsed, &["deb"]).unwrap()[0]["service"]["server"].as_str(), Some("uvicorn"));
        assert_eq!(get(&parsed, &["deb"]).unwrap()[0]["maintainer"].as_str(), Some("Ann <ann@example.org>"));
        assert!(parsed.get("workspace").is_some());
        assert!(!i.notes.iter().any(|n| n.contains("not in [project] dependencies")), "{:?}", i.notes);
    }

    #[test]
    fn a_django_project_gets_its_settings_migrate_and_a_secret() {
        let d = project(&[
            ("pyproject.toml", "[project]\nname = \"site\"\ndynamic = [\"version\"]\ndependencies = [\"django\"]\n"),
            ("site_pkg/__init__.py", ""),
            (
                "site_pkg/wsgi.py",
                "import os\nfrom django.core.wsgi import get_wsgi_application\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_pkg.settings')\napplication = get_wsgi_application()\n",
            ),
        ]);
        let i = init(&doc(d.path()), d.path(), false).unwrap();
        let parsed: Value = toml::from_str(&i.build_file).unwrap();
        assert_eq!(get(&parsed, &["python_app"]).unwrap()[0]["module"].as_str(), Some("site_pkg.wsgi:application"));
        let svc = &get(&parsed, &["deb"]).unwrap()[0]["service"];
        assert_eq!(svc["environment"]["DJANGO_SETTINGS_MODULE"].as_str(), Some("site_pkg.settings"));
        assert!(svc.get("on_configure").is_some() && parsed.get("workspace").is_none());
        let notes = i.notes.join("\n");
        assert!(notes.contains("gunicorn serves it but is not in [project] dependencies"), "{notes}");
        assert!(notes.contains("version is dynamic") && notes.contains("set `maintainer`"), "{notes}");
    }

    #[test]
    fn without_an_app_object_the_module_is_a_placeholder_to_check() {
        let d =
            project(&[("pyproject.toml", "[project]\nname = \"tool\"\nversion = \"1\"\n"), ("tool.py", "print(1)\n")]);
        let i = init(&doc(d.path()), d.path(), false).unwrap();
        assert!(i.build_file.contains("module = \"tool:app\""), "{}", i.build_file);
        assert!(i.notes.iter().any(|n| n.contains("placeholder")), "{:?}", i.notes);
    }
}
