#!/usr/bin/env bash
# The main job (README Quick start). For now: generate a realistic inventory and plan its waves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -p migrator
out=${DEMO_DIR:-out/demo}
mkdir -p "$out"
./target/release/migrator inventory generate --sites "${DEMO_SITES:-100000}" --seed 42 --out "$out/inventory"
./target/release/migrator plan --inventory "$out/inventory" --out "$out/plan.json"
