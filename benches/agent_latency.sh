#!/usr/bin/env bash
# The agent-side benchmark of issue 19, on the real binary (release build):
#   1. landing → verdict latency: files of 27,000 rows × 20 columns renamed one
#      at a time into a Hive partition folder created just before (a new
#      `date=…/` folder) and into a folder that already exists, alternately;
#      median and p99 per kind beside one file's evaluation time (floors:
#      median ≤ 50 ms + evaluation, p99 ≤ 250 ms + evaluation);
#   2. many small files: 500 such files renamed into the lake at once (a
#      backlog); files/s and rows/s from the first rename to the last verdict,
#      the agent's CPU (cores kept busy, ms a file) and its peak RSS (floors:
#      ≥ 300 files/s, ≤ 128 MiB). The harness reads only what the results
#      log gained since its last poll, so it takes next to no CPU itself.
# The rule file has 9 checks (the demo rules' first nine; see
# examples/agent_latency.rs). Settle time: the default 2 s, so a file that
# waits for it shows in the latency. The machine's load is printed first:
# the figures are wall-clock.
#
#   benches/agent_latency.sh [LATENCY_FILES] [MANY] [FLAGS...]     defaults: 60, 500
#   benches/agent_latency.sh 0 500 --runs 6 --volume alternate
#       the volume signal's cost: many-small-files runs alternating
#       `[health] volume_anomaly` on and off, medians per setting
#
# Files are staged under ${BENCH_DIR:-/var/tmp} (about 1.3 MB each).
set -euo pipefail
cd "$(dirname "$0")/.."
LATENCY_FILES="${1:-60}"
MANY="${2:-500}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/driftwatch-target}"
export BENCH_DIR="${BENCH_DIR:-/var/tmp}"
cargo build --release --quiet --bin driftwatch --example agent_latency
echo "load: $(uptime)"
"$CARGO_TARGET_DIR/release/examples/agent_latency" \
  --latency-files "$LATENCY_FILES" --many "$MANY" --rows 27000 "${@:3}"
echo "load: $(uptime)"
