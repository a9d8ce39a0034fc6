#!/usr/bin/env bash
# Remote execution, measured in one run (asserts nothing): the wall time of a cold
# build of a workspace of 8 apps (demosite copied as site1..site8, each with its own
# package name and a source line of its own, so eight distinct wheel builds) built
#   local:  on this machine, hb's sandbox;
#   remote: with --remote-executor on BuildGrid's execution service (PostgreSQL
#           scheduler, loopback) and two `hb worker`s on this same machine.
# Each build starts from an empty hb cache; the remote one also from an empty
# BuildGrid. On one 2-core machine the workers share the client's cores, so the ratio
# shows what remote execution costs (uploads, scheduling, roots written out on each
# worker), not what it gains: with workers on other machines the wheel builds leave
# the client's cores.
#
#   bench/remote-exec.sh          (BGD=/path/to/bgd, else the e2e tests' venv
#                                  ~/.cache/hb-e2e/buildgrid-0.9.1)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --release --locked -q
hb="$repo/target/release/hb"
bgd=${BGD:-${XDG_CACHE_HOME:-$HOME/.cache}/hb-e2e/buildgrid-0.9.1/bin/bgd}
[ -x "$bgd" ] || { echo "bench/remote-exec.sh needs BuildGrid (run the e2e tests once, or set BGD)" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "bench/remote-exec.sh needs Debian's postgresql" >&2; exit 1; }
# The wheelhouse and root packages the e2e tests keep, when there are some.
[ -d target/e2e-wheelhouse ] && export PIP_FIND_LINKS="$repo/target/e2e-wheelhouse${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}"
[ -d target/e2e-apt ] && export HB_APT_DIR="$repo/target/e2e-apt"

work=$(mktemp -d)
chmod 0755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/pg/data/postmaster.pid" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The workspace: 8 apps.
ws="$work/ws"
mkdir -p "$ws"
cp BUILD.toml hb-root.lock "$ws/"
for i in 1 2 3 4 5 6 7 8; do
  cp -r demosite "$ws/site$i"
  sed -i -e "s/^package = \"demosite\"/package = \"site$i\"/" -e "s/^port = 8000/port = $((8100 + i))/" "$ws/site$i/BUILD.toml"
  echo "# copy $i" >>"$ws/site$i/demosite/__init__.py"
done
labels=()
for i in 1 2 3 4 5 6 7 8; do labels+=("//site$i:deb"); done

# Local.
t0=$(now)
HB_CACHE_DIR="$work/cache-local" "$hb" -C "$ws" build "${labels[@]}" >/dev/null 2>"$work/local.log"
t1=$(now)
local_ms=$(( (t1 - t0) / 1000000 ))
shas_local=$(cd "$ws" && sha256sum hb-out/site*/*.deb)
rm -rf "$ws/hb-out"

# PostgreSQL, BuildGrid's execution service, two workers.
mkdir -p "$work/pg"
install -d -o postgres -g postgres "$work/pg/data"
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg/data" -A trust -U postgres --no-sync >/dev/null
pg_port=$(free_port)
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/data/log" -w \
  -o "-p $pg_port -k $work/pg/data -c listen_addresses=127.0.0.1" start >/dev/null
runuser -u postgres -- "$pgbin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE bgd"
db="postgresql+psycopg://postgres@127.0.0.1:$pg_port/bgd"
"$bgd" migrate apply "$db" >"$work/migrate.log" 2>&1
port=$(free_port)
sed -e "s|@LISTEN@|127.0.0.1:$port|" -e "s|@STORAGE@|$work/bg-cas|" -e "s|@DB@|$db|" \
  cache/buildgrid/buildgrid-exec.yml >"$work/bg.yml"
"$bgd" server start "$work/bg.yml" >"$work/bg.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
url="grpc://127.0.0.1:$port/main"
for w in w1 w2; do
  HB_CACHE_DIR="$work/cache-$w" "$hb" worker --scheduler "$url" -j 1 --name "$w" 2>"$work/$w.log" &
  pids+=($!)
done

# Remote.
t0=$(now)
HB_CACHE_DIR="$work/cache-remote" "$hb" -C "$ws" build "${labels[@]}" --remote-executor "$url" --remote-only \
  >/dev/null 2>"$work/remote.log"
t1=$(now)
remote_ms=$(( (t1 - t0) / 1000000 ))
shas_remote=$(cd "$ws" && sha256sum hb-out/site*/*.deb)
ran1=$(grep -c "ran action" "$work/w1.log" || true)
ran2=$(grep -c "ran action" "$work/w2.log" || true)

same=no
[ "$shas_local" = "$shas_remote" ] && same=yes
echo "8 apps, cold build, $(nproc) cores"
printf '  local                  %6d ms\n' "$local_ms"
printf '  remote (2 workers)     %6d ms   %.2fx local   (w1 ran %d commands, w2 %d)\n' \
  "$remote_ms" "$(echo "$remote_ms / $local_ms" | bc -l)" "$ran1" "$ran2"
echo "  same 8 debs: $same"
