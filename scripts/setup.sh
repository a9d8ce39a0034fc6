#!/usr/bin/env bash
# From a fresh Debian 12 machine to a built package: installs what is needed, builds hb,
# and builds //demosite:deb into hb-out/demosite/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
./target/release/hb build //demosite:deb
