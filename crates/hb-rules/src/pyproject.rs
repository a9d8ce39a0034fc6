//! What a pyproject.toml says about files, so that a python_app's sources can be right
//! without being listed: the sources its build backend takes (setuptools' `packages`,
//! `package-dir`, `py-modules` and `packages.find`; hatchling's wheel `packages`; flit's
//! module; poetry's `packages`; else the layout every backend discovers: `src/NAME` or
//! `NAME`, as a package or a module) and the files it refers to (the readme, licence
//! files, setuptools' package data and dynamic files, Poetry's readme and includes; for
//! setuptools also setup.py, setup.cfg and MANIFEST.in). Rules use it twice: with `srcs` omitted, these are
//! the sources; with `srcs` given, every file the pyproject refers to must be among them.
//! It reads the pyproject's text and lists directories of the package; it never builds.

use std::path::Path;

use toml::Value;

use crate::actions::sources;

/// One source pattern, with why it is there (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    pub pattern: String,
    pub why: String,
}

/// Files the pyproject refers to: (what refers, pattern of files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Referenced {
    /// Files that must exist: (what, relative path).
    pub files: Vec<(String, String)>,
    /// Patterns whose matches must all be sources: (what, pattern).
    pub globs: Vec<(String, String)>,
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn clean(rel: &str) -> String {
    rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

fn join(dir: &str, rest: &str) -> String {
    clean(&format!("{dir}/{rest}"))
}

/// The files the pyproject refers to.
pub fn referenced(doc: &Value) -> Referenced {
    let mut r = Referenced::default();
    match get(doc, &["project", "readme"]) {
        Some(Value::String(f)) => r.files.push(("[project] readme".into(), clean(f))),
        Some(t) => {
            if let Some(f) = t.get("file").and_then(Value::as_str) {
                r.files.push(("[project] readme".into(), clean(f)));
            }
        }
        None => {}
    }
    if let Some(f) = get(doc, &["project", "license", "file"]).and_then(Value::as_str) {
        r.files.push(("[project] license".into(), clean(f)));
    }
    for g in strings(get(doc, &["project", "license-files"])) {
        r.globs.push(("[project] license-files".into(), clean(&g)));
    }
    for g in strings(get(doc, &["tool", "setuptools", "license-files"])) {
        r.globs.push(("[tool.setuptools] license-files".into(), clean(&g)));
    }
    // Files setuptools reads for dynamic fields (`{file = ...}`).
    if let Some(dynamic) = get(doc, &["tool", "setuptools", "dynamic"]).and_then(Value::as_table) {
        let mut files = |field: &str, v: &Value| match v.get("file") {
            Some(Value::String(f)) => r.files.push((format!("[tool.setuptools.dynamic] {field}"), clean(f))),
            Some(list) => {
                for f in strings(Some(list)) {
                    r.files.push((format!("[tool.setuptools.dynamic] {field}"), clean(&f)));
                }
            }
            None => {}
        };
        for (field, v) in dynamic {
            if field == "optional-dependencies" {
                for (extra, v) in v.as_table().into_iter().flatten() {
                    files(&format!("optional-dependencies.{extra}"), v);
                }
            } else {
                files(field, v);
            }
        }
    }
    // Poetry's readme (one or a list) and `include`s (a glob, or a table with `path`).
    match get(doc, &["tool", "poetry", "readme"]) {
        Some(Value::String(f)) => r.files.push(("[tool.poetry] readme".into(), clean(f))),
        Some(list) => {
            for f in strings(Some(list)) {
                r.files.push(("[tool.poetry] readme".into(), clean(&f)));
            }
        }
        None => {}
    }
    for item in get(doc, &["tool", "poetry", "include"]).and_then(Value::as_array).into_iter().flatten() {
        let glob = item.as_str().or_else(|| item.get("path").and_then(Value::as_str));
        if let Some(g) = glob {
            r.globs.push(("[tool.poetry] include".into(), clean(g)));
        }
    }
    if let Some(data) = get(doc, &["tool", "setuptools", "package-data"]).and_then(Value::as_table) {
        let dirs = setuptools_package_dirs(doc);
        for (package, globs) in data {
            // "" and "*" mean every package.
            let targets: Vec<String> =
                if package.is_empty() || package == "*" { dirs.clone() } else { vec![package_path(doc, package)] };
            for dir in targets {
                for g in strings(Some(globs)) {
                    r.globs.push((format!("[tool.setuptools.package-data] {package}"), join(&dir, &g)));
                }
            }
        }
    }
    r
}

/// Where setuptools finds a dotted package, through `package-dir`.
fn package_path(doc: &Value, package: &str) -> String {
    let dirs = get(doc, &["tool", "setuptools", "package-dir"]).and_then(Value::as_table);
    let parts: Vec<&str> = package.split('.').collect();
    // The longest prefix of the package that package-dir maps wins.
    for n in (0..=parts.len()).rev() {
        let prefix = parts.get(..n).unwrap_or_default().join(".");
        if let Some(dir) = dirs.and_then(|d| d.get(&prefix)).and_then(Value::as_str) {
            let rest = parts.get(n..).unwrap_or_default().join("/");
            return join(dir, &rest);
        }
    }
    parts.join("/")
}

/// The directories of setuptools' listed packages.
fn setuptools_package_dirs(doc: &Value) -> Vec<String> {
    strings(get(doc, &["tool", "setuptools", "packages"])).iter().map(|p| package_path(doc, p)).collect()
}

/// Names under which a project's import package is usually found.
fn import_names(project: &str) -> Vec<String> {
    let under = project.replace(['-', '.'], "_");
    let mut v = vec![under.clone()];
    if under != under.to_lowercase() {
        v.push(under.to_lowercase());
    }
    v
}

/// Top-level directories setuptools' flat-layout discovery never takes as packages.
const NOT_PACKAGES: &[&str] = &[
    "tests",
    "test",
    "docs",
    "doc",
    "examples",
    "example",
    "scripts",
    "tools",
    "benchmarks",
    "build",
    "dist",
    "venv",
    "node_modules",
    "site-packages",
];

fn is_dir(dir: &Path, rel: &str) -> bool {
    hb_fs::symlink_metadata(&dir.join(rel)).is_ok_and(|m| m.is_dir())
}

fn is_file(dir: &Path, rel: &str) -> bool {
    hb_fs::symlink_metadata(&dir.join(rel)).is_ok_and(|m| m.is_file())
}

/// A package directory or module file, whichever exists, as a source pattern.
fn package_or_module(dir: &Path, rel: &str, why: &str, out: &mut Vec<Derived>) -> bool {
    if is_dir(dir, rel) {
        out.push(Derived { pattern: format!("{rel}/**"), why: why.to_string() });
        true
    } else if is_file(dir, &format!("{rel}.py")) {
        out.push(Derived { pattern: format!("{rel}.py"), why: why.to_string() });
        true
    } else {
        false
    }
}

/// The sources the pyproject's build backend takes, found in `dir` (the package
/// directory), plus the files the pyproject refers to. `Err` says why none could be told.
pub fn sources(doc: &Value, dir: &Path, project: &str, backend: &str) -> Result<Vec<Derived>, String> {
    let mut out = Vec::new();
    let tool = |path: &[&str]| {
        let mut full = vec!["tool"];
        full.extend_from_slice(path);
        get(doc, &full).cloned()
    };
    let discovered = |out: &mut Vec<Derived>| {
        for name in import_names(project) {
            for base in ["src", ""] {
                let rel = join(base, &name);
                if package_or_module(dir, &rel, "the project's import package", out) {
                    return true;
                }
            }
        }
        false
    };
    if backend.starts_with("setuptools") {
        let packages = setuptools_package_dirs(doc);
        for p in &packages {
            out.push(Derived { pattern: format!("{p}/**"), why: "[tool.setuptools] packages".into() });
        }
        for m in strings(tool(&["setuptools", "py-modules"]).as_ref()) {
            out.push(Derived {
                pattern: format!("{}.py", package_path(doc, &m)),
                why: "[tool.setuptools] py-modules".into(),
            });
        }
        if let Some(find) = tool(&["setuptools", "packages", "find"]) {
            let wheres = strings(find.get("where"));
            for w in if wheres.is_empty() { vec![".".to_string()] } else { wheres } {
                out.extend(top_level_packages(dir, &clean(&w), "[tool.setuptools.packages.find]")?);
            }
        }
        if packages.is_empty() && out.is_empty() {
            // setuptools' automatic discovery: the src layout, else the flat layout.
            if is_dir(dir, "src") {
                out.extend(top_level_packages(dir, "src", "setuptools' src layout")?);
            } else {
                out.extend(top_level_packages(dir, "", "setuptools' flat layout")?);
                if out.is_empty() {
                    discovered(&mut out);
                }
            }
        }
    } else if backend.starts_with("hatchling") {
        let listed = strings(tool(&["hatch", "build", "targets", "wheel", "packages"]).as_ref());
        for p in &listed {
            out.push(Derived {
                pattern: format!("{}/**", clean(p)),
                why: "[tool.hatch.build.targets.wheel] packages".into(),
            });
        }
        if listed.is_empty() {
            discovered(&mut out);
        }
    } else if backend.starts_with("flit_core") {
        let module = tool(&["flit", "module", "name"]).and_then(|v| v.as_str().map(str::to_string));
        let names = module.map_or_else(|| import_names(project), |m| vec![m.replace('.', "/")]);
        let found = names
            .iter()
            .any(|n| ["src", ""].iter().any(|b| package_or_module(dir, &join(b, n), "flit's module", &mut out)));
        if !found {
            discovered(&mut out);
        }
    } else if backend.starts_with("poetry") {
        let listed = tool(&["poetry", "packages"]).and_then(|v| v.as_array().cloned()).unwrap_or_default();
        for p in &listed {
            if let Some(include) = p.get("include").and_then(Value::as_str) {
                let from = p.get("from").and_then(Value::as_str).unwrap_or("");
                let rel = join(from, include);
                if !package_or_module(dir, &rel, "[tool.poetry] packages", &mut out) {
                    out.push(Derived { pattern: rel, why: "[tool.poetry] packages".into() });
                }
            }
        }
        if listed.is_empty() {
            discovered(&mut out);
        }
    } else {
        discovered(&mut out);
    }
    if out.is_empty() {
        return Err(format!(
            "cannot tell this project's sources from its pyproject.toml (build backend `{backend}`, no `{}` or `src/{}` package or module found): list them in `srcs`",
            import_names(project).join("` or `"),
            import_names(project).first().map_or("", String::as_str)
        ));
    }
    // The files the pyproject refers to come along; licence files setuptools and
    // hatchling include by default too, when present.
    let refs = referenced(doc);
    for (what, file) in refs.files.iter().chain(&backend_files(doc, dir)) {
        out.push(Derived { pattern: file.clone(), why: what.clone() });
    }
    for (what, glob) in refs.globs.iter().chain(&default_license_globs()) {
        let found = sources::find(dir, glob).map_err(|e| e.to_string())?;
        if !found.is_empty() && !out.iter().any(|d| d.pattern == *glob) {
            out.push(Derived { pattern: glob.clone(), why: what.clone() });
        }
    }
    out.dedup_by(|a, b| a.pattern == b.pattern);
    Ok(out)
}

/// The files a setuptools build reads besides the pyproject, where they exist
/// (`setup.py`, `setup.cfg`, and `MANIFEST.in`, without which `include_package_data`
/// puts no data file in the wheel): (why, relative path).
fn backend_files(doc: &Value, dir: &Path) -> Vec<(String, String)> {
    let backend =
        get(doc, &["build-system", "build-backend"]).and_then(Value::as_str).unwrap_or("setuptools.build_meta");
    if !backend.starts_with("setuptools") {
        return Vec::new();
    }
    ["setup.py", "setup.cfg", "MANIFEST.in"]
        .iter()
        .filter(|f| is_file(dir, f))
        .map(|f| ("setuptools reads it".to_string(), f.to_string()))
        .collect()
}

/// Licence files backends include without being told, when they exist.
fn default_license_globs() -> Vec<(String, String)> {
    ["LICEN[CS]E*", "COPYING*", "NOTICE*", "AUTHORS*"]
        .iter()
        .map(|g| ("a licence file the build backend includes by default".to_string(), g.to_string()))
        .collect()
}

/// The packages (directories with an `__init__.py`, not named like tests or docs)
/// directly under `base`, as source patterns.
fn top_level_packages(dir: &Path, base: &str, why: &str) -> Result<Vec<Derived>, String> {
    let mut out = Vec::new();
    let at = if base.is_empty() { dir.to_path_buf() } else { dir.join(base) };
    let Ok(entries) = hb_fs::read_dir_sorted(&at) else { return Ok(out) };
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
        let rel = join(base, &name);
        if name.starts_with('.') || NOT_PACKAGES.contains(&name.as_str()) {
            continue;
        }
        let ty = e.file_type().map_err(|err| format!("{}: {err}", e.path().display()))?;
        if ty.is_dir() && is_file(dir, &format!("{rel}/__init__.py")) {
            out.push(Derived { pattern: format!("{rel}/**"), why: why.to_string() });
        }
    }
    Ok(out)
}

