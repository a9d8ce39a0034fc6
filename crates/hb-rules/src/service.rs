//! Generated package files, rendered from the templates in `rules/deb/` (embedded at
//! compile time) with minijinja, every variable strict: the service's `/etc` files, init
//! script and systemd unit, the copyright file and changelog, and the maintainer
//! scripts. A package can override any template with a file of its own
//! (`[deb.templates]`). Rendering happens while planning, so a bad template or setting is
//! reported with its BUILD.toml location before anything builds; the rendered bytes are
//! the arguments of a pure `render` action (`actions::render`).

use hb_config::{Location, Package};
use serde::Serialize;

use crate::RulesError;
use crate::rules::deb::DebAttrs;

/// Template name → embedded source.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("changelog", include_str!("../../../rules/deb/changelog.j2")),
    ("config.cfg", include_str!("../../../rules/deb/config.cfg.j2")),
    ("copyright", include_str!("../../../rules/deb/copyright.j2")),
    ("default", include_str!("../../../rules/deb/default.j2")),
    ("init.d", include_str!("../../../rules/deb/init.d.j2")),
    ("lintian-overrides", include_str!("../../../rules/deb/lintian-overrides.j2")),
    ("logging.conf", include_str!("../../../rules/deb/logging.conf.j2")),
    ("postinst", include_str!("../../../rules/deb/postinst.j2")),
    ("postrm", include_str!("../../../rules/deb/postrm.j2")),
    ("prerm", include_str!("../../../rules/deb/prerm.j2")),
    ("systemd.service", include_str!("../../../rules/deb/systemd.service.j2")),
];

/// The service as templates see it.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceContext {
    pub user: String,
    /// `host:port` as gunicorn takes it (`[::1]:8000` for IPv6).
    pub bind: String,
    /// The address alone (`::1`) and the port.
    pub host: String,
    pub port: u16,
    pub workers: u32,
    /// The server program: `gunicorn` (WSGI, or ASGI with an ASGI worker class) or
    /// `uvicorn` (ASGI).
    pub server: String,
    /// The server is the package's own `command`: its output goes to the log file.
    pub custom_command: bool,
    /// The server's executable in the virtualenv.
    pub command: String,
    /// Its arguments, one line (bind, workers, logging, the app).
    pub args: String,
    /// Entry point, `module:attribute`.
    pub module: String,
    /// The app's virtualenv.
    pub prefix: String,
    pub environment: Vec<(String, String)>,
    pub config_path: String,
    pub logging_path: String,
    pub log_dir: String,
    /// State directory (`/var/lib/NAME`), owned by the service user.
    pub state_dir: String,
    pub pidfile: String,
    /// Runtime directory, owned by the service user; also its HOME.
    pub run_dir: String,
    pub unit: String,
    /// Where the platform installs systemd units, relative to `/`.
    pub unit_dir: String,
    /// The systemd unit confines the service (see rules/deb/systemd.service.j2).
    pub hardening: bool,
    /// The config file's mode (four octal digits) and group, when not 0644 root:root.
    pub config_mode: Option<String>,
    pub config_group: String,
    /// Secrets generated at configure in the state directory (file names).
    pub secrets: Vec<String>,
    /// Commands run at configure as the service user (`on_configure`).
    pub hooks: Vec<Hook>,
}

/// An `on_configure` command.
#[derive(Clone, Debug, Serialize)]
pub struct Hook {
    /// As written, placeholders replaced.
    pub command: String,
    /// The same as one single-quoted shell word.
    pub quoted: String,
}

/// `text` as one shell word in single quotes (`'` written as `'\''`).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[derive(Serialize)]
struct PythonContext<'a> {
    prefixes: &'a [String],
}

#[derive(Serialize)]
struct Context<'a> {
    package: &'a str,
    version: &'a str,
    maintainer: &'a str,
    synopsis: &'a str,
    homepage: Option<&'a str>,
    env_prefix: String,
    license: &'a str,
    year: i64,
    date: String,
    python: PythonContext<'a>,
    service: Option<&'a ServiceContext>,
}

/// What rendering gives the deb: files for the data member and maintainer scripts.
pub struct Rendered {
    pub files: Vec<(String, u32, Vec<u8>)>,
    pub scripts: Vec<(String, String)>,
}

/// Settings a render needs beyond the deb rule itself.
pub struct RenderInput<'a> {
    pub package: &'a str,
    pub version: &'a str,
    pub maintainer: &'a str,
    pub synopsis: &'a str,
    pub mtime: u64,
    pub python_prefixes: &'a [String],
    pub service: Option<&'a ServiceContext>,
}

