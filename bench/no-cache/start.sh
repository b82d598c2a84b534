#!/usr/bin/env bash
# Figure 2: the cache turned off.
set -euo pipefail
export ROCKET_SESSION_CACHE_CAPACITY=0
exec "$(dirname "$0")/../start.sh"
