#!/usr/bin/env python3
"""DuckDB side of `prognos bench query`: the same queries over the same Parquet files, as the
SQL an analyst would write. `prognos bench query --duckdb PYTHON` runs this with its own
parameters, compares the results and prints the ratios; the script prints one JSON object.

DuckDB runs with its defaults except `threads` (set to the Prognos worker count). The glob
reads every file of the data set with hive_partitioning off, which is the natural query: the
time filter is pushed down to DuckDB's Parquet reader (row-group statistics), the device and
metric filters too. Every timing is one `execute(...).fetchall()` on a warm page cache, with
one untimed warm-up run first, in one connection.

Queries (the Prognos equivalents are in src/bench_query.rs):

Q1 buckets  (one device-metric, `step` µs buckets aligned on the epoch, mean/min/max/last/count)
    SELECT (epoch_us(ts) // {step}) * {step} AS bucket_us, count(*), avg(value),
           min(value), max(value), arg_max(value, ts)
    FROM read_parquet('{root}/**/*.parquet', hive_partitioning = false)
    WHERE device_id = '{device}' AND metric = '{metric}'
      AND ts >= TIMESTAMPTZ '{from}' AND ts < TIMESTAMPTZ '{to}'
    GROUP BY bucket_us ORDER BY bucket_us

Q1 raw      (the raw points LTTB is computed from; DuckDB has no LTTB)
    SELECT epoch_us(ts), value FROM read_parquet(...) WHERE <same> ORDER BY ts

Q2 hourly   (fleet-wide, per metric, everything)
    SELECT (epoch_us(ts) // 3600000000) * 3600000000 AS hour_us, metric, count(*),
           avg(value), min(value), max(value)
    FROM read_parquet(...) GROUP BY ALL ORDER BY hour_us, metric

Q3 daily by model (fleet-wide, per metric and device model from devices.jsonl)
    SELECT (epoch_us(ts) // 86400000000) * 86400000000 AS day_us,
           coalesce(d.model, 'unknown') AS grp, t.metric, count(*), avg(value), min(value),
           max(value)
    FROM read_parquet(...) t LEFT JOIN models d ON d.id = t.device_id
    GROUP BY ALL ORDER BY day_us, grp, metric
  (`models` is a temporary table loaded from devices.jsonl before timing, as Prognos gets
  its device → model map in memory.)
"""

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta, timezone

import duckdb


def ts_literal(us: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)
    return t.isoformat()


def quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def timed(con, sql: str, repeat: int):
    con.execute(sql).fetchall()  # warm-up, untimed
    times = []
    rows = None
    for _ in range(repeat):
        start = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append(time.perf_counter() - start)
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "sql": " ".join(sql.split()),
    }, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="the telemetry directory")
    ap.add_argument("--device", required=True)
    ap.add_argument("--metric", required=True)
    ap.add_argument("--from-us", type=int, required=True)
    ap.add_argument("--to-us", type=int, required=True)
    ap.add_argument("--step-us", type=int, required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--devices-jsonl", help="run Q3 with the models of this file")
    ap.add_argument("--only", default="q1,q2,q3", help="comma-separated subset of q1,q2,q3")
    args = ap.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    src = f"read_parquet({quote(args.root + '/**/*.parquet')}, hive_partitioning = false)"
    where = (
        f"device_id = {quote(args.device)} AND metric = {quote(args.metric)} "
        f"AND ts >= TIMESTAMPTZ {quote(ts_literal(args.from_us))} "
        f"AND ts < TIMESTAMPTZ {quote(ts_literal(args.to_us))}"
    )
    step = int(args.step_us)
    only = {q.strip().lower() for q in args.only.split(",")}
    out = {"duckdb_version": duckdb.__version__, "threads": args.threads, "queries": {}}

    if "q1" in only:
        run_q1(con, src, where, step, args.repeat, out)
    if "q2" in only:
        run_q2(con, src, args.repeat, out)
    if "q3" in only and args.devices_jsonl:
        run_q3(con, src, args.devices_jsonl, args.repeat, out)
    print(json.dumps(out))


def run_q1(con, src, where, step, repeat, out):
    q1 = (
        f"SELECT (epoch_us(ts) // {step}) * {step} AS bucket_us, count(*), avg(value), "
        f"min(value), max(value), arg_max(value, ts) FROM {src} WHERE {where} "
        f"GROUP BY bucket_us ORDER BY bucket_us"
    )
    stats, rows = timed(con, q1, repeat)
    stats["rows"] = [list(r) for r in rows]
    out["queries"]["q1_buckets"] = stats

    q1raw = f"SELECT epoch_us(ts), value FROM {src} WHERE {where} ORDER BY ts"
    stats, rows = timed(con, q1raw, repeat)
    stats["count"] = len(rows)
    stats["sum"] = sum(r[1] for r in rows)
    stats["first_ts_us"] = rows[0][0] if rows else None
    stats["last_ts_us"] = rows[-1][0] if rows else None
    out["queries"]["q1_raw"] = stats


def run_q2(con, src, repeat, out):
    q2 = (
        f"SELECT (epoch_us(ts) // 3600000000) * 3600000000 AS hour_us, metric, count(*), "
        f"avg(value), min(value), max(value) FROM {src} GROUP BY ALL ORDER BY hour_us, metric"
    )
    stats, rows = timed(con, q2, repeat)
    stats["rows"] = [list(r) for r in rows]
    out["queries"]["q2_hourly"] = stats


def run_q3(con, src, devices_jsonl, repeat, out):
    con.execute(
        "CREATE TEMP TABLE models AS SELECT id, model FROM "
        f"read_json({quote(devices_jsonl)}, format = 'newline_delimited')"
    )
    q3 = (
        "SELECT (epoch_us(ts) // 86400000000) * 86400000000 AS day_us, "
        "coalesce(d.model, 'unknown') AS grp, t.metric, count(*), avg(value), min(value), "
        f"max(value) FROM {src} t LEFT JOIN models d ON d.id = t.device_id "
        "GROUP BY ALL ORDER BY day_us, grp, t.metric"
    )
    stats, rows = timed(con, q3, repeat)
    stats["rows"] = [list(r) for r in rows]
    out["queries"]["q3_daily_by_model"] = stats


if __name__ == "__main__":
    main()
