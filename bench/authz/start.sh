#!/usr/bin/env bash
# The forward-auth budget: the check nginx asks on every proxied request of
# an app, loaded with the saved cookies. As a real deployment runs it: the
# portal at a name under cookie_domain, the app at another name under it.
set -euo pipefail
export ROCKET_PUBLIC_URL=http://auth.bench.test ROCKET_COOKIE_DOMAIN=bench.test
exec "$(dirname "$0")/../start.sh"
