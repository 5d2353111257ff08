#!/usr/bin/env bash
# The main job (README Quick start). For now: generate a realistic inventory, plan its waves,
# explain one site, pin a big customer's sites to the final wave and show what moved.
# DEMO_SITES (default 100000) and DEMO_DIR (default out/demo) change the size and the place.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -p migrator
bin="${CARGO_TARGET_DIR:-target}/release/migrator"
out=${DEMO_DIR:-out/demo}
mkdir -p "$out"

echo "== 1. Generate a realistic inventory (seeded, so the same every time)"
"$bin" inventory generate --sites "${DEMO_SITES:-100000}" --seed 42 --out "$out/inventory"

echo
echo "== 2. Plan the waves (canary ramp, caps, byte budget, windows, destination capacity)"
"$bin" plan --inventory "$out/inventory" --out "$out/plan.json"

echo
echo "== 3. Why is site s0000042 where it is?"
"$bin" plan explain s0000042 --plan "$out/plan.json"

echo
echo "== 4. Sales asks that a big customer (40 sites) moves last: pin them and re-plan"
seq -f 's%07g' 1000 1039 > "$out/big-customer.txt"
"$bin" plan --inventory "$out/inventory" --pin-last-file "$out/big-customer.txt" \
    --out "$out/plan-pinned.json" | tail -n 6

echo
echo "== 5. What changed between the two plans"
"$bin" plan diff "$out/plan.json" "$out/plan-pinned.json" --limit 12
