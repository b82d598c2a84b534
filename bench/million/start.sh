#!/usr/bin/env bash
# Figures 3 and 8: a million stored sessions, the 1,000 minted ones hot.
set -euo pipefail
export SESIJA_SEED_LIVE=999000
exec "$(dirname "$0")/../start.sh"
