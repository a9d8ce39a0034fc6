#!/usr/bin/env bash
# Longer runs of the property tests of hb's parsers of untrusted input (the `hostile`
# test modules): BUILD.toml, locks, wheels, debs (hb diff's readers) and the cache
# server's HTTP request parser. The test suite runs each with 256 cases; this runs
# CASES of each (default 20000). A failure prints the minimal input and proptest saves
# it under the crate's proptest-regressions/, which is committed as a regression test.
#
#   scripts/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
export PROPTEST_CASES="${1:-20000}"
cargo test --release --locked -p hb-rules -p hb-fetch -p hb-python -p hb-diff -p hb-cache-server hostile
