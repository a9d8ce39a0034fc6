//! `[[deb]]`: a Debian binary package made of its dependencies' [`InstallTree`]s, with
//! an optional `[deb.service]` that runs one of its [`PythonApp`]s under gunicorn or
//! uvicorn as a system service. Analysis validates the package against its dependencies' providers
//! and the platform, works out the control fields and renders the generated files;
//! expansion adds `files` for the config and copyright, `render`, then
//! `deb_layout` → `deb_control` + `deb_data` → `deb_pack`. Provides a [`DebPackage`].

use std::collections::BTreeMap;

use hb_config::{ConfigError, Label, Location, Package};
use hb_engine::{AnyInput, Input};
use serde::Deserialize;
use toml::Spanned;

use crate::actions::deb::{ChunkTuning, ControlJob, DataJob, DebMeta, LayoutJob, PackJob, Policy};
use crate::actions::files::FilesJob;
use crate::actions::python::VenvFacts;
use crate::actions::render::RenderJob;
use crate::actions::sbom::{Known, ProvenanceJob, SbomArgs, SbomJob};
use crate::actions::shlibs::ShlibsJob;
use crate::providers::{DebPackage, InstallTree, PythonApp};
use crate::rule::{Cx, Providers, Rule};
use crate::service::{self, Rendered, ServiceContext};
use crate::{RulesError, placeholders, short};

/// The placeholders of `on_configure` commands.
const HOOK_PLACEHOLDERS: &[&str] = &["prefix", "config", "state", "bind", "port"];

/// The `deb` rule.
pub struct Deb;

/// `[[deb]]` attributes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebAttrs {
    pub name: Spanned<String>,
    /// Debian package name; default: the package directory's name.
    pub package: Option<Spanned<String>>,
    pub version: Spanned<String>,
    pub maintainer: Spanned<String>,
    /// First line: the synopsis; further lines: the long description.
    pub description: Spanned<String>,
    #[serde(default = "default_section")]
    pub section: String,
    #[serde(default = "default_priority")]
    pub priority: String,
    pub homepage: Option<String>,
    /// Extra `Depends` entries, verbatim.
    #[serde(default)]
    pub depends: Vec<Spanned<String>>,
    pub compression: Option<hb_config::Compression>,
    pub source_date_epoch: Option<Spanned<u64>>,
    #[serde(default)]
    pub deps: Vec<Spanned<String>>,
    /// License name for the generated copyright file (default "proprietary").
    pub license: Option<String>,
    /// A copyright file of the package to ship instead of the generated one.
    pub copyright: Option<Spanned<String>>,
    /// Template overrides: template name → file of the package.
    #[serde(default)]
    pub templates: BTreeMap<String, Spanned<String>>,
    /// Run an app of the package as a system service.
    pub service: Option<ServiceSettings>,
    /// Maintainer scripts of the package's own (debhelper's `#DEBHELPER#` model): each
    /// a whole shell script with one `#HB#` line, where hb's generated part goes.
    #[serde(default)]
    pub scripts: MaintainerScripts,
    /// What `hb test` requests of the service.
    pub test: Option<TestSettings>,
}

/// `[deb.test]`: the request `hb test` makes once the service runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSettings {
    /// The path requested, like "/health".
    #[serde(default = "default_test_path")]
    pub path: Spanned<String>,
    /// Text the answer must contain (default: any 2xx answer passes).
    pub expect: Option<String>,
}

impl Default for TestSettings {
    fn default() -> Self {
        TestSettings { path: default_test_path(), expect: None }
    }
}

fn default_test_path() -> Spanned<String> {
    Spanned::new(0..0, "/".into())
}

/// `[deb.scripts]`: files of the package, by maintainer script.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintainerScripts {
    pub preinst: Option<Spanned<String>>,
    pub postinst: Option<Spanned<String>>,
    pub prerm: Option<Spanned<String>>,
    pub postrm: Option<Spanned<String>>,
}

impl MaintainerScripts {
    /// The scripts given, by name.
    pub fn given(&self) -> impl Iterator<Item = (&'static str, &Spanned<String>)> {
        [("preinst", &self.preinst), ("postinst", &self.postinst), ("prerm", &self.prerm), ("postrm", &self.postrm)]
            .into_iter()
            .filter_map(|(n, f)| Some((n, f.as_ref()?)))
    }
}

