#!/usr/bin/env bash
# The installer against real systemd and real firewalls (tests/e2e/systemd_hosts.py):
# three Debian hosts booted with systemd-nspawn, each in its own network namespace,
# installed with deploy/install.sh over SSH at the previous release (v0.1.0, built from
# its commit), upgraded under load with deploy/upgrade.sh to this tree. As root. Takes a
# few minutes; the first run also builds the previous release and the hosts' root file
# system with mmdebstrap (both cached in target/e2e).
#
#   scripts/e2e-systemd.sh [--keep]     --keep: leave the work directory for a look
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "e2e-systemd: must run as root (network namespaces, containers)" >&2
  exit 1
fi

need_apt=()
command -v systemd-nspawn >/dev/null 2>&1 || need_apt+=(systemd-container)
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v pgrep >/dev/null 2>&1 || need_apt+=(procps)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
command -v tar >/dev/null 2>&1 || need_apt+=(tar)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  echo "e2e-systemd: installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

cargo build --locked -p sqlraft-core --bin sqlraft-core
binary=$repo/target/debug/sqlraft-core

# The previous release, which the hosts run before the rolling upgrade to this tree:
# built once from its commit in a target directory of its own, cached by commit.
from=${SQLRAFT_UPGRADE_FROM:-v0.1.0}
commit=$(git rev-parse --verify -q "$from^{commit}" || true)
if [ -z "$commit" ] && [ "$from" = v0.1.0 ]; then
  commit=30b5a4d2413aaa5d6fad7330f479ad740c044a44 # v0.1.0, for a clone without tags
fi
[ -n "$commit" ] || { echo "e2e-systemd: no commit $from" >&2; exit 1; }
old_binary=$repo/target/e2e/release-$commit/sqlraft-core
if [ ! -x "$old_binary" ]; then
  src=$repo/target/e2e/src-$commit
  rm -rf "$src" && mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
  echo "e2e-systemd: building the previous release ($from, $commit)" >&2
  (cd "$src" && CARGO_TARGET_DIR=$repo/target/e2e/previous-target \
    cargo build --locked -p sqlraft-core --bin sqlraft-core)
  mkdir -p "$(dirname "$old_binary")"
  cp "$repo/target/e2e/previous-target/debug/sqlraft-core" "$old_binary.part"
  mv "$old_binary.part" "$old_binary"
  rm -rf "$src"
fi

# The installer's Ansible, made here where PyPI is reachable (the hosts' lab network
# reaches nothing outside): the kit's own function, into the kit's default virtualenv.
venv=${SQLRAFT_VENV:-$repo/deploy/.venv}
SQLRAFT_VENV=$venv bash -c '. deploy/lib/kit.sh && kit_init e2e-systemd && kit_ensure_ansible'

work=$repo/target/e2e/run.$$
exec python3 tests/e2e/systemd_hosts.py --binary "$binary" --old-binary "$old_binary" \
  --cache "$repo/target/e2e" --work "$work" --venv "$venv" "$@"
