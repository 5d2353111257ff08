#!/usr/bin/env bash
# Installs everything the toolkit, its tests and its lab need on a fresh Debian machine (as root).
# Idempotent: packages already present are skipped by apt-get; safe to run again.
set -euo pipefail

PACKAGES=(
  # databases: shared SQL servers in tests and in the lab; mydumper for the benchmarks
  mariadb-server mariadb-client mydumper sysbench
  # the fleet's shared control store in tests and the lab: a Galera cluster (wsrep provider;
  # rsync carries the joiners' incremental state transfer marker)
  galera-4
  # remote hosts: sshd for the SSH transport, rsync for the benchmark comparison
  openssh-server openssh-client rsync
  # web stack and cutover targets in the lab
  nginx php-fpm php-mysql haproxy knot knot-dnsutils bind9-dnsutils
  # the second DNS provider (drivers::dns::powerdns): PowerDNS with its HTTP API, on a private
  # SQLite database (sqlite3 loads the package's schema) started by testkit::Pdns
  pdns-server pdns-backend-sqlite3 sqlite3
  # tunnel: userspace WireGuard (no kernel module here) and its tools
  wireguard-go wireguard-tools iproute2
  # small tools the lab and the benchmarks use; ripgrep is the pre-flight scan's benchmark limit
  socat curl procps time ca-certificates ripgrep
  # pre-flight (issue 21): a real WordPress tree to scan (/usr/share/wordpress)
  wordpress
  # packages: built with dpkg-deb, their man pages checked with man -l (scripts/check-packages.sh)
  man-db groff-base
  # promtool (package prometheus; the server is not started): `promtool check metrics` on every
  # /metrics endpoint in the tests, `promtool check rules` on the shipped alert rules
  prometheus
  # sql-proxy TLS test: a throwaway self-signed certificate
  openssl
  # tunnel check/health: latency and loss probes over the tunnel
  iputils-ping
  # dashboard browser test: headless Chromium driven over WebDriver
  chromium chromium-driver
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get needs it)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # policy-rc.d keeps Debian from starting the daemons it installs: we start our own instances.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PACKAGES[@]} packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; this machine needs a Rust toolchain (rustup) on PATH" >&2
  exit 1
fi
