#!/usr/bin/env bash
# install.sh <inventory.yml>: a new sqlraft installation. Prepares every host in
# kuma_core and kuma_core_peers, then installs and starts only the first core service
# (00000000-0000-0000-0000-000000000000) on the kuma_core host. See --help and
# docs/OPERATIONS.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/kit.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/kit.sh"
kit_init install.sh

kit_inventory_arg "Prepares every host in kuma_core and kuma_core_peers (service user, directories
under sqlraft_root, the binary, firewall, /etc/hosts), then installs and starts
ONLY the first core service on the kuma_core host. Further core services are
created in the web interface and installed one by one." "$@"
inventory=$KIT_INVENTORY

kit_find_binary
kit_check_inventory "$inventory"
kit_ensure_ansible
kit_run_playbook install.yml "$inventory"
kit_print_remaining "$inventory"
