{
  "format": "driftwatch-profile",
  "version": 1,
  "dataset": "empty",
  "rows": 0,
  "sources": [],
  "columns": {}
}
