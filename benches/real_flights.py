"""Writes the real-derived benchmark file of issue 19: the three months of
nycflights13 in ../shared/data/flights (81,380 rows, 19 columns) repeated 124
times (10,091,120 rows) with a unique `row_id` first, in row groups of
1,000,000 rows, zstd-compressed as DuckDB writes by default.

    python benches/real_flights.py OUT.parquet [REPEATS]

Needs the duckdb module (benches/compare.sh keeps one in a private virtualenv).
Deterministic: rows are ordered by repetition, then file, then row in file.
"""
import sys

import duckdb

out = sys.argv[1]
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 124
src = "../shared/data/flights/*.parquet"
con = duckdb.connect()
con.sql(f"""
COPY (
  SELECT row_number() OVER (ORDER BY r.range, f.filename, f.file_row_number) - 1 AS row_id,
         f.* EXCLUDE (filename, file_row_number)
  FROM read_parquet('{src}', filename = true, file_row_number = true) f
  CROSS JOIN range({repeats}) r
  ORDER BY r.range, f.filename, f.file_row_number
) TO '{out}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)
""")
print(con.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0], "rows written to", out)
