#!/usr/bin/env bash
# The check's slow path for the target's host: an IP address, which the URL
# parser normalises (the default public_url covers 127.0.0.1).
set -euo pipefail
exec "$(dirname "$0")/../start.sh"
