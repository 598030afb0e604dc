#!/usr/bin/env bash
# The Debian packages the tests start for real: Dovecot (IMAP), Mosquitto (MQTT) and PostgreSQL
# for the tool tests, and Chromium, which drives the dashboard test through Playwright. Installs
# the missing ones when it can (root, or sudo without a password); otherwise it says which are
# missing, and the tests that need them are skipped with that reason.
set -euo pipefail

missing=()
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "note: not root, so not installing ${missing[*]}; the tests that need them will be skipped." >&2
    exit 0
fi
echo "installing ${missing[*]} (Debian packages, for the tests)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
