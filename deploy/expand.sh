#!/usr/bin/env bash
# expand.sh <inventory.yml>: new peers for a running cluster. Prepares only the hosts in
# kuma_core_peers; the kuma_core host and its running service are left alone. See --help
# and docs/OPERATIONS.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/kit.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/kit.sh"
kit_init expand.sh

kit_inventory_arg "Prepares the new hosts in kuma_core_peers (service user, directories under
sqlraft_root, the binary, firewall, /etc/hosts). The kuma_core host, whose core
service already runs, is not touched. The new core services are created in the
web interface and installed one by one." "$@"
inventory=$KIT_INVENTORY

kit_find_binary
kit_check_inventory "$inventory"
kit_ensure_ansible
kit_run_playbook expand.yml "$inventory"
kit_print_remaining "$inventory" --expand
