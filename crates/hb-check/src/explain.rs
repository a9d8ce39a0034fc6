//! `hb explain`: for each action of the last build, whether it ran or came from the
//! cache, and if it ran, why: which of its inputs (sources, dependencies, arguments)
//! differ from the previous build's record of the same action. A dependency that
//! changed is followed to its own reasons, so every re-run action names the source
//! edit at the root.

use std::collections::BTreeMap;

use hb_engine::{Record, Status};
use hb_rules::build::RunLog;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub name: String,
    pub status: &'static str,
    /// Root causes, e.g. "source config.cfg changed".
    pub reasons: Vec<String>,
    /// The inputs of this action that changed (dependency names, sources, "arguments").
    pub changed_inputs: Vec<String>,
}

/// Describes a changed input that is not another action.
fn describe(input: &str) -> String {
    if let Some(p) = input.strip_prefix("file:").or_else(|| input.strip_prefix("exec:")) {
        format!("source {p} changed")
    } else if input == "interpreter" {
        "the interpreter binary changed".to_string()
    } else if input.starts_with('/') {
        format!("packaged file {input} changed")
    } else {
        format!("input {input} changed")
    }
}

/// Explains every action of `last`, comparing with `previous`.
pub fn explain(last: &RunLog, previous: Option<&RunLog>) -> Vec<Explanation> {
    let now: BTreeMap<&str, &Record> = last.records.iter().map(|r| (r.name.as_str(), r)).collect();
    let before: BTreeMap<&str, &Record> =
        previous.map(|p| p.records.iter().map(|r| (r.name.as_str(), r)).collect()).unwrap_or_default();
    let mut memo: BTreeMap<String, Vec<String>> = BTreeMap::new();
    last.records
        .iter()
        .map(|r| {
            let (reasons, changed_inputs) = if r.status == Status::Cached {
                (Vec::new(), Vec::new())
            } else {
                let changed = changed_inputs(r, before.get(r.name.as_str()).copied());
                (root_causes(&r.name, &now, &before, previous.is_some(), &mut memo), changed)
            };
            Explanation {
                name: r.name.clone(),
                status: if r.status == Status::Executed { "executed" } else { "cached" },
                reasons,
                changed_inputs,
            }
        })
        .collect()
}

fn changed_inputs(r: &Record, old: Option<&Record>) -> Vec<String> {
    let Some(old) = old else { return Vec::new() };
    let before: BTreeMap<&str, _> = old.inputs.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let after: BTreeMap<&str, _> = r.inputs.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let mut out: Vec<String> = Vec::new();
    for (name, d) in &after {
        if before.get(name) != Some(d) {
            out.push(name.to_string());
        }
    }
    for name in before.keys() {
        if !after.contains_key(name) {
            out.push(format!("{name} (removed)"));
        }
    }
    if r.args != old.args {
        out.push("arguments".to_string());
    }
    out
}

fn root_causes(
    name: &str,
    now: &BTreeMap<&str, &Record>,
    before: &BTreeMap<&str, &Record>,
    had_previous: bool,
    memo: &mut BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    if let Some(r) = memo.get(name) {
        return r.clone();
    }
    memo.insert(name.to_string(), Vec::new()); // guards against cycles
    let r = now[name];
    let reasons = match before.get(name) {
        None if had_previous => vec!["new action: not part of the previous build".to_string()],
        None => vec!["no previous build recorded".to_string()],
        Some(old) => {
            let changed = changed_inputs(r, Some(old));
            if changed.is_empty() {
                vec![
                    "its inputs are unchanged, but the cache had no usable result (cleaned, or a blob was corrupt)"
                        .to_string(),
                ]
            } else {
                let mut out = Vec::new();
                for input in changed {
                    let causes = match now.get(input.as_str()) {
                        Some(dep) if dep.status == Status::Executed => {
                            root_causes(&input, now, before, had_previous, memo)
                                .into_iter()
                                .map(|c| if c.contains(" (via ") { c } else { format!("{c} (via {input})") })
                                .collect()
                        }
                        Some(_) => vec![format!("dependency {input} changed")],
                        None if input == "arguments" => vec!["its arguments (settings) changed".to_string()],
                        None => vec![describe(&input)],
                    };
                    for c in causes {
                        if !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
                out
            }
        }
    };
    memo.insert(name.to_string(), reasons.clone());
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_store::Digest;

    fn rec(name: &str, status: Status, inputs: &[(&str, &[u8])]) -> Record {
        Record {
            name: name.into(),
            kind: "k".into(),
            key: Digest::of(name.as_bytes()),
            result: Digest::of(b"r"),
            status,
            args: Digest::of(b"a"),
            inputs: inputs.iter().map(|(n, d)| (n.to_string(), Digest::of(d))).collect(),
            timing: Default::default(),
        }
    }

    #[test]
    fn a_source_edit_is_the_reason_downstream() {
        let previous = RunLog {
            labels: vec![],
            records: vec![
                rec("cfg", Status::Executed, &[("file:config.cfg", b"1")]),
                rec("app", Status::Executed, &[("file:app.py", b"1")]),
                rec("pack", Status::Executed, &[("cfg", b"c1"), ("app", b"a1")]),
            ],
        };
        let last = RunLog {
            labels: vec![],
            records: vec![
                rec("cfg", Status::Executed, &[("file:config.cfg", b"2")]),
                rec("app", Status::Cached, &[("file:app.py", b"1")]),
                rec("pack", Status::Executed, &[("cfg", b"c2"), ("app", b"a1")]),
            ],
        };
        let e = explain(&last, Some(&previous));
        assert_eq!(e[0].reasons, ["source config.cfg changed"]);
        assert!(e[1].reasons.is_empty() && e[1].status == "cached");
        assert_eq!(e[2].reasons, ["source config.cfg changed (via cfg)"]);
        assert_eq!(e[2].changed_inputs, ["cfg"]);
    }
}
