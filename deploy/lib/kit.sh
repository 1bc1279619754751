# shellcheck shell=bash
# Shared by install.sh and expand.sh: the binary to deploy, the inventory check, the
# Ansible virtualenv, the playbook run and the remaining steps of the plan.

# ansible-core from PyPI, pinned. 2.18 needs Python 3.11+ on the machine running the
# installer; older Pythons get the 2.17 series (3.10).
ANSIBLE_CORE_VERSION_DEFAULT=2.18.19
ANSIBLE_CORE_VERSION_PY310=2.17.14

kit_die() {
  echo "$KIT_SCRIPT: error: $*" >&2
  exit 1
}

kit_say() {
  echo "$KIT_SCRIPT: $*" >&2
}

# The kit directory (deploy/) and the source tree above it, if this is one.
kit_init() {
  KIT_SCRIPT=$1
  KIT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  KIT_REPO=$(cd "$KIT_DIR/.." && pwd)
  KIT_VENV=${SQLRAFT_VENV:-$KIT_DIR/.venv}
}

kit_usage() {
  local what=$1
  cat <<USAGE
usage: $KIT_SCRIPT [--help] <inventory.yml>

$what

Steps:
  1. sqlraft-core inventory check <inventory>: stops on any error.
  2. Ansible: ansible-core is installed from PyPI into a virtualenv when missing
     (\$SQLRAFT_VENV, default $KIT_VENV; needs python3 with venv).
  3. The playbook does what is said above (see docs/OPERATIONS.md).
  4. install.sh and expand.sh print the steps left to the operator
     (sqlraft-core inventory plan).

The sqlraft-core binary deployed to the hosts, first found of:
  \$SQLRAFT_BIN                      an executable file
  $KIT_DIR/bin/sqlraft-core
  $KIT_REPO/target/release/sqlraft-core
  built with: cargo build --release -p sqlraft-core (in $KIT_REPO)

Running it again changes nothing that is already in place.
USAGE
}

# Sets KIT_BIN to an absolute path of the binary to deploy.
# kit_inventory_arg WHAT ARGS...: sets KIT_INVENTORY to the one inventory argument;
# --help prints the usage with WHAT and exits 0; anything else is an error. (Not for
# use in $(...): exit would leave the subshell only.)
kit_inventory_arg() {
  local what=$1
  shift
  case "${1:-}" in
    -h | --help)
      kit_usage "$what"
      exit 0
      ;;
    "") kit_die "missing the inventory file (see --help)" ;;
    -*) kit_die "unknown option $1 (see --help)" ;;
  esac
  [ $# -eq 1 ] || kit_die "expected exactly one inventory file (see --help)"
  # shellcheck disable=SC2034 # read by the calling script
  KIT_INVENTORY=$1
}

kit_find_binary() {
  if [ -n "${SQLRAFT_BIN:-}" ]; then
    if [ ! -f "$SQLRAFT_BIN" ] || [ ! -x "$SQLRAFT_BIN" ]; then
      kit_die "SQLRAFT_BIN=$SQLRAFT_BIN is not an executable file"
    fi
    KIT_BIN=$(cd "$(dirname "$SQLRAFT_BIN")" && pwd)/$(basename "$SQLRAFT_BIN")
  elif [ -x "$KIT_DIR/bin/sqlraft-core" ]; then
    KIT_BIN=$KIT_DIR/bin/sqlraft-core
  elif [ -x "$KIT_REPO/target/release/sqlraft-core" ]; then
    KIT_BIN=$KIT_REPO/target/release/sqlraft-core
  elif [ -f "$KIT_REPO/Cargo.toml" ] && command -v cargo >/dev/null 2>&1; then
    kit_say "no sqlraft-core binary found; building it (cargo build --release -p sqlraft-core)"
    (cd "$KIT_REPO" && cargo build --release -p sqlraft-core) || kit_die "building sqlraft-core failed"
    KIT_BIN=$KIT_REPO/target/release/sqlraft-core
  else
    kit_die "no sqlraft-core binary: set SQLRAFT_BIN, or put it in $KIT_DIR/bin/"
  fi
  kit_say "deploying $KIT_BIN"
}

# Stops unless the inventory is valid; the binary prints every problem with its line.
kit_check_inventory() {
  local inventory=$1
  [ -f "$inventory" ] || kit_die "inventory $inventory: no such file"
  if ! "$KIT_BIN" inventory check "$inventory"; then
    kit_die "the inventory has errors (above); nothing was changed"
  fi
}

# Makes sure $KIT_VENV holds the pinned ansible-core. Serialized with a lock so two
# installers never build the same virtualenv at once.
kit_ensure_ansible() {
  command -v python3 >/dev/null 2>&1 || kit_die "python3 is needed to run Ansible"
  local version
  if [ -n "${SQLRAFT_ANSIBLE_CORE_VERSION:-}" ]; then
    version=$SQLRAFT_ANSIBLE_CORE_VERSION
  elif python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    version=$ANSIBLE_CORE_VERSION_DEFAULT
  elif python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    version=$ANSIBLE_CORE_VERSION_PY310
  else
    kit_die "python3 is $(python3 --version 2>&1); Ansible needs Python 3.10 or later"
  fi
  mkdir -p "$(dirname "$KIT_VENV")"
  exec 9>"$KIT_VENV.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if [ -x "$KIT_VENV/bin/ansible-playbook" ] &&
    [ "$("$KIT_VENV/bin/python" -c 'import ansible.release as r; print(r.__version__)' 2>/dev/null)" = "$version" ]; then
    exec 9>&-
    return 0
  fi
  if [ ! -x "$KIT_VENV/bin/python" ]; then
    kit_say "creating the virtualenv $KIT_VENV"
    python3 -m venv "$KIT_VENV" ||
      kit_die "python3 -m venv failed; install the venv module (Debian: apt-get install python3-venv)"
  fi
  kit_say "installing ansible-core==$version from PyPI into $KIT_VENV"
  "$KIT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "ansible-core==$version" ||
    kit_die "pip install ansible-core==$version failed"
  exec 9>&-
}

# Runs a playbook of the kit against the inventory with the binary to deploy.
kit_run_playbook() {
  local playbook=$1 inventory=$2 extra
  extra=$("$KIT_VENV/bin/python" -c 'import json, sys; print(json.dumps({"sqlraft_binary_src": sys.argv[1]}))' "$KIT_BIN")
  kit_say "running $playbook"
  ANSIBLE_CONFIG=$KIT_DIR/ansible.cfg ANSIBLE_ROLES_PATH=$KIT_DIR/roles \
    "$KIT_VENV/bin/ansible-playbook" -i "$inventory" "$KIT_DIR/$playbook" -e "$extra" ||
    kit_die "$playbook failed (above); fix the cause and run $KIT_SCRIPT again"
}

# Prints what is left to the operator: the plan from "Then, by hand:" on.
kit_print_remaining() {
  local inventory=$1
  shift
  local plan
  plan=$("$KIT_BIN" inventory plan "$@" "$inventory") || kit_die "sqlraft-core inventory plan failed"
  echo
  echo "$KIT_SCRIPT: done."
  printf '%s\n' "$plan" | sed -n -e '/^Nothing is left/p' -e '/^Then, by hand:/,$p'
}
