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
  mmdebstrap             # tests install debs into a fresh bookworm root
  systemd-container      # tests boot that root with systemd-nspawn (the systemd path)
  nginx-light            # tests serve the remote cache from a stock nginx (WebDAV)
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
