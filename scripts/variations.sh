#!/usr/bin/env bash
# The reproducibility matrix: builds //demosite:deb under variations of the machine and
# asserts that every build gives the same sha256. Each build starts from a fresh
# checkout (a copy of the committed workspace) and, except where noted, a cold cache.
#
#   scripts/variations.sh [HB]    # HB: the hb binary (default target/release/hb, built)
#
# Variations: checkout path (short and long), umask 002 and 077, TZ UTC and
# Pacific/Auckland, LANG C and de_DE.UTF-8, the clock 400 days ahead (faketime), another
# HOME and USER, -j1 and -j2, cold and warm cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
hb=${1:-}
if [ -n "$hb" ]; then
  hb=$(cd "$(dirname "$hb")" && pwd)/$(basename "$hb")
else
  (cd "$repo" && cargo build --release --locked -q)
  hb="$repo/target/release/hb"
fi
# The wheelhouse the end-to-end tests fill (target/e2e-wheelhouse), when there is one,
# saves asking the package index ten times for the same files. Fetches stay verified
# against the lock, so where the bytes come from cannot change a result.
if [ -d "$repo/target/e2e-wheelhouse" ]; then
  export PIP_FIND_LINKS="$repo/target/e2e-wheelhouse${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}"
fi
# Likewise the root packages the end-to-end tests downloaded (target/e2e-apt/debs).
if [ -d "$repo/target/e2e-apt" ]; then
  export HB_APT_DIR="$repo/target/e2e-apt"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deb=hb-out/demosite/demosite_0.1.0_amd64.deb

# build NAME DIR UMASK [ENV...] [-- WRAPPER...]: checkout into DIR under UMASK, build
# there with a fresh cache (or $CACHE), print the sha256.
build() {
  local name=$1 dir=$2 mask=$3
  shift 3
  local envs=() wrap=()
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; wrap=("$@"); break; fi
    envs+=("$1"); shift
  done
  local cache=${CACHE:-$work/cache-$name}
  (
    umask "$mask"
    mkdir -p "$dir"
    cp -r "$repo/BUILD.toml" "$repo/hb-root.lock" "$repo/demosite" "$dir/"
    cd "$dir"
    env "${envs[@]}" HB_CACHE_DIR="$cache" "${wrap[@]}" "$hb" build ${JOBS:+-j "$JOBS"} //demosite:deb >"$work/$name.log" 2>&1
  ) || { echo "variation $name failed:" >&2; cat "$work/$name.log" >&2; exit 1; }
  sha256sum "$dir/$deb" | cut -d' ' -f1
}

declare -A sums
sums[base]=$(JOBS=2 build base "$work/a" 022 TZ=UTC LANG=C)
sums[long-path]=$(build long-path "$work/b/a/much/longer/path/to/another/checkout" 022 TZ=UTC LANG=C)
sums[umask-077]=$(build umask-077 "$work/c" 077 TZ=UTC LANG=C)
sums[umask-002]=$(build umask-002 "$work/d" 002 TZ=UTC LANG=C)
sums[tz-auckland]=$(build tz-auckland "$work/e" 022 TZ=Pacific/Auckland LANG=C)
sums[locale-de]=$(build locale-de "$work/f" 022 TZ=UTC LANG=de_DE.UTF-8 LC_ALL=de_DE.UTF-8)
sums[clock+400d]=$(build clock+400d "$work/g" 022 TZ=UTC LANG=C -- faketime -f +400d)
sums[home-user]=$(build home-user "$work/h" 022 TZ=UTC LANG=C HOME="$work/home2" USER=someone-else LOGNAME=someone-else)
sums[jobs-1]=$(JOBS=1 build jobs-1 "$work/i" 022 TZ=UTC LANG=C)
sums[warm-cache]=$(CACHE="$work/cache-base" build warm-cache "$work/j" 022 TZ=UTC LANG=C)

want=${sums[base]}
status=0
for name in "${!sums[@]}"; do
  printf '%-12s %s\n' "$name" "${sums[$name]}"
  [ "${sums[$name]}" = "$want" ] || status=1
done | sort
for name in "${!sums[@]}"; do
  if [ "${sums[$name]}" != "$want" ]; then
    echo "variations: $name gave a different deb than base; run \`hb verify //demosite:deb\` to find the action" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "variations: ${#sums[@]} builds, one sha256: $want"
exit "$status"
