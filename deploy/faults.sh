#!/usr/bin/env bash
# Long form of the fault-injection suite (issue 8): the same tests CI runs in
# short form, with 20+ kill -9 trials, then the soak. Prints a results table
# (markdown) at the end; docs/guarantees.md quotes it.
#
# Usage: deploy/faults.sh [TRIALS]     (default 20)
#   IOM_FAULT_SEED=<n>  replays a trial sequence (each trial prints its seed)
#   SOAK=0              skips the soak (500 plates, 2 workers, random restarts)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/iom-target}
trials=${1:-20}
log=$(mktemp -d)/faults
mkdir -p "$log"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO rabbitmqctl -q await_startup --timeout 120

cargo test --locked --test tests --no-run >/dev/null 2>&1 || cargo test --locked --test tests --no-run
declare -a rows
run() { # name, filter, env...
  local name=$1 filter=$2; shift 2
  local t0=$SECONDS id=${filter##*::}
  if env "$@" cargo test --locked --test tests "$filter" -- --exact --nocapture --test-threads 1 \
      >"$log/$id.log" 2>&1; then
    rows+=("| $name | passed | $((SECONDS - t0)) s | \`$* cargo test --test tests $filter -- --exact\` |")
  else
    rows+=("| $name | **FAILED** (see $log/$id.log) | $((SECONDS - t0)) s | \`$* cargo test --test tests $filter -- --exact\` |")
  fi
}
run "kill -9 of workers, $trials trials of a 10-plate publish" it::faults::kill_nine_workers_at_random_points IOM_FAULT_TRIALS="$trials"
run "kill -9 of workers and of the Tractor bridge, fake engine mirroring" it::faults::kill_nine_of_workers_and_the_bridge_while_tractor_mirrors
run "connections closed by the broker" it::faults::connections_closed_by_the_broker
run "full broker restart mid-publish (own node)" it::faults::broker_restart_mid_publish
run "a step longer than the consumer timeout (own node)" it::faults::a_step_longer_than_the_consumer_timeout
run "a full disk under the publish root (tmpfs)" it::faults::a_full_disk_under_the_publish_root
kills=$(grep -ho "[0-9]* worker(s) killed" "$log"/kill_nine_workers_at_random_points.log 2>/dev/null | awk '{s+=$1} END {print s+0}')

if [ "${SOAK:-1}" != 0 ]; then
  t0=$SECONDS
  if cargo bench --locked --bench soak >"$log/soak.log" 2>&1; then
    rows+=("| soak: 500 plates, 2 workers, random restarts | passed | $((SECONDS - t0)) s | \`cargo bench --bench soak\` |")
  else
    rows+=("| soak: 500 plates, 2 workers, random restarts | **FAILED** (see $log/soak.log) | $((SECONDS - t0)) s | \`cargo bench --bench soak\` |")
  fi
fi

echo
echo "| fault | result | time | reproduce |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "workers killed with SIGKILL across the kill trials: $kills"
[ -f "$log/soak.log" ] && sed -n '/^## soak/,$p' "$log/soak.log"
echo "logs: $log"
! printf '%s\n' "${rows[@]}" | grep -q FAILED
