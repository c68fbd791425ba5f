#!/usr/bin/env bash
# The macro benchmark of issue 7. On one generated flights-shaped file it times,
# alternating runs:
#   (a) `driftwatch check` with the 12-rule suite (benches/perf12.yaml);
#   (b) the same plus drift of all 20 columns against a baseline profile (every
#       column profiled in the same scan);
#   (c) DuckDB running the same 12 rules as one SQL query (benches/duckdb_rules.py,
#       DuckDB from PyPI in a private virtualenv; tests never need it);
#   and a bare DataFusion scan (examples/bare_scan.rs) as a floor.
# It prints medians, the ratios a/c and b/c, peak RSS of each, checks that (a)
# and (c) give identical answers, then runs (a) at several sizes to show how
# time and memory grow.
#
#   benches/compare.sh [ROWS] [RUNS]     defaults: 10000000 rows, 5 runs
#   SCALE="1000000 10000000 50000000" MEMORY_LIMIT=256MiB benches/compare.sh
#   REAL=1 SCALE= benches/compare.sh     the real-derived file instead (issue 19):
#       nycflights13's three months in ../shared/data/flights repeated to
#       10,091,120 rows by benches/real_flights.py (ROWS is ignored)
#
# Data files (with a few planted failures, so the answers compared are non-zero
# counts) are generated once by examples/gen_flights.rs into
# ${BENCH_DIR:-/var/tmp/driftwatch-bench} (10 M rows: ~260 MB; 50 M: ~1.3 GB).
# Needs /usr/bin/time (Debian package `time`) and python3 with venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-10000000}"
RUNS="${2:-5}"
SCALE="${SCALE-1000000 10000000 50000000}"
MEMORY_LIMIT="${MEMORY_LIMIT:-256MiB}"
DUCKDB_VERSION="${DUCKDB_VERSION:-2.0.1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/driftwatch-target}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/driftwatch-bench}"
mkdir -p "$BENCH_DIR"

[ -x /usr/bin/time ] || { echo "install /usr/bin/time: apt-get install -y time" >&2; exit 1; }
cargo build --release --quiet --bin driftwatch --example gen_flights --example bare_scan
BIN="$CARGO_TARGET_DIR/release"
VENV="$BENCH_DIR/venv-duckdb-$DUCKDB_VERSION"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "duckdb==$DUCKDB_VERSION"
fi

data() { # rows -> path of a generated file
  local path="$BENCH_DIR/flights-$1-defects.parquet"
  [ -f "$path" ] || "$BIN/examples/gen_flights" "$path" "$1" 1000000 --defects >&2
  echo "$path"
}
if [ -n "${REAL:-}" ]; then
  DATA="$BENCH_DIR/flights-real-10M.parquet"
  [ -f "$DATA" ] || "$VENV/bin/python" benches/real_flights.py "$DATA" >&2
  ROWS=10091120
else
  DATA="$(data "$ROWS")"
fi
# The columns the 12 rules read, for the like-for-like bare scan.
RULE_COLUMNS="row_id,carrier,dep_delay,distance,month,origin,tailnum"
PROFILE="$BENCH_DIR/$(basename "$DATA" .parquet).profile"
/usr/bin/time -f "%e %M" -o "$BENCH_DIR/baseline.time" \
  "$BIN/driftwatch" baseline "$DATA" --rules benches/perf12.yaml --output "$PROFILE" \
  --memory-limit "$MEMORY_LIMIT" >/dev/null

measure() { # label, command...: appends "seconds maxrss_kib" to $BENCH_DIR/<label>.times; stdout to <label>.out
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$BENCH_DIR/.t" "$@" >"$BENCH_DIR/$label.out" 2>"$BENCH_DIR/.err" || {
    local rc=$?
    # driftwatch exits 1 when a rule fails; only 2+ is a broken run.
    if [ "$rc" -ge 2 ]; then cat "$BENCH_DIR/.err" >&2; exit "$rc"; fi
  }
  tail -n 1 "$BENCH_DIR/.t" >> "$BENCH_DIR/$label.times"
}

