//! Target platforms: one row of [`PLATFORMS`] per Debian release and architecture hb
//! builds for, holding every fact a rule needs about the system a package installs on
//! (suite, Debian architecture, Python version, glibc, wheel architecture, the systemd
//! unit directory, the relationships a service package declares). Rules read these
//! facts from here and nowhere else; a platform name that is not in the table is an
//! error, never a fallback.

/// A Debian release on one architecture.
#[derive(Debug, PartialEq, Eq)]
pub struct Platform {
    /// `suite-architecture`, as written in `[workspace] platform`.
    pub name: &'static str,
    /// Debian suite (codename).
    pub suite: &'static str,
    /// Debian architecture (`Architecture:` of the packages).
    pub architecture: &'static str,
    /// The release's `python3` version.
    pub python: (u32, u32),
    /// Its full upstream version (`python_full_version` in environment markers); a
    /// Debian release keeps it for its lifetime, patching in place.
    pub python_full: &'static str,
    /// The release's glibc version.
    pub glibc: (u32, u32),
    /// The machine name in wheel platform tags (`manylinux_2_36_x86_64`).
    pub wheel_arch: &'static str,
    /// Where the release's packages install systemd units, relative to `/`.
    pub systemd_unit_dir: &'static str,
    /// The package providing the C library.
    pub libc_package: &'static str,
    /// `Depends` of a package that runs a service (creating its system user).
    pub service_depends: &'static [&'static str],
    /// `Pre-Depends` of a package that runs a service: `invoke-rc.d
    /// --skip-systemd-native` needs init-system-helpers 1.54.
    pub service_pre_depends: &'static [&'static str],
    /// The Debian packages the target root is resolved from (with their dependencies):
    /// what the platform's build steps need to run.
    pub root_packages: &'static [&'static str],
    /// The machine name the Linux kernel reports (`uname -m`) on this architecture.
    pub machine: &'static str,
}

/// What the target root of every platform holds: the release's interpreter (its
/// dependencies bring the C library and the standard library) and the basic tools a
/// build step's command line expects (`/bin/sh`, coreutils, sed, grep, gzip, find),
/// and the C++ runtime, which manylinux lets wheels link without bundling it (its
/// `symbols` file gives a C++ extension's Depends). Compilers join it when sdists are
/// built.
const ROOT_PACKAGES_311: &[&str] =
    &["python3.11", "dash", "coreutils", "sed", "grep", "gzip", "findutils", "libstdc++6"];
const ROOT_PACKAGES_313: &[&str] =
    &["python3.13", "dash", "coreutils", "sed", "grep", "gzip", "findutils", "libstdc++6"];

/// Debian 12 on x86-64.
pub const BOOKWORM_AMD64: Platform = Platform {
    name: "bookworm-amd64",
    suite: "bookworm",
    architecture: "amd64",
    python: (3, 11),
    python_full: "3.11.2",
    glibc: (2, 36),
    wheel_arch: "x86_64",
    systemd_unit_dir: "lib/systemd/system",
    libc_package: "libc6",
    service_depends: &["adduser"],
    service_pre_depends: &["init-system-helpers (>= 1.54~)"],
    root_packages: ROOT_PACKAGES_311,
    machine: "x86_64",
};

/// Debian 12 on 64-bit ARM.
pub const BOOKWORM_ARM64: Platform = Platform {
    name: "bookworm-arm64",
    architecture: "arm64",
    wheel_arch: "aarch64",
    machine: "aarch64",
    ..BOOKWORM_AMD64
};

/// Debian 13 on x86-64: Python 3.13, glibc 2.41, units under /usr (the /usr merge
/// is complete in trixie).
pub const TRIXIE_AMD64: Platform = Platform {
    name: "trixie-amd64",
    suite: "trixie",
    python: (3, 13),
    python_full: "3.13.5",
    glibc: (2, 41),
    systemd_unit_dir: "usr/lib/systemd/system",
    root_packages: ROOT_PACKAGES_313,
    ..BOOKWORM_AMD64
};

