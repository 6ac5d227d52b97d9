#!/usr/bin/env bash
# Runs Switchboard on a fresh Debian machine that has only the Rust toolchain.
#
#   scripts/run.sh [--config FILE]        (default: config/switchboard.toml)
#
# Environment: SWITCHBOARD_STATE_DIR (default .switchboard), SWITCHBOARD_REDIS_PORT
# (default 6390), and any SWITCHBOARD__SECTION__KEY override.
#
# Builds the release binary, and when no Redis URL is configured (redis.url in
# the file, or SWITCHBOARD__REDIS__URL) starts a private redis-server
# (installing it if missing) with its data under .switchboard/redis, then runs
# the daemon in the foreground. Ctrl-C stops both.
set -euo pipefail
# Paths given relative to where the script was started from, before the cd.
absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
usage() { echo "usage: scripts/run.sh [--config FILE]" >&2; exit 2; }
config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config|-c) [ -n "${2:-}" ] || usage; config=$(absolute "$2"); shift 2 ;;
    --config=*) [ -n "${1#--config=}" ] || usage; config=$(absolute "${1#--config=}"); shift ;;
    *) usage ;;
  esac
done
state=""
if [ -n "${SWITCHBOARD_STATE_DIR:-}" ]; then state=$(absolute "$SWITCHBOARD_STATE_DIR"); fi
cd "$(dirname "$0")/.."
config=${config:-$PWD/config/switchboard.toml}
state=${state:-$PWD/.switchboard}
redis_port=${SWITCHBOARD_REDIS_PORT:-6390}

cargo build --release --locked -p switchboard
bin=${CARGO_TARGET_DIR:-target}/release/switchboard

