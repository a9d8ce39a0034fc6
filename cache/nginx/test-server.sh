#!/usr/bin/env bash
# Runs a throwaway nginx remote cache for tests, configured by hb-cache.conf next to this
# script (the deployable file itself, with its paths and port rewritten).
#
#   test-server.sh start PORT DIR TOKEN   # (or just: PORT DIR TOKEN)
#   test-server.sh stop DIR
#
# start writes DIR/nginx.conf, DIR/hb-cache.conf and DIR/hb-cache-token.conf, keeps the
# pid, logs and temp files in DIR, serves DIR/data on 127.0.0.1:PORT and returns once the
# port answers. stop ends that nginx and waits for it. Needs Debian's nginx or
# nginx-light (the WebDAV module is built in); as root the workers run as root so that
# they can write DIR/data.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
    echo "test-server.sh: $*" >&2
    exit 1
}

find_nginx() {
    if [[ -n "${NGINX:-}" ]]; then
        echo "$NGINX"
    elif command -v nginx >/dev/null; then
        command -v nginx
    elif [[ -x /usr/sbin/nginx ]]; then
        echo /usr/sbin/nginx
    else
        die "nginx not found (apt-get install nginx-light, or set NGINX)"
    fi
}

start() {
    local port="$1" dir="$2" token="$3"
    [[ "$port" =~ ^[0-9]+$ ]] || die "port must be a number, got '$port'"
    [[ "$token" =~ ^[A-Za-z0-9._~+/=-]+$ ]] || die "the token may only hold letters, digits and ._~+/=-"
    local nginx
    nginx="$(find_nginx)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [[ "$dir" != *[[:space:]\;\"\'\$\{\}\\]* ]] || die "the directory path must not hold spaces, quotes, ; \$ { } or \\"
    if [[ -f "$dir/nginx.pid" ]] && kill -0 "$(cat "$dir/nginx.pid")" 2>/dev/null; then
        die "an nginx is already running for $dir (pid $(cat "$dir/nginx.pid")); stop it first"
    fi
    mkdir -p "$dir/data/cas" "$dir/data/ac" "$dir/tmp/body" "$dir/tmp/proxy" "$dir/tmp/fastcgi" \
        "$dir/tmp/uwsgi" "$dir/tmp/scgi"

    printf '"PUT:Bearer %s" 0;\n' "$token" >"$dir/hb-cache-token.conf"
    sed -e "s|listen 8080;|listen 127.0.0.1:$port;|" \
        -e "s|/var/cache/hb-nginx/tmp|$dir/tmp/body|" \
        -e "s|/var/cache/hb-nginx/data|$dir/data|" \
        -e "s|/etc/nginx/hb-cache-token.conf|$dir/hb-cache-token.conf|" \
        "$here/hb-cache.conf" >"$dir/hb-cache.conf"

    local user_line=""
    if [[ "$(id -u)" == 0 ]]; then
        user_line="user root;"
    fi
    cat >"$dir/nginx.conf" <<EOF
# Written by test-server.sh; everything nginx touches is under $dir.
$user_line
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 256;
}
http {
    access_log $dir/access.log;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include $dir/hb-cache.conf;
}
EOF
    "$nginx" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" ||
        die "nginx did not start; see $dir/error.log"
    # nginx binds before it daemonizes, so the port is normally open already.
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "nginx cache on http://127.0.0.1:$port serving $dir/data (pid $(cat "$dir/nginx.pid"))"
            return 0
        fi
        sleep 0.05
    done
    stop "$dir"
    die "nginx did not answer on 127.0.0.1:$port; see $dir/error.log"
}

stop() {
    local dir="$1" pid i
    [[ -f "$dir/nginx.pid" ]] || return 0
    pid="$(cat "$dir/nginx.pid")"
    [[ "$pid" =~ ^[0-9]+$ ]] || die "bad pid file $dir/nginx.pid"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/nginx.pid"
}

case "${1:-}" in
    start)
        [[ $# == 4 ]] || die "usage: test-server.sh start PORT DIR TOKEN"
        start "$2" "$3" "$4"
        ;;
    stop)
        [[ $# == 2 ]] || die "usage: test-server.sh stop DIR"
        stop "$2"
        ;;
    *)
        [[ $# == 3 ]] || die "usage: test-server.sh [start] PORT DIR TOKEN | test-server.sh stop DIR"
        start "$1" "$2" "$3"
        ;;
esac
