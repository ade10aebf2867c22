"""Benchmark: generate and write a synthetic bank, beside a plain random-rows baseline.

    .venv/bin/python benchmarks/bench_synth.py [--customers 100000] [--months 24] [--seed 42] [--out DIR]

Prints rows per table, seconds for generate + write, peak memory, the ratios to the targets
(3 minutes, 8 GB for 100k customers x 24 months on 2 cores) and, as a baseline, the time
to write the same number of rows of random values with numpy + pyarrow (same columns and
Arrow types). Never asserts a time: the numbers are for reading.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from propensity import synth
from propensity.config import load_settings

TARGET_SECONDS = 180.0
TARGET_GB = 8.0


def peak_gb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024**2 if sys.platform != "darwin" else kib / 1024**3  # macOS reports bytes


def random_like(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """A table with the same schema and row count, filled with random values."""
    n = table.num_rows
    columns = []
    for field in table.schema:
        t = field.type
        if pa.types.is_string(t):
            words = pa.array([f"v{i:07d}" for i in range(1000)])
            columns.append(words.take(pa.array(rng.integers(0, 1000, n))))
        elif pa.types.is_date32(t):
            columns.append(pa.array(rng.integers(18_000, 20_000, n).astype("datetime64[D]")))
        elif pa.types.is_timestamp(t):
            us = rng.integers(1_700_000_000, 1_760_000_000, n) * 1_000_000
            columns.append(pa.array(us.astype("datetime64[us]")).cast(t))
        elif pa.types.is_boolean(t):
            columns.append(pa.array(rng.random(n) < 0.5))
        elif pa.types.is_integer(t):
            columns.append(pa.array(rng.integers(1, 8, n), type=t))
        else:
            columns.append(pa.array(rng.standard_normal(n) * 1000.0))
    return pa.table(columns, schema=table.schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="folder for raw/ and truth/ (default: a temporary one)")
    args = parser.parse_args()

    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        t0 = time.perf_counter()
        bank = synth.generate_bank(args.customers, args.months, settings.synth.start, args.seed,
                                   settings.synth.transactions_per_month, settings.policy, settings.catalogue)
        t1 = time.perf_counter()
        synth.write_bank(bank, out / "raw", out / "truth")
        t2 = time.perf_counter()
        peak = peak_gb()
        sizes = {p.name: p.stat().st_size for p in [*(out / "raw").iterdir(), *(out / "truth").iterdir()]}

        print(f"synthetic bank: {args.customers:,} customers x {args.months} months, seed {args.seed}")
        print(f"{'table':<22}{'rows':>14}{'MB on disk':>12}")
        total_rows = 0
        for name, table in {**bank.tables, **{f"truth/{k}": v for k, v in bank.truth.items()}}.items():
            total_rows += table.num_rows
            mb = sizes[f"{name.split('/')[-1]}.parquet"] / 1e6
            print(f"{name:<22}{table.num_rows:>14,}{mb:>12.1f}")
        print(f"{'total':<22}{total_rows:>14,}")
        seconds = t2 - t0
        print(f"\ngenerate {t1 - t0:.1f} s + write {t2 - t1:.1f} s = {seconds:.1f} s "
              f"(target {TARGET_SECONDS:.0f} s, ratio {seconds / TARGET_SECONDS:.2f})")
        print(f"peak memory {peak:.2f} GB (target {TARGET_GB:.0f} GB, ratio {peak / TARGET_GB:.2f})")

        # Baseline: the same number of rows of random values, built with numpy + pyarrow and written.
        rng = np.random.default_rng(args.seed)
        shapes = {**bank.tables, **{f"truth_{k}": v for k, v in bank.truth.items()}}
        del bank
        base_dir = out / "baseline"
        base_dir.mkdir()
        b0 = time.perf_counter()
        for name, table in shapes.items():
            pq.write_table(random_like(table, rng), base_dir / f"{name}.parquet")
        baseline = time.perf_counter() - b0
        print(f"baseline: random rows of the same tables built and written in {baseline:.1f} s; "
              f"generated/baseline = {seconds / baseline:.2f}")


if __name__ == "__main__":
    main()
