#!/usr/bin/env bash
# The check's slow path for the target's host: an internationalised name
# under cookie_domain (browsers send it as punycode, xn--bcher-kva), which
# goes through IDNA on every check.
set -euo pipefail
export ROCKET_PUBLIC_URL=http://auth.bench.test ROCKET_COOKIE_DOMAIN=bench.test
exec "$(dirname "$0")/../start.sh"