/// `[deb.service]`: a WSGI or ASGI app served as a system service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// The python_app target to serve (a label).
    pub app: Spanned<String>,
    /// The server: `gunicorn` (default; WSGI, or ASGI with `worker_class`) or `uvicorn`
    /// (ASGI). The app must depend on it.
    #[serde(default = "default_server")]
    pub server: Spanned<Server>,
    /// Any other server: its argv, with `{prefix}`, `{bind}`, `{host}`, `{port}`,
    /// `{workers}`, `{config}` and `{module}` placeholders (instead of `server`).
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    /// More options for gunicorn or uvicorn, passed as `--key value` (`true`: the bare
    /// flag; `false`: left out), e.g. `{ timeout = 60, threads = 4 }`.
    #[serde(default)]
    pub options: BTreeMap<String, Spanned<OptionValue>>,
    /// gunicorn's worker class, e.g. `uvicorn.workers.UvicornWorker` for an ASGI app; its
    /// top-level module must be a locked distribution of the app.
    pub worker_class: Option<Spanned<String>>,
    /// Address gunicorn binds to.
    #[serde(default = "default_bind")]
    pub bind: Spanned<String>,
    #[serde(default = "default_port")]
    pub port: Spanned<u16>,
    #[serde(default = "default_workers")]
    pub workers: Spanned<u32>,
    /// The system user the service runs as; default: the package name.
    pub user: Option<Spanned<String>>,
    /// Extra `KEY = "value"` lines for /etc/default/NAME.
    #[serde(default)]
    pub environment: BTreeMap<String, Spanned<String>>,
    /// The app's configuration file in the package, installed as /etc/NAME/config.cfg
    /// (default: a generated one).
    pub config: Option<Spanned<String>>,
    /// The installed config file's mode, octal (`"0640"` for one holding secrets); set
    /// with `config_group` through dpkg-statoverride at configure (an administrator's
    /// own override wins). Default: 0644 root:root, as shipped.
    pub config_mode: Option<Spanned<String>>,
    /// The config file's group (with `config_mode`; default: the service user's).
    pub config_group: Option<Spanned<String>>,
    /// Secrets generated once at install, never shipped: file names in /var/lib/NAME,
    /// each 64 hex digits from /dev/urandom, mode 0600, owned by the service user;
    /// kept on upgrade and removal, removed on purge.
    #[serde(default)]
    pub secrets: Vec<Spanned<String>>,
    /// Commands `postinst configure` runs after the user, directories and secrets
    /// exist, each with `sh -c` as the service user, with the service's environment,
    /// in the state directory (Django's `migrate --noinput`). Placeholders: `{prefix}`,
    /// `{config}`, `{state}`, `{bind}`, `{port}`. A failing one fails the configure.
    #[serde(default)]
    pub on_configure: Vec<Spanned<String>>,
    /// Confine the service in its systemd unit (read-only system, no privileges, a
    /// system call filter, no W+X memory); `false` leaves the unit unconfined.
    #[serde(default = "default_true")]
    pub hardening: bool,
}

fn default_true() -> bool {
    true
}

fn default_section() -> String {
    "misc".into()
}
fn default_priority() -> String {
    "optional".into()
}
/// The programs that can serve an app.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Server {
    /// gunicorn (WSGI; ASGI with `worker_class`).
    Gunicorn,
    /// gunicorn with uvicorn's worker (ASGI).
    GunicornUvicorn,
    /// uvicorn (ASGI).
    Uvicorn,
}

impl Server {
    /// Its program: the distribution that provides it, its executable and its loggers.
    pub fn name(self) -> &'static str {
        match self {
            Server::Gunicorn | Server::GunicornUvicorn => "gunicorn",
            Server::Uvicorn => "uvicorn",
        }
    }
}

/// A value of `[deb.service] options`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OptionValue {
    Flag(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

/// Characters a server argument may not hold: the init script splits its arguments at
/// white space with no quoting, and systemd reads `%` and quotes in `ExecStart=`.
fn plain_argument(arg: &str) -> bool {
    !arg.is_empty() && !arg.chars().any(|c| c.is_whitespace() || c.is_control() || "\"'\\$%`;&|<>*?".contains(c))
}

/// The placeholders of a service `command`.
const COMMAND_PLACEHOLDERS: &[&str] = &["prefix", "bind", "host", "port", "workers", "config", "module"];

fn default_server() -> Spanned<Server> {
    Spanned::new(0..0, Server::Gunicorn)
}

fn default_bind() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1".into())
}
fn default_port() -> Spanned<u16> {
    Spanned::new(0..0, 8000)
}
fn default_workers() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}

/// What analysis of a deb found.
pub struct Analysis {
    package: String,
    /// The dependencies' trees, each named for conflict messages.
    parts: Vec<(String, AnyInput)>,
    venvs: Vec<Input<VenvFacts>>,
    /// The first app's compile root, if it compiled sdists: shlibdeps reads it.
    compile_root: Option<Input<()>>,
    /// What the SBOM says besides the venvs' facts.
    sbom: SbomArgs,
    meta: DebMeta,
    policy: Policy,
    rendered: Rendered,
}

