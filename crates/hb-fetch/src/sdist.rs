//! Source distributions (sdists) in locks: naming (`{name}-{version}.tar.gz`, PEP 625),
//! reading what hb needs from one without running it (its `PKG-INFO`: name, version,
//! `Requires-Dist`, `Requires-Python`; its `pyproject.toml`: the build requirements;
//! its member names and `setup.py`: whether it is pure, i.e. builds without a compiler),
//! and the *stand-in wheel* that lets pip resolve a dependency graph holding an sdist
//! while every other file stays binary-only for the target: a pure wheel carrying the
//! sdist's metadata and no code, given to pip as a local file and never locked.
//!
//! An sdist is untrusted input: only three small members are read, each within a size
//! cap (the others only by name), and entries are never written to disk here.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::FetchError;

/// The most of one member (PKG-INFO, pyproject.toml) hb reads.
const MAX_MEMBER: u64 = 1 << 20;
/// The most of the archive hb decompresses looking for them.
const MAX_SCANNED: u64 = 512 << 20;

/// Whether a locked file name is an sdist.
pub fn is_sdist(file: &str) -> bool {
    file.ends_with(".tar.gz")
}

/// `(name, version)` of an sdist file name: `psycopg2-2.9.10.tar.gz`.
pub fn parse_name(file: &str) -> Option<(String, String)> {
    let stem = file.strip_suffix(".tar.gz")?;
    let (name, version) = stem.rsplit_once('-')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+!-".contains(&b));
    (ok(name) && ok(version) && version.bytes().next().is_some_and(|b| b.is_ascii_digit()))
        .then(|| (hb_python::normalize(name), version.to_string()))
}

/// What hb reads from an sdist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdistInfo {
    /// PEP 503-normalized.
    pub name: String,
    pub version: String,
    pub requires_dist: Vec<String>,
    pub requires_python: Option<String>,
    /// `[build-system] requires`, or PEP 517's fallback for a project without one.
    pub build_requires: Vec<String>,
    /// `[build-system] build-backend`, or the setuptools legacy backend.
    pub build_backend: String,
    /// Whether it builds without a compiler: no C, C++, Cython, Fortran, Rust or Go
    /// source, no native build file, no extension declared in setup.py, and a backend
    /// that only packs Python.
    pub pure: bool,
}

/// Files whose presence means a compiler runs.
const NATIVE_SUFFIXES: &[&str] =
    &[".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".pyx", ".pxd", ".f", ".f90", ".rs", ".go", ".m", ".mm"];
const NATIVE_FILES: &[&str] = &["Cargo.toml", "CMakeLists.txt", "meson.build", "Makefile", "configure", "go.mod"];
/// What a setup.py says when it builds an extension.
const SETUP_EXTENSIONS: &[&str] = &["ext_modules", "Extension(", "cffi_modules", "rust_extensions", "distclass"];
/// Backends that only pack Python (setuptools' depends on its setup.py).
const PURE_BACKENDS: &[&str] =
    &["setuptools.build_meta", "flit_core.buildapi", "hatchling.build", "poetry.core.masonry.api", "pdm.backend"];

/// Reads an sdist's PKG-INFO and pyproject.toml (both at `TOP/` of the archive).
pub fn read(path: &Path) -> Result<SdistInfo, FetchError> {
    let shown = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bad = |why: String| FetchError::Other(format!("{shown}: {why}"));
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let gz = flate2::read::GzDecoder::new(file).take(MAX_SCANNED);
    let mut archive = tar::Archive::new(gz);
    let (mut pkg_info, mut pyproject, mut setup_py) = (None, None, None);
    let mut native = false;
    let entries = archive.entries().map_err(|e| bad(format!("not a gzip-compressed tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("damaged archive: {e}")))?;
        let name = entry.path().map_err(|e| bad(format!("damaged archive: {e}")))?.to_string_lossy().into_owned();
        let base = name.rsplit('/').next().unwrap_or(&name);
        native |= NATIVE_SUFFIXES.iter().any(|s| base.ends_with(s)) || NATIVE_FILES.contains(&base);
        let mut parts = name.trim_start_matches("./").splitn(2, '/');
        let (_top, rest) = (parts.next(), parts.next());
        let slot = match rest {
            Some("PKG-INFO") => &mut pkg_info,
            Some("pyproject.toml") => &mut pyproject,
            Some("setup.py") => &mut setup_py,
            _ => continue,
        };
        if slot.is_some() || !entry.header().entry_type().is_file() {
            continue;
        }
        let mut text = String::new();
        (&mut entry)
            .take(MAX_MEMBER)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("{name} is not UTF-8 text: {e}")))?;
        *slot = Some(text);
    }
    let pkg_info = pkg_info.ok_or_else(|| bad("has no PKG-INFO at its top directory: it is not an sdist".into()))?;
    let meta = parse_pkg_info(&pkg_info);
    let name = meta.get("name").ok_or_else(|| bad("PKG-INFO has no Name".into()))?;
    let version = meta.get("version").ok_or_else(|| bad("PKG-INFO has no Version".into()))?;
    let (build_requires, build_backend) = match pyproject {
        Some(text) => build_system(&text).map_err(|why| bad(format!("pyproject.toml: {why}")))?,
        None => (vec!["setuptools>=40.8.0".to_string()], "setuptools.build_meta:__legacy__".to_string()),
    };
    let extension = setup_py.as_deref().is_some_and(|t| SETUP_EXTENSIONS.iter().any(|e| t.contains(e)));
    let backend = build_backend.split(':').next().unwrap_or_default();
    let pure = !native && !extension && PURE_BACKENDS.contains(&backend);
    Ok(SdistInfo {
        name: hb_python::normalize(name),
        version: version.to_string(),
        requires_dist: meta.all("requires-dist"),
        requires_python: meta.get("requires-python").map(str::to_string),
        build_requires,
        build_backend,
        pure,
    })
}

/// Core metadata headers (RFC 822 style): lowercase field names, continuation lines
/// folded; the body after the first blank line is ignored.
struct Headers(Vec<(String, String)>);

impl Headers {
    fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == field).map(|(_, v)| v.as_str())
    }
    fn all(&self, field: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == field).map(|(_, v)| v.clone()).collect()
    }
}

