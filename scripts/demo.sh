#!/usr/bin/env bash
# The main job (README Quick start), as root on Debian:
#   1. plan a campaign: generate a realistic inventory, plan its waves, explain one site;
#   2. migrate live sites in the local lab: build old-dc, new-dc, DNS and a client in network
#      namespaces (real MariaDB behind our sql-proxy, nginx + php-fpm, HAProxy, Knot, sshd,
#      a WireGuard tunnel), run traffic, move one wave of 50 sites with the real `migrator`,
#      check that every acknowledged write is on the serving side, tear the lab down.
# DEMO_SITES (default 100000) sizes the planning inventory; DEMO_DIR (default out/demo) holds it.
# DEMO_SCENARIO (default wave-basic) picks the lab scenario: rollback, rollback-group, crash-resume, tunnel-flap,
# proxy-restart, wave-bigdb (databases up to 1 GiB written 10/s, followed by change capture),
# wave-artifacts / rollback-artifacts (sites with cron jobs, HTTPS, web rules and PHP pools).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -p migrator -p sql-proxy -p scenarios
bin_dir="$(realpath "${CARGO_TARGET_DIR:-target}")/release"
out=${DEMO_DIR:-out/demo}
mkdir -p "$out"

echo "== 1. Generate a realistic inventory (seeded, so the same every time)"
"$bin_dir/migrator" inventory generate --sites "${DEMO_SITES:-100000}" --seed 42 --out "$out/inventory"

echo
echo "== 2. Plan the waves (canary ramp, caps, byte budget, windows, destination capacity)"
"$bin_dir/migrator" plan --inventory "$out/inventory" --out "$out/plan.json" | tail -n 12

echo
echo "== 3. Why is site s0000042 where it is?"
"$bin_dir/migrator" plan explain s0000042 --plan "$out/plan.json"

echo
echo "== 4. Migrate a wave of live sites in the lab (scenario ${DEMO_SCENARIO:-wave-basic})"
echo "   lab up, traffic through old names, migrator wave run in the client namespace,"
echo "   zero failed requests outside freezes and zero lost writes checked, lab down"
HOSTMOVE_BIN_DIR="$bin_dir" "$bin_dir/scenarios" run "${DEMO_SCENARIO:-wave-basic}"