impl Rule for Deb {
    const KIND: &'static str = "deb";
    type Attrs = DebAttrs;
    type Analysis = Analysis;

    fn name(attrs: &DebAttrs) -> &Spanned<String> {
        &attrs.name
    }

    fn deps(attrs: &DebAttrs) -> Vec<Spanned<String>> {
        attrs.deps.clone()
    }

    fn check(pkg: &Package, d: &DebAttrs) -> Result<(), ConfigError> {
        check_control(pkg, d)?;
        if let Some(t) = &d.source_date_epoch {
            hb_config::build_file::check_source_date_epoch(pkg, t)?;
        }
        if let Some(svc) = &d.service {
            check_service(pkg, svc)?;
        }
        if let Some(t) = &d.test {
            let path = t.path.get_ref();
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(pkg.error(t.path.span(), "`path` is the URL path to request, like \"/health\""));
            }
            if d.service.is_none() {
                return Err(
                    pkg.error(t.path.span(), "[deb.test] says what to request of the service: it needs [deb.service]")
                );
            }
        }
        let scripts = d.scripts.given().map(|(_, f)| f);
        for file in d
            .templates
            .values()
            .chain(&d.copyright)
            .chain(d.service.iter().filter_map(|s| s.config.as_ref()))
            .chain(scripts)
        {
            hb_config::build_file::check_relative_file(pkg, file)?;
        }
        Ok(())
    }

    fn analyse(&self, cx: &Cx, d: &DebAttrs) -> Result<Analysis, RulesError> {
        let package = package_name(cx, d)?;
        let served = served_app(cx, d)?;
        let (parts, apps) = contents(cx)?;
        let service = match (&d.service, served) {
            (Some(svc), Some((label, at))) => Some(service_context(cx, svc, &package, &apps, &label, at)?),
            _ => None,
        };
        let mtime = d.source_date_epoch.as_ref().map_or_else(|| cx.settings.source_date_epoch(), |t| *t.get_ref());
        let meta = control_meta(cx, d, &package, !apps.is_empty(), service.is_some());
        let prefixes: Vec<String> = apps.iter().map(|(_, app)| app.prefix.clone()).collect();
        let description = d.description.get_ref();
        let rendered = service::render(
            cx.package,
            d,
            &service::RenderInput {
                package: &package,
                version: d.version.get_ref(),
                maintainer: d.maintainer.get_ref(),
                synopsis: description.lines().next().unwrap_or_default().trim(),
                mtime,
                python_prefixes: &prefixes,
                service: service.as_ref(),
            },
        )?;
        let compression = match d.compression.unwrap_or(cx.settings.compression) {
            hb_config::Compression::Xz => hb_deb::Compression::Xz,
            hb_config::Compression::Gzip => hb_deb::Compression::Gzip,
            hb_config::Compression::Zstd => hb_deb::Compression::Zstd,
        };
        let venvs = apps.iter().map(|(_, app)| app.venv).collect();
        let compile_root = apps.iter().find_map(|(_, app)| app.compile_root);
        let sbom = sbom_args(cx, d, &meta, &apps, mtime);
        Ok(Analysis {
            package,
            parts,
            venvs,
            compile_root,
            sbom,
            meta,
            policy: Policy { compression, mtime },
            rendered,
        })
    }

    fn expand(&self, cx: &mut Cx, d: &DebAttrs, a: Analysis) -> Result<Providers, RulesError> {
        let name = cx.label();
        let mut parts = a.parts;
        // Files of the package placed at fixed paths: the app's config, a copyright.
        let mut exact = Vec::new();
        if let Some(cfg) = d.service.as_ref().and_then(|s| s.config.as_ref()) {
            exact.push((cfg, format!("/etc/{}/config.cfg", a.package), "config"));
        }
        if let Some(c) = &d.copyright {
            exact.push((c, format!("/usr/share/doc/{}/copyright", a.package), "copyright"));
        }
        for (file, dest, what) in exact {
            let job = FilesJob {
                label: format!("{name} {what}"),
                dir: cx.package.dir.clone(),
                patterns: vec![(file.get_ref().clone(), short(&cx.locate(file.span())))],
                dest,
                strip_prefix: String::new(),
                exact: true,
            };
            parts.push((format!("{name} {what}"), cx.actions.add(format!("{name} {what}"), job).any()));
        }
        let render = RenderJob { label: name.clone(), files: a.rendered.files };
        parts.push((format!("{name} (generated files)"), cx.actions.add(format!("{name} render"), render).any()));

        let policy = a.policy;
        let actions = &mut *cx.actions;
        let layout = actions.add(format!("{name} layout"), LayoutJob { label: name.clone(), parts });
        // Depends from the ELF files, against the target root's libraries (without the
        // sandbox there is no root: the manylinux tags' glibc is the guess then).
        let shlibs = if !a.venvs.is_empty() && cx.opts.sandbox == hb_sandbox::Mode::Bwrap {
            // An app's compile root holds the libraries its compiled sdists link (and
            // the whole base root); the base root is enough for everything else.
            let root = match a.compile_root {
                Some(r) => r,
                None => crate::roots::root_input(cx)?,
            };
            Some(cx.actions.add(format!("{name} shlibdeps"), ShlibsJob { label: name.clone(), layout, root }))
        } else {
            None
        };
        let actions = &mut *cx.actions;
        let control = ControlJob {
            label: name.clone(),
            meta: a.meta.clone(),
            policy,
            scripts: a.rendered.scripts,
            layout,
            venvs: a.venvs.clone(),
            shlibs,
            platform: cx.platform,
        };
        let control = actions.add(format!("{name} control"), control);
        let data = DataJob { label: name.clone(), policy, chunks: ChunkTuning::default(), layout };
        let data = actions.add(format!("{name} data"), data);
        let file_name = a.meta.file_name();
        let pack = PackJob { label: name.clone(), file_name: file_name.clone(), policy, control, data };
        let deb = actions.add(format!("{name} pack"), pack).any();
        // The target's output: the deb and its SBOMs.
        let sbom = SbomJob {
            label: name.clone(),
            deb,
            file_name: file_name.clone(),
            venvs: a.venvs.clone(),
            args: a.sbom.clone(),
        };
        // With a signing key, the signed provenance joins them and is the output.
        let out = match &cx.opts.provenance_key {
            None => actions.add(name, sbom).any(),
            Some(key) => {
                let sbom = actions.add(format!("{name} sbom"), sbom).any();
                let provenance = ProvenanceJob {
                    label: name.clone(),
                    platform: cx.platform.name.to_string(),
                    sbom,
                    deb,
                    file_name: file_name.clone(),
                    venvs: a.venvs,
                    args: a.sbom,
                    layout: layout.any(),
                    signer: key.clone(),
                };
                actions.add(name, provenance).any()
            }
        };
        let info = DebPackage {
            package: a.meta.package,
            version: a.meta.version,
            architecture: a.meta.architecture,
            file_name,
            deb,
        };
        Ok(Providers::new(out).with(info))
    }
}