fn parse_pkg_info(text: &str) -> Headers {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Headers(out)
}

/// `[build-system]` of a pyproject.toml: requirements and backend, with PEP 517's
/// fallbacks.
fn build_system(text: &str) -> Result<(Vec<String>, String), String> {
    let doc: toml::Value = toml::from_str(text).map_err(|e| e.message().to_string())?;
    let bs = doc.get("build-system");
    let requires = match bs.and_then(|b| b.get("requires")) {
        None => vec!["setuptools>=40.8.0".to_string()],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|r| r.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
            .ok_or("[build-system] requires is not a list of strings")?,
    };
    let backend = match bs.and_then(|b| b.get("build-backend")) {
        None => "setuptools.build_meta:__legacy__".to_string(),
        Some(v) => v.as_str().ok_or("[build-system] build-backend is not a string")?.to_string(),
    };
    if bs.and_then(|b| b.get("backend-path")).is_some() {
        return Err("an in-tree build backend (`backend-path`) in a dependency's sdist is not supported".into());
    }
    Ok((requires, backend))
}

/// Writes the stand-in wheel of `info` into `dir`: `{name}-{version}-py3-none-any.whl`
/// with the sdist's name, version and requirements, and no code.
pub fn write_stand_in(dir: &Path, info: &SdistInfo) -> Result<PathBuf, FetchError> {
    let dist = info.name.replace('-', "_");
    let file = format!("{dist}-{}-py3-none-any.whl", info.version);
    let path = dir.join(&file);
    let io = |e: &dyn std::fmt::Display| FetchError::Other(format!("writing {}: {e}", path.display()));
    let mut metadata = format!("Metadata-Version: 2.1\nName: {}\nVersion: {}\n", info.name, info.version);
    if let Some(rp) = &info.requires_python {
        metadata.push_str(&format!("Requires-Python: {rp}\n"));
    }
    for r in &info.requires_dist {
        metadata.push_str(&format!("Requires-Dist: {r}\n"));
    }
    let info_dir = format!("{dist}-{}.dist-info", info.version);
    let members = [
        (format!("{info_dir}/METADATA"), metadata),
        (
            format!("{info_dir}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: hb (stand-in)\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_string(),
        ),
        (format!("{info_dir}/RECORD"), format!("{info_dir}/METADATA,,\n{info_dir}/WHEEL,,\n{info_dir}/RECORD,,\n")),
    ];
    let out = std::fs::File::create(&path).map_err(|e| io(&e))?;
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, text) in members {
        zip.start_file(name, options).map_err(|e| io(&e))?;
        zip.write_all(text.as_bytes()).map_err(|e| io(&e))?;
    }
    zip.finish().map_err(|e| io(&e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdist(dir: &Path, file: &str, members: &[(&str, &str)]) -> PathBuf {
        let path = dir.join(file);
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        for (name, text) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, text.as_bytes()).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("psycopg2-2.9.10.tar.gz"), Some(("psycopg2".into(), "2.9.10".into())));
        assert_eq!(parse_name("python-dateutil-2.8.2.tar.gz"), Some(("python-dateutil".into(), "2.8.2".into())));
        assert_eq!(parse_name("Foo_Bar-1.0.tar.gz"), Some(("foo-bar".into(), "1.0".into())));
        assert_eq!(parse_name("foo.tar.gz"), None);
        assert_eq!(parse_name("foo-x.tar.gz"), None);
        assert_eq!(parse_name("foo-1.0.zip"), None);
        assert!(is_sdist("a-1.tar.gz") && !is_sdist("a-1-py3-none-any.whl"));
    }

    #[test]
    fn reads_metadata_and_build_system() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = sdist(
            dir.path(),
            "Legacy_Pkg-1.0.tar.gz",
            &[
                ("Legacy_Pkg-1.0/setup.py", "raise SystemExit('never run')"),
                (
                    "Legacy_Pkg-1.0/PKG-INFO",
                    "Metadata-Version: 2.1\nName: Legacy_Pkg\nVersion: 1.0\nRequires-Python: >=3.8\nRequires-Dist: idna>=3\nRequires-Dist: click; extra == \"cli\"\nDescription: a\n  folded line\n\nRequires-Dist: body-is-not-a-header\n",
                ),
            ],
        );
        let info = read(&legacy).unwrap();
        assert_eq!(info.name, "legacy-pkg");
        assert_eq!(info.version, "1.0");
        assert_eq!(info.requires_dist, ["idna>=3", "click; extra == \"cli\""]);
        assert_eq!(info.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(info.build_requires, ["setuptools>=40.8.0"]);
        assert_eq!(info.build_backend, "setuptools.build_meta:__legacy__");

        let modern = sdist(
            dir.path(),
            "m-2.0.tar.gz",
            &[
                (
                    "m-2.0/pyproject.toml",
                    "[build-system]\nrequires = [\"flit_core>=3.2\"]\nbuild-backend = \"flit_core.buildapi\"\n",
                ),
                ("m-2.0/PKG-INFO", "Metadata-Version: 2.2\nName: m\nVersion: 2.0\n"),
            ],
        );
        let info = read(&modern).unwrap();
        assert_eq!(info.build_requires, ["flit_core>=3.2"]);
        assert_eq!(info.build_backend, "flit_core.buildapi");

        let stand_in = write_stand_in(dir.path(), &read(&legacy).unwrap()).unwrap();
        assert_eq!(stand_in.file_name().unwrap(), "legacy_pkg-1.0-py3-none-any.whl");
        let mut z = zip::ZipArchive::new(std::fs::File::open(&stand_in).unwrap()).unwrap();
        let mut meta = String::new();
        z.by_name("legacy_pkg-1.0.dist-info/METADATA").unwrap().read_to_string(&mut meta).unwrap();
        assert!(meta.contains("Requires-Dist: idna>=3\n") && meta.contains("Requires-Python: >=3.8\n"), "{meta}");
    }

    #[test]
    fn purity_is_told_from_sources_setup_py_and_backend() {
        let dir = tempfile::tempdir().unwrap();
        let info = "Metadata-Version: 2.1\nName: p\nVersion: 1\n";
        let pure = |members: &[(&str, &str)]| {
            let mut all = vec![("p-1/PKG-INFO", info)];
            all.extend_from_slice(members);
            read(&sdist(dir.path(), "p-1.tar.gz", &all)).unwrap().pure
        };
        assert!(pure(&[("p-1/setup.py", "from setuptools import setup\nsetup()\n"), ("p-1/p.py", "")]));
        assert!(!pure(&[("p-1/setup.py", "setup()"), ("p-1/src/speed.c", "int x;")]));
        assert!(!pure(&[("p-1/setup.py", "setup(ext_modules=[Extension('p', ['p.c'])])")]));
        assert!(!pure(&[(
            "p-1/pyproject.toml",
            "[build-system]\nrequires = [\"maturin\"]\nbuild-backend = \"maturin\"\n"
        )]));
        assert!(pure(&[(
            "p-1/pyproject.toml",
            "[build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n"
        )]));
    }

    #[test]
    fn refuses_what_is_not_an_sdist() {
        let dir = tempfile::tempdir().unwrap();
        let no_info = sdist(dir.path(), "x-1.tar.gz", &[("x-1/setup.py", "")]);
        assert!(read(&no_info).unwrap_err().to_string().contains("has no PKG-INFO"));
        let garbage = dir.path().join("y-1.tar.gz");
        std::fs::write(&garbage, b"not gzip at all").unwrap();
        assert!(read(&garbage).is_err());
        let in_tree = sdist(
            dir.path(),
            "z-1.tar.gz",
            &[
                ("z-1/PKG-INFO", "Name: z\nVersion: 1\n"),
                ("z-1/pyproject.toml", "[build-system]\nrequires=[]\nbuild-backend=\"b\"\nbackend-path=[\".\"]\n"),
            ],
        );
        assert!(read(&in_tree).unwrap_err().to_string().contains("backend-path"));
    }
}
