"""Benchmark: train every product x tier on a synthetic bank; compare with the oracle and
the logistic baseline and print the ratios against the targets. Never asserts.

    .venv/bin/python benchmarks/bench_train.py --customers 20000 --months 24
    .venv/bin/python benchmarks/bench_train.py --data-dir /tmp/bank   # reuse a generated bank

Targets (printed as ratios): personalised test AUC within 0.02 of the oracle AUC for every
product with at least 200 test positives, ECE below 0.02,
LightGBM beats the logistic regression, 24 models in under 10 minutes at 100k customers
(the time is extrapolated linearly in the number of customers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
AUC_GAP_TARGET = 0.02
MIN_TEST_POSITIVES = 200  # the AUC target applies to personalised models with this many test positives
ECE_TARGET = 0.02
TIME_TARGET_SECONDS = 600.0
TIME_TARGET_CUSTOMERS = 100_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=None, help="default: the seed of conf/pipeline.yaml")
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse (or create) this data folder instead of a temporary one")
    parser.add_argument("--products", default=None, help="comma-separated product ids (default: the whole catalogue)")
    parser.add_argument("--tiers", default=None, help="comma-separated tiers (default: personalised,basic)")
    parser.add_argument("--training-file", type=Path, default=None,
                        help="another training.yaml to compare (default: models/training.yaml)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    from propensity import synth
    from propensity.config import load_settings
    from propensity.contract import validate
    from propensity.features import build_offline_store
    from propensity.registry import log_training
    from propensity.train import plan_training, train_models
    from propensity.store import FeatureStore

    temporary = None
    if args.data_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="bench_train_")
        data_dir = Path(temporary.name)
    else:
        data_dir = args.data_dir.resolve()
    overrides: dict[str, object] = {"data_dir": data_dir}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.training_file is not None:
        overrides["training_file"] = args.training_file.resolve()
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", **overrides)
    timings: dict[str, float] = {}
    print(f"training settings {settings.training_file}")
    customers_file = settings.raw_dir / "customers.parquet"
    if customers_file.exists():
        # A bank already in the folder: its own size counts, not --customers.
        import pyarrow.parquet as pq

        args.customers = pq.ParquetFile(customers_file).metadata.num_rows
        print(f"reusing the bank in {settings.raw_dir}")
    print(f"data folder {data_dir}; {args.customers:,} customers x {args.months} months; n_jobs {settings.n_jobs}; "
          f"cpus {os.cpu_count()}; load {os.getloadavg()[0]:.2f}")

    t0 = time.perf_counter()
    if not customers_file.exists():
        bank = synth.generate_bank(args.customers, args.months, settings.synth.start, settings.seed,
                                   settings.synth.transactions_per_month, settings.policy, settings.catalogue)
        synth.write_bank(bank, settings.raw_dir, settings.truth_dir)
        timings["synth"] = time.perf_counter() - t0
    raw = validate(settings.raw_dir, settings.policy, settings.catalogue)
    t0 = time.perf_counter()
    if not (settings.features_dir / "manifest.json").exists():
        build_offline_store(settings, raw.relation)
        timings["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = FeatureStore(settings)
    store.apply()
    timings["feast store"] = time.perf_counter() - t0

    products = args.products.split(",") if args.products else None
    tiers = args.tiers.split(",") if args.tiers else None
    t0 = time.perf_counter()
    print(f"models trained: {'registered next to earlier versions' if settings.mlflow_db.exists() else 'first versions'}")
    def say(message: str) -> None:
        print("  " + message, flush=True)

    plan = plan_training(settings, store, raw.relation, products, tiers, say)
    result = log_training(settings, plan, train_models(settings, store, plan, say), say)
    timings["training"] = time.perf_counter() - t0

    table = result.table.copy()
    table["gap"] = table["oracle_auc"] - table["auc"]
    # The oracle reads the hazards of the months after t; oracle_now only the state at t.
    table["gap_now"] = table["oracle_now_auc"] - table["auc"]
    table["auc_ok"] = table["gap"] <= AUC_GAP_TARGET
    table["ece_ok"] = table["ece"] < ECE_TARGET
    table["beats_logistic"] = table["auc"] > table["logistic_auc"]
    shown = table[["product", "tier", "auc", "oracle_auc", "gap", "oracle_now_auc", "gap_now", "ece", "lift", "logistic_auc", "calibration",
                   "best_iteration", "rows_train", "rows_test", "positives_test", "seconds", "promoted", "auc_ok", "ece_ok", "beats_logistic"]]
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print()
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    n_models = len(table)
    scaled = timings["training"] * (TIME_TARGET_CUSTOMERS / args.customers) * (24 / max(n_models, 1))
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    held = table[(table["tier"] == "personalised") & (table["positives_test"] >= MIN_TEST_POSITIVES)]
    print(f"target models (personalised, >= {MIN_TEST_POSITIVES} test positives): {len(held)}; "
          f"within {AUC_GAP_TARGET} of the oracle: {int(held['auc_ok'].sum())}/{len(held)} "
          f"(max gap {held['gap'].max():.3f}, ratio max/target {held['gap'].max() / AUC_GAP_TARGET:.2f}); "
          f"of the oracle at t: {int((held['gap_now'] <= AUC_GAP_TARGET).sum())}/{len(held)} "
          f"(max gap {held['gap_now'].max():.3f})")
    print(f"AUC within {AUC_GAP_TARGET} of oracle, all models: {int(table['auc_ok'].sum())}/{n_models} "
          f"(median gap {table['gap'].median():.3f}, max {table['gap'].max():.3f}); "
          f"within {AUC_GAP_TARGET} of the oracle at t: {int((table['gap_now'] <= AUC_GAP_TARGET).sum())}/{n_models}")
    print(f"ECE < {ECE_TARGET}: {int(table['ece_ok'].sum())}/{n_models} (median {table['ece'].median():.4f}, "
          f"max {table['ece'].max():.4f}; ratio max/target {table['ece'].max() / ECE_TARGET:.2f})")
    print(f"LightGBM beats logistic: {int(table['beats_logistic'].sum())}/{n_models} "
          f"(median AUC gain {(table['auc'] - table['logistic_auc']).median():+.3f})")
    print(f"training time: {timings['training']:.0f} s for {n_models} models at {args.customers:,} customers; "
          f"linear extrapolation to 24 models at {TIME_TARGET_CUSTOMERS:,}: {scaled:.0f} s "
          f"(ratio to the {TIME_TARGET_SECONDS:.0f} s target: {scaled / TIME_TARGET_SECONDS:.2f})")
    if temporary is not None:
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
