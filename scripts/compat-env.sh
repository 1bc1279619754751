#!/usr/bin/env bash
# Installs the rqlite client libraries that tests/rqlite_clients.rs runs unmodified:
# pyrqlite and SQLAlchemy's rqlite dialect (PyPI, pinned in tests/compat/requirements.txt)
# into a virtualenv, and rqlite-js (npm, pinned in tests/compat/package-lock.json).
# They are kept in <target dir>/compat and installed again only when the pins change.
# Prints the directory. Needs python3-venv and npm (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
dir="$target/compat"
stamp="$(cat tests/compat/requirements.txt tests/compat/package-lock.json | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$dir/stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "compat-env: installing the rqlite clients into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir/js"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
    -r tests/compat/requirements.txt >&2
  cp tests/compat/package.json tests/compat/package-lock.json "$dir/js/"
  (cd "$dir/js" && npm ci --silent --no-audit --no-fund >&2)
  echo "$stamp" > "$dir/stamp"
fi
echo "$dir"
