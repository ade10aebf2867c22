"""Benchmark: the scoring job at scale beside the floor of calling the boosters directly.

Set-up (not timed): champions for every product × tier are trained on a small bank with
the full history (``--train-customers`` × 24 months); then the raw extracts are replaced
by a large bank (``--customers`` × ``--months``) and the feature store is rebuilt for its
newest month end only ("features already built").

Timed: ``pipelines/score.py`` end to end (contract check, candidates, tiering, feature
retrieval through the store, inference, atomic write, views) with its split, and the
floor: the same champions' LightGBM boosters called directly on the in-memory feature
frames (no calibration, no ranking, no I/O). Peak memory is the scoring process's.

    .venv/bin/python benchmarks/bench_score.py --customers 1000000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _settings(data: Path):
    from propensity.config import load_settings

    return load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def setup_models(data: str, customers: int, seed: int) -> float:
    from propensity import synth
    from propensity.cli import pipeline

    s = _settings(Path(data))
    t = time.perf_counter()
    bank = synth.generate_bank(customers, 24, s.synth.start, seed, s.synth.transactions_per_month, s.policy, s.catalogue)
    synth.write_bank(bank, s.raw_dir, s.truth_dir)
    pipeline(s, "build_features").run(s, progress=lambda _: None)
    pipeline(s, "train").run(s, None, None, progress=lambda _: None)
    return time.perf_counter() - t


def setup_large_bank(data: str, customers: int, months: int, seed: int) -> tuple[float, str]:
    from propensity import contract, synth
    from propensity.features import build_offline_store, data_snapshots
    from propensity.duck import connect

    s = _settings(Path(data))
    t = time.perf_counter()
    bank = synth.generate_bank(customers, months, s.synth.start, seed + 1, s.synth.transactions_per_month, s.policy, s.catalogue)
    synth.write_bank(bank, s.raw_dir, s.truth_dir)
    del bank
    raw = contract.validate(s.raw_dir, s.policy, s.catalogue)
    con = connect(threads=s.n_jobs)
    last = data_snapshots(con, raw.relation)[-1]
    con.close()
    build_offline_store(s, raw.relation, snapshots=[last])
    return time.perf_counter() - t, last.isoformat()


def score_job(data: str, day: str) -> tuple[float, dict, int, dict, float]:
    from propensity.cli import pipeline

    s = _settings(Path(data))
    t = time.perf_counter()
    run = pipeline(s, "score").run(s, date.fromisoformat(day), None, progress=lambda _: None)
    return time.perf_counter() - t, run.timings, run.rows, run.customers_by_tier, _peak_gb()


def floor_job(data: str, day: str) -> tuple[float, int, float]:
    """Boosters called directly on in-memory frames of the same features."""
    import pandas as pd

    from propensity import contract, labels
    from propensity.duck import connect
    from propensity.registry import load_champion
    from propensity.snapshots import snapshot_instant
    from propensity.store import FeatureStore

    s = _settings(Path(data))
    at = date.fromisoformat(day)
    raw = contract.locate(s.raw_dir)
    con = connect(threads=s.n_jobs)
    candidates = labels.eligible_not_holding(con, raw.relation, s.catalogue, s.policy, at)
    store = FeatureStore(s)
    customers = pd.DataFrame({"customer_id": sorted(candidates["customer_id"].unique())})
    customers["event_timestamp"] = snapshot_instant(at)
    frames = {k: v.set_index("customer_id") for k, v in store.historical_features(customers).items()}
    inputs = []
    for product in s.catalogue.ids:
        for tier, frame in frames.items():
            pipeline = load_champion(s, product, tier).calibrated_model().pipeline
            ids = candidates.loc[candidates["product"] == product, "customer_id"]
            x = frame.loc[frame.index.intersection(ids)]
            # Encoding is done before the clock starts: the floor is the boosters alone.
            inputs.append((pipeline[-1].booster_, pipeline[:-1].transform(x)))
    t = time.perf_counter()
    rows = 0
    for booster, x in inputs:
        booster.predict(x)
        rows += len(x)
    return time.perf_counter() - t, rows, _peak_gb()


def run_in_child(func, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(func, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=3, help="History of the large bank (features need only the last).")
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, help="Keep the data folder here (default: a temporary one).")
    parser.add_argument("--reuse", action="store_true", help="Skip the set-up: --data-dir already holds it.")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-score-"))
    if args.reuse:
        import json

        day = json.loads((data / "features" / "manifest.json").read_text())["snapshots"][-1]
        print(f"set-up: reusing {data} (features for {day})")
    else:
        secs = run_in_child(setup_models, str(data), args.train_customers, args.seed)
        print(f"set-up: champions trained on {args.train_customers:,} customers x 24 months in {secs:.0f} s")
        secs, day = run_in_child(setup_large_bank, str(data), args.customers, args.months, args.seed)
        print(f"set-up: {args.customers:,}-customer bank and its features for {day} in {secs:.0f} s")

    total, timings, rows, tiers, peak = run_in_child(score_job, str(data), day)
    floor, floor_rows, floor_peak = run_in_child(floor_job, str(data), day)
    other = total - sum(timings.values())
    print(f"\nscoring {day}: {rows:,} score rows; customers {tiers}")
    print(f"  {'':38}{'seconds':>9}{'ratio':>8}")
    print(f"  {'floor: boosters on in-memory frames':38}{floor:9.2f}{1.0:8.2f}")
    print(f"  {'propensity score, end to end':38}{total:9.2f}{total / floor:8.2f}   target < 60 s and <= 2x floor")
    for name, value in timings.items():
        # Inference (encoding, boosters, calibration, ranking, the score table) is the part
        # of the job the floor measures the boosters of: its ratio is printed as well.
        ratio = f"{value / floor:8.2f}" if name == "inference_s" else ""
        print(f"  {'  ' + name.removesuffix('_s'):38}{value:9.2f}{ratio}")
    print(f"  {'  contract check, candidates, models, views':38}{other:9.2f}")
    print(f"  peak memory: scoring {peak:.2f} GB, floor {floor_peak:.2f} GB   target < 12 GB")
    if not args.data_dir:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