/// Every template's text and where it comes from: the embedded one (located at the
/// rule) or the package's override. Unknown names and unreadable files are the
/// package's mistakes, reported at the override.
fn template_sources(pkg: &Package, d: &DebAttrs) -> Result<Vec<(&'static str, Text, Location)>, RulesError> {
    let at_rule = pkg.locate(d.name.span());
    let mut sources: Vec<(&str, Text, Location)> =
        TEMPLATES.iter().map(|(n, s)| (*n, Text::Builtin(s), at_rule.clone())).collect();
    for (name, file) in &d.templates {
        let at = pkg.locate(file.span());
        let Some(slot) = sources.iter_mut().find(|(n, _, _)| n == name) else {
            let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
            return Err(RulesError::Invalid {
                message: format!("no template named `{name}`; templates: {}", known.join(", ")),
                location: at,
            });
        };
        let text = hb_fs::read_to_string(&pkg.dir.join(file.get_ref()))
            .map_err(|e| RulesError::Invalid { message: e.to_string(), location: at.clone() })?;
        *slot = (slot.0, Text::Own(text), at);
    }
    Ok(sources)
}

/// A template's text: hb's own, or a package's override read from its file.
enum Text {
    Builtin(&'static str),
    Own(String),
}

/// A template compiled once per process: each distinct text (the built-in one, or a
/// package's own) has an environment holding only it, under its file name. Built-in
/// texts are known by name alone (not hashed at every plan).
fn compiled(name: &str, text: &Text) -> Result<std::sync::Arc<minijinja::Environment<'static>>, minijinja::Error> {
    type Compiled =
        std::collections::BTreeMap<(String, Option<hb_store::Digest>), std::sync::Arc<minijinja::Environment<'static>>>;
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Compiled>> = std::sync::OnceLock::new();
    let (key, text) = match text {
        Text::Builtin(t) => ((name.to_string(), None), *t),
        Text::Own(t) => ((name.to_string(), Some(hb_store::Digest::of(t.as_bytes()))), t.as_str()),
    };
    let cache = CACHE.get_or_init(Default::default);
    if let Some(env) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(env.clone());
    }
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template_owned(name.to_string(), text.to_string())?;
    let env = std::sync::Arc::new(env);
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, env.clone());
    Ok(env)
}

/// Renders every generated file of a deb.
pub fn render(pkg: &Package, d: &DebAttrs, input: &RenderInput) -> Result<Rendered, RulesError> {
    let at_rule = pkg.locate(d.name.span());
    let sources = template_sources(pkg, d)?;
    let (year, date) = rfc2822(input.mtime);
    let package = input.package;
    let ctx = Context {
        package,
        version: input.version,
        maintainer: input.maintainer,
        synopsis: input.synopsis,
        homepage: d.homepage.as_deref(),
        env_prefix: package.to_uppercase().replace(['-', '.', '+'], "_"),
        license: d.license.as_deref().unwrap_or("proprietary"),
        year,
        date,
        python: PythonContext { prefixes: input.python_prefixes },
        service: input.service,
    };
    let render_one = |name: &str| -> Result<String, RulesError> {
        let Some((_, text, at)) = sources.iter().find(|(n, _, _)| *n == name) else {
            return Err(RulesError::Invalid {
                message: format!("no template `{name}` (a bug in hb)"),
                location: at_rule.clone(),
            });
        };
        let how = |e: minijinja::Error| RulesError::Invalid {
            message: format!("template `{name}` does not render: {e}"),
            location: at.clone(),
        };
        let env = compiled(name, text).map_err(how)?;
        let tmpl = env.get_template(name).map_err(how)?;
        tmpl.render(&ctx).map_err(how)
    };

    let mut files: Vec<(String, u32, Vec<u8>)> = Vec::new();
    if let Some(svc) = input.service {
        // The app's own config file, when given, is installed by a files action instead.
        if d.service.as_ref().is_some_and(|s| s.config.is_none()) {
            files.push((format!("etc/{package}/config.cfg"), 0o644, render_one("config.cfg")?.into_bytes()));
        }
        files.push((format!("etc/{package}/logging.conf"), 0o644, render_one("logging.conf")?.into_bytes()));
        files.push((format!("etc/default/{package}"), 0o644, render_one("default")?.into_bytes()));
        files.push((format!("etc/init.d/{package}"), 0o755, render_one("init.d")?.into_bytes()));
        files.push((format!("{}/{}", svc.unit_dir, svc.unit), 0o644, render_one("systemd.service")?.into_bytes()));
    }
    if !input.python_prefixes.is_empty() {
        let text = render_one("lintian-overrides")?;
        files.push((format!("usr/share/lintian/overrides/{package}"), 0o644, text.trim_start().as_bytes().to_vec()));
    }
    if d.copyright.is_none() {
        files.push((format!("usr/share/doc/{package}/copyright"), 0o644, render_one("copyright")?.into_bytes()));
    }
    // Debian names a native package's changelog changelog.gz, others changelog.Debian.gz.
    let native = !input.version.contains('-');
    let changelog = if native { "changelog.gz" } else { "changelog.Debian.gz" };
    // Compressed when the render action runs (a `.gz` path), not at every plan.
    let text = render_one("changelog")?;
    files.push((format!("usr/share/doc/{package}/{changelog}"), 0o644, text.into_bytes()));

    let mut scripts = Vec::new();
    for name in ["preinst", "postinst", "prerm", "postrm"] {
        let generated = if name == "preinst" { None } else { Some(render_one(name)?) };
        let own = d.scripts.given().find(|(n, _)| *n == name).map(|(_, f)| f);
        let text = match (own, generated) {
            (Some(file), generated) => with_own_script(pkg, name, file, generated.as_deref())?,
            (None, Some(generated)) => generated,
            (None, None) => continue,
        };
        scripts.push((name.to_string(), text));
    }
    Ok(Rendered { files, scripts })
}

