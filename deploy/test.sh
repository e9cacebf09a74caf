#!/usr/bin/env bash
# The README's second command (and what CI runs): install what is missing,
# check formatting and lints, and run the whole test suite.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
"$here/deploy/install-deps.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/iom-target}

# The broker tests need a real RabbitMQ on 127.0.0.1:5672 (guest/guest): start it
# when it is not running, then enable the feature flag that at-least-once
# dead-lettering needs on RabbitMQ 3.10 (idempotent).
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! $SUDO rabbitmqctl -q status >/dev/null 2>&1; then
  echo "test: starting RabbitMQ" >&2
  $SUDO rabbitmq-server -detached
fi
$SUDO rabbitmqctl -q await_startup --timeout 120
$SUDO rabbitmqctl -q enable_feature_flag stream_queue

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --lib --bins --tests
