"""Benchmark: feature build and point-in-time retrieval at scale, beside their baselines.

(a) Building the transactions view (consent-gated, windowed) and the whole offline store,
    against a bare DuckDB GROUP BY (customer, month, kind, merchant category) over the
    same transactions. Peak memory of each phase is measured in its own process.
(b) Point-in-time retrieval through ``propensity.store`` (tiering + Feast DuckDB offline
    store + guard) against a raw DuckDB ASOF join producing the same frame; the two
    frames are checked equal.

Prints figures and ratios; asserts nothing about time.

    .venv/bin/python benchmarks/bench_features.py --customers 200000 --months 24
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


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _settings(data: Path):
    from propensity.config import load_settings

    return load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)


def phase_synth(data: str, customers: int, months: int, seed: int) -> tuple[float, float]:
    from propensity import synth

    s = _settings(Path(data))
    t = time.perf_counter()
    bank = synth.generate_bank(customers, months, s.synth.start, seed, s.synth.transactions_per_month, s.policy, s.catalogue)
    synth.write_bank(bank, s.raw_dir, s.truth_dir)
    return time.perf_counter() - t, _peak_gb()


def phase_bare_groupby(data: str) -> tuple[float, float, int]:
    from propensity import contract
    from propensity.duck import connect

    s = _settings(Path(data))
    raw = contract.locate(s.raw_dir)
    con = connect(threads=s.n_jobs)
    t = time.perf_counter()
    n = con.execute(
        f"""SELECT COUNT(*) FROM (
              SELECT customer_id, year(booked_at) * 12 + month(booked_at) AS m, kind, merchant_category,
                     SUM(amount), COUNT(*)
              FROM {raw.relation('transactions')} GROUP BY ALL)"""
    ).fetchone()[0]
    return time.perf_counter() - t, _peak_gb(), n


def phase_transactions_view(data: str) -> tuple[float, float, int]:
    from propensity import contract
    from propensity.consent import tier_intervals
    from propensity.duck import connect
    from propensity.features import create_spine, data_snapshots, load_events, view_specs, view_sql

    s = _settings(Path(data))
    raw = contract.locate(s.raw_dir)
    con = connect(threads=s.n_jobs)
    days = data_snapshots(con, raw.relation)
    consents, reservations = load_events(con, raw.relation)
    create_spine(con, raw.relation("customers"), tier_intervals(consents, reservations, s.policy), days, s.policy)
    view = next(v for v in view_specs(s.policy, s.catalogue) if v.name == "transactions")
    t = time.perf_counter()
    n = con.execute(f"SELECT COUNT(*) FROM ({view_sql(view, raw.relation, s.policy, s.catalogue)})").fetchone()[0]
    return time.perf_counter() - t, _peak_gb(), n


def phase_full_build(data: str) -> tuple[float, float, dict]:
    from propensity import contract
    from propensity.features import build_offline_store

    s = _settings(Path(data))
    raw = contract.locate(s.raw_dir)
    t = time.perf_counter()
    summary = build_offline_store(s, raw.relation)
    return time.perf_counter() - t, _peak_gb(), summary.rows


def _entities(s, snapshots: int):
    import pandas as pd

    from propensity.features import MEMBERSHIP, read_manifest
    from propensity.snapshots import snapshot_instant

    days = [date.fromisoformat(d) for d in read_manifest(s)["snapshots"]][-snapshots:]
    members = pd.read_parquet(s.features_dir / MEMBERSHIP)
    frames = []
    for d in days:
        active = members[(members["customer_since"] <= d) & (members["closed_at"].isna() | (members["closed_at"] > d))]
        frames.append(pd.DataFrame({"customer_id": active["customer_id"].to_numpy(), "event_timestamp": snapshot_instant(d)}))
    return pd.concat(frames, ignore_index=True)


def phase_store_retrieval(data: str, snapshots: int, out: str) -> tuple[float, float, int]:
    from propensity.store import FeatureStore

    s = _settings(Path(data))
    store = FeatureStore(s)
    store.apply()
    entity = _entities(s, snapshots)
    t = time.perf_counter()
    frames = store.historical_features(entity)
    seconds = time.perf_counter() - t
    for name, frame in frames.items():
        frame.to_parquet(Path(out) / f"store_{name}.parquet")
    return seconds, _peak_gb(), len(entity)


def phase_raw_asof(data: str, snapshots: int, out: str) -> tuple[float, float, int]:
    """The floor: tiers from the same intervals, then one DuckDB ASOF join per view."""
    from propensity.duck import connect, sql_literal
    from propensity.features import views_for_tier
    from propensity.store import FeatureStore

    sys.path.insert(0, str(ROOT / "features"))
    from definitions import SNAPSHOT_TTL

    s = _settings(Path(data))
    entity = _entities(s, snapshots)
    store = FeatureStore.__new__(FeatureStore)  # tiering only: no Feast object is created
    store.settings, store.policy, store.catalogue, store._governance = s, s.policy, s.catalogue, None
    store._published_checked = True  # phase (a) built this store under the current definitions
    con = connect(threads=s.n_jobs)
    t = time.perf_counter()
    tiers = store.tiers(entity)
    entity = entity.assign(tier=tiers["tier"].to_numpy(), group_data_sharing=tiers["group_data_sharing"].to_numpy())
    count = 0
    for service in ("personalised", "basic"):
        rows = entity[entity["tier"] == service].reset_index(drop=True)
        rows["_row"] = range(len(rows))
        con.register("ent", rows)
        select, joins = ["e.*"], []
        lo, hi = rows["event_timestamp"].min() - SNAPSHOT_TTL, rows["event_timestamp"].max()
        for i, view in enumerate(views_for_tier(service, s.policy, s.catalogue)):
            alias = f"v{i}"
            # Point in time with the views' TTL: a row older than the TTL is no match.
            select += [
                f"CASE WHEN {alias}.event_timestamp > e.event_timestamp - INTERVAL {SNAPSHOT_TTL.days} DAY "
                f"THEN {alias}.{n} END AS {n}"
                for n in view.feature_names
            ]
            path = sql_literal(s.features_dir / f"{view.name}.parquet")
            joins.append(
                f"ASOF LEFT JOIN (SELECT * FROM read_parquet({path}) WHERE event_timestamp "
                f"BETWEEN TIMESTAMPTZ '{lo.isoformat()}' AND TIMESTAMPTZ '{hi.isoformat()}') {alias} "
                f"ON {alias}.customer_id = e.customer_id AND e.event_timestamp >= {alias}.event_timestamp"
            )
        frame = con.execute(f"SELECT {', '.join(select)} FROM ent e {' '.join(joins)} ORDER BY e._row").df()
        frame.drop(columns="_row").to_parquet(Path(out) / f"raw_{service}.parquet")
        count += len(frame)
    return time.perf_counter() - t, _peak_gb(), count


def run_in_child(func, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(func, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--snapshots", type=int, default=1, help="Month ends retrieved in (b).")
    parser.add_argument("--data-dir", type=Path, help="Reuse (or keep) this data folder.")
    parser.add_argument("--retrieval-only", action="store_true",
                        help="Skip (a): time (b) on the feature store --data-dir already holds (e.g. bench_score's).")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-features-"))
    out = Path(tempfile.mkdtemp(prefix="bench-features-out-"))
    if not (data / "raw" / "transactions.parquet").exists():
        secs, gb = run_in_child(phase_synth, str(data), args.customers, args.months, args.seed)
        print(f"synthetic bank {args.customers:,} x {args.months}: {secs:.1f} s, peak {gb:.2f} GB")

    bare_gb = tx_gb = build_gb = 0.0
    if not args.retrieval_only:
        bare_s, bare_gb, groups = run_in_child(phase_bare_groupby, str(data))
        tx_s, tx_gb, tx_rows = run_in_child(phase_transactions_view, str(data))
        build_s, build_gb, rows = run_in_child(phase_full_build, str(data))
        print(f"\n(a) feature build, {args.customers:,} customers x {args.months} months")
        print(f"  {'':34}{'seconds':>9}{'peak GB':>9}{'rows':>12}{'ratio':>8}")
        print(f"  {'bare GROUP BY (baseline)':34}{bare_s:9.2f}{bare_gb:9.2f}{groups:12,}{1.0:8.2f}")
        print(f"  {'transactions view (gated, windows)':34}{tx_s:9.2f}{tx_gb:9.2f}{tx_rows:12,}{tx_s / bare_s:8.2f}  target <= 2.0")
        print(f"  {'whole offline store (11 views)':34}{build_s:9.2f}{build_gb:9.2f}{sum(rows.values()):12,}{build_s / bare_s:8.2f}")

    store_s, store_gb, n = run_in_child(phase_store_retrieval, str(data), args.snapshots, str(out))
    raw_s, raw_gb, m = run_in_child(phase_raw_asof, str(data), args.snapshots, str(out))
    import pandas as pd

    equal = True
    for service in ("personalised", "basic"):
        a = pd.read_parquet(out / f"store_{service}.parquet")
        b = pd.read_parquet(out / f"raw_{service}.parquet")
        cols = [c for c in b.columns if c in a.columns]
        a = a[cols].sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)
        b = b[cols].sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)
        try:
            pd.testing.assert_frame_equal(a, b, check_dtype=False)
        except AssertionError as exc:
            equal = False
            print(f"  frames differ for {service}: {str(exc)[:300]}")
    print(f"\n(b) point-in-time retrieval, {n:,} entity rows ({args.snapshots} snapshot(s))")
    print(f"  {'':34}{'seconds':>9}{'peak GB':>9}{'ratio':>8}")
    print(f"  {'raw DuckDB ASOF join (baseline)':34}{raw_s:9.2f}{raw_gb:9.2f}{1.0:8.2f}")
    print(f"  {'propensity.store (Feast + guard)':34}{store_s:9.2f}{store_gb:9.2f}{store_s / raw_s:8.2f}  target <= 1.5")
    print(f"  frames equal: {equal}; peak memory target < 8 GB: max {max(bare_gb, tx_gb, build_gb, store_gb, raw_gb):.2f} GB")
    shutil.rmtree(out, ignore_errors=True)
    if not args.data_dir:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
