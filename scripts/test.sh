#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# No import cycles between the modules of a crate.
python3 scripts/module_cycles.py
# The docs compile: intra-doc links (ARCHITECTURE.md is in the sqlraft crate's docs).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
cargo test --workspace --locked

# The installer against real systemd and real firewalls: three Debian hosts booted with
# systemd-nspawn (tests/e2e/systemd_hosts.py, about two minutes; the hosts' root file
# system is built once with mmdebstrap and cached in target/e2e).
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/e2e-systemd.sh
else
  echo "test: not root: the systemd end-to-end test (scripts/e2e-systemd.sh) was not run" >&2
fi

# The fault campaign's smoke run (docs/TESTING.md): fixed seeds, each group of faults on
# its own and then all mixed, about three minutes. Longer: scripts/campaign.sh --minutes N.
bash scripts/campaign.sh --seconds 30 --seed 1 --nemesis kill,kill-leader,pause,pause-leader,snapshot
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/campaign.sh --seconds 30 --seed 2 --nemesis partition,bridge,one-way,loss
  bash scripts/campaign.sh --seconds 30 --seed 3 --nemesis join,remove,remove-leader,disk,clock
  bash scripts/campaign.sh --seconds 30 --seed 4 --nemesis all
else
  echo "test: not root: the campaign's network, disk and clock faults were not run" >&2
fi
