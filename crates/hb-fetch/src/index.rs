//! The native fetcher: a locked file straight from the package index the user has
//! configured, through the simple repository API (PEP 691 JSON, or PEP 503 HTML), with
//! hb's own HTTP client. The file streams to disk while it is hashed and is kept only if
//! its sha256 is the lock's.
//!
//! The index comes from the user's configuration, never from hb: `PIP_INDEX_URL` and
//! `PIP_EXTRA_INDEX_URL`, else `UV_DEFAULT_INDEX` / `UV_INDEX_URL` and `UV_INDEX` /
//! `UV_EXTRA_INDEX_URL`, else pip's configuration files as `pip config list` reports
//! them (its environment's `PIP_` variables over `[download]` over `[global]`).
//! Credentials come from the URL's user information or from netrc (`NETRC`, else
//! `~/.netrc`). With no index configured, [`Index::configured`] is `None`, and
//! [`Index::for_fetching`] asks pip for the index it would use by default (pip's own
//! code, never a host written here): locked files are fetched by hb, never by pip,
//! whose download of an sdist runs the sdist's build backend. `PIP_NO_INDEX` means no
//! index at all. TLS is verified against pip's certificate bundle when one is set
//! (`PIP_CERT`, pip's `cert`, `REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`), as pip verifies
//! it, else against the built-in roots.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::Digest as _;

use crate::{FetchError, LockedFile, Pip};

/// The indexes to fetch from, in order.
pub struct Index {
    urls: Vec<url::Url>,
    netrc: Vec<NetrcEntry>,
    agent: ureq::Agent,
}

/// One `machine` (or `default`) entry of a netrc file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetrcEntry {
    /// `None` for `default`.
    pub machine: Option<String>,
    pub login: String,
    pub password: String,
}

