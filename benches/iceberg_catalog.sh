#!/usr/bin/env bash
# What following an Iceberg table through a REST catalog costs (issue 16):
# `check` of the same snapshot read through the catalog (GET /v1/config, GET
# the table, then the manifests and data files) and read from the table's
# folder (the newest metadata file), alternating, release build; medians of
# wall-clock time. The catalog is lakana-server and the table is written by
# pyiceberg, from the virtualenv `.ci/run` installs
# (~/.cache/driftwatch-tools/iceberg-rest-1, or DRIFTWATCH_ICEBERG_REST).
#
#   benches/iceberg_catalog.sh [ROWS] [RUNS]        defaults: 1000000, 7
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
RUNS="${2:-7}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/driftwatch-target}"
cargo build --release --quiet --bin driftwatch
bin="$CARGO_TARGET_DIR/release/driftwatch"
venv="${DRIFTWATCH_ICEBERG_REST:-$HOME/.cache/driftwatch-tools/iceberg-rest-1/bin}"
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export LAKANA_DATABASE__URL="sqlite:///$work/lakana.db" LAKANA_BOOTSTRAP_PAT_KEY_ID=benchkey0001 \
  LAKANA_BOOTSTRAP_PAT_SECRET=benchsecret000000000000000000001 LAKANA_HOST=127.0.0.1 LAKANA_PORT="$port"
token="lakana_pat_${LAKANA_BOOTSTRAP_PAT_KEY_ID}_${LAKANA_BOOTSTRAP_PAT_SECRET}"
"$venv/lakana-server" migrate >/dev/null 2>&1
"$venv/lakana-server" >"$work/lakana.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/config" >/dev/null && break; sleep 0.1; done
mkdir -p "$work/warehouse"
curl -sf -XPOST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  "http://127.0.0.1:$port/api/v1/environments" \
  -d "{\"name\":\"dev\",\"storage\":{\"scheme\":\"file\",\"root\":\"file://$work/warehouse\"}}" >/dev/null
"$venv/python" - "$port" "$token" "$ROWS" <<'EOF'
import sys
import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, NestedField, StringType
port, token, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
catalog = RestCatalog("rest", uri=f"http://127.0.0.1:{port}", prefix="dev", token=token)
table = catalog.create_table("bronze.flights", schema=Schema(
    NestedField(1, "carrier", StringType(), required=False),
    NestedField(2, "amount", DoubleType(), required=False)))
carriers = ["UA", "AA", "DL", "B6", "WN"]
table.append(pa.table({"carrier": [carriers[i % 5] for i in range(rows)],
                       "amount": [float(i % 1000) for i in range(rows)]}))
EOF
folder="$(ls -d "$work"/warehouse/managed/bronze/flights-*)"
checks='checks:
  - not_null: carrier
  - range: { column: amount, min: 0 }
  - row_count: { min: 1 }'
printf 'dataset: flights\ntable:\n  format: iceberg\n  catalog: { uri: "http://127.0.0.1:%s", prefix: dev, namespace: bronze, table: flights, token_env: BENCH_TOKEN }\n%s\n' \
  "$port" "$checks" >"$work/catalog.yaml"
printf 'dataset: flights\ntable: { format: iceberg, location: "%s" }\n%s\n' "$folder" "$checks" >"$work/folder.yaml"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); $ROWS rows, $RUNS runs each, alternating"
for i in $(seq "$RUNS"); do
  for kind in catalog folder; do
    start=$(date +%s%N)
    BENCH_TOKEN="$token" "$bin" check --rules "$work/$kind.yaml" --format json >/dev/null
    echo "$kind $(( ($(date +%s%N) - start) / 1000000 ))"
  done
done >"$work/times"
for kind in catalog folder; do
  times="$(awk -v k="$kind" '$1 == k { print $2 }' "$work/times")"
  median="$(sort -n <<<"$times" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
  echo "$kind median $median ms (runs: $(tr '\n' ' ' <<<"$times"))"
done
