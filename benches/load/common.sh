# What the scripts of benches/load share: logging, the temporary folder $tmp and the cleanup of
# every process started (in $started), /proc readings of a process tree, starting servers and
# waiting for their ports, minimal nginx configurations. Sourced, never run.
log() { printf 'load: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# --- cleanup: every process started here, and the temporary folder ---------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/isogate-load.XXXXXX")"
started=()
cleanup() {
  local pid
  for pid in "${started[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${started[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# --- /proc readings --------------------------------------------------------------------------
# The process and its children (nginx's master and workers; the others are one process).
tree() {
  local pid=$1
  echo "$pid"
  pgrep -P "$pid" || true
}

# stat_sum PID EXPR: the awk expression EXPR over the fields of /proc/<pid>/stat after the
# command name ($12 is utime, $13 stime, $8 minor faults), summed over the tree (all threads of
# each process).
stat_sum() {
  local total=0 pid fields
  for pid in $(tree "$1"); do
    fields="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields="${fields##*) }"
    total=$((total + $(awk "{ print $2 }" <<<"$fields")))
  done
  echo "$total"
}

# utime + stime (or with a second argument `user`, utime alone) in clock ticks.
cpu_ticks() {
  if [ "${2:-}" = user ]; then stat_sum "$1" '$12'; else stat_sum "$1" '$12 + $13'; fi
}

# Minor page faults (a page given back to the kernel and used again costs one).
minor_faults() {
  stat_sum "$1" '$8'
}

# Busy clock ticks of the whole machine, all cores (/proc/stat: user, nice, system, irq, softirq,
# steal), to tell whether a row ran out of machine rather than out of server.
machine_busy_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# Sum over the tree of a /proc/<pid>/status field, in KiB.
status_kib() {
  local total=0 pid kib
  for pid in $(tree "$1"); do
    kib="$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null)" || continue
    total=$((total + ${kib:-0}))
  done
  echo "$total"
}

# Resets the peak RSS (VmHWM) of the tree to its current RSS.
reset_peak() {
  local pid
  for pid in $(tree "$1"); do
    echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
  done
}

# --- starting servers --------------------------------------------------------------------------
wait_port() {
  local name=$1 port=$2 pid=$3
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || die "$name exited at start; its log: $(tail -5 "$tmp/$name.log")"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "$name does not listen on $port after 30 s"
}

# start NAME PORT COMMAND...: runs COMMAND in the background with its output in $tmp/NAME.log;
# sets $pid.
start() {
  local name=$1 port=$2
  shift 2
  "$@" >"$tmp/$name.log" 2>&1 &
  pid=$!
  started+=("$pid")
  wait_port "$name" "$port" "$pid"
}

nginx_conf() {
  # nginx_conf NAME WORKERS SERVER_BODY: a minimal nginx.conf whose files all live in $tmp/NAME.
  local name=$1 nworkers=$2 body=$3
  mkdir -p "$tmp/$name"
  cat >"$tmp/$name/nginx.conf" <<EOF
worker_processes $nworkers;
pid $tmp/$name/nginx.pid;
error_log $tmp/$name.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/$name/body;
  proxy_temp_path $tmp/$name/proxy;
  fastcgi_temp_path $tmp/$name/fastcgi;
  uwsgi_temp_path $tmp/$name/uwsgi;
  scgi_temp_path $tmp/$name/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
$body
}
EOF
}


# --- what is measured: the upstream, nginx as a plain proxy, isogate's file ---------------------
# The trivial upstream behind every proxy: one nginx worker answering "ok".
upstream_conf() {
  nginx_conf upstream 1 "  server {
    listen 127.0.0.1:$1;
    location / { default_type text/plain; return 200 'ok\n'; }
  }"
}

# api_upstream PORT: nginx's upstream block `api`, the upstream at PORT with keep-alive.
api_upstream() {
  printf '  upstream api {\n    server 127.0.0.1:%s;\n    keepalive 256;\n  }\n' "$1"
}

# proxy_server LISTEN: an nginx server block that proxies everything to `api` as a plain reverse
# proxy (HTTP/1.1 and keep-alive to the upstream, the usual forwarded headers).
proxy_server() {
  cat <<EOF
  server {
    listen $1;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
EOF
}

# gateway_config FILE ISSUER_PORT GATEWAY_PORT UPSTREAM_PORT ADMIN_PORT: isogate's file for the
# load runs, its ES256 key at keys/es256.pem beside it: one client (client_credentials, secret
# "secret"), one resource, one route /invoices to the upstream.
gateway_config() {
  local file=$1 issuer=$2 gateway=$3 upstream=$4 admin=$5
  cat >"$file" <<EOF
[issuer]
listen = "127.0.0.1:$issuer"
issuer = "http://127.0.0.1:$issuer"
access_token_lifetime = "1h"
data_dir = "data"

[[issuer.signing_keys]]
file = "keys/es256.pem"
alg = "ES256"

[[api_scopes]]
name = "read"

[[api_scopes]]
name = "write"

[[api_resources]]
name = "urn:invoices"
scopes = ["read", "write"]
require_resource_indicator = true

[[clients]]
client_id = "client"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read", "write"]

[proxy]
listen = "127.0.0.1:$gateway"
clock_skew = "30s"

[[routes]]
path_prefix = "/invoices"
upstream = "http://127.0.0.1:$upstream"
resource = "urn:invoices"
[routes.scopes]
GET = ["read", "write"]
"*" = ["write"]

[admin]
listen = "127.0.0.1:$admin"
EOF
}
