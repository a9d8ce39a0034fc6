//! Rules: from declared targets to the action graph. [`collect`] walks the target graph
//! from the requested labels (depth first, detecting cycles and unknown labels), and
//! [`plan`] expands each target into its actions: `files` and `python_app` into one
//! staging action, `deb` into layout → control + data → pack.

pub mod build;
pub mod deb;
pub mod files;

use std::collections::BTreeMap;

use hb_config::{ConfigError, Label, Location, Rule, Target, Workspace};
use hb_engine::{Graph, NodeId};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("dependency cycle: {cycle}\n  --> {location}")]
    Cycle { cycle: String, location: Location },
    #[error("{message}\n  --> {location}")]
    Invalid { message: String, location: Location },
}

/// `file:line:col` of a location, for one-line messages.
pub fn short(loc: &Location) -> String {
    format!("{}:{}:{}", loc.file.display(), loc.line, loc.col)
}

/// The targets reachable from `roots`, each after its dependencies.
pub fn collect(ws: &mut Workspace, roots: &[Label]) -> Result<Vec<Target>, RulesError> {
    #[derive(PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<Label, Mark> = BTreeMap::new();
    let mut order = Vec::new();
    // Explicit stack of (target, next dependency index) for deep graphs.
    for root in roots {
        if marks.contains_key(root) {
            continue;
        }
        let mut stack: Vec<(Target, usize)> = vec![(ws.target(root)?.clone(), 0)];
        marks.insert(root.clone(), Mark::Visiting);
        while let Some((target, next)) = stack.last_mut() {
            if let Some((dep, loc)) = target.deps.get(*next).cloned() {
                *next += 1;
                match marks.get(&dep) {
                    Some(Mark::Done) => {}
                    Some(Mark::Visiting) => {
                        let start = stack.iter().position(|(t, _)| t.label == dep).unwrap_or(0);
                        let mut names: Vec<String> = stack[start..].iter().map(|(t, _)| t.label.to_string()).collect();
                        names.push(dep.to_string());
                        return Err(RulesError::Cycle { cycle: names.join(" -> "), location: loc });
                    }
                    None => {
                        let t = ws.target(&dep).map_err(|e| match e {
                            // Say where the unknown label was written.
                            ConfigError::NoTarget { .. } | ConfigError::NoPackage { .. } => {
                                RulesError::Invalid { message: e.to_string(), location: loc.clone() }
                            }
                            other => other.into(),
                        })?;
                        marks.insert(dep, Mark::Visiting);
                        stack.push((t.clone(), 0));
                    }
                }
            } else {
                let (t, _) = stack.pop().expect("stack is not empty");
                marks.insert(t.label.clone(), Mark::Done);
                order.push(t);
            }
        }
    }
    Ok(order)
}

/// The action graph of `roots`, and the node giving each target's result.
pub struct Plan {
    pub graph: Graph,
    pub targets: BTreeMap<Label, NodeId>,
}

/// Expands the targets reachable from `roots` into actions.
pub fn plan(ws: &mut Workspace, roots: &[Label]) -> Result<Plan, RulesError> {
    let targets = collect(ws, roots)?;
    let mut graph = Graph::default();
    let mut nodes: BTreeMap<Label, NodeId> = BTreeMap::new();
    for t in targets {
        let node = expand(ws, &t, &nodes, &mut graph)?;
        nodes.insert(t.label.clone(), node);
    }
    Ok(Plan { graph, targets: nodes })
}

