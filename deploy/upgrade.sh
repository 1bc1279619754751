#!/usr/bin/env bash
# upgrade.sh <inventory.yml>: a rolling upgrade of every core service to the kit's
# binary. Checks every host before anything restarts, then upgrades one host at a
# time: the followers first, the leader last. See --help and docs/OPERATIONS.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/kit.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/kit.sh"
kit_init upgrade.sh

kit_inventory_arg "A rolling upgrade of the core services on the hosts in kuma_core and
kuma_core_peers to the binary below. First, on every host: the new binary is
staged and checked against the service's data (a downgrade across a data format
change is refused) and the leader is found; nothing restarts if any host fails.
Then one host at a time, the followers first and the leader last: the binary
replaces <root>/bin/sqlraft-core (the old one kept as sqlraft-core.previous), the
service is installed again and restarted (a leader hands leadership over first),
and the next host waits until it is ready." "$@"
inventory=$KIT_INVENTORY

kit_find_binary
kit_check_inventory "$inventory"
kit_ensure_ansible
kit_run_playbook upgrade.yml "$inventory"
echo
echo "upgrade.sh: done."
