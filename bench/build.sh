#!/usr/bin/env bash
# Release build of sesija into the harness's shared build dir.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="$BENCH_BUILD/cargo-target" cargo build --release -j2