/// Parses a netrc file: `machine HOST login USER password PASS`, `default …`, `macdef`
/// bodies skipped (they end at an empty line).
pub fn parse_netrc(text: &str) -> Vec<NetrcEntry> {
    let mut out: Vec<NetrcEntry> = Vec::new();
    let mut lines = text.lines();
    let mut current: Option<NetrcEntry> = None;
    while let Some(line) = lines.next() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            match w {
                "machine" | "default" => {
                    if let Some(c) = current.take() {
                        out.push(c);
                    }
                    let machine = if w == "machine" { words.next().map(str::to_string) } else { None };
                    current = Some(NetrcEntry { machine, login: String::new(), password: String::new() });
                }
                "login" | "password" | "account" => {
                    let value = words.next().unwrap_or_default().to_string();
                    if let Some(c) = current.as_mut() {
                        match w {
                            "login" => c.login = value,
                            "password" => c.password = value,
                            _ => {}
                        }
                    }
                }
                "macdef" => {
                    // The macro's body runs to the next empty line.
                    for l in lines.by_ref() {
                        if l.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                w if w.starts_with('#') => break,
                _ => {}
            }
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

/// A URL as it may appear in messages: no user information.
pub fn redact(u: &url::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// The value of `key` (`cert`, say) in `pip config list` output, as pip would take it:
/// its environment's `PIP_` variables over `[download]`/`[install]` over `[global]`.
pub fn pip_config_value(listing: &str, key: &str) -> Option<String> {
    let mut best: (u8, Option<String>) = (0, None);
    for line in listing.lines() {
        let Some((k, value)) = line.split_once('=') else { continue };
        let Some((section, name)) = k.trim().rsplit_once('.') else { continue };
        let rank = match section {
            ":env:" => 3,
            "download" | "install" => 2,
            "global" => 1,
            _ => continue,
        };
        if name.replace('_', "-") == key && rank >= best.0 {
            best = (rank, Some(value.trim().trim_matches(|c| c == '\'' || c == '"').to_string()));
        }
    }
    best.1.filter(|v| !v.is_empty())
}

/// The certificate bundle pip verifies the index with, which hb's client trusts
/// instead of its built-in roots (as pip does): `PIP_CERT`, else pip's configured
/// `cert`, else `REQUESTS_CA_BUNDLE` or `SSL_CERT_FILE`. A machine whose TLS traffic
/// goes through an inspecting proxy has its authority there.
fn ca_bundle(listing: &mut dyn FnMut() -> String) -> Option<PathBuf> {
    env("PIP_CERT")
        .or_else(|| pip_config_value(&listing(), "cert"))
        .or_else(|| env("REQUESTS_CA_BUNDLE"))
        .or_else(|| env("SSL_CERT_FILE"))
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

/// The certificates of a PEM bundle (none if it cannot be read).
fn load_certs(path: &Path) -> Vec<ureq::tls::Certificate<'static>> {
    let Ok(pem) = std::fs::read(path) else { return Vec::new() };
    ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect()
}

/// Index URLs from `pip config list` output (`section.key='value'` lines).
pub fn pip_config_indexes(listing: &str) -> (Option<String>, Vec<String>) {
    let mut main: (u8, Option<String>) = (0, None);
    let mut extra: (u8, Vec<String>) = (0, Vec::new());
    for line in listing.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = value.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
        let Some((section, name)) = key.trim().rsplit_once('.') else { continue };
        // `:env:` lines are the PIP_ variables pip sees (its interpreter's environment
        // may set them), which win over a command's own section, which wins over
        // `global`.
        let rank = match section {
            ":env:" => 3,
            "download" | "install" => 2,
            "global" => 1,
            _ => continue,
        };
        match name.replace('_', "-").as_str() {
            "index-url" if rank >= main.0 => main = (rank, Some(value)),
            "extra-index-url" if rank >= extra.0 => {
                extra = (rank, value.split_whitespace().map(str::to_string).collect());
            }
            _ => {}
        }
    }
    (main.1, extra.1)
}

impl Index {
    /// The indexes the user configured, asked once per process; `None` when none is.
    pub fn configured(pip: &Pip) -> Option<&'static Index> {
        static INDEX: OnceLock<Option<Index>> = OnceLock::new();
        INDEX.get_or_init(|| Index::from_configuration(pip, false)).as_ref()
    }

    /// The indexes locked files are fetched from: the configured ones, else the one
    /// pip uses by default (asked once per process); `None` only with `PIP_NO_INDEX`,
    /// or when pip cannot be asked.
    pub fn for_fetching(pip: &Pip) -> Option<&'static Index> {
        static INDEX: OnceLock<Option<Index>> = OnceLock::new();
        INDEX.get_or_init(|| Index::from_configuration(pip, true)).as_ref()
    }

    fn from_configuration(pip: &Pip, pips_default: bool) -> Option<Index> {
        if env("PIP_NO_INDEX").is_some_and(|v| !matches!(v.as_str(), "0" | "false" | "no" | "off")) {
            return None;
        }
        let split = |v: Option<String>| -> Vec<String> {
            v.map(|v| v.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
        };
        let mut urls: Vec<String> = Vec::new();
        // `pip config list`, asked at most once.
        let mut listed: Option<String> = None;
        let mut listing = || listed.get_or_insert_with(|| pip.config_list().unwrap_or_default()).clone();
        if let Some(main) = env("PIP_INDEX_URL") {
            urls.push(main);
            urls.extend(split(env("PIP_EXTRA_INDEX_URL")));
        } else if let Some(main) = env("UV_DEFAULT_INDEX").or_else(|| env("UV_INDEX_URL")) {
            // uv asks its `UV_INDEX` entries before the default one.
            urls.extend(
                split(env("UV_INDEX")).into_iter().map(|u| u.split_once('=').map_or(u.clone(), |(_, v)| v.to_string())),
            );
            urls.extend(split(env("UV_EXTRA_INDEX_URL")));
            urls.push(main);
        } else {
            let (main, extra) = pip_config_indexes(&listing());
            // Extra indexes alone do not say where the main one is: pip's default.
            let main = match main {
                Some(main) => main,
                None if pips_default => pip.default_index()?,
                None => return None,
            };
            urls.push(main);
            urls.extend(extra);
            urls.extend(split(env("PIP_EXTRA_INDEX_URL")));
        }
        let urls: Vec<url::Url> = urls
            .iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .collect();
        if urls.is_empty() {
            return None;
        }
        let netrc_path = env("NETRC").map(PathBuf::from).or_else(|| env("HOME").map(|h| Path::new(&h).join(".netrc")));
        let netrc =
            netrc_path.and_then(|p| std::fs::read_to_string(p).ok()).map(|t| parse_netrc(&t)).unwrap_or_default();
        let timeout = env("PIP_DEFAULT_TIMEOUT").or_else(|| env("PIP_TIMEOUT")).and_then(|t| t.parse::<f64>().ok());
        let timeout =
            Duration::from_secs_f64(timeout.filter(|t| t.is_finite() && *t > 0.0 && *t < 3600.0).unwrap_or(15.0));
        let certs = ca_bundle(&mut listing).map(|p| load_certs(&p)).unwrap_or_default();
        let roots =
            if certs.is_empty() { ureq::tls::RootCerts::WebPki } else { ureq::tls::RootCerts::new_with_certs(&certs) };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .timeout_recv_response(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Some(Index { urls, netrc, agent })
    }

    /// The indexes, without credentials (for messages).
    pub fn describe(&self) -> String {
        self.urls.iter().map(redact).collect::<Vec<_>>().join(", ")
    }

    /// Basic credentials for `u`: its own user information, the index's when `u` is on
    /// the index's host, else netrc's entry for the host.
    fn credentials(&self, u: &url::Url, index: &url::Url) -> Option<(String, String)> {
        let own = |x: &url::Url| {
            (!x.username().is_empty())
                .then(|| (percent_decode(x.username()), x.password().map(percent_decode).unwrap_or_default()))
        };
        if let Some(c) = own(u) {
            return Some(c);
        }
        if u.host_str() == index.host_str()
            && let Some(c) = own(index)
        {
            return Some(c);
        }
        let host = u.host_str()?;
        self.netrc
            .iter()
            .find(|e| e.machine.as_deref() == Some(host))
            .or_else(|| self.netrc.iter().find(|e| e.machine.is_none()))
            .map(|e| (e.login.clone(), e.password.clone()))
    }

    fn get(&self, u: &url::Url, index: &url::Url, accept: &str) -> Result<ureq::http::Response<ureq::Body>, String> {
        let mut clean = u.clone();
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        let mut req = self.agent.get(clean.as_str()).header("Accept", accept);
        if let Some((user, pass)) = self.credentials(u, index) {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            req = req.header("Authorization", format!("Basic {token}"));
        }
        req.call().map_err(|e| e.to_string())
    }

    /// Fetches `f` into `dest_dir` from the first index listing it, verified against
    /// the lock; nothing is left behind if the bytes differ.
    pub fn fetch(&self, f: &LockedFile, dest_dir: &Path) -> Result<PathBuf, FetchError> {
        let what = format!("{} ({} {})", f.file, f.name, f.version);
        self.fetch_file(&f.name, &f.file, Some(&f.sha256), &what, dest_dir).map(|(path, _)| path).map_err(|e| match e {
            Fail::Fetch(e) => e,
            Fail::Transport(detail) => {
                FetchError::NotFound { file: f.file.clone(), name: f.name.clone(), version: f.version.clone(), detail }
            }
        })
    }

    /// Fetches `file` of `project` into `dest_dir` from the first index listing it,
    /// verified against the sha256 the index lists for it, if any; returns its path
    /// and sha256. For `hb lock`, which has no lock to check against yet.
    pub fn fetch_listed(&self, project: &str, file: &str, dest_dir: &Path) -> Result<(PathBuf, String), FetchError> {
        self.fetch_file(project, file, None, file, dest_dir).map_err(|e| match e {
            Fail::Fetch(e) => e,
            Fail::Transport(detail) => FetchError::Other(format!("could not fetch {file}: {detail}")),
        })
    }

    /// Every file of `project` the indexes list: (file name, whether it is yanked).
    pub fn files(&self, project: &str) -> Result<Vec<(String, bool)>, String> {
        let mut out = Vec::new();
        for index in &self.urls {
            if let Some((_, links)) = self.project_page(index, &hb_python::normalize(project))? {
                out.extend(links.into_iter().map(|l| (l.name, l.yanked)));
            }
        }
        Ok(out)
    }

    /// `file` from the first index listing it, checked against `expected`, else against
    /// the sha256 the index lists.
    fn fetch_file(
        &self,
        project: &str,
        file: &str,
        expected: Option<&str>,
        what: &str,
        dest_dir: &Path,
    ) -> Result<(PathBuf, String), Fail> {
        let mut tried = Vec::new();
        let project = hb_python::normalize(project);
        for index in &self.urls {
            let Some((page_url, links)) = self.project_page(index, &project).map_err(Fail::Transport)? else {
                tried.push(format!("{} has no project {project}", redact(index)));
                continue;
            };
            let Some(link) = links.iter().find(|l| l.name == file) else {
                tried.push(format!("{} does not list it", redact(&page_url)));
                continue;
            };
            let file_url = page_url
                .join(&link.href)
                .map_err(|e| Fail::Transport(format!("{} links it as `{}`: {e}", redact(&page_url), link.href)))?;
            let expected = expected.or(link.sha256.as_deref());
            return self.download(file, expected, what, &file_url, index, dest_dir);
        }
        Err(Fail::Transport(tried.join("; ")))
    }

    /// The files a project's page on `index` lists (`None` if the index has no such
    /// project), with the page's URL to resolve their links against.
    fn project_page(&self, index: &url::Url, project: &str) -> Result<Option<(url::Url, Vec<Link>)>, String> {
        let base = index.as_str().trim_end_matches('/');
        let page_url = url::Url::parse(&format!("{base}/{project}/")).map_err(|e| format!("{}: {e}", redact(index)))?;
        let accept = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1";
        let resp = self
            .get(&page_url, index, accept)
            .map_err(|e| format!("the index {} cannot be reached: {e}", redact(index)))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(format!("the index {} answered {status} for {project}", redact(&page_url)));
        }
        let json = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("json"));
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(64 << 20)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading {}: {e}", redact(&page_url)))?;
        let links = if json { json_links(&body) } else { html_links(&String::from_utf8_lossy(&body)) };
        let links = links.map_err(|e| format!("{} is not a simple index page: {e}", redact(&page_url)))?;
        Ok(Some((page_url, links)))
    }

    /// Every file of `project` the configured indexes list with a sha256: (file name,
    /// sha256).
    pub fn listed_hashes(&self, project: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for index in &self.urls {
            if let Some((_, links)) = self.project_page(index, &hb_python::normalize(project))? {
                out.extend(links.into_iter().filter_map(|l| Some((l.name, l.sha256?))));
            }
        }
        Ok(out)
    }

    /// Streams `u` to `dest_dir/file` while hashing it; keeps it only if it matches
    /// `expected` (when given). Returns the path and the sha256.
    fn download(
        &self,
        file: &str,
        expected: Option<&str>,
        what: &str,
        u: &url::Url,
        index: &url::Url,
        dest_dir: &Path,
    ) -> Result<(PathBuf, String), Fail> {
        let mut file_url = u.clone();
        file_url.set_fragment(None);
        let shown = redact(&file_url);
        let resp = self.get(&file_url, index, "*/*").map_err(|e| Fail::Transport(format!("{shown}: {e}")))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Fail::Transport(format!("{shown} answered {status}")));
        }
        let path = dest_dir.join(file);
        let mut out = std::fs::File::create(&path)
            .map_err(|e| Fail::Fetch(FetchError::Other(format!("creating {}: {e}", path.display()))))?;
        let mut hasher = sha2::Sha256::new();
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = match reader.read(&mut buf) {
                Ok(k) => k,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(Fail::Transport(format!("reading {shown}: {e}")));
                }
            };
            if k == 0 {
                break;
            }
            let chunk = buf.get(..k).unwrap_or_default();
            hasher.update(chunk);
            if let Err(e) = out.write_all(chunk) {
                let _ = std::fs::remove_file(&path);
                return Err(Fail::Fetch(FetchError::Other(format!("writing {}: {e}", path.display()))));
            }
        }
        drop(out);
        let actual = hex::encode(hasher.finalize());
        if let Some(expected) = expected.filter(|e| !e.eq_ignore_ascii_case(&actual)) {
            let _ = std::fs::remove_file(&path);
            return Err(Fail::Fetch(FetchError::HashMismatch {
                file: what.to_string(),
                expected: expected.to_string(),
                actual,
                source_desc: shown,
            }));
        }
        Ok((path, actual))
    }
}

