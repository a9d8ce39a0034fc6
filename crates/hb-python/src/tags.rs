//! Wheel file names and target compatibility: parsing `{dist}-{ver}(-{build})?-{py}-{abi}-{plat}.whl`
//! (PEP 427) with compressed tag sets (PEP 425), PEP 503 name normalization, and the
//! ordered list of tags a CPython interpreter on a manylinux (PEP 600) glibc target
//! accepts, which decides whether a wheel can be installed and how good a match it is.

use std::collections::BTreeMap;

use crate::PyError;

/// The parts of a wheel file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WheelName {
    pub distribution: String,
    pub version: String,
    pub build: Option<String>,
    pub python: Vec<String>,
    pub abi: Vec<String>,
    pub platform: Vec<String>,
}

impl WheelName {
    /// Parses a wheel file name (a path is accepted; only its last component is read).
    pub fn parse(filename: &str) -> Result<WheelName, PyError> {
        let base = filename.rsplit('/').next().unwrap_or(filename);
        let bad = |reason: &str| PyError::WheelName { filename: filename.to_string(), reason: reason.to_string() };
        let stem = base.strip_suffix(".whl").ok_or_else(|| bad("it does not end in `.whl`"))?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (distribution, version, build, py, abi, plat) = match parts.as_slice() {
            [d, v, p, a, pl] => (*d, *v, None, *p, *a, *pl),
            [d, v, b, p, a, pl] => (*d, *v, Some(*b), *p, *a, *pl),
            _ => return Err(bad("it does not have 5 or 6 `-`-separated parts")),
        };
        if distribution.is_empty() || version.is_empty() {
            return Err(bad("the distribution name or version is empty"));
        }
        if let Some(b) = build
            && !b.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(bad("the build tag does not start with a digit"));
        }
        let split = |set: &str, what: &str| -> Result<Vec<String>, PyError> {
            let tags: Vec<String> = set.split('.').map(str::to_string).collect();
            if tags.iter().any(|t| t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
                return Err(bad(&format!("the {what} tag set `{set}` is malformed")));
            }
            Ok(tags)
        };
        Ok(WheelName {
            distribution: distribution.to_string(),
            version: version.to_string(),
            build: build.map(str::to_string),
            python: split(py, "python")?,
            abi: split(abi, "abi")?,
            platform: split(plat, "platform")?,
        })
    }

    /// Every `python-abi-platform` triple the compressed tag sets stand for.
    pub fn tags(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.python {
            for a in &self.abi {
                for pl in &self.platform {
                    out.push(format!("{p}-{a}-{pl}"));
                }
            }
        }
        out
    }

    /// The PEP 503 normalized distribution name.
    pub fn normalized_name(&self) -> String {
        normalize(&self.distribution)
    }
}

/// PEP 503 normalization: lowercase, and every run of `-`, `_` and `.` becomes one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

/// The machine a wheel is installed for: a CPython version on a glibc Linux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub python: (u32, u32),
    pub glibc: (u32, u32),
    pub arch: String,
}

/// The oldest glibc minor version manylinux tags go down to (manylinux1 is glibc 2.5).
const OLDEST_GLIBC_MINOR: u32 = 5;

/// The legacy manylinux names and the glibc they stand for (PEP 513, 571, 599).
fn legacy_alias(minor: u32, arch: &str) -> Option<String> {
    let name = match minor {
        17 => "manylinux2014",
        12 if matches!(arch, "x86_64" | "i686") => "manylinux2010",
        5 if matches!(arch, "x86_64" | "i686") => "manylinux1",
        _ => return None,
    };
    Some(format!("{name}_{arch}"))
}

/// The glibc a manylinux platform tag requires, if it is a manylinux tag for `arch`.
fn manylinux_glibc(platform: &str, arch: &str) -> Option<(u32, u32)> {
    let rest = platform.strip_suffix(arch)?.strip_suffix('_')?;
    match rest {
        "manylinux1" => Some((2, 5)),
        "manylinux2010" => Some((2, 12)),
        "manylinux2014" => Some((2, 17)),
        _ => {
            let v = rest.strip_prefix("manylinux_")?;
            let (major, minor) = v.split_once('_')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        }
    }
}

impl Target {
    /// How the target is named in locks: `cp311-manylinux_2_36_x86_64`.
    pub fn id(&self) -> String {
        format!("cp{}{}-manylinux_{}_{}_{}", self.python.0, self.python.1, self.glibc.0, self.glibc.1, self.arch)
    }