/// What the SBOM states that the plan knows: the apps' build files and sdists, the
/// root's packages, the package's licence (when it is an SPDX expression hb knows).
fn sbom_args(cx: &Cx, d: &DebAttrs, meta: &DebMeta, apps: &[(Label, &PythonApp)], mtime: u64) -> SbomArgs {
    let known = |f: &hb_fetch::LockedFile| Known {
        name: f.name.clone(),
        version: f.version.clone(),
        file: f.file.clone(),
        sha256: f.sha256.clone(),
    };
    let mut build: Vec<Known> = Vec::new();
    let mut sources: Vec<Known> = Vec::new();
    let mut locked: Vec<String> = Vec::new();
    for (_, app) in apps {
        for w in &app.locked_wheels {
            if !locked.contains(w) {
                locked.push(w.clone());
            }
        }
        for f in &app.build_files {
            if !build.iter().any(|k| k.file == f.file) {
                build.push(known(f));
            }
        }
        for f in &app.sdists {
            if !sources.iter().any(|k| k.file == f.file) {
                sources.push(known(f));
            }
        }
    }
    build.sort_by(|a, b| a.file.cmp(&b.file));
    sources.sort_by(|a, b| a.file.cmp(&b.file));
    locked.sort();
    let root = match apps.first() {
        Some((_, app)) => app.root_packages.clone(),
        None if cx.opts.sandbox == hb_sandbox::Mode::Bwrap => crate::roots::locked_summary(cx, &[]),
        None => Default::default(),
    };
    SbomArgs {
        package: meta.package.clone(),
        version: meta.version.clone(),
        architecture: meta.architecture.clone(),
        distro: cx.platform.suite.to_string(),
        license: d.license.as_deref().and_then(|l| hb_python::license::declared(Some(l), Some(l), &[])),
        created: mtime,
        sources,
        build,
        locked,
        root,
    }
}

/// The Debian package name: `package`, else the package directory's name.
fn package_name(cx: &Cx, d: &DebAttrs) -> Result<String, RulesError> {
    if let Some(p) = &d.package {
        return Ok(p.get_ref().clone());
    }
    let dir = cx.target.label.package.rsplit('/').next().unwrap_or_default().to_lowercase().replace('_', "-");
    if !hb_config::build_file::valid_debian_package_name(&dir) {
        return Err(RulesError::Invalid {
            message: format!("`{dir}` is not a valid Debian package name; set `package` explicitly"),
            location: cx.target.location.clone(),
        });
    }
    Ok(dir)
}

