//! Rules: from declared targets to the action graph. [`collect`] walks the target graph
//! from the requested labels (depth first, detecting cycles and unknown labels), and
//! [`plan`] expands each target into its actions: `files` and `python_app` into one
//! staging action, `deb` into layout → control + data → pack.

pub mod build;
pub mod deb;
pub mod files;
pub mod python;
pub mod service;

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

/// Choices of the build request that shape actions without entering their keys.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    pub sandbox: hb_sandbox::Mode,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { sandbox: hb_sandbox::Mode::Bwrap }
    }
}

/// The target platform of the workspace, for Python wheels.
pub fn python_target(settings: &hb_config::WorkspaceSettings) -> hb_python::Target {
    hb_python::Target::bookworm_amd64(python_version(settings))
}

pub fn python_version(settings: &hb_config::WorkspaceSettings) -> (u32, u32) {
    let mut it = settings.python.get_ref().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(3), it.next().unwrap_or(11))
}

/// The action graph of `roots`, and the node giving each target's result.
pub struct Plan {
    pub graph: Graph,
    pub targets: BTreeMap<Label, NodeId>,
}

/// Expands the targets reachable from `roots` into actions.
pub fn plan(ws: &mut Workspace, roots: &[Label], opts: &PlanOptions) -> Result<Plan, RulesError> {
    let targets = collect(ws, roots)?;
    let mut p = Planner { graph: Graph::default(), nodes: BTreeMap::new(), fetches: BTreeMap::new(), opts: *opts };
    for t in targets {
        let node = p.expand(ws, &t)?;
        p.nodes.insert(t.label.clone(), node);
    }
    Ok(Plan { graph: p.graph, targets: p.nodes })
}

struct Planner {
    graph: Graph,
    nodes: BTreeMap<Label, NodeId>,
    /// One fetch node per locked file name, shared by every app that needs it.
    fetches: BTreeMap<String, NodeId>,
    opts: PlanOptions,
}

impl Planner {
    fn fetch_node(&mut self, ws: &Workspace, f: &hb_fetch::LockedFile) -> NodeId {
        if let Some(&n) = self.fetches.get(&f.file) {
            return n;
        }
        let extra: Vec<std::path::PathBuf> = ws.settings.wheelhouse.iter().map(|w| ws.root.join(w)).collect();
        let job = python::FetchJob {
            file: f.clone(),
            target: python_target(&ws.settings),
            wheelhouses: hb_fetch::wheelhouses(&extra),
        };
        let n = self.graph.add(format!("fetch {}", f.file), Box::new(job), Vec::new());
        self.fetches.insert(f.file.clone(), n);
        n
    }

