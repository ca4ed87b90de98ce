"""syncapp's benchmark suite: real servers, real clients in other processes (see
docs/benchmarks.md). Run it with ``.venv/bin/python benchmarks/run``."""
