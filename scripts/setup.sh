#!/usr/bin/env bash
# Installs what is missing for Tessera, idempotently: a Python virtual environment in .venv with the
# project and its test tools, anvil (npm package @foundry-rs/anvil) in .tools/, and, with --tests,
# Debian's chromium (/usr/bin/chromium) for the explorer's browser tests (Playwright never
# downloads a browser of its own) and Debian's postgresql, whose initdb/pg_ctl the explorer's tests
# use to start a throwaway cluster (tests/support/postgres.py; no service is started here).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
ANVIL_VERSION=1.7.1

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
