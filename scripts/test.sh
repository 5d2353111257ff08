#!/usr/bin/env bash
# The project's test command (README Quick start, and what CI runs): installs what the tests
# need, then formatting, lints and every test of the workspace, including the integration tests
# that start real MariaDB, sshd and WireGuard instances (they need root). Benchmarks are not
# run here (they are `cargo bench` targets and bench binaries, see BENCHMARKS.md). Last, the
# Debian packages are built and installed, and checked as an operator would (packaging/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
bash scripts/package.sh
bash scripts/check-packages.sh
