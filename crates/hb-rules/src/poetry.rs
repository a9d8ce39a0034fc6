//! Poetry's own pyproject format (`[tool.poetry]`, no `[project]` table) read as the
//! PEP 621 table hb reads everywhere else: name, version, description, license, authors and maintainers (`Name <email>`), `requires-python` from the
//! `python` dependency, and the other dependencies with Poetry's constraints (`^`, `~`,
//! `*`, wildcards, bare versions, comparison lists) written as PEP 440 specifiers and
//! its `markers`, `python` and `extras` as PEP 508. Optional dependencies (extras) are
//! left out; sources other than the index (git, path, url) and `||` constraints, which
//! a requirement cannot say, are refused by name. The wheel is still built by Poetry's
//! own backend from the real file.

use toml::Value;

/// `[tool.poetry]` as a `[project]` table, or `None` when the pyproject has a
/// `[project]` table already or is not Poetry's.
pub fn as_project(doc: &Value) -> Result<Option<toml::Table>, String> {
    if doc.get("project").is_some() {
        return Ok(None);
    }
    let Some(poetry) = doc.get("tool").and_then(|t| t.get("poetry")).and_then(Value::as_table) else {
        return Ok(None);
    };
    let mut project = toml::Table::new();
    for key in ["name", "version", "description", "license"] {
        if let Some(v) = poetry.get(key).and_then(Value::as_str) {
            project.insert(key.to_string(), Value::String(v.to_string()));
        }
    }
    // The readme is a source through `crate::pyproject::referenced`, which reads Poetry's.
    for key in ["authors", "maintainers"] {
        let people: Vec<Value> = poetry
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(person)
            .collect();
        if !people.is_empty() {
            project.insert(key.to_string(), Value::Array(people));
        }
    }
    let mut deps = Vec::new();
    if let Some(table) = poetry.get("dependencies").and_then(Value::as_table) {
        for (name, spec) in table {
            if name == "python" {
                let constraint = spec.as_str().ok_or("[tool.poetry.dependencies] python is not a string")?;
                let spec = specifiers(constraint).map_err(|e| format!("[tool.poetry.dependencies] python: {e}"))?;
                if !spec.is_empty() {
                    project.insert("requires-python".into(), Value::String(spec));
                }
                continue;
            }
            if let Some(req) = requirement(name, spec)? {
                deps.push(Value::String(req));
            }
        }
    }
    project.insert("dependencies".into(), Value::Array(deps));
    Ok(Some(project))
}

/// The pyproject `doc` with a `[project]` table made from `[tool.poetry]` when it has
/// none (what hb reads; the backend reads the file itself).
pub fn with_project(doc: &Value) -> Result<Value, String> {
    let mut doc = doc.clone();
    if let (Some(project), Some(table)) = (as_project(&doc)?, doc.as_table_mut()) {
        table.insert("project".into(), Value::Table(project));
    }
    Ok(doc)
}

/// `Name <email>` as a PEP 621 person table.
fn person(text: &str) -> Value {
    let mut t = toml::Table::new();
    match text.split_once('<') {
        Some((name, email)) => {
            t.insert("name".into(), Value::String(name.trim().to_string()));
            t.insert("email".into(), Value::String(email.trim_end_matches('>').trim().to_string()));
        }
        None => {
            t.insert("name".into(), Value::String(text.trim().to_string()));
        }
    }
    Value::Table(t)
}

/// One Poetry dependency as a PEP 508 requirement; `None` for an optional one.
fn requirement(name: &str, spec: &Value) -> Result<Option<String>, String> {
    let at = |why: String| format!("[tool.poetry.dependencies] {name}: {why}");
    let (constraint, extras, mut markers) = match spec {
        Value::String(c) => (c.clone(), Vec::new(), Vec::new()),
        Value::Table(t) => {
            if t.get("optional").and_then(Value::as_bool) == Some(true) {
                return Ok(None);
            }
            for source in ["git", "path", "url", "file"] {
                if t.contains_key(source) {
                    return Err(at(format!(
                        "comes from a {source}; hb takes packages from the index, pinned in its lock"
                    )));
                }
            }
            let extras: Vec<String> = t
                .get("extras")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let mut markers = Vec::new();
            if let Some(m) = t.get("markers").and_then(Value::as_str) {
                markers.push(format!("({m})"));
            }
            if let Some(py) = t.get("python").and_then(Value::as_str) {
                markers.extend(python_markers(py).map_err(&at)?);
            }
            let version = t.get("version").and_then(Value::as_str).unwrap_or("*").to_string();
            (version, extras, markers)
        }
        Value::Array(_) => {
            return Err(at(
                "has several constraints (a list); write it as one, or lock with a poetry.lock export".into()
            ));
        }
        _ => return Err(at("is neither a version constraint nor a table".into())),
    };
    let spec = specifiers(&constraint).map_err(&at)?;
    let mut req = name.to_string();
    if !extras.is_empty() {
        req.push_str(&format!("[{}]", extras.join(",")));
    }
    req.push_str(&spec);
    markers.dedup();
    if !markers.is_empty() {
        req.push_str(&format!("; {}", markers.join(" and ")));
    }
    Ok(Some(req))
}

/// A `python` constraint as `python_full_version` marker clauses.
fn python_markers(constraint: &str) -> Result<Vec<String>, String> {
    let spec = specifiers(constraint)?;
    Ok(spec
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            let op_len = c.find(|ch: char| ch.is_ascii_digit()).unwrap_or(0);
            let (op, v) = c.split_at(op_len);
            format!("python_full_version {} '{}'", op.trim(), v.trim())
        })
        .collect())
}