    /// The target named `id` (as [`Target::id`] writes it).
    pub fn from_id(id: &str) -> Option<Target> {
        let (py, rest) = id.split_once("-manylinux_")?;
        let py = py.strip_prefix("cp3")?;
        let minor: u32 = py.parse().ok()?;
        let mut parts = rest.splitn(3, '_');
        let major_glibc: u32 = parts.next()?.parse().ok()?;
        let minor_glibc: u32 = parts.next()?.parse().ok()?;
        let arch = parts.next()?.to_string();
        let t = Target { python: (3, minor), glibc: (major_glibc, minor_glibc), arch };
        (t.id() == id).then_some(t)
    }

    /// Debian 12 bookworm on amd64: glibc 2.36.
    pub fn bookworm_amd64(python: (u32, u32)) -> Target {
        Target { python, glibc: (2, 36), arch: "x86_64".to_string() }
    }

    /// The manylinux platform tags of the target, newest glibc first, each legacy alias
    /// right after the `manylinux_2_X` tag it stands for.
    fn platforms(&self) -> Vec<String> {
        let (major, max_minor) = self.glibc;
        let mut out = Vec::new();
        if major != 2 {
            return out;
        }
        for minor in (OLDEST_GLIBC_MINOR..=max_minor).rev() {
            out.push(format!("manylinux_2_{minor}_{}", self.arch));
            if let Some(alias) = legacy_alias(minor, &self.arch) {
                out.push(alias);
            }
        }
        out
    }

    /// Supported tags, best first, in the order of `packaging.tags.sys_tags` for CPython
    /// on manylinux (without the non-portable `linux_<arch>`).
    pub fn supported_tags(&self) -> Vec<String> {
        let (major, minor) = self.python;
        let cp = format!("cp{major}{minor}");
        let platforms = self.platforms();
        let mut out = Vec::new();
        let all_platforms = |interp: &str, abi: &str, out: &mut Vec<String>| {
            for p in &platforms {
                out.push(format!("{interp}-{abi}-{p}"));
            }
        };
        all_platforms(&cp, &cp, &mut out);
        let abi3 = major == 3 && minor >= 2;
        if abi3 {
            all_platforms(&cp, "abi3", &mut out);
        }
        all_platforms(&cp, "none", &mut out);
        if abi3 {
            for m in (2..minor).rev() {
                all_platforms(&format!("cp{major}{m}"), "abi3", &mut out);
            }
        }
        let py_range = py_interpreter_range(self.python);
        for py in &py_range {
            all_platforms(py, "none", &mut out);
        }
        out.push(format!("{cp}-none-any"));
        for py in &py_range {
            out.push(format!("{py}-none-any"));
        }
        out
    }

    /// The rank of the best tag of `w` in [`Target::supported_tags`] (lower is better),
    /// or `None` when no tag of the wheel is supported.
    pub fn rank(&self, w: &WheelName) -> Option<usize> {
        let index: BTreeMap<String, usize> =
            self.supported_tags().into_iter().enumerate().map(|(i, t)| (t, i)).collect();
        w.tags().iter().filter_map(|t| index.get(&t.to_ascii_lowercase()).copied()).min()
    }

    /// [`Target::rank`] for a wheel built in the target's own root: its `linux_<arch>`
    /// tag (what a backend writes when it compiles) stands for this very platform, so
    /// it ranks as the target's newest manylinux tag. Only wheels hb compiled itself are
    /// ranked this way; locked wheels from an index need a portable tag.
    pub fn rank_built(&self, w: &WheelName) -> Option<usize> {
        let native = format!("linux_{}", self.arch);
        let newest = format!("manylinux_{}_{}_{}", self.glibc.0, self.glibc.1, self.arch);
        let mut mapped = w.clone();
        for p in &mut mapped.platform {
            if p.eq_ignore_ascii_case(&native) {
                p.clone_from(&newest);
            }
        }
        self.rank(&mapped)
    }

    /// The `--platform` values to give `pip download` (every manylinux tag, newest first).
    pub fn pip_platforms(&self) -> Vec<String> {
        self.platforms()
    }

