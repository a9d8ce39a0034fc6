//! The environment hb hands the host programs it starts (apt, gpg, dpkg, mmdebstrap,
//! systemd-nspawn, pip…): its own, without hb's settings and without anything that
//! looks like a credential. A program (or a maintainer script, or a package's build
//! code) started by hb never sees `HB_REMOTE_TOKEN`, a signing key's path or a cloud
//! token. PATH, locale, proxies, apt's, pip's and gpg's own settings stay.

use std::ffi::OsStr;
use std::process::Command;

/// Parts of a variable's name that mark a secret (compared upper-case).
const SECRET_WORDS: &[&str] =
    &["TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "KEY", "AUTH", "COOKIE", "PRIVATE"];

/// Names holding a secret word that are settings, not secrets: which keyring backend
/// Python or pip uses (pip's own configuration; they name a program, never a key).
const HARMLESS: &[&str] = &["PYTHON_KEYRING_BACKEND", "PIP_KEYRING_PROVIDER"];

/// Whether a variable must not reach a subprocess: hb's own (`HB_*`), or a name
/// holding [`SECRET_WORDS`] (`AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`, `SSH_AUTH_SOCK`).
pub fn is_withheld(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_uppercase();
    if name.starts_with("HB_") {
        return true;
    }
    !HARMLESS.contains(&name.as_str()) && SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// Removes every withheld variable of this process's environment from `cmd`'s (which
/// otherwise inherits it); variables `cmd` sets itself afterwards are kept.
pub fn scrub(cmd: &mut Command) -> &mut Command {
    // Reads the names only, to remove them: nothing of the environment reaches an
    // output through here.
    #[allow(clippy::disallowed_methods)]
    for (name, _) in std::env::vars_os() {
        if is_withheld(&name) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A [`Command`] for `program` with a scrubbed environment.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    scrub(&mut cmd);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withholds_hb_and_secrets_keeps_settings() {
        for name in [
            "HB_REMOTE_TOKEN",
            "HB_CACHE_DIR",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "aws_access_key_id",
            "PGPASSWORD",
            "SSH_AUTH_SOCK",
            "GPG_PASSPHRASE",
        ] {
            assert!(is_withheld(OsStr::new(name)), "{name}");
        }
        for name in [
            "PATH",
            "http_proxy",
            "HTTPS_PROXY",
            "APT_CONFIG",
            "GNUPGHOME",
            "PIP_INDEX_URL",
            "PIP_CERT",
            "SSL_CERT_FILE",
            "LANG",
            "PYTHON_KEYRING_BACKEND",
        ] {
            assert!(!is_withheld(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn scrubbed_commands_do_not_see_withheld_variables() {
        // SAFETY: no other test of this crate reads or writes these variables.
        unsafe {
            std::env::set_var("HB_SCRUB_TEST_TOKEN", "canary");
            std::env::set_var("SCRUB_TEST_SETTING", "kept");
        }
        let out =
            command("/bin/sh").args(["-c", "echo \"$HB_SCRUB_TEST_TOKEN|$SCRUB_TEST_SETTING\""]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "|kept");
    }
}
