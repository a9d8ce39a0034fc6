#!/usr/bin/env bash
# Installs what building and testing hb needs on Debian 12 (bookworm): Debian packages
# through apt (the machine's own sources), and the Rust components named by
# rust-toolchain.toml. Idempotent and quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  gcc libc6-dev          # the bundled C compressors (liblzma, zstd) are compiled from source
  dpkg-dev lintian       # inspecting and checking the debs hb writes
  faketime               # reproducibility tests shift the clock
  bubblewrap             # the sandbox of PEP 517 builds
  python3 python3-pip python3-venv  # the target interpreter; pip resolves and fetches for `hb lock`
  mmdebstrap             # tests install debs into fresh bookworm and trixie roots
  qemu-user-static binfmt-support arch-test  # arm64 roots and builds run under qemu-user
  systemd-container      # tests boot that root with systemd-nspawn (the systemd path)
  nginx-light            # tests serve the remote cache from a stock nginx (WebDAV)
  postgresql             # the PostgreSQL example's test runs a private server on loopback
  libpq-dev              # `hb lock` prepares psycopg2's sdist metadata with pip, which runs pg_config
  gnupg                  # signs apt repositories (apt_repo) and makes the tests' OpenPGP keys
  openssl                # the REAPI tests make a CA and certificates for BuildGrid over TLS
  xz-utils zstd gzip tar # format cross-checks in tests
  ca-certificates curl git bc
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deps: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Foreign-architecture programs (arm64 target roots) run through binfmt_misc.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || echo "deps: cannot mount binfmt_misc; arm64 builds will say what is missing" >&2
fi
if [ -e /proc/sys/fs/binfmt_misc/status ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo update-binfmts --enable qemu-aarch64 2>/dev/null || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: no Rust toolchain found. Install rustup (see the Rust project's install page)," >&2
  echo "      then run this again: rust-toolchain.toml selects Rust 1.95.0 with clippy and rustfmt." >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
