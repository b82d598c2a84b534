#!/usr/bin/env bash
# Figure 4: sliding expiry written as often as allowed.
set -euo pipefail
export ROCKET_SESSION_TOUCH_INTERVAL=1
exec "$(dirname "$0")/../start.sh"
