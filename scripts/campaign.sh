#!/usr/bin/env bash
# The fault campaign (docs/TESTING.md): builds sqlraft-core and the campaign, installs
# what the faults need when missing, and runs it. Every argument goes to the campaign:
#
#   scripts/campaign.sh --minutes 60 --seed 1000              # an hour, every fault
#   scripts/campaign.sh --seconds 120 --runs 5 --nemesis partition,kill-leader
#   scripts/campaign.sh --seed 1234 --runs 1 --seconds 60     # reproduce one seed
#   scripts/campaign.sh --help
#
# Network faults, the full disk and clock jumps need root (network and mount
# namespaces); without root the campaign runs on loopback with the process faults.
# CAMPAIGN_PROFILE=release builds optimised binaries (more operations per second).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

profile="${CAMPAIGN_PROFILE:-dev}"
cargo build --locked --profile "$profile" -p sqlraft-core -p sqlraft-campaign --quiet
dir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
# The campaign finds sqlraft-core beside itself; say which one explicitly anyway.
export SQLRAFT_CORE_BIN="$PWD/$dir/sqlraft-core"
exec "$dir/sqlraft-campaign" "$@"
