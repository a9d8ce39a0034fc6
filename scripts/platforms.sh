#!/usr/bin/env bash
# The whole platform matrix, longer than CI runs it: builds //demosite:deb for every
# platform, checks a trixie-hosted build gives the same bytes, and installs and serves
# each deb in a fresh root of its release and architecture — all four, including
# trixie-arm64 under qemu-user (CI installs three).
#
#   scripts/platforms.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
HB_E2E_ALL_PLATFORMS=1 cargo test --locked --test e2e -- --exact platforms::every_platform_builds_the_same_anywhere_and_installs_and_serves
