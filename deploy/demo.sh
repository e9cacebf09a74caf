#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run the demo
# (generate a sample delivery in DIR, scan it, write the scanlist, publish it
# in-process and print what was published).
# Usage: deploy/demo.sh [DIR]   (default ./iom-demo)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/deploy/install-deps.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/iom-target}
cargo build --release --manifest-path "$here/Cargo.toml" --bin iom
exec "$CARGO_TARGET_DIR/release/iom" demo "${1:-iom-demo}"