    fn expand(&mut self, ws: &mut Workspace, t: &Target) -> Result<NodeId, RulesError> {
        let settings = ws.settings.clone();
        let pkg = ws.package(&t.label.package)?.clone();
        let pkg = &pkg;
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
                    exact: false,
                };
                Ok(self.graph.add(name, Box::new(job), Vec::new()))
            }
            Rule::PythonApp(p) => {
                let proj = python::project(pkg, p)?;
                let target = python_target(&settings);
                let lock = python::read_lock(pkg, p, &proj, &target, &name)?;
                let python = python_version(&settings);
                let prefix = python::prefix(p, &proj);
                let mut patterns: Vec<(String, String)> =
                    p.srcs.iter().map(|s| (s.get_ref().clone(), locate(s.span()))).collect();
                patterns.push((p.pyproject.get_ref().clone(), locate(p.pyproject.span())));
                let files = files::FilesJob {
                    label: name.clone(),
                    dir: pkg.dir.clone(),
                    patterns,
                    dest: "/".to_string(),
                    strip_prefix: String::new(),
                    exact: false,
                };
                let mtime = settings.source_date_epoch.unwrap_or(hb_config::build_file::DEFAULT_SOURCE_DATE_EPOCH);
                let wheel_job = python::WheelJob {
                    label: name.clone(),
                    files,
                    backend: proj.build_backend.clone(),
                    backend_path: proj.backend_path.clone(),
                    python,
                    target: target.clone(),
                    mtime,
                    sandbox: self.opts.sandbox,
                };
                let ws_ref: &Workspace = ws;
                let build: Vec<NodeId> =
                    lock.files(hb_fetch::Role::Build).map(|f| self.fetch_node(ws_ref, f)).collect();
                let runtime: Vec<NodeId> =
                    lock.files(hb_fetch::Role::Runtime).map(|f| self.fetch_node(ws_ref, f)).collect();
                let wheel = self.graph.add(format!("{name} wheel"), Box::new(wheel_job), build);
                let mut deps = runtime;
                deps.push(wheel);
                let venv = python::VenvJob { label: name.clone(), prefix, python, target };
                Ok(self.graph.add(name, Box::new(venv), deps))
            }
            Rule::Deb(d) => {
                let package = match &d.package {
                    Some(p) => p.get_ref().clone(),
                    None => {
                        let dir =
                            t.label.package.rsplit('/').next().unwrap_or_default().to_lowercase().replace('_', "-");
                        if !hb_config::build_file::valid_debian_package_name(&dir) {
                            return Err(RulesError::Invalid {
                                message: format!(
                                    "`{dir}` is not a valid Debian package name; set `package` explicitly"
                                ),
                                location: t.location.clone(),
                            });
                        }
                        dir
                    }
                };
                let service_app = match &d.service {
                    Some(svc) => {
                        let at = pkg.locate(svc.app.span());
                        let label = Label::parse(svc.app.get_ref(), Some(&t.label.package))
                            .map_err(|e| RulesError::Invalid { message: e.to_string(), location: at.clone() })?;
                        if !t.deps.iter().any(|(l, _)| *l == label) {
                            return Err(RulesError::Invalid {
                                message: format!(
                                    "the service's app {label} must also be in `deps`, so that its files are in the package"
                                ),
                                location: at,
                            });
                        }
                        Some((label, at))
                    }
                    None => None,
                };
                let mut deps = Vec::new();
                let mut dep_labels = Vec::new();
                // (label, venv prefix, WSGI module) of every python_app in the package.
                let mut python_apps: Vec<(Label, String, String)> = Vec::new();
                for (label, loc) in &t.deps {
                    let dep_target = ws.target(label)?.clone();
                    match &dep_target.rule {
                        Rule::Deb(_) => {
                            return Err(RulesError::Invalid {
                                message: format!(
                                    "{name} cannot contain the package {label}; list it in `depends` instead"
                                ),
                                location: loc.clone(),
                            });
                        }
                        Rule::PythonApp(p) => {
                            let dep_pkg = ws.package(&label.package)?.clone();
                            let proj = python::project(&dep_pkg, p)?;
                            if let Some((served, at)) = &service_app
                                && served == label
                            {
                                // The service runs gunicorn from the app's virtualenv.
                                let target = python_target(&settings);
                                let lock = python::read_lock(&dep_pkg, p, &proj, &target, &label.to_string())?;
                                if !lock.files(hb_fetch::Role::Runtime).any(|f| f.name == "gunicorn") {
                                    return Err(RulesError::Invalid {
                                        message: format!(
                                            "the service runs gunicorn, but {label} does not depend on it: add \"gunicorn\" to [project] dependencies in {} and run `hb lock {label}`",
                                            p.pyproject.get_ref()
                                        ),
                                        location: at.clone(),
                                    });
                                }
                            }
                            python_apps.push((label.clone(), python::prefix(p, &proj), p.module.get_ref().clone()));
                        }
                        Rule::Files(_) => {}
                    }
                    deps.push(self.nodes[label]);
                    dep_labels.push(label.to_string());
                }
                let python_prefixes: Vec<String> = python_apps.iter().map(|(_, p, _)| p.clone()).collect();
                let service = match (&d.service, &service_app) {
                    (Some(svc), Some((label, at))) => {
                        let Some((_, prefix, module)) = python_apps.iter().find(|(l, _, _)| l == label) else {
                            return Err(RulesError::Invalid {
                                message: format!("the service's app {label} must be a python_app target"),
                                location: at.clone(),
                            });
                        };
                        let ip: std::net::IpAddr = svc.bind.get_ref().parse().expect("validated when parsed");
                        let bind = match ip {
                            std::net::IpAddr::V4(v4) => format!("{v4}:{}", svc.port.get_ref()),
                            std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", svc.port.get_ref()),
                        };
                        Some(service::ServiceContext {
                            user: svc.user.as_ref().map_or_else(|| package.clone(), |u| u.get_ref().clone()),
                            bind,
                            workers: *svc.workers.get_ref(),
                            module: module.clone(),
                            prefix: prefix.clone(),
                            environment: svc
                                .environment
                                .iter()
                                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                                .collect(),
                            config_path: format!("/etc/{package}/config.cfg"),
                            logging_path: format!("/etc/{package}/logging.conf"),
                            log_dir: format!("/var/log/{package}"),
                            pidfile: format!("/run/{package}.pid"),
                            run_dir: format!("/run/{package}"),
                            unit: format!("{package}.service"),
                        })
                    }
                    _ => None,
                };
                if service.is_some()
                    && !hb_config::build_file::valid_system_user(&package)
                    && d.service.as_ref().is_some_and(|s| s.user.is_none())
                {
                    return Err(RulesError::Invalid {
                        message: format!(
                            "the package name `{package}` is not a valid system user name; set `user` in [deb.service]"
                        ),
                        location: t.location.clone(),
                    });
                }
                let mut depends = Vec::new();
                if !python_apps.is_empty() {
                    let (major, minor) = python_version(&settings);
                    depends.push(format!("python3 (>= {major}.{minor}~)"));
                    depends.push(format!("python3 (<< {major}.{})", minor + 1));
                }
                if service.is_some() {
                    depends.push("adduser".to_string());
                }
                depends.extend(d.depends.iter().map(|s| s.get_ref().clone()));
                let mtime = d
                    .source_date_epoch
                    .or(settings.source_date_epoch)
                    .unwrap_or(hb_config::build_file::DEFAULT_SOURCE_DATE_EPOCH);
                let description = d.description.get_ref().clone();
                let rendered = service::render(
                    pkg,
                    d,
                    &service::RenderInput {
                        package: &package,
                        version: d.version.get_ref(),
                        maintainer: d.maintainer.get_ref(),
                        synopsis: description.lines().next().unwrap_or_default().trim(),
                        mtime,
                        python_prefixes: &python_prefixes,
                        service: service.as_ref(),
                    },
                )?;
                // Files of the package placed at fixed paths: the app's config, a copyright.
                let mut exact = Vec::new();
                if let Some(cfg) = d.service.as_ref().and_then(|s| s.config.as_ref()) {
                    exact.push((cfg, format!("/etc/{package}/config.cfg"), "config"));
                }
                if let Some(c) = &d.copyright {
                    exact.push((c, format!("/usr/share/doc/{package}/copyright"), "copyright"));
                }
                for (file, dest, what) in exact {
                    let job = files::FilesJob {
                        label: format!("{name} {what}"),
                        dir: pkg.dir.clone(),
                        patterns: vec![(glob::Pattern::escape(file.get_ref()), locate(file.span()))],
                        dest,
                        strip_prefix: String::new(),
                        exact: true,
                    };
                    deps.push(self.graph.add(format!("{name} {what}"), Box::new(job), Vec::new()));
                    dep_labels.push(format!("{name} {what}"));
                }
                let render = service::RenderJob { label: name.clone(), files: rendered.files };
                deps.push(self.graph.add(format!("{name} render"), Box::new(render), Vec::new()));
                dep_labels.push(format!("{name} (generated files)"));

                let meta = deb::DebMeta {
                    package,
                    version: d.version.get_ref().clone(),
                    architecture: settings.architecture().to_string(),
                    maintainer: d.maintainer.get_ref().clone(),
                    // invoke-rc.d --skip-systemd-native needs init-system-helpers 1.54.
                    pre_depends: if service.is_some() {
                        vec!["init-system-helpers (>= 1.54~)".to_string()]
                    } else {
                        Vec::new()
                    },
                    depends,
                    section: d.section.clone(),
                    priority: d.priority.clone(),
                    homepage: d.homepage.clone(),
                    description,
                };
                let compression = match d.compression.unwrap_or(settings.compression) {
                    hb_config::Compression::Xz => hb_deb::Compression::Xz,
                    hb_config::Compression::Gzip => hb_deb::Compression::Gzip,
                    hb_config::Compression::Zstd => hb_deb::Compression::Zstd,
                };
                let policy = deb::Policy { compression, mtime };
                let graph = &mut self.graph;
                let layout = graph.add(
                    format!("{name} layout"),
                    Box::new(deb::LayoutJob { label: name.clone(), dep_labels }),
                    deps,
                );
                let control = graph.add(
                    format!("{name} control"),
                    Box::new(deb::ControlJob {
                        label: name.clone(),
                        meta: meta.clone(),
                        policy,
                        scripts: rendered.scripts,
                    }),
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
}
