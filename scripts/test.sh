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
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "scripts/test.sh: installing ${need[*]}" >&2
  # Postfix asks how to configure the machine's own mail: not at all (the
  # tests run private instances and leave the system's alone).
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --no-fail-fast: one failing test binary must not hide the others' results
# (a CI run then shows every failure at once).
exec cargo test --workspace --locked --no-fail-fast "$@"