/// Debian 13 on 64-bit ARM.
pub const TRIXIE_ARM64: Platform =
    Platform { name: "trixie-arm64", architecture: "arm64", wheel_arch: "aarch64", machine: "aarch64", ..TRIXIE_AMD64 };

/// Every platform hb knows, the default first.
pub const PLATFORMS: &[&Platform] = &[&BOOKWORM_AMD64, &BOOKWORM_ARM64, &TRIXIE_AMD64, &TRIXIE_ARM64];

/// The platform a workspace builds for when it names none.
pub const DEFAULT: &Platform = &BOOKWORM_AMD64;

/// The platform called `name`.
pub fn lookup(name: &str) -> Option<&'static Platform> {
    PLATFORMS.iter().copied().find(|p| p.name == name)
}

/// The names of every known platform, for error messages.
pub fn names() -> Vec<&'static str> {
    PLATFORMS.iter().map(|p| p.name).collect()
}

/// The machine name (`uname -m`) of the build machine, as the kernel reports it.
pub fn host_machine() -> &'static str {
    std::env::consts::ARCH
}

impl Platform {
    /// True when this platform's programs run natively on the build machine (no
    /// emulation needed).
    pub fn runs_natively(&self) -> bool {
        self.machine == host_machine()
    }

    /// The target's interpreter, also the one PEP 517 builds run.
    pub fn interpreter(&self) -> String {
        format!("/usr/bin/python{}.{}", self.python.0, self.python.1)
    }

    /// What a root needs, besides its own packages, to compile a Python extension from
    /// an sdist: the C compiler, the C library's headers, the interpreter's headers, and
    /// the tools build scripts take for granted on Debian (Essential's bash, perl and
    /// tar, which packages never declare, plus make and pkg-config). A package's own
    /// `build_depends` come on top.
    pub fn compile_packages(&self) -> Vec<String> {
        let python_dev = format!("python{}.{}-dev", self.python.0, self.python.1);
        ["gcc", "libc6-dev", &python_dev, "make", "pkgconf", "bash", "perl-base", "tar", "diffutils"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// `python3 (>= 3.11~), python3 (<< 3.12)`: a venv works only with the minor
    /// version it was written for.
    pub fn python_depends(&self) -> [String; 2] {
        let (major, minor) = self.python;
        [format!("python3 (>= {major}.{minor}~)"), format!("python3 (<< {major}.{})", minor + 1)]
    }

    /// The C library relationship of a package with compiled code needing `glibc`.
    pub fn libc_depends(&self, glibc: Option<(u32, u32)>) -> String {
        match glibc {
            Some((major, minor)) => format!("{} (>= {major}.{minor})", self.libc_package),
            None => self.libc_package.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(lookup("bookworm-amd64"), Some(&BOOKWORM_AMD64));
        assert_eq!(lookup("bookworm-armhf"), None);
        assert_eq!(names(), ["bookworm-amd64", "bookworm-arm64", "trixie-amd64", "trixie-arm64"]);
        let t = lookup("trixie-arm64").unwrap();
        assert_eq!((t.python, t.glibc, t.wheel_arch, t.architecture), ((3, 13), (2, 41), "aarch64", "arm64"));
        assert_eq!(t.systemd_unit_dir, "usr/lib/systemd/system");
        assert_eq!(t.python_depends(), ["python3 (>= 3.13~)", "python3 (<< 3.14)"]);
        for p in PLATFORMS {
            assert_eq!(p.name, format!("{}-{}", p.suite, p.architecture));
        }
        let p = DEFAULT;
        assert_eq!(p.python_depends(), ["python3 (>= 3.11~)", "python3 (<< 3.12)"]);
        assert_eq!(p.libc_depends(Some((2, 17))), "libc6 (>= 2.17)");
        assert_eq!(p.interpreter(), "/usr/bin/python3.11");
    }
}
