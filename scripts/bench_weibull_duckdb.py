#!/usr/bin/env python3
"""DuckDB side of `prognos bench weibull`: the right-censored Weibull maximum-likelihood fit
over the same lives.parquet (columns days, failed), as SQL an analyst would write — DuckDB
has no Weibull fit, so Newton's method on the profile-likelihood equation for beta, one
aggregate query per step, with eta in closed form:

    g(b) = S1/S0 - 1/b - mean(ln t over failures) = 0,
    S0 = sum t^b, S1 = sum t^b ln t, S2 = sum t^b (ln t)^2   (t scaled by its maximum)
    g'(b) = (S2 S0 - S1^2) / S0^2 + 1/b^2,   eta = (S0 / r)^(1/b) * max t.

Timed: loading the file into a table plus the iterations, median of `repeat` runs after one
warm-up, in one connection. Prints one JSON object.

usage: bench_weibull_duckdb.py LIVES.parquet REPEAT
"""

import json
import math
import statistics
import sys
import time

import duckdb


def fit(con, path):
    con.execute("DROP TABLE IF EXISTS lives")
    con.execute(
        f"CREATE TABLE lives AS SELECT days AS t, failed FROM read_parquet('{path}')"
    )
    tmax, r, mean_ln = con.execute(
        "SELECT max(t), count(*) FILTER (WHERE failed), avg(ln(t)) FILTER (WHERE failed) FROM lives"
    ).fetchone()
    mean_ln_scaled = mean_ln - math.log(tmax)
    b = 1.0
    steps = 0
    for steps in range(1, 101):
        s0, s1, s2 = con.execute(
            """SELECT sum(pow(t / ?, ?)), sum(pow(t / ?, ?) * ln(t / ?)),
                      sum(pow(t / ?, ?) * ln(t / ?) * ln(t / ?)) FROM lives""",
            [tmax, b, tmax, b, tmax, tmax, b, tmax, tmax],
        ).fetchone()
        g = s1 / s0 - 1.0 / b - mean_ln_scaled
        dg = (s2 * s0 - s1 * s1) / (s0 * s0) + 1.0 / (b * b)
        nb = b - g / dg
        if nb <= 0:
            nb = b / 2
        if abs(nb - b) < 1e-12 * b:
            b = nb
            break
        b = nb
    s0 = con.execute("SELECT sum(pow(t / ?, ?)) FROM lives", [tmax, b]).fetchone()[0]
    eta = (s0 / r) ** (1.0 / b) * tmax
    return b, eta, steps


def main():
    path, repeat = sys.argv[1], int(sys.argv[2])
    con = duckdb.connect()
    fit(con, path)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        beta, eta, steps = fit(con, path)
        times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({
        "engine": f"duckdb {duckdb.__version__}",
        "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "beta": beta,
        "eta": eta,
        "iterations": steps,
    }))


if __name__ == "__main__":
    main()
