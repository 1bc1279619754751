#!/usr/bin/env bash
# Starts a local 3-node sqlraft cluster on 127.0.0.1 and prints how to use it.
# Ctrl-C stops every node it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# Only what building needs (the tests' browser and tools are not the demo's).
bash scripts/setup.sh build
cargo build --release --locked -p sqlraft-core
exec ./target/release/sqlraft-core demo "$@"