url=$("$bin" show-config redis.url --config "$config")
started_redis=""
stop_redis() {
  if [ -n "$started_redis" ] && kill -0 "$started_redis" 2>/dev/null; then
    kill -TERM "$started_redis" || true
    # Gone before we are, so that a run right after finds no Redis going
    # down in its place (it writes its data out first: up to 30 s).
    for _ in $(seq 300); do
      kill -0 "$started_redis" 2>/dev/null || break
      sleep 0.1
    done
    # After a HUP the terminal may be gone: a failed echo must not matter.
    if kill -0 "$started_redis" 2>/dev/null; then
      echo "run.sh: the private Redis (pid $started_redis) is still writing its data out; it stops by itself" 2>/dev/null || true
    else
      echo "run.sh: stopped the private Redis (data kept in $state/redis)" 2>/dev/null || true
    fi
  fi
}
trap stop_redis EXIT
if [ -z "$url" ]; then
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || {
        echo "run.sh: redis-server is not installed, and installing it needs root: run as root, install sudo, or install redis-server (apt-get install redis-server)" >&2
        exit 1
      }
      sudo=sudo
    fi
    echo "run.sh: installing redis-server" >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  fi
  mkdir -p "$state/redis"
  # One run.sh per state directory: a second would share (and at its exit
  # stop) the first one's Redis, or start another on the same files. The
  # daemon inherits the lock on purpose: should run.sh be killed, the
  # daemon it started still uses the Redis, which a new run must not take
  # over. Redis itself does not inherit it.
  exec 9>"$state/run.lock"
  flock -n 9 || {
    echo "run.sh: another scripts/run.sh, or a Switchboard it started ($(cat "$state/daemon.pid" 2>/dev/null || echo "pid unknown")), is running with $state; stop it first, or set SWITCHBOARD_STATE_DIR" >&2
    exit 1
  }
  pidfile="$state/redis/redis.pid"
  # Its answer to PING: PONG, "LOADING …" while it reads its data back from
  # a large append-only file, or nothing.
  # (Within 2 s: something else on the port may never answer.)
  redis_ping() { timeout 2 redis-cli -p "$redis_port" ping 2>/dev/null || true; }
  # The pid of the Redis answering on our port (empty: none).
  redis_pid() { timeout 2 redis-cli -p "$redis_port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p' || true; }
  # A pidfile left by a Redis that was killed may name another process now
  # (after a reboot, even another redis-server): ours works in our data
  # directory.
  old_pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$old_pid" ] && [ "$(cat "/proc/$old_pid/comm" 2>/dev/null)" = redis-server ] \
    && [ "$(readlink "/proc/$old_pid/cwd" 2>/dev/null)" = "$(cd "$state/redis" && pwd -P)" ]; then
    # Left running by an earlier run that was killed: ours (the lock says
    # no run.sh holds it), so it is stopped at our exit. It must be the one
    # on our port: two servers on one directory would corrupt its data.
    if [ "$(redis_pid)" != "$old_pid" ]; then
      echo "run.sh: the private Redis of an earlier run (pid $old_pid, data in $state/redis) is still running on another port; stop it (kill $old_pid) or set SWITCHBOARD_REDIS_PORT to its port" >&2
      exit 1
    fi
    echo "run.sh: reusing the private Redis already running (pid $old_pid)"
    started_redis=$old_pid
  else
    if [ -n "$(redis_ping)" ]; then
      echo "run.sh: port $redis_port already answers (another Redis, not this state directory's); set SWITCHBOARD_REDIS_PORT to a free port" >&2
      exit 1
    fi
    rm -f "$pidfile"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$state/redis" \
      --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
      --stream-node-max-bytes 1024 --auto-aof-rewrite-min-size 1gb \
      --daemonize yes --pidfile "$pidfile" --logfile "$state/redis/redis.log" 9>&-
    for _ in $(seq 100); do
      [ -s "$pidfile" ] && break
      sleep 0.1
    done
    [ -s "$pidfile" ] || { echo "run.sh: redis-server did not start; see $state/redis/redis.log" >&2; exit 1; }
    started_redis=$(cat "$pidfile")
  fi
  # Wait for PONG: as long as it takes to load its data, 10 s otherwise.
  silent=0
  loading=""
  while :; do
    answer=$(redis_ping)
    case "$answer" in
      PONG) break ;;
      LOADING*)
        [ -n "$loading" ] || echo "run.sh: the private Redis is loading its data; waiting"
        loading=1 ;;
      *)
        silent=$((silent + 1))
        [ "$silent" -le 100 ] || { echo "run.sh: redis-server does not answer; see $state/redis/redis.log" >&2; exit 1; } ;;
    esac
    sleep 0.1
  done
  # The server that answers is the one we started (Redis 7.2 and later
  # write their pidfile before they bind: one that lost the port to
  # another server would leave a pidfile and exit).
  if [ "$(redis_pid)" != "$started_redis" ]; then
    echo "run.sh: port $redis_port is answered by another Redis, not the one started here; see $state/redis/redis.log and set SWITCHBOARD_REDIS_PORT to a free port" >&2
    exit 1
  fi
  url="redis://127.0.0.1:$redis_port"
  export SWITCHBOARD__REDIS__URL=$url
  echo "run.sh: private Redis at $url, data in $state/redis"
  # Redis now shares the machine: unless configured (0, the default, lets
  # run.sh decide), leave it a core (docs/operations.md, "Configuration").
  configured_threads=$("$bin" show-config runtime.worker_threads --config "$config")
  if [ -z "$configured_threads" ] || [ "$configured_threads" = "0" ]; then
    cores=$(nproc)
    # A container's CPU limit (cgroup v2), which nproc does not count.
    if [ -r /sys/fs/cgroup/cpu.max ]; then
      read -r quota period < /sys/fs/cgroup/cpu.max || true
      if [ "${quota:-max}" != max ] && [ "${period:-0}" -gt 0 ]; then
        limit=$(( (quota + period - 1) / period ))
        if [ "$limit" -lt "$cores" ]; then cores=$limit; fi
      fi
    fi
    threads=$(( cores > 1 ? cores - 1 : 1 ))
    export SWITCHBOARD__RUNTIME__WORKER_THREADS=$threads
    echo "run.sh: $threads worker thread(s), one core left to the private Redis"
  fi
fi

listen=$("$bin" show-config http.listen --config "$config")
# Not in the file (nor in the environment): the daemon's default.
listen=${listen:-127.0.0.1:8080}
echo "run.sh: Switchboard HTTP at http://$listen  (/healthz, /readyz, /metrics, /channels/<name>/…)"
echo "run.sh: configuration $config; stop with Ctrl-C"

"$bin" --config "$config" &
daemon=$!
[ -z "$started_redis" ] || echo "$daemon" > "$state/daemon.pid"
# Ctrl-C, a TERM, or the terminal going away (HUP): the daemon drains and
# stops, then (the EXIT trap) the private Redis. A second Ctrl-C while it
# drains waits on: Redis is stopped only after the daemon is gone.
trap 'kill -TERM $daemon 2>/dev/null || true' INT TERM HUP
status=0
while :; do
  if wait "$daemon"; then status=0; else status=$?; fi
  kill -0 "$daemon" 2>/dev/null || break
done
exit "$status"