/// The label of the served app and where it is written; it must be one of the deps.
fn served_app(cx: &Cx, d: &DebAttrs) -> Result<Option<(Label, Location)>, RulesError> {
    let Some(svc) = &d.service else { return Ok(None) };
    let at = cx.locate(svc.app.span());
    let label = Label::parse(svc.app.get_ref(), Some(&cx.target.label.package))
        .map_err(|e| RulesError::Invalid { message: e.to_string(), location: at.clone() })?;
    if cx.dep(&label).is_none() {
        return Err(RulesError::Invalid {
            message: format!("the service's app {label} must also be in `deps`, so that its files are in the package"),
            location: at,
        });
    }
    Ok(Some((label, at)))
}

/// A dependency's tree, named for conflict messages, and the Python apps among them.
type Contents<'a> = (Vec<(String, AnyInput)>, Vec<(Label, &'a PythonApp)>);

/// The trees the package is made of, from its dependencies' providers.
fn contents<'a>(cx: &'a Cx) -> Result<Contents<'a>, RulesError> {
    let mut parts = Vec::new();
    let mut apps = Vec::new();
    for (label, at, providers) in cx.deps() {
        if providers.get::<DebPackage>().is_some() {
            return Err(RulesError::Invalid {
                message: format!("{} cannot contain the package {label}; list it in `depends` instead", cx.label()),
                location: at.clone(),
            });
        }
        let Some(tree) = providers.get::<InstallTree>() else {
            return Err(RulesError::Invalid {
                message: format!("{label} has no files to install, so it cannot be in a package's `deps`"),
                location: at.clone(),
            });
        };
        if let Some(app) = providers.get::<PythonApp>() {
            apps.push((label.clone(), app));
        }
        parts.push((label.to_string(), tree.tree));
    }
    Ok((parts, apps))
}