fn expand(
    ws: &mut Workspace,
    t: &Target,
    nodes: &BTreeMap<Label, NodeId>,
    graph: &mut Graph,
) -> Result<NodeId, RulesError> {
    let settings = ws.settings.clone();
    let pkg = ws.package(&t.label.package)?;
    let name = t.label.to_string();
    let locate = |span: std::ops::Range<usize>| short(&pkg.locate(span));
    match &t.rule {
        Rule::Files(f) => {
            let job = files::FilesJob {
                label: name.clone(),
                dir: pkg.dir.clone(),
                patterns: f.srcs.iter().map(|s| (s.get_ref().clone(), locate(s.span()))).collect(),
                dest: f.dest.get_ref().clone(),
                strip_prefix: f.strip_prefix.clone(),
            };
            Ok(graph.add(name, Box::new(job), Vec::new()))
        }
        Rule::PythonApp(p) => {
            let project = python_project_name(pkg, p)?;
            let prefix = p.prefix.as_ref().map_or_else(|| format!("/usr/lib/{project}"), |s| s.get_ref().clone());
            let mut patterns: Vec<(String, String)> =
                p.srcs.iter().map(|s| (s.get_ref().clone(), locate(s.span()))).collect();
            patterns.push((p.pyproject.get_ref().clone(), locate(p.pyproject.span())));
            let job = files::FilesJob {
                label: name.clone(),
                dir: pkg.dir.clone(),
                patterns,
                dest: format!("{}/app", prefix.trim_end_matches('/')),
                strip_prefix: String::new(),
            };
            Ok(graph.add(name, Box::new(job), Vec::new()))
        }
        Rule::Deb(d) => {
            let mut deps = Vec::new();
            let mut dep_labels = Vec::new();
            for (label, loc) in &t.deps {
                let dep_target = ws.target(label)?;
                if matches!(dep_target.rule, Rule::Deb(_)) {
                    return Err(RulesError::Invalid {
                        message: format!("{name} cannot contain the package {label}; list it in `depends` instead"),
                        location: loc.clone(),
                    });
                }
                deps.push(nodes[label]);
                dep_labels.push(label.to_string());
            }
            let package = match &d.package {
                Some(p) => p.get_ref().clone(),
                None => {
                    let dir = t.label.package.rsplit('/').next().unwrap_or_default().to_lowercase().replace('_', "-");
                    if !hb_config::build_file::valid_debian_package_name(&dir) {
                        return Err(RulesError::Invalid {
                            message: format!("`{dir}` is not a valid Debian package name; set `package` explicitly"),
                            location: t.location.clone(),
                        });
                    }
                    dir
                }
            };
            let meta = deb::DebMeta {
                package,
                version: d.version.get_ref().clone(),
                architecture: settings.architecture().to_string(),
                maintainer: d.maintainer.get_ref().clone(),
                depends: d.depends.iter().map(|s| s.get_ref().clone()).collect(),
                section: d.section.clone(),
                priority: d.priority.clone(),
                homepage: d.homepage.clone(),
                description: d.description.get_ref().clone(),
            };
            let compression = match d.compression.unwrap_or(settings.compression) {
                hb_config::Compression::Xz => hb_deb::Compression::Xz,
                hb_config::Compression::Gzip => hb_deb::Compression::Gzip,
                hb_config::Compression::Zstd => hb_deb::Compression::Zstd,
            };
            let mtime = d
                .source_date_epoch
                .or(settings.source_date_epoch)
                .unwrap_or(hb_config::build_file::DEFAULT_SOURCE_DATE_EPOCH);
            let policy = deb::Policy { compression, mtime };
            let layout =
                graph.add(format!("{name} layout"), Box::new(deb::LayoutJob { label: name.clone(), dep_labels }), deps);
            let control = graph.add(
                format!("{name} control"),
                Box::new(deb::ControlJob { label: name.clone(), meta: meta.clone(), policy }),
                vec![layout],
            );
            let data = graph.add(
                format!("{name} data"),
                Box::new(deb::DataJob { label: name.clone(), policy, chunks: deb::ChunkTuning::default() }),
                vec![layout],
            );
            let pack = deb::PackJob { label: name.clone(), file_name: meta.file_name(), policy };
            Ok(graph.add(name, Box::new(pack), vec![control, data]))
        }
    }
}

/// `[project].name` of a python_app's pyproject.toml, normalized for paths.
fn python_project_name(
    pkg: &hb_config::Package,
    p: &hb_config::build_file::PythonAppRule,
) -> Result<String, RulesError> {
    let at = pkg.locate(p.pyproject.span());
    let path = pkg.dir.join(p.pyproject.get_ref());
    let text = hb_fs::read_to_string(&path)
        .map_err(|e| RulesError::Invalid { message: e.to_string(), location: at.clone() })?;
    let value: toml::Table = text.parse().map_err(|e: toml::de::Error| RulesError::Invalid {
        message: format!("{} is not valid TOML: {}", path.display(), e.message()),
        location: at.clone(),
    })?;
    let name = value.get("project").and_then(|p| p.get("name")).and_then(|n| n.as_str()).ok_or_else(|| {
        RulesError::Invalid {
            message: format!("{} has no [project] name", p.pyproject.get_ref()),
            location: at.clone(),
        }
    })?;
    // PEP 503 normalization, then the form Debian paths use.
    let norm: String = name.to_lowercase().chars().map(|c| if c == '_' || c == '.' { '-' } else { c }).collect();
    Ok(norm)
}