rm -f "$BENCH_DIR"/*.times
for i in $(seq "$RUNS"); do
  measure check "$BIN/driftwatch" check "$DATA" --rules benches/perf12.yaml --format json --memory-limit "$MEMORY_LIMIT"
  measure duckdb "$VENV/bin/python" benches/duckdb_rules.py "$DATA"
  measure check_drift "$BIN/driftwatch" check "$DATA" --rules benches/perf12.yaml --reference "$PROFILE" \
    --format json --memory-limit "$MEMORY_LIMIT"
  measure bare_all "$BIN/examples/bare_scan" "$DATA"
  measure bare_rule_columns "$BIN/examples/bare_scan" "$DATA" --columns "$RULE_COLUMNS"
done
for n in $SCALE; do
  f="$(data "$n")"
  for i in $(seq 3); do
    measure "scale_$n" "$BIN/driftwatch" check "$f" --rules benches/perf12.yaml --format json --memory-limit "$MEMORY_LIMIT"
  done
done

python3 - "$BENCH_DIR" "$ROWS" "$RUNS" "$PROFILE" "$MEMORY_LIMIT" "$SCALE" <<'PY'
import json, os, statistics, sys
d, rows, runs, profile, limit, scale = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
def load(label):
    t = [tuple(map(float, l.split())) for l in open(f"{d}/{label}.times") if l.strip()]
    return statistics.median(x for x, _ in t), max(m for _, m in t) / 1024
check, check_mem = load("check")
duck, duck_mem = load("duckdb")
drift, drift_mem = load("check_drift")
bare, bare_mem = load("bare_all")
bare7, bare7_mem = load("bare_rule_columns")
cores = os.cpu_count()
print(f"rows: {rows:,}  runs: {runs} (alternating, whole-process wall time, median)  cores: {cores}  "
      f"driftwatch --memory-limit {limit}")
line = lambda name, t, m: print(f"{name:44} {t:7.2f} s  {rows/t/1e6:7.1f} M rows/s  peak RSS {m:7.0f} MiB")
line("(a) driftwatch check, 12 rules", check, check_mem)
line("(b) (a) + drift profiles of 20 columns", drift, drift_mem)
line("(c) DuckDB, the 12 rules as one query", duck, duck_mem)
line("bare DataFusion count(col), 20 cols", bare, bare_mem)
line("bare DataFusion count(col), 7 rule cols", bare7, bare7_mem)
dj = json.load(open(f"{d}/duckdb.out"))
print(f"ratios: a/c = {check/duck:.2f}x   b/c = {drift/duck:.2f}x   a/bare(7 cols) = {check/bare7:.2f}x   b/bare(20 cols) = {drift/bare:.2f}x   "
      f"(DuckDB {dj['duckdb']}, {dj['threads']} threads, query alone {dj['query_seconds']:.2f} s)")
base_t, base_m = map(float, open(f"{d}/baseline.time").read().split()[-2:])
print(f"baseline: {base_t:.2f} s, peak RSS {base_m/1024:.0f} MiB; profile {os.path.getsize(profile)/1e6:.2f} MB")

# Identical answers: each check's failing rows (or observed value) against DuckDB's.
report = json.load(open(f"{d}/check.out"))["reports"][0]
ours = {}
for c in report["checks"]:
    if c["name"] == "row_count":
        ours[c["name"]] = c["observed"]
    elif c["kind"] == "metric":
        ours[c["name"]] = c["observed"]
    else:
        ours[c["name"]] = c["failing_rows"]
theirs = dj["results"]
bad = []
for name, value in theirs.items():
    mine = ours.get(name)
    same = (abs(mine - value) <= 1e-9 * max(1.0, abs(value))) if isinstance(value, float) else mine == value
    if not same:
        bad.append(f"{name}: driftwatch {mine!r} vs DuckDB {value!r}")
print("answers: identical on all 12 rules" if not bad and len(theirs) == 12 else "answers DIFFER: " + "; ".join(bad))

print("scaling of (a), 3 runs each (median time, max peak RSS):")
for n in scale.split():
    t, m = load(f"scale_{n}")
    print(f"  {int(n):>11,} rows  {t:7.2f} s  {int(n)/t/1e6:7.1f} M rows/s  peak RSS {m:7.0f} MiB")
if bad:
    sys.exit(1)
PY