/// The service as the templates see it.
fn service_context(
    cx: &Cx,
    svc: &ServiceSettings,
    package: &str,
    apps: &[(Label, &PythonApp)],
    label: &Label,
    at: Location,
) -> Result<ServiceContext, RulesError> {
    let Some((_, app)) = apps.iter().find(|(l, _)| l == label) else {
        return Err(RulesError::Invalid {
            message: format!("the service's app {label} must be a python_app target"),
            location: at,
        });
    };
    let server = *svc.server.get_ref();
    let worker = match (server, svc.worker_class.as_ref()) {
        (_, Some(w)) => Some(w.get_ref().clone()),
        // uvicorn's worker moved to its own distribution; either provides it.
        (Server::GunicornUvicorn, None) if app.requires("uvicorn-worker") => {
            Some("uvicorn_worker.UvicornWorker".into())
        }
        (Server::GunicornUvicorn, None) => Some("uvicorn.workers.UvicornWorker".into()),
        _ => None,
    };
    // What the service needs installed: the server, and the worker class's distribution.
    let worker_dist = worker.as_deref().and_then(|w| w.split('.').next()).map(|m| m.replace('_', "-"));
    let needs = svc.command.is_none().then(|| server.name().to_string()).into_iter().chain(worker_dist);
    for need in needs {
        let need = need.as_str();
        if !app.requires(&hb_python::normalize(need)) {
            return Err(RulesError::Invalid {
                message: format!(
                    "the service runs {need}, but {label} does not depend on it: add \"{need}\" to [project] dependencies in {} and run `hb lock {label}`",
                    app.pyproject
                ),
                location: at,
            });
        }
    }
    if svc.user.is_none() && !hb_config::build_file::valid_system_user(package) {
        return Err(RulesError::Invalid {
            message: format!(
                "the package name `{package}` is not a valid system user name; set `user` in [deb.service]"
            ),
            location: cx.target.location.clone(),
        });
    }
    let Ok(ip) = svc.bind.get_ref().parse::<std::net::IpAddr>() else {
        return Err(cx.invalid(svc.bind.span(), "`bind` must be an IP address"));
    };
    let port = *svc.port.get_ref();
    let bind = match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    let logging_path = format!("/etc/{package}/logging.conf");
    let (workers, module) = (*svc.workers.get_ref(), &app.entry_point);
    let (config_path, state_dir) = (format!("/etc/{package}/config.cfg"), format!("/var/lib/{package}"));
    let mut options = String::new();
    for (key, value) in &svc.options {
        let flag = format!("--{}", key.replace('_', "-"));
        match value.get_ref() {
            OptionValue::Flag(true) => options.push_str(&format!(" {flag}")),
            OptionValue::Flag(false) => {}
            OptionValue::Integer(i) => options.push_str(&format!(" {flag} {i}")),
            OptionValue::Float(f) => options.push_str(&format!(" {flag} {f}")),
            OptionValue::Text(t) => options.push_str(&format!(" {flag} {t}")),
        }
    }
    let (command, args, server_name) = match (&svc.command, server) {
        (Some(argv), _) => {
            let mut expanded = Vec::new();
            for arg in argv.get_ref() {
                let value = placeholders::expand(arg.get_ref(), COMMAND_PLACEHOLDERS, |name| {
                    Ok(match name {
                        "prefix" => app.prefix.clone(),
                        "bind" => bind.clone(),
                        "host" => ip.to_string(),
                        "port" => port.to_string(),
                        "workers" => workers.to_string(),
                        "config" => config_path.clone(),
                        _ => module.clone(),
                    })
                })
                .map_err(|why| cx.invalid(arg.span(), why))?;
                expanded.push(value);
            }
            let Some((program, rest)) = expanded.split_first() else {
                return Err(cx.invalid(argv.span(), "`command` is empty: give the program and its arguments"));
            };
            if !program.starts_with('/') {
                return Err(cx.invalid(
                    argv.span(),
                    format!("the program `{program}` must be an absolute path, like \"{{prefix}}/bin/hypercorn\""),
                ));
            }
            let name = program.rsplit('/').next().unwrap_or(program).to_string();
            (program.clone(), rest.join(" "), name)
        }
        (None, Server::Gunicorn | Server::GunicornUvicorn) => {
            let worker = worker.map(|w| format!(" --worker-class {w}")).unwrap_or_default();
            let args = format!(
                "--bind {bind} --workers {workers}{worker}{options} --log-config {logging_path} --chdir / {module}"
            );
            (format!("{}/bin/{}", app.prefix, server.name()), args, server.name().to_string())
        }
        (None, Server::Uvicorn) => {
            let args = format!(
                "--host {ip} --port {port} --workers {workers}{options} --log-config {logging_path} --app-dir / {module}"
            );
            (format!("{}/bin/{}", app.prefix, server.name()), args, server.name().to_string())
        }
    };
    let user = svc.user.as_ref().map_or_else(|| package.to_string(), |u| u.get_ref().clone());
    let mut hooks = Vec::new();
    for hook in &svc.on_configure {
        let command = placeholders::expand(hook.get_ref(), HOOK_PLACEHOLDERS, |name| {
            Ok(match name {
                "prefix" => app.prefix.clone(),
                "config" => config_path.clone(),
                "state" => state_dir.clone(),
                "bind" => ip.to_string(),
                _ => port.to_string(),
            })
        })
        .map_err(|why| cx.invalid(hook.span(), why))?;
        hooks.push(service::Hook { quoted: service::shell_quote(&command), command });
    }
    Ok(ServiceContext {
        hooks,
        config_mode: svc.config_mode.as_ref().map(|m| format!("{:0>4}", m.get_ref())),
        config_group: svc.config_group.as_ref().map_or_else(|| user.clone(), |g| g.get_ref().clone()),
        secrets: svc.secrets.iter().map(|s| s.get_ref().clone()).collect(),
        user,
        bind,
        host: ip.to_string(),
        port,
        workers,
        server: server_name,
        custom_command: svc.command.is_some(),
        command,
        args,
        module: module.clone(),
        prefix: app.prefix.clone(),
        environment: svc.environment.iter().map(|(k, v)| (k.clone(), v.get_ref().clone())).collect(),
        config_path,
        logging_path,
        log_dir: format!("/var/log/{package}"),
        state_dir,
        pidfile: format!("/run/{package}.pid"),
        run_dir: format!("/run/{package}"),
        unit: format!("{package}.service"),
        unit_dir: cx.platform.systemd_unit_dir.to_string(),
        hardening: svc.hardening,
    })
}

/// The control fields known while planning (the C library dependency is added by
/// `deb_control` from the venvs' facts).
fn control_meta(cx: &Cx, d: &DebAttrs, package: &str, python: bool, service: bool) -> DebMeta {
    let platform = cx.platform;
    let mut depends = Vec::new();
    if python {
        depends.extend(platform.python_depends());
    }
    let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if service {
        depends.extend(strings(platform.service_depends));
    }
    depends.extend(d.depends.iter().map(|s| s.get_ref().clone()));
    DebMeta {
        package: package.to_string(),
        version: d.version.get_ref().clone(),
        architecture: platform.architecture.to_string(),
        maintainer: d.maintainer.get_ref().clone(),
        pre_depends: if service { strings(platform.service_pre_depends) } else { Vec::new() },
        depends,
        section: d.section.clone(),
        priority: d.priority.clone(),
        homepage: d.homepage.clone(),
        description: d.description.get_ref().clone(),
    }
}

