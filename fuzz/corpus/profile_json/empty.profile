{
  "format": "driftwatch-profile",
  "version": 2,
  "dataset": "empty",
  "rows": 0,
  "sources": [],
  "columns": {}
}
