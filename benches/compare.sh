#!/usr/bin/env bash
# Times, alternating runs on the same file: (a) `driftwatch check` with the
# 12-rule suite (benches/perf12.yaml); (b) the same plus drift against a baseline
# profile of the same file, i.e. profiling all 20 columns in the same scan; and a
# bare DataFusion scan (examples/bare_scan.rs) as the reference. Prints medians,
# ratios, rows/s and peak RSS of each, and the size of the stored profile.
#
#   benches/compare.sh [ROWS] [RUNS]        (defaults: 10000000 rows, 5 runs)
#
# The data file is generated once by examples/gen_flights.rs into
# ${BENCH_DIR:-/var/tmp/driftwatch-bench}. Needs /usr/bin/time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-10000000}"
RUNS="${2:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/driftwatch-target}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/driftwatch-bench}"
mkdir -p "$BENCH_DIR"
DATA="$BENCH_DIR/flights-$ROWS.parquet"

[ -x /usr/bin/time ] || { echo "install /usr/bin/time: apt-get install -y time" >&2; exit 1; }
cargo build --release --quiet --bin driftwatch --example gen_flights --example bare_scan
BIN="$CARGO_TARGET_DIR/release"
if [ ! -f "$DATA" ]; then
  "$BIN/examples/gen_flights" "$DATA" "$ROWS" 1000000
fi
# The columns the 12 rules read, for the like-for-like bare scan.
RULE_COLUMNS="row_id,carrier,dep_delay,distance,month,origin,tailnum"
PROFILE="$BENCH_DIR/flights-$ROWS.profile"
/usr/bin/time -f "%e %M" -o "$BENCH_DIR/baseline.time" \
  "$BIN/driftwatch" baseline "$DATA" --rules benches/perf12.yaml --output "$PROFILE" >/dev/null

measure() { # label, command...: appends "seconds maxrss_kib" to $BENCH_DIR/<label>.times
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$BENCH_DIR/.t" "$@" >/dev/null 2>"$BENCH_DIR/.err" || {
    local rc=$?
    # driftwatch exits 1 when a rule fails; only 2+ is a broken run.
    if [ "$rc" -ge 2 ]; then cat "$BENCH_DIR/.err" >&2; exit "$rc"; fi
  }
  tail -n 1 "$BENCH_DIR/.t" >> "$BENCH_DIR/$label.times"
}

rm -f "$BENCH_DIR"/*.times
for i in $(seq "$RUNS"); do
  measure check "$BIN/driftwatch" check "$DATA" --rules benches/perf12.yaml --format json
  measure check_drift "$BIN/driftwatch" check "$DATA" --rules benches/perf12.yaml --reference "$PROFILE" --format json
  measure bare_all "$BIN/examples/bare_scan" "$DATA"
  measure bare_rule_columns "$BIN/examples/bare_scan" "$DATA" --columns "$RULE_COLUMNS"
done

python3 - "$BENCH_DIR" "$ROWS" "$RUNS" "$PROFILE" <<'PY'
import os, statistics, sys
d, rows, runs, profile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(label):
    t = [tuple(map(float, l.split())) for l in open(f"{d}/{label}.times") if l.strip()]
    return statistics.median(x for x, _ in t), max(m for _, m in t) / 1024
check, check_mem = load("check")
drift, drift_mem = load("check_drift")
bare, bare_mem = load("bare_all")
bare7, bare7_mem = load("bare_rule_columns")
print(f"rows: {rows:,}  runs: {runs} (alternating, whole-process wall time, median)")
print(f"{'driftwatch check (12 rules)':38} {check:7.2f} s  {rows/check/1e6:7.1f} M rows/s  peak RSS {check_mem:7.0f} MiB")
print(f"{'check + drift (profiles of 20 cols)':38} {drift:7.2f} s  {rows/drift/1e6:7.1f} M rows/s  peak RSS {drift_mem:7.0f} MiB")
print(f"{'bare DataFusion count(col), 20 cols':38} {bare:7.2f} s  {rows/bare/1e6:7.1f} M rows/s  peak RSS {bare_mem:7.0f} MiB")
print(f"{'bare DataFusion count(col), 7 rule cols':38} {bare7:7.2f} s  {rows/bare7/1e6:7.1f} M rows/s  peak RSS {bare7_mem:7.0f} MiB")
print(f"ratio check / bare(20 cols): {check/bare:.2f}x   check / bare(7 cols): {check/bare7:.2f}x   (check+drift) / check: {drift/check:.2f}x")
base_t, base_m = map(float, open(f"{d}/baseline.time").read().split()[-2:])
print(f"baseline: {base_t:.2f} s, peak RSS {base_m/1024:.0f} MiB; profile {os.path.getsize(profile)/1e6:.2f} MB")
PY