/// The line of a package's own maintainer script where hb's part goes.
pub const HB_TOKEN: &str = "#HB#";

/// A package's own maintainer script with hb's `generated` one in place of its `#HB#`
/// line, run in a subshell so that its `exit 0` ends only hb's part, and its failure
/// ends the whole script with its status.
fn with_own_script(
    pkg: &Package,
    name: &str,
    file: &toml::Spanned<String>,
    generated: Option<&str>,
) -> Result<String, RulesError> {
    let at = pkg.locate(file.span());
    let invalid = |message: String| RulesError::Invalid { message, location: at.clone() };
    let text = hb_fs::read_to_string(&pkg.dir.join(file.get_ref())).map_err(|e| invalid(e.to_string()))?;
    if !text.starts_with("#!") {
        return Err(invalid(format!(
            "the {name} script `{}` must start with an interpreter line, like `#!/bin/sh`",
            file.get_ref()
        )));
    }
    let tokens = text.lines().filter(|l| l.trim() == HB_TOKEN).count();
    match (tokens, generated) {
        (0, Some(_)) => {
            return Err(invalid(format!(
                "the {name} script `{}` has no `{HB_TOKEN}` line: hb's own {name} (the service user, directories, starting and stopping the service, bytecode) goes there; add a line `{HB_TOKEN}` where it should run",
                file.get_ref()
            )));
        }
        (n, _) if n > 1 => {
            return Err(invalid(format!(
                "the {name} script `{}` has {n} `{HB_TOKEN}` lines; keep one",
                file.get_ref()
            )));
        }
        _ => {}
    }
    let mut out = String::with_capacity(text.len() + generated.map_or(0, str::len) + 200);
    for line in text.split_inclusive('\n') {
        if line.trim() != HB_TOKEN {
            out.push_str(line);
            continue;
        }
        let Some(generated) = generated else {
            continue;
        };
        out.push_str(&format!("# Generated by hb: its {name}, run in a subshell.\n(\n"));
        for g in generated.lines() {
            if !g.starts_with("#!") {
                out.push_str(g);
                out.push('\n');
            }
        }
        // Not `( … ) || exit`: a tested subshell would run with `set -e` ignored.
        out.push_str(")\nhb_status=$?; [ \"$hb_status\" -eq 0 ] || exit \"$hb_status\"\n# End of hb's part.\n");
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// `(year, "Thu, 01 Jan 1970 00:00:00 +0000")` for a Unix time, in UTC.
pub fn rfc2822(t: u64) -> (i64, String) {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let date = format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        months[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    (year, date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), (1970, "Thu, 01 Jan 1970 00:00:00 +0000".to_string()));
        assert_eq!(rfc2822(1_700_000_000), (2023, "Tue, 14 Nov 2023 22:13:20 +0000".to_string()));
        assert_eq!(rfc2822(951_782_400), (2000, "Tue, 29 Feb 2000 00:00:00 +0000".to_string()));
    }
}
