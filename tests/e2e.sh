#!/usr/bin/env bash
# The web chat page end to end: builds and starts a local server (dev mode, a fresh data
# directory, a free port), then drives two users through it in headless Chromium
# (tests/e2e/chat.mjs, playwright-core). Screenshots go to target/e2e/.
#
#   bash tests/e2e.sh
#
# Needs Node.js with npm, and Debian's chromium (/usr/bin/chromium, or IM_E2E_CHROMIUM).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null || { echo "e2e: node is missing" >&2; exit 1; }
chromium=${IM_E2E_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || { echo "e2e: $chromium is missing: apt-get install chromium" >&2; exit 1; }
[ -d tests/e2e/node_modules/playwright-core ] || npm ci --prefix tests/e2e --no-audit --no-fund >/dev/null
cargo build --quiet --bin im-server
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data=$(mktemp -d)
IM_DATA_DIR="$data" IM_ADDR="127.0.0.1:$port" IM_LOG="warn,im_server=info" \
  "${CARGO_TARGET_DIR:-target}/debug/im-server" >"$data/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/v1/health" >/dev/null && break; sleep 0.1; done
rm -rf target/e2e && mkdir -p target/e2e
if ! IM_E2E_BASE="http://127.0.0.1:$port" IM_E2E_OUT=target/e2e IM_E2E_CHROMIUM="$chromium" node tests/e2e/chat.mjs; then
  echo "e2e: the server's log:" >&2
  tail -50 "$data/server.log" >&2
  exit 1
fi
