#!/usr/bin/env bash
# Scale and memory, measured in one run (asserts nothing):
#   no-op of a generated workspace of N packages (default 100), each a deb of a few
#   files, built once first: the median of 20 `hb build //...` runs that change nothing;
#   peak RSS of a cold //demosite:deb build;
#   peak RSS of a cold build of a deb holding one 200 MB source file.
# Peak RSS comes from GNU time's "Maximum resident set size".
#
#   bench/many.sh [N]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-100}
cd "$repo"
cargo build --release --locked -q
hb="$repo/target/release/hb"
command -v /usr/bin/time >/dev/null || { echo "bench/many.sh needs GNU time (apt install time)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print int($2 / 1024)}'; }

# N packages.
ws="$work/many"
mkdir -p "$ws"
printf '[workspace]\nsource_date_epoch = 1700000000\n' >"$ws/BUILD.toml"
cp hb-root.lock "$ws/"
for i in $(seq -w 1 "$n"); do
  d="$ws/pkg$i"
  mkdir -p "$d/files"
  for j in 1 2 3; do echo "package $i file $j" >"$d/files/f$j.txt"; done
  cat >"$d/BUILD.toml" <<TOML
[[files]]
name = "files"
srcs = ["files/*.txt"]
dest = "/usr/share/pkg$i"

[[deb]]
name = "deb"
package = "pkg$i"
version = "1.0"
maintainer = "bench <bench@example.org>"
description = "generated package $i\nA package of the scale benchmark."
deps = [":files"]
TOML
done
export HB_CACHE_DIR="$work/cache"
# The stat cache does not remember a file modified less than 2 s before it was hashed
# (its mtime cannot yet be told from a later edit): let the generated files age first,
# or every "no-op" below would hash them again.
sleep 2
"$hb" -C "$ws" build //... >/dev/null 2>&1
noop=$(for _ in $(seq 20); do
  # bash's own clock (bash >= 5), read inline: timing with `date` would charge a fork
  # and an exec per run to hb.
  t0=${EPOCHREALTIME/./}; "$hb" -C "$ws" build //... >/dev/null 2>&1; t1=${EPOCHREALTIME/./}
  echo $(( t1 - t0 ))
done | median)   # microseconds, read inline (no subshell around the timed run)

# Peak memory: demosite cold, and a 200 MB source file.
demo="$work/demo"
mkdir -p "$demo"
cp BUILD.toml hb-root.lock "$demo/"
cp -r demosite "$demo/"
rss_demo=$(HB_CACHE_DIR="$work/cache-demo" rss "$hb" -C "$demo" build //demosite:deb)

big="$work/big"
mkdir -p "$big/blob/files"
printf '[workspace]\nsource_date_epoch = 1700000000\n' >"$big/BUILD.toml"
cp hb-root.lock "$big/"
head -c $((200 << 20)) /dev/urandom >"$big/blob/files/big.bin"
cat >"$big/blob/BUILD.toml" <<'TOML'
[[files]]
name = "files"
srcs = ["files/*"]
dest = "/usr/share/blob"

[[deb]]
name = "deb"
package = "blob"
version = "1.0"
maintainer = "bench <bench@example.org>"
description = "one large file\nA package of the memory benchmark."
compression = "zstd"
deps = [":files"]
TOML
rss_big=$(HB_CACHE_DIR="$work/cache-big" rss "$hb" -C "$big" build //blob:deb)

printf 'no-op, %d packages   %8.1f ms (median of 20)\n' "$n" "$(echo "$noop / 1000" | bc -l)"
printf 'peak RSS, demosite cold   %5d MiB\n' "$rss_demo"
printf 'peak RSS, 200 MB file     %5d MiB\n' "$rss_big"
