"""DuckDB running benches/perf12.yaml's 12 rules as one SQL query: the reference
of benches/compare.sh. Prints one JSON object: each rule's failing rows (or
observed value) under driftwatch's check names, and the query's own time.

    python3 benches/duckdb_rules.py FILE.parquet

Semantics match driftwatch's: nulls never fail range, accepted-values or regex
rules (they are `not_null`'s business); `unique` counts non-null rows beyond
the first occurrence of their value.
"""
import json
import sys
import time

import duckdb

CARRIERS = ["9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"]
QUERY = f"""
SELECT
  count(*)                                                        AS row_count,
  count(*) - count(row_id)                                        AS not_null_row_id,
  count(row_id) - count(DISTINCT row_id)                          AS unique_row_id,
  count(*) - count(carrier)                                       AS not_null_carrier,
  count(*) - count(dep_delay)                                     AS not_null_dep_delay,
  count(*) FILTER (WHERE distance < 17 OR distance > 5000)        AS range_distance,
  count(*) FILTER (WHERE dep_delay < -30 OR dep_delay > 600)      AS range_dep_delay,
  count(*) FILTER (WHERE month < 1 OR month > 12)                 AS range_month,
  count(*) FILTER (WHERE origin NOT IN ('EWR', 'JFK', 'LGA'))     AS accepted_values_origin,
  count(*) FILTER (WHERE carrier NOT IN ({", ".join(f"'{c}'" for c in CARRIERS)})) AS accepted_values_carrier,
  count(*) FILTER (WHERE NOT regexp_matches(tailnum, '^N[0-9A-Z]+$')) AS regex_tailnum,
  avg(distance)                                                   AS mean_distance
FROM read_parquet(?)
"""


def main() -> None:
    path = sys.argv[1]
    con = duckdb.connect()
    started = time.perf_counter()
    cursor = con.execute(QUERY, [path])
    row = cursor.fetchone()
    took = time.perf_counter() - started
    names = [d[0] for d in cursor.description]
    print(json.dumps({"query_seconds": took, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
                      "duckdb": duckdb.__version__, "results": dict(zip(names, row))}))


if __name__ == "__main__":
    main()
