#!/usr/bin/env bash
# Runs Switchboard's whole test suite on a fresh Debian machine that has only
# the Rust toolchain: installs what the tests need (redis-server for the store
# and end-to-end tests, systemd's systemd-analyze for the unit file check,
# Postfix, Dovecot and swaks for the email tests, headless Chromium and
# chromedriver for the widget and console tests),
# then runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -x /usr/sbin/dovecot ] && [ -e /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
[ -x /usr/sbin/nginx ] || need+=(nginx)                   # deploy/nginx-switchboard.conf, tests/nginx_proxy.rs
[ -x /usr/bin/chromium ] || need+=(chromium)              # the tests look there (SWITCHBOARD_TEST_CHROMIUM)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)  # SWITCHBOARD_TEST_CHROMEDRIVER
type -P kill >/dev/null 2>&1 || need+=(procps)            # the tests run kill(1), not the shell's builtin
command -v cc >/dev/null 2>&1 || need+=(build-essential)  # the linker, and ring's C parts
if ((${#need[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "scripts/test.sh: ${need[*]} must be installed, which needs root: run as root, install sudo, or install them (apt-get install ${need[*]})" >&2
      exit 1
    }
    sudo=sudo
  fi
  echo "scripts/test.sh: installing ${need[*]}" >&2
  # Postfix asks how to configure the machine's own mail: not at all (the
  # tests run private instances and leave the system's alone).
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  # A fresh VM's unattended upgrades may hold the package lock for a while:
  # wait for it (bounded) rather than fail or hang.
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  # env: sudo resets the environment, and a debconf question would wait at
  # a prompt nobody sees.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: not root: the tests that run a private Postfix need root and will fail (README.md)" >&2
fi

# --no-fail-fast: one failing test binary must not hide the others' results
# (a CI run then shows every failure at once). The time limit (80 minutes,
# or what is left of .ci/run's deadline; a run takes about 30 on 2 cores) makes a test stuck on a
# browser or a server end the run with a message instead of using up CI's
# whole budget silently. timeout(1) runs the tests in a process group of
# its own, which a Ctrl-C or a runner's signal to this script's group does
# not reach: the script passes such a signal on, and waits for the end.
limit="${SWITCHBOARD_TEST_TIMEOUT:-80m}"
# .ci/run sets a deadline for the whole run (epoch seconds): the limit is
# then what is left of it, less the 2 minutes timeout(1) gives after TERM.
if [ -z "${SWITCHBOARD_TEST_TIMEOUT:-}" ] && [ -n "${SWITCHBOARD_TEST_DEADLINE:-}" ]; then
  left=$((SWITCHBOARD_TEST_DEADLINE - $(date +%s) - 150))
  limit="$((left > 300 ? left : 300))s"
fi
timeout -k 2m "$limit" cargo test --workspace --locked --no-fail-fast "$@" &
tests=$!
trap 'kill -TERM "$tests" 2>/dev/null || true' INT TERM HUP
status=0
wait "$tests" || status=$?
# A signal passed on interrupts `wait`: wait for the tests to end.
while kill -0 "$tests" 2>/dev/null; do
  status=0
  wait "$tests" || status=$?
done
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "scripts/test.sh: the tests did not finish within $limit (SWITCHBOARD_TEST_TIMEOUT)" >&2
fi
exit "$status"