    /// The glibc a wheel needs: the lowest among its platform tags that the target
    /// accepts (a wheel tagged `manylinux2014.manylinux_2_28` promises to run on 2.17),
    /// as the floor for the package's libc dependency; `None` for pure (`any`) wheels.
    pub fn required_glibc(&self, w: &WheelName) -> Option<(u32, u32)> {
        let platforms = self.platforms();
        w.platform
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .filter(|p| platforms.contains(p))
            .filter_map(|p| manylinux_glibc(&p, &self.arch))
            .min()
    }

    /// A human description, e.g. `CPython 3.11, manylinux_2_36 and older, x86_64`.
    pub fn describe(&self) -> String {
        format!(
            "CPython {}.{}, manylinux_{}_{} and older, {}",
            self.python.0, self.python.1, self.glibc.0, self.glibc.1, self.arch
        )
    }
}

/// `py311`, `py3`, `py310`, ..., `py30`, as in `packaging.tags._py_interpreter_range`.
fn py_interpreter_range((major, minor): (u32, u32)) -> Vec<String> {
    let mut out = vec![format!("py{major}{minor}"), format!("py{major}")];
    for m in (0..minor).rev() {
        out.push(format!("py{major}{m}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> WheelName {
        WheelName::parse(s).unwrap()
    }

    #[test]
    fn parses_native_wheel_names() {
        let w = name("MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
        assert_eq!(w.distribution, "MarkupSafe");
        assert_eq!(w.version, "2.1.5");
        assert_eq!(w.build, None);
        assert_eq!(w.python, ["cp311"]);
        assert_eq!(w.abi, ["cp311"]);
        assert_eq!(w.platform, ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]);
        assert_eq!(w.tags(), ["cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"]);
        assert_eq!(w.normalized_name(), "markupsafe");
    }

    #[test]
    fn parses_pure_build_tag_and_compressed_names() {
        let w = name("gunicorn-23.0.0-py3-none-any.whl");
        assert_eq!((w.distribution.as_str(), w.version.as_str()), ("gunicorn", "23.0.0"));
        assert_eq!(w.tags(), ["py3-none-any"]);

        let w = name("foo_bar-1.0-1local-py3-none-any.whl");
        assert_eq!(w.build.as_deref(), Some("1local"));
        assert_eq!(w.normalized_name(), "foo-bar");

        let w = name("/some/dir/six-1.16.0-py2.py3-none-any.whl");
        assert_eq!(w.python, ["py2", "py3"]);
        assert_eq!(w.tags(), ["py2-none-any", "py3-none-any"]);
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "foo-1.0-py3-none-any.zip",
            "foo-1.0-py3-none.whl",
            "foo-1.0-x-y-py3-none-any.whl",
            "foo-1.0-abc-py3-none-any.whl",
            "foo-1.0-py3..py2-none-any.whl",
            "-1.0-py3-none-any.whl",
        ] {
            let e = WheelName::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn normalizes_like_pep_503() {
        assert_eq!(normalize("Foo__Bar.-baz"), "foo-bar-baz");
        assert_eq!(normalize("zope.interface"), "zope-interface");
    }

    #[test]
    fn supported_tags_follow_packaging_order() {
        let t = Target::bookworm_amd64((3, 11));
        assert_eq!(Target::from_id(&t.id()), Some(t.clone()));
        assert_eq!(Target::from_id("cp313-manylinux_2_41_aarch64").map(|t| t.arch), Some("aarch64".into()));
        assert_eq!(Target::from_id("cp313-linux_aarch64"), None);
        let built = WheelName::parse("psycopg2-2.9.10-cp311-cp311-linux_x86_64.whl").unwrap();
        let t = Target::bookworm_amd64((3, 11));
        assert_eq!(t.rank(&built), None, "not portable: never locked from an index");
        assert_eq!(t.rank_built(&built), Some(0));
        let other = WheelName::parse("psycopg2-2.9.10-cp311-cp311-linux_aarch64.whl").unwrap();
        assert_eq!(t.rank_built(&other), None);
        let tags = t.supported_tags();
        assert_eq!(tags[0], "cp311-cp311-manylinux_2_36_x86_64");
        let pos = |s: &str| tags.iter().position(|t| t == s).unwrap_or_else(|| panic!("{s} missing"));
        assert_eq!(pos("cp311-cp311-manylinux2014_x86_64"), pos("cp311-cp311-manylinux_2_17_x86_64") + 1);
        assert!(pos("cp311-cp311-manylinux1_x86_64") < pos("cp311-abi3-manylinux_2_36_x86_64"));
        assert!(pos("cp311-abi3-manylinux1_x86_64") < pos("cp311-none-manylinux_2_36_x86_64"));
        assert!(pos("cp311-none-manylinux1_x86_64") < pos("cp310-abi3-manylinux_2_36_x86_64"));
        assert!(pos("cp32-abi3-manylinux1_x86_64") < pos("py311-none-manylinux_2_36_x86_64"));
        assert!(pos("py3-none-manylinux1_x86_64") < pos("py310-none-manylinux_2_36_x86_64"));
        assert!(pos("py30-none-manylinux1_x86_64") < pos("cp311-none-any"));
        assert_eq!(&tags[tags.len() - 14..tags.len() - 12], ["cp311-none-any", "py311-none-any"]);
        assert_eq!(tags.last().map(String::as_str), Some("py30-none-any"));
        assert!(!tags.iter().any(|t| t.contains("linux_x86_64") && !t.contains("manylinux")));
        assert!(!tags.iter().any(|t| t.starts_with("cp31-")));
        // 32 manylinux_2_X tags (2_36..2_5) plus three legacy aliases.
        assert_eq!(t.pip_platforms().len(), 35);
        assert_eq!(t.pip_platforms().last().map(String::as_str), Some("manylinux1_x86_64"));
        assert_eq!(t.describe(), "CPython 3.11, manylinux_2_36 and older, x86_64");
    }

    #[test]
    fn ranks_wheels_for_the_target() {
        let t = Target::bookworm_amd64((3, 11));
        let native = t.rank(&name("MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"));
        assert!(native.is_some());
        assert_eq!(t.rank(&name("MarkupSafe-2.1.5-cp312-cp312-manylinux_2_17_x86_64.whl")), None);
        assert_eq!(t.rank(&name("x-1-cp311-cp311-manylinux_2_38_x86_64.whl")), None);
        assert_eq!(t.rank(&name("x-1-cp311-cp311-musllinux_1_1_x86_64.whl")), None);
        assert_eq!(t.rank(&name("x-1-cp311-cp311-linux_x86_64.whl")), None);
        assert_eq!(t.rank(&name("x-1-cp311-cp311-manylinux_2_17_aarch64.whl")), None);
        assert_eq!(t.rank(&name("x-1-cp311-cp311-win_amd64.whl")), None);
        let abi3 = t.rank(&name("cryptography-42.0.0-cp38-abi3-manylinux_2_28_x86_64.whl"));
        assert!(abi3.is_some());
        let pure = t.rank(&name("gunicorn-23.0.0-py3-none-any.whl"));
        assert!(pure.is_some());
        assert!(native < pure && abi3 < pure && native < abi3);
        // The best of several tags counts.
        let multi = t.rank(&name("x-1-cp312-cp312-manylinux_2_17_x86_64.whl"));
        assert_eq!(multi, None);
        let newer = t.rank(&name("x-1-cp311-cp311-manylinux_2_28_x86_64.manylinux_2_17_x86_64.whl"));
        assert!(newer < native);
    }

    #[test]
    fn required_glibc_of_wheels() {
        let t = Target::bookworm_amd64((3, 11));
        let req = |s: &str| t.required_glibc(&name(s));
        assert_eq!(req("MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"), Some((2, 17)));
        assert_eq!(req("x-1-cp311-cp311-manylinux2014_x86_64.whl"), Some((2, 17)));
        assert_eq!(req("x-1-cp311-cp311-manylinux1_x86_64.whl"), Some((2, 5)));
        assert_eq!(req("x-1-cp311-cp311-manylinux2010_x86_64.whl"), Some((2, 12)));
        assert_eq!(req("x-1-cp38-abi3-manylinux_2_28_x86_64.whl"), Some((2, 28)));
        assert_eq!(req("gunicorn-23.0.0-py3-none-any.whl"), None);
        // Several platform tags: the wheel runs wherever the oldest one does.
        assert_eq!(
            req("markupsafe-3.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"),
            Some((2, 17))
        );
        // Tags the target does not accept (too new) do not count.
        assert_eq!(req("x-1-cp311-cp311-manylinux_2_17_x86_64.manylinux_2_39_x86_64.whl"), Some((2, 17)));
    }
}
