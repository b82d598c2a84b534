#!/usr/bin/env bash
# The forward-auth budget: the check nginx asks on every proxied request,
# loaded with the saved cookies (the default public_url covers 127.0.0.1).
set -euo pipefail
exec "$(dirname "$0")/../start.sh"
