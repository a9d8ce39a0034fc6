#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and end-to-end tests (real dpkg-deb,
# lintian, faketime, signals). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test" >&2
cargo test --locked --workspace
echo "== reproducibility matrix" >&2
# The binary the end-to-end tests ran (cargo test built it): building a release one
# only for the matrix would cost minutes of CI, and the bytes hb writes do not depend
# on the profile (bench/ builds release).
scripts/variations.sh target/debug/hb
