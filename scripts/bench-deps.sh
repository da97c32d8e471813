#!/usr/bin/env bash
# Creates (idempotently) the Python venv `.venv-bench` with DuckDB, the reference engine of
# `prognos bench query --duckdb .venv-bench/bin/python`. Kept out of the build and of CI: the
# query benchmark is run by hand on a release build (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-bench
DUCKDB_SPEC="${DUCKDB_SPEC:-duckdb>=1.5,<1.6}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import duckdb, sys; sys.exit(0 if duckdb.__version__.startswith("1.5") else 1)' 2>/dev/null; then
  echo "installing $DUCKDB_SPEC into $VENV (PyPI)"
  "$VENV/bin/python" -m pip install --quiet --upgrade "$DUCKDB_SPEC"
fi
"$VENV/bin/python" -c 'import duckdb; print("duckdb", duckdb.__version__, "in", "'"$VENV"'")'
