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
if [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null; then
  # The sandbox's hostile-code tests ran as root above (the worst case); once more as an
  # unprivileged user, where hb may make no control group and bubblewrap maps an
  # ordinary uid.
  echo "== sandbox tests as an unprivileged user" >&2
  bin=$(cargo test --locked -p hb-sandbox --lib --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys; print(next(m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")))')
  copy=$(mktemp -d)
  chmod 755 "$copy"
  cp "$bin" "$copy/hb-sandbox-tests"
  (cd "$copy" && runuser -u nobody -- env HOME="$copy" TMPDIR=/tmp ./hb-sandbox-tests)
  rm -rf "$copy"
  # And the hostile build and fetch stories with hb itself run as nobody (the test
  # plants its canaries as that user's own files).
  echo "== hostile build tests with hb as an unprivileged user" >&2
  HB_E2E_AS_UID=65534 cargo test --locked --test e2e -- hostile_build hostile_fetch
fi
echo "== reproducibility matrix" >&2
# The binary the end-to-end tests ran (cargo test built it): building a release one
# only for the matrix would cost minutes of CI, and the bytes hb writes do not depend
# on the profile (bench/ builds release).
scripts/variations.sh target/debug/hb