/// A Poetry constraint as PEP 440 specifiers (`""` for any version).
fn specifiers(constraint: &str) -> Result<String, String> {
    let c = constraint.trim();
    if c.contains("||") || c.contains('|') {
        return Err(format!("`{c}` has `||` (either of two ranges), which a requirement cannot say"));
    }
    let mut out = Vec::new();
    for part in c.split(',').flat_map(|p| split_spaces(p.trim())) {
        let part = part.trim();
        if part.is_empty() || part == "*" {
            continue;
        }
        out.push(one(part)?);
    }
    Ok(out.join(","))
}

/// `>= 1.2 < 2` (space-separated, Poetry allows it) as its parts.
fn split_spaces(part: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    for token in part.split_whitespace() {
        match pieces.last_mut() {
            // An operator alone, then its version.
            Some(last) if last.chars().all(|c| "<>=!~^".contains(c)) => last.push_str(token),
            _ => pieces.push(token.to_string()),
        }
    }
    pieces
}

fn one(part: &str) -> Result<String, String> {
    let release = |v: &str| -> Result<Vec<u64>, String> {
        v.split('.')
            .map(|n| n.parse::<u64>().map_err(|_| format!("`{part}` is not a version constraint hb reads")))
            .collect()
    };
    let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
    if let Some(v) = part.strip_prefix('^') {
        let r = release(v.trim())?;
        // The first non-zero component may not change (all of them when all are zero).
        let keep = r.iter().position(|n| *n != 0).unwrap_or(r.len().saturating_sub(1));
        let mut upper: Vec<u64> = r.iter().take(keep + 1).copied().collect();
        if let Some(last) = upper.last_mut() {
            *last += 1;
        }
        return Ok(format!(">={},<{}", join(&r), join(&upper)));
    }
    if let Some(v) = part.strip_prefix('~').filter(|v| !v.starts_with('=')) {
        let r = release(v.trim())?;
        let mut upper: Vec<u64> = if r.len() == 1 { r.clone() } else { r.iter().take(2).copied().collect() };
        if let Some(last) = upper.last_mut() {
            *last += 1;
        }
        return Ok(format!(">={},<{}", join(&r), join(&upper)));
    }
    if part.starts_with(['<', '>', '=', '!', '~']) {
        // Poetry's `=1.2` is PEP 440's `==1.2`.
        let fixed = match part.strip_prefix('=') {
            Some(rest) if !rest.starts_with('=') => format!("=={rest}"),
            _ => part.to_string(),
        };
        return Ok(fixed.replace(' ', ""));
    }
    // A bare version (possibly with a wildcard) pins it.
    Ok(format!("=={part}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poetry_constraints_become_pep_440() {
        for (poetry, pep440) in [
            ("^1.2.3", ">=1.2.3,<2"),
            ("^0.2.3", ">=0.2.3,<0.3"),
            ("^0.0.3", ">=0.0.3,<0.0.4"),
            ("^2", ">=2,<3"),
            ("~1.2.3", ">=1.2.3,<1.3"),
            ("~1", ">=1,<2"),
            ("*", ""),
            ("1.2.*", "==1.2.*"),
            ("2.0.1", "==2.0.1"),
            (">=1.2, <2.0", ">=1.2,<2.0"),
            (">= 1.2 < 1.5", ">=1.2,<1.5"),
            ("~=1.4", "~=1.4"),
        ] {
            assert_eq!(specifiers(poetry).unwrap(), pep440, "{poetry}");
        }
        assert!(specifiers("^1.0 || ^2.0").is_err());
    }

    #[test]
    fn a_poetry_project_reads_as_pep_621() {
        let doc: Value = toml::from_str(
            "[tool.poetry]\nname = \"shop\"\nversion = \"1.4.0\"\nauthors = [\"Ann Lee <ann@example.org>\"]\nreadme = \"README.md\"\n\
             [tool.poetry.dependencies]\npython = \"^3.11\"\nflask = \"^3.0\"\ngunicorn = {version = \"^22\", extras = [\"gevent\"]}\n\
             tomli = {version = \"*\", python = \"<3.11\"}\nsentry-sdk = {version = \"^2\", optional = true}\n",
        )
        .unwrap();
        let p = as_project(&doc).unwrap().unwrap();
        assert_eq!(p["name"].as_str(), Some("shop"));
        assert_eq!(p["requires-python"].as_str(), Some(">=3.11,<4"));
        assert_eq!(p["authors"][0]["email"].as_str(), Some("ann@example.org"));
        let deps: Vec<&str> = p["dependencies"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(deps, ["flask>=3.0,<4", "gunicorn[gevent]>=22,<23", "tomli; python_full_version < '3.11'"]);
        for dep in deps {
            assert!(dep.parse::<pep508_rs::Requirement>().is_ok(), "{dep} is not PEP 508");
        }
        let git: Value =
            toml::from_str("[tool.poetry]\nname = \"x\"\n[tool.poetry.dependencies]\nlib = {git = \"x\"}\n").unwrap();
        assert!(as_project(&git).unwrap_err().contains("lib: comes from a git"));
        let pep621: Value = toml::from_str("[project]\nname = \"x\"\n[tool.poetry]\nname = \"x\"\n").unwrap();
        assert!(as_project(&pep621).unwrap().is_none());
    }
}