fn check_control(pkg: &Package, d: &DebAttrs) -> Result<(), ConfigError> {
    use hb_config::build_file::{check_debian_version, valid_debian_package_name};
    if let Some(name) = &d.package
        && !valid_debian_package_name(name.get_ref())
    {
        return Err(pkg.error(
            name.span(),
            "Debian package names are lowercase letters, digits, `+`, `-` and `.`, start with a letter or digit, and are at least 2 characters long",
        ));
    }
    if let Err(why) = check_debian_version(d.version.get_ref()) {
        return Err(pkg.error(d.version.span(), format!("invalid Debian version: {why}")));
    }
    if d.description.get_ref().lines().next().is_none_or(|l| l.trim().is_empty()) {
        return Err(pkg.error(d.description.span(), "the description's first line (the synopsis) must not be empty"));
    }
    if !valid_maintainer(d.maintainer.get_ref()) {
        return Err(pkg.error(
            d.maintainer.span(),
            "`maintainer` must be a name and an email address on one line, like \"Jane Doe <jane@example.org>\"",
        ));
    }
    // What dpkg would refuse in the control file, refused here with its location.
    let fields = [
        ("Description", d.description.span(), Some(d.description.get_ref())),
        ("Section", d.name.span(), Some(&d.section)),
        ("Priority", d.name.span(), Some(&d.priority)),
        ("Homepage", d.name.span(), d.homepage.as_ref()),
    ];
    for (field, span, value) in fields {
        if let Some(v) = value
            && let Err(e) = hb_deb::render_control(&[(field.to_string(), v.clone())])
        {
            return Err(pkg.error(span, e.to_string()));
        }
    }
    for dep in &d.depends {
        if dep.get_ref().trim().is_empty() || dep.get_ref().contains('\n') || dep.get_ref().contains(',') {
            return Err(pkg.error(
                dep.span(),
                "each `depends` entry is one relation, like \"curl (>= 7.88)\" (alternatives with `|`)",
            ));
        }
        if let Err(why) = hb_config::build_file::check_relation(dep.get_ref().trim()) {
            return Err(pkg.error(dep.span(), format!("invalid relation: {why}")));
        }
    }
    Ok(())
}

/// `Name <user@host>`, as Debian policy 5.6.2 asks (lintian: malformed-contact).
fn valid_maintainer(m: &str) -> bool {
    let Some((name, rest)) = m.split_once('<') else { return false };
    let Some(email) = rest.strip_suffix('>') else { return false };
    let email_ok = email.split_once('@').is_some_and(|(u, h)| !u.is_empty() && !h.is_empty())
        && !email.contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
    !name.trim().is_empty() && !name.contains(['>', '\n']) && email_ok
}