/// The files the pyproject refers to that `srcs` leaves out, or that do not exist:
/// messages naming each.
pub fn missing_from(doc: &Value, dir: &Path, srcs: &[String]) -> Result<Vec<String>, String> {
    let refs = referenced(doc);
    let covered = |rel: &str| -> Result<bool, String> {
        for p in srcs {
            if sources::pattern_matches(p, rel).map_err(|e| e.to_string())? {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let mut problems = Vec::new();
    for (what, file) in refs.files.iter().chain(&backend_files(doc, dir)) {
        if !is_file(dir, file) {
            problems.push(format!("{what} names `{file}`, which does not exist"));
        } else if !covered(file)? {
            problems.push(format!("`{file}` ({what}) is not in srcs: the wheel would be built without it"));
        }
    }
    for (what, glob) in &refs.globs {
        for (rel, _) in sources::find(dir, glob).map_err(|e| e.to_string())? {
            if !covered(&rel)? {
                problems.push(format!("`{rel}` ({what} `{glob}`) is not in srcs: the wheel would be built without it"));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Value {
        toml::from_str(text).unwrap()
    }

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        d
    }

    fn patterns(v: &[Derived]) -> Vec<&str> {
        v.iter().map(|d| d.pattern.as_str()).collect()
    }

    #[test]
    fn what_setuptools_and_poetry_read_besides_the_code_is_a_source() {
        let d = tree(&["app/__init__.py", "app/templates/home.html", "setup.py", "MANIFEST.in", "requirements.in"]);
        let text = "[project]\nname = \"app\"\ndynamic = [\"dependencies\"]\n[tool.setuptools.dynamic]\ndependencies = {file = [\"requirements.in\"]}\n";
        let derived = sources(&doc(text), d.path(), "app", "setuptools.build_meta").unwrap();
        let got = patterns(&derived);
        for want in ["app/**", "requirements.in", "setup.py", "MANIFEST.in"] {
            assert!(got.contains(&want), "{want} missing from {got:?}");
        }
        // Explicit srcs leaving MANIFEST.in out: named.
        let problems = missing_from(&doc(text), d.path(), &["app/**".into(), "requirements.in".into()]).unwrap();
        assert!(problems.iter().any(|p| p.contains("`MANIFEST.in` (setuptools reads it)")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("`setup.py`")), "{problems:?}");

        let poetry = "[tool.poetry]\nname = \"app\"\nreadme = \"README.md\"\ninclude = [\"app/data/*.json\", {path = \"CHANGES\", format = \"sdist\"}]\n[build-system]\nbuild-backend = \"poetry.core.masonry.api\"\n";
        let r = referenced(&doc(poetry));
        assert_eq!(r.files, [("[tool.poetry] readme".to_string(), "README.md".to_string())]);
        assert_eq!(r.globs.iter().map(|(_, g)| g.as_str()).collect::<Vec<_>>(), ["app/data/*.json", "CHANGES"]);
        assert!(backend_files(&doc(poetry), d.path()).is_empty(), "setup.py is not poetry's");
    }

    #[test]
    fn setuptools_packages_package_dir_modules_and_data() {
        let d = tree(&["lib/app/__init__.py", "lib/app/t/x.html", "README.rst", "LICENSE", "tool.py"]);
        let text = r#"
[project]
name = "my-app"
readme = "README.rst"
[tool.setuptools]
packages = ["app"]
package-dir = { "" = "lib" }
py-modules = ["tool"]
[tool.setuptools.package-data]
app = ["t/*.html"]
"#;
        let v = sources(&doc(text), d.path(), "my-app", "setuptools.build_meta").unwrap();
        assert_eq!(patterns(&v), ["lib/app/**", "lib/tool.py", "README.rst", "lib/app/t/*.html", "LICEN[CS]E*"]);
        let v = doc(text);
        let missing = missing_from(&v, d.path(), &["lib/app/**/*.py".into(), "lib/tool.py".into()]).unwrap();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].contains("`README.rst` ([project] readme) is not in srcs"), "{missing:?}");
        assert!(missing[1].contains("`lib/app/t/x.html`"), "{missing:?}");
        let all = ["lib/**".to_string(), "README.rst".to_string()];
        assert!(missing_from(&v, d.path(), &all).unwrap().is_empty());
    }

    #[test]
    fn discovery_by_layout_for_each_backend() {
        let flat = tree(&["demo_app/__init__.py", "tests/__init__.py", "docs/conf.py"]);
        let v =
            sources(&doc("[project]\nname = \"demo-app\""), flat.path(), "demo-app", "setuptools.build_meta").unwrap();
        assert_eq!(patterns(&v), ["demo_app/**"]);
        let src = tree(&["src/demo_app/__init__.py", "src/demo_app/py.typed"]);
        for backend in
            ["setuptools.build_meta", "hatchling.build", "flit_core.buildapi", "poetry.core.masonry.api", "pdm.backend"]
        {
            let v = sources(&doc("[project]\nname = \"demo-app\""), src.path(), "demo-app", backend).unwrap();
            assert_eq!(patterns(&v), ["src/demo_app/**"], "{backend}");
        }
        let module = tree(&["demo_app.py"]);
        let v =
            sources(&doc("[project]\nname = \"demo-app\""), module.path(), "demo-app", "flit_core.buildapi").unwrap();
        assert_eq!(patterns(&v), ["demo_app.py"]);
        let nothing = tree(&["other/x.py"]);
        let e =
            sources(&doc("[project]\nname = \"demo-app\""), nothing.path(), "demo-app", "hatchling.build").unwrap_err();
        assert!(e.contains("list them in `srcs`") && e.contains("demo_app"), "{e}");
    }

    #[test]
    fn a_referenced_file_that_does_not_exist_is_named() {
        let d = tree(&["app/__init__.py"]);
        let v = doc(
            "[project]\nname = \"app\"\nreadme = { file = \"README.md\", content-type = \"text/markdown\" }\nlicense = { file = \"COPYING\" }",
        );
        let missing = missing_from(&v, d.path(), &["app/**".into()]).unwrap();
        assert_eq!(
            missing,
            [
                "[project] readme names `README.md`, which does not exist",
                "[project] license names `COPYING`, which does not exist"
            ]
        );
    }
}
