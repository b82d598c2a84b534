#!/usr/bin/env bash
# Release build of sesija (and the bench-only seeding tool) into the
# harness's shared build dir.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="$BENCH_BUILD/cargo-target" cargo build --release -j2 --bin sesija --example seed