/// `config_mode`: three or four octal digits, no set-id or sticky bits, not writable
/// by others; `config_group`: a system group name; `secrets`: distinct plain names.
fn check_config_and_secrets(pkg: &Package, s: &ServiceSettings) -> Result<(), ConfigError> {
    if let Some(m) = &s.config_mode {
        let digits = m.get_ref().strip_prefix('0').filter(|d| d.len() == 3).unwrap_or(m.get_ref());
        let mode = (digits.len() == 3 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .then(|| u32::from_str_radix(digits, 8).ok())
            .flatten();
        match mode {
            None => return Err(pkg.error(m.span(), "`config_mode` is an octal mode like \"0640\"")),
            Some(mode) if mode & 0o002 != 0 => {
                return Err(pkg.error(m.span(), "`config_mode` may not let every user write the config file"));
            }
            Some(mode) if mode & 0o400 == 0 => {
                return Err(pkg.error(m.span(), "`config_mode` must let root read the config file"));
            }
            Some(_) => {}
        }
    }
    if let Some(g) = &s.config_group {
        if s.config_mode.is_none() {
            return Err(pkg.error(g.span(), "`config_group` goes with `config_mode`, e.g. config_mode = \"0640\""));
        }
        if !hb_config::build_file::valid_system_user(g.get_ref()) {
            return Err(pkg.error(g.span(), "`config_group` is a system group name, like the service user's"));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for secret in &s.secrets {
        let name = secret.get_ref();
        let plain = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !plain {
            return Err(pkg.error(
                secret.span(),
                "a secret is a plain file name in /var/lib/NAME (letters, digits, `.`, `_`, `-`), like \"secret_key\"",
            ));
        }
        if !seen.insert(name) {
            return Err(pkg.error(secret.span(), format!("secret `{name}` is listed twice")));
        }
    }
    Ok(())
}

fn check_service(pkg: &Package, s: &ServiceSettings) -> Result<(), ConfigError> {
    if let Some(argv) = &s.command {
        if s.server.span() != (0..0) {
            return Err(pkg.error(
                s.server.span(),
                "`server` and `command` exclude each other: `command` is the whole server command line",
            ));
        }
        if let Some(w) = &s.worker_class {
            return Err(
                pkg.error(w.span(), "`worker_class` is a gunicorn setting; with `command`, write it in the command")
            );
        }
        if let Some((key, v)) = s.options.iter().next() {
            return Err(pkg.error(
                v.span(),
                format!("`options` ({key}) are gunicorn's or uvicorn's; with `command`, write them in the command"),
            ));
        }
        if argv.get_ref().is_empty() {
            return Err(pkg.error(argv.span(), "`command` is empty: give the program and its arguments"));
        }
        for arg in argv.get_ref() {
            placeholders::split(arg.get_ref(), COMMAND_PLACEHOLDERS).map_err(|why| pkg.error(arg.span(), why))?;
            if !plain_argument(arg.get_ref()) {
                return Err(pkg.error(
                    arg.span(),
                    "a server argument may not be empty or hold white space, quotes, `\\`, `$`, `%`, `;`, `&`, `|`, `<`, `>`, `*`, `?` or backticks (the init script and systemd split the command line without a shell)",
                ));
            }
        }
    }
    for (key, value) in &s.options {
        let key_ok = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !key_ok || key.starts_with('-') {
            return Err(pkg.error(
                value.span(),
                format!("option `{key}`: names are like `timeout` or `max-requests`, written without `--`"),
            ));
        }
        let managed = ["bind", "workers", "worker-class", "log-config", "chdir", "host", "port", "app-dir"];
        if managed.contains(&key.replace('_', "-").as_str()) {
            return Err(
                pkg.error(value.span(), format!("option `{key}` is set by hb from [deb.service]; use its own setting"))
            );
        }
        if let OptionValue::Text(t) = value.get_ref()
            && !plain_argument(t)
        {
            return Err(pkg.error(value.span(), format!("option `{key}`: the value may not be empty or hold white space, quotes, `$`, `%` or shell characters")));
        }
        if let OptionValue::Float(f) = value.get_ref()
            && !f.is_finite()
        {
            return Err(pkg.error(value.span(), format!("option `{key}`: a number, not {f}")));
        }
    }
    if let Some(w) = &s.worker_class {
        if *s.server.get_ref() != Server::Gunicorn {
            return Err(pkg.error(
                w.span(),
                "`worker_class` is a setting of `server = \"gunicorn\"` (gunicorn-uvicorn sets it, uvicorn has none)",
            ));
        }
        let ok = !w.get_ref().is_empty() && w.get_ref().split('.').all(hb_config::build_file::is_identifier);
        if !ok {
            return Err(
                pkg.error(w.span(), "`worker_class` is a dotted Python path, like \"uvicorn.workers.UvicornWorker\"")
            );
        }
    }
    if s.bind.get_ref().parse::<std::net::IpAddr>().is_err() {
        return Err(pkg.error(s.bind.span(), "`bind` must be an IP address, like \"127.0.0.1\" or \"::1\""));
    }
    if *s.port.get_ref() == 0 {
        return Err(pkg.error(s.port.span(), "`port` must be between 1 and 65535"));
    }
    if !(1..=1024).contains(s.workers.get_ref()) {
        return Err(pkg.error(s.workers.span(), "`workers` must be between 1 and 1024"));
    }
    if let Some(user) = &s.user
        && !hb_config::build_file::valid_system_user(user.get_ref())
    {
        return Err(pkg.error(
            user.span(),
            "adduser refuses this system user name: use lowercase letters, digits, `_` and `-`, starting with a letter or `_`, at most 32 characters",
        ));
    }
    check_config_and_secrets(pkg, s)?;
    for hook in &s.on_configure {
        if hook.get_ref().trim().is_empty() || hook.get_ref().contains('\0') {
            return Err(pkg.error(hook.span(), "an `on_configure` command is a non-empty shell command line"));
        }
        placeholders::split(hook.get_ref(), HOOK_PLACEHOLDERS).map_err(|why| pkg.error(hook.span(), why))?;
    }
    for (key, value) in &s.environment {
        let ok_key = key.bytes().next().is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok_key {
            return Err(pkg.error(
                value.span(),
                format!("environment variable `{key}`: names are uppercase letters, digits and `_`"),
            ));
        }
        if value.get_ref().chars().any(|c| matches!(c, '"' | '\\' | '$' | '`' | '\n' | '\r')) {
            return Err(pkg.error(
                value.span(),
                format!("environment variable `{key}`: the value may not contain quotes, backslashes, `$`, backticks or newlines (it is read by sh and by systemd)"),
            ));
        }
    }
    Ok(())
}
