//! The environment markers (PEP 508) of a target: a Debian release's CPython on Linux on
//! its machine. Markers on the kernel (`platform_release`, `platform_version`) are
//! refused: hb cannot know the kernel of the machine a package is installed on.

/// The marker environment of one target.
pub struct Markers {
    env: pep508_rs::MarkerEnvironment,
}

impl Markers {
    /// For CPython `python_full` (e.g. `3.11.2`) on Linux on `machine` (`uname -m`).
    pub fn new(python: (u32, u32), python_full: &str, machine: &str) -> Result<Markers, String> {
        let version = format!("{}.{}", python.0, python.1);
        let env = pep508_rs::MarkerEnvironment::try_from(pep508_rs::MarkerEnvironmentBuilder {
            implementation_name: "cpython",
            implementation_version: python_full,
            os_name: "posix",
            platform_machine: machine,
            platform_python_implementation: "CPython",
            // Refused in markers (see `holds`): a target has no known kernel.
            platform_release: "",
            platform_system: "Linux",
            platform_version: "",
            python_full_version: python_full,
            python_version: &version,
            sys_platform: "linux",
        })
        .map_err(|e| format!("the marker environment of Python {python_full}: {e}"))?;
        Ok(Markers { env })
    }

    /// Whether `marker` holds for the target (no extras are requested).
    pub fn holds(&self, marker: &str) -> Result<bool, String> {
        unknowable(marker)?;
        let tree: pep508_rs::MarkerTree =
            marker.parse().map_err(|e| format!("the marker `{marker}` is not a PEP 508 marker: {e}"))?;
        Ok(tree.evaluate(&self.env, &[]))
    }

    /// Whether the marker of a parsed requirement holds for the target when `extras`
    /// are asked of the distribution that requires it.
    pub fn holds_with(&self, marker: &pep508_rs::MarkerTree, extras: &[pep508_rs::ExtraName]) -> Result<bool, String> {
        if let Some(text) = marker.contents() {
            unknowable(&text.to_string())?;
        }
        Ok(marker.evaluate(&self.env, extras))
    }

    /// The target's Python version (`python_full_version`).
    pub fn python(&self) -> &pep508_rs::pep440_rs::Version {
        &self.env.python_full_version().version
    }
}

fn unknowable(marker: &str) -> Result<(), String> {
    for name in ["platform_release", "platform_version"] {
        if marker.contains(name) {
            return Err(format!(
                "the marker `{marker}` depends on `{name}`, the kernel of the machine a package is installed on, which hb cannot know when it builds"
            ));
        }
    }
    Ok(())
}