enum Fail {
    Fetch(FetchError),
    Transport(String),
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// A file a project page lists.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    name: String,
    href: String,
    /// From the page (PEP 691 `hashes`, or a PEP 503 `#sha256=` fragment).
    sha256: Option<String>,
    /// PEP 592: withdrawn by its publisher (`yanked`, `data-yanked`).
    yanked: bool,
}

/// Each file of a PEP 691 JSON page.
fn json_links(body: &[u8]) -> Result<Vec<Link>, String> {
    #[derive(serde::Deserialize)]
    struct Page {
        files: Vec<File>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        filename: String,
        url: String,
        #[serde(default)]
        hashes: std::collections::BTreeMap<String, String>,
        /// `false`, `true` or the reason (a string).
        #[serde(default)]
        yanked: serde_json::Value,
    }
    let page: Page = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(page
        .files
        .into_iter()
        .map(|f| Link {
            sha256: f.hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
            name: f.filename,
            href: f.url,
            yanked: !matches!(f.yanked, serde_json::Value::Null | serde_json::Value::Bool(false)),
        })
        .collect())
}

/// Each anchor of a PEP 503 HTML page: the name is the last path component of the
/// href, as pip reads it (the link text should be the same, but directory listings
/// decorate it). Only anchors are read; hrefs are unescaped for the five XML entities.
fn html_links(body: &str) -> Result<Vec<Link>, String> {
    let mut out = Vec::new();
    let lower = body.to_ascii_lowercase();
    let mut at = 0usize;
    while let Some(start) = lower.get(at..).and_then(|s| s.find("<a")).map(|i| i + at) {
        let Some(tag_end) = lower.get(start..).and_then(|s| s.find('>')).map(|i| i + start) else { break };
        let Some(close) = lower.get(tag_end..).and_then(|s| s.find("</a")).map(|i| i + tag_end) else { break };
        let tag = body.get(start..tag_end).unwrap_or_default();
        if let Some(href) = attribute(tag, "href") {
            let href = unescape(&href);
            let path = href.split(['#', '?']).next().unwrap_or_default();
            let name = percent_decode(path.rsplit('/').next().unwrap_or_default());
            let sha256 =
                href.split_once('#').and_then(|(_, frag)| frag.strip_prefix("sha256=")).map(|h| h.to_ascii_lowercase());
            let lower_tag = tag.to_ascii_lowercase();
            let yanked = lower_tag
                .match_indices("data-yanked")
                .any(|(i, _)| lower_tag.get(..i).and_then(|s| s.chars().last()).is_some_and(char::is_whitespace));
            out.push(Link { name, href, sha256, yanked });
        }
        at = close + 3;
    }
    Ok(out)
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower.get(from..).and_then(|s| s.find(name)).map(|i| i + from) {
        let before_ok = lower.get(..i).and_then(|s| s.chars().last()).is_some_and(char::is_whitespace);
        let rest = tag.get(i + name.len()..)?.trim_start();
        if before_ok && let Some(rest) = rest.strip_prefix('=') {
            let rest = rest.trim_start();
            let quote = rest.chars().next()?;
            return if quote == '"' || quote == '\'' {
                let body = rest.get(1..)?;
                Some(body.get(..body.find(quote)?)?.to_string())
            } else {
                Some(rest.split(|c: char| c.is_whitespace() || c == '>').next()?.to_string())
            };
        }
        from = i + name.len();
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_entries_and_default() {
        let n = parse_netrc(
            "# comment\nmachine a.example login alice password s3cret\nmacdef init\ncd /\n\ndefault login anon password x\n",
        );
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[0],
            NetrcEntry { machine: Some("a.example".into()), login: "alice".into(), password: "s3cret".into() }
        );
        assert_eq!(n[1].machine, None);
        assert!(parse_netrc("login password machine").iter().all(|e| e.login.is_empty()));
    }

    #[test]
    fn pip_config_download_section_wins() {
        let listing = "global.index-url='http://g/simple'\ndownload.index-url='http://d/simple'\nglobal.extra-index-url='http://x1 http://x2'\nglobal.cert='/etc/ssl'\n";
        let (main, extra) = pip_config_indexes(listing);
        assert_eq!(main.as_deref(), Some("http://d/simple"));
        // What pip's own environment says wins.
        let (main, _) = pip_config_indexes(&format!("{listing}:env:.index-url='http://e'\n"));
        assert_eq!(main.as_deref(), Some("http://e"));
        assert_eq!(extra, ["http://x1", "http://x2"]);
        assert_eq!(pip_config_indexes("global.cert='/x'\n"), (None, Vec::new()));
        assert_eq!(pip_config_value(listing, "cert").as_deref(), Some("/etc/ssl"));
        assert_eq!(pip_config_value(&format!("{listing}:env:.cert='/e'\n"), "cert").as_deref(), Some("/e"));
        assert_eq!(pip_config_value(listing, "trusted-host"), None);
    }

    #[test]
    fn html_and_json_pages() {
        let html = r#"<!DOCTYPE html><html><body>
            <a href="../../f/flask-3.0.0-py3-none-any.whl#sha256=ab" data-requires-python="&gt;=3.8">flask-3.0.0-py3-none-any.whl</a><br/>
            <A HREF='x.tar.gz'>x.tar.gz@</A>
            <a name="n">no href</a> <a href=bare.whl>bare.whl</a>"#;
        let links = html_links(html).unwrap();
        let names: Vec<(&str, Option<&str>)> = links.iter().map(|l| (l.name.as_str(), l.sha256.as_deref())).collect();
        assert_eq!(names, [("flask-3.0.0-py3-none-any.whl", Some("ab")), ("x.tar.gz", None), ("bare.whl", None)]);
        assert_eq!(links[0].href, "../../f/flask-3.0.0-py3-none-any.whl#sha256=ab");
        // Broken markup ends the scan, it does not panic.
        assert!(html_links("<a href=\"x").unwrap().is_empty());
        assert!(html_links("<a").unwrap().is_empty());
        let json = br#"{"meta":{"api-version":"1.1"},"name":"flask","files":[{"filename":"a.whl","url":"https://h/a.whl","hashes":{"sha256":"00"}}]}"#;
        assert_eq!(
            json_links(json).unwrap(),
            [Link { name: "a.whl".into(), href: "https://h/a.whl".into(), sha256: Some("00".into()), yanked: false }]
        );
        assert!(json_links(b"{}").is_err());
        // PEP 592: yanked files are known as such.
        let yanked = html_links("<a href=\"y-1.tar.gz\" data-yanked>y</a><a href=\"y-2.tar.gz\">y</a>").unwrap();
        assert_eq!(yanked.iter().map(|l| l.yanked).collect::<Vec<_>>(), [true, false]);
        let json =
            br#"{"files":[{"filename":"a","url":"a","yanked":"broken"},{"filename":"b","url":"b","yanked":false}]}"#;
        assert_eq!(json_links(json).unwrap().iter().map(|l| l.yanked).collect::<Vec<_>>(), [true, false]);
    }

    #[test]
    fn credentials_never_reach_messages() {
        let u = url::Url::parse("https://user:pa%20ss@index.example/simple/").unwrap();
        assert_eq!(redact(&u), "https://index.example/simple/");
        assert_eq!(percent_decode("pa%20ss"), "pa ss");
    }
}
