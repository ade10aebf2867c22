"""Scoring: a score date → tiers → features → champion models → one auditable partition.

``score_frame`` is the pure step: given candidates (customer × product pairs that may be
scored), their features per service, and the champion models, it returns the long score
table. ``run_scoring`` is the job around it: resolve the date, refuse a stale or missing
input before anything is read, take the lock, retrieve features through the store, write
the partition atomically (``scores/score_date=D/``: staged, then renamed, so a run killed
midway leaves the previous partition intact), and record the run.

Rows: one per customer × product, for customers who are not ``excluded`` at D, are
eligible for the product, and do not hold it. The tier at D decides the model (the
personalised or basic champion of the product) and the legal basis (``consent`` or
``legitimate_interest``). Rank 1 is the highest probability within a product; decile 1
holds the top tenth. Ties are broken by customer_id for the rank, so a re-run of the same
date gives identical probabilities, ranks and deciles; equal probabilities share a decile
(that of the tie's first rank: ``evaluation.deciles_by_rank``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from propensity.atomic import clear_stale_staging, staged_dir, write_bytes_atomic
from propensity.config import Settings
from propensity.evaluation import deciles_by_rank
from propensity.errors import JobLockedError, MissingInputError, PropensityError
from propensity.store import ENTITY, TIMESTAMP, feature_snapshots
from propensity.snapshots import is_month_end, snapshot_instant

SCORE_COLUMNS = [
    "customer_id", "score_date", "product", "probability", "rank", "decile", "tier", "legal_basis",
    "model_name", "model_version", "mlflow_run_id", "policy_version", "scored_at", "run_id",
]
SERVED_TIERS = ("personalised", "basic")
RUNS_FOLDER = "_runs"


class Model(Protocol):
    """What scoring needs of a registered champion."""

    name: str
    version: str
    run_id: str
    features: list[str]

    def encoding_key(self) -> tuple: ...

    def encode(self, frame: pd.DataFrame) -> np.ndarray: ...

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray: ...


def partition_dir(settings: Settings, day: date) -> Path:
    return settings.scores_dir / f"score_date={day.isoformat()}"


# ---------------------------------------------------------------------------- pure steps
def rank_within_product(scores: pd.DataFrame) -> pd.DataFrame:
    """Add ``rank`` (1 = highest probability) and ``decile`` (1 = top tenth) per product.

    Ties are broken by customer_id so the order is deterministic. Sorted by product and
    rank. Sorts over integer codes (:func:`_ranking`): millions of rows in seconds.
    """
    product_codes, _ = pd.factorize(scores["product"], sort=True)
    customer_codes, _ = pd.factorize(scores["customer_id"], sort=True)
    probability = scores["probability"].to_numpy(dtype="float64")
    order, rank, decile = _ranking(product_codes, probability, customer_codes)
    return scores.take(order).reset_index(drop=True).assign(rank=rank, decile=decile)


def score_frame(
    candidates: pd.DataFrame,
    features: Mapping[str, pd.DataFrame],
    models: Mapping[tuple[str, str], Model],
    score_date: date,
    policy_version: str,
    legal_basis: Mapping[str, str],
    run_id: str,
    scored_at: datetime,
) -> pd.DataFrame:
    """The long score table for one date.

    ``candidates``: customer_id, product (pairs that may be scored). ``features``: per
    service, one row per customer with ``customer_id``, ``tier`` and that service's
    columns (a customer appears under the service of their tier only). ``models``: the
    champion per (product, tier).
    """
    # Customers and products are coded once (sorted values -> integer codes), so that
    # selecting, taking and ranking work on integers; the per-model columns are
    # categoricals built from one small table of parts.
    candidate_customer, customers = _sorted_codes(candidates[ENTITY])
    candidate_product, product_ids = _sorted_codes(candidates["product"])
    ids, probabilities, part_of, meta = [], [], [], []
    for tier, frame in features.items():
        if frame.empty:
            continue
        # For every candidate, its row in this tier's frame (-1: not in this tier).
        codes = customers.get_indexer(frame[ENTITY])
        row_of_customer = np.full(len(customers), -1, dtype=np.int64)
        row_of_customer[codes[codes >= 0]] = np.flatnonzero(codes >= 0)
        row_of = row_of_customer[candidate_customer]
        # Models of a tier read the same service columns and, fitted on the same categories,
        # encode them identically: encode the tier's frame once per distinct encoding.
        encoded: dict[tuple, np.ndarray] = {}
        for index, product in enumerate(product_ids):
            selected = (candidate_product == index) & (row_of >= 0)
            if not selected.any():
                continue
            model = models[(product, tier)]
            key = model.encoding_key()
            if key not in encoded:
                encoded[key] = model.encode(frame)
            rows = encoded[key].take(row_of[selected], axis=0)
            predicted = np.asarray(model.predict_encoded(rows), dtype="float64").reshape(-1)
            if not np.isfinite(predicted).all():
                raise PropensityError(f"{model.name} v{model.version} returned {int((~np.isfinite(predicted)).sum())} "
                                      "probabilities that are not numbers; nothing was written")
            probabilities.append(predicted)
            ids.append(candidate_customer[selected])
            part_of.append(np.full(len(rows), len(meta), dtype=np.int32))
            meta.append(
                {
                    "product": product,
                    "tier": tier,
                    "legal_basis": legal_basis[tier],
                    "model_name": model.name,
                    "model_version": str(model.version),
                    "mlflow_run_id": model.run_id,
                }
            )
    if not meta:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORE_COLUMNS})
    part = np.concatenate(part_of)
    meta_frame = pd.DataFrame(meta)
    products = sorted(meta_frame["product"].unique())
    product_code = meta_frame["product"].map({p: i for i, p in enumerate(products)}).to_numpy()[part]
    customer_code = np.concatenate(ids)
    probability = np.concatenate(probabilities)
    order, rank, decile = _ranking(product_code, probability, customer_code)
    part, customer_code, probability = part[order], customer_code[order], probability[order]
    n = len(order)
    scores = pd.DataFrame(
        {
            ENTITY: pd.Categorical.from_codes(customer_code, categories=customers),
            "score_date": score_date,
            "product": _per_part(meta_frame["product"], part),
            "probability": probability,
            "rank": rank,
            "decile": decile,
            **{c: _per_part(meta_frame[c], part) for c in ("tier", "legal_basis", "model_name", "model_version", "mlflow_run_id")},
            "policy_version": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[policy_version]),
            "scored_at": pd.Timestamp(scored_at).tz_convert("UTC"),
            "run_id": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[run_id]),
        }
    )
    return scores[SCORE_COLUMNS]


def write_scores(scores: pd.DataFrame, path: Path) -> None:
    """Write a score table to Parquet. customer_id is stored as plain strings (readers get
    ids, not a categorical); from a categorical it is built in Arrow from the codes,
    without a Python string per row."""
    table = pa.Table.from_pandas(scores.drop(columns=[ENTITY]), preserve_index=False)
    pq.write_table(table.add_column(0, ENTITY, pa.array(scores[ENTITY]).cast(pa.string())), path)


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of ``values`` over their sorted distinct values. A categorical (as
    candidates come) is read through its codes: no hashing of millions of strings."""
    values = values.astype("category")
    if not values.cat.categories.is_monotonic_increasing:
        values = values.cat.reorder_categories(values.cat.categories.sort_values())
    codes = values.cat.codes.to_numpy(dtype=np.int64)
    if (codes < 0).any():
        raise ValueError(f"{int((codes < 0).sum())} missing value(s) in {values.name!r}: candidates need a key")
    categories = pd.Index(values.cat.categories.astype(object))
    used = np.bincount(codes, minlength=len(categories)) > 0
    if used.all():
        return codes, categories
    # Unused categories out, the codes renumbered over the ones left (order kept).
    return (np.cumsum(used) - 1)[codes], categories[used]


def _per_part(values: pd.Series, part: np.ndarray) -> pd.Categorical:
    """A categorical column holding, for each row, the value of its part."""
    categories = sorted(values.unique())
    codes = values.map({v: i for i, v in enumerate(categories)}).to_numpy()[part]
    return pd.Categorical.from_codes(codes, categories=categories)


def _ranking(product_code: np.ndarray, probability: np.ndarray, customer_code: np.ndarray):
    """The row order (product, then highest probability, ties by customer) and each
    ordered row's rank (1-based) and decile within its product."""
    # Grouped by product (a stable integer sort), then each product by customer and by
    # descending probability with stable sorts: the order of one three-key lexsort, in
    # about half its time.
    order = np.argsort(product_code, kind="stable")
    if len(order) == 0:
        return order, np.empty(0, dtype="int64"), np.empty(0, dtype="int64")
    sorted_groups = product_code[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, len(sorted_groups)])
    decile = np.empty(len(order), dtype=np.int64)
    for start, size in zip(starts, sizes):
        rows = order[start : start + size]
        rows = rows[np.argsort(customer_code[rows], kind="stable")]
        order[start : start + size] = rows = rows[np.argsort(-probability[rows], kind="stable")]
        # Equal probabilities share a decile: a list cut by decile never splits a tie by id.
        decile[start : start + size] = deciles_by_rank(probability[rows])
    rank = np.arange(len(sorted_groups)) - np.repeat(starts, sizes) + 1
    return order, rank.astype("int64"), decile


# --------------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class ScoreRun:
    run_id: str
    score_date: date
    rows: int
    customers_by_tier: dict[str, int]
    mean_probability: dict[str, float]
    models: dict[str, str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


def resolve_score_date(settings: Settings, requested: date | None, covered: date | None = None) -> date:
    """The score date: the newest feature snapshot by default; a requested date must be a
    built snapshot. A date past the newest snapshot is refused as stale features, and so
    is the default when the extracts already cover a later month end (``covered``: the
    feature build has not run since)."""
    snapshots = feature_snapshots(settings)
    newest = snapshots[-1]
    if requested is None:
        if covered is not None and covered > newest:
            raise MissingInputError(
                f"stale features: the extracts in {settings.raw_dir} cover {covered}, the newest feature snapshot "
                f"is {newest}; run `propensity features build` first (or score {newest} on purpose with --date)"
            )
        return newest
    if requested > newest:
        age = (requested - newest).days
        raise MissingInputError(
            f"stale features: the newest feature snapshot is {newest}, {age} days before the score date "
            f"{requested}; load the new extracts and run `propensity features build` first"
        )
    if not is_month_end(requested) or requested not in snapshots:
        raise MissingInputError(
            f"no feature snapshot for {requested}: score dates are month ends with features "
            f"({snapshots[0]} .. {newest})"
        )
    return requested


def run_lock(settings: Settings) -> FileLock:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(settings.data_dir / ".score.lock"), timeout=0)


def run_scoring(
    settings: Settings,
    store,
    load_champion: Callable[[Settings, str, str], Model],
    candidates_at: Callable[[date], pd.DataFrame],
    score_date: date | None = None,
    products: list[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ScoreRun:
    """Score every candidate at the date and publish the partition (see module docstring).

    ``store`` is a :class:`propensity.store.FeatureStore`; ``load_champion(settings,
    product, tier)`` returns a registered champion; ``candidates_at(D)`` returns the
    customer × product pairs that may be scored at D (eligible, not holding).
    """
    started = time.perf_counter()
    lock = run_lock(settings)
    try:
        lock.acquire()
    except Timeout:
        raise JobLockedError(
            f"another scoring run holds {lock.lock_file}; wait for it to finish (a lock left by a killed "
            "run is released by the operating system when that process ends)"
        ) from None
    try:
        day = resolve_score_date(settings, score_date)
        some_products = bool(products)
        products = products or list(settings.catalogue.ids)
        unknown = sorted(set(products) - set(settings.catalogue.ids))
        if unknown:
            raise MissingInputError(f"unknown product(s) {unknown}; the catalogue has {list(settings.catalogue.ids)}")
        progress(f"score date {day}; loading champion models")
        models, missing = {}, []
        for product in products:
            for tier in SERVED_TIERS:
                try:
                    models[(product, tier)] = load_champion(settings, product, tier)
                except MissingInputError:
                    missing.append(f"propensity-{product}-{tier}")
        if missing:
            raise MissingInputError(
                f"no champion model for {', '.join(missing)}: run `propensity train` first; nothing was written"
            )
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        candidates = candidates_at(day)
        candidates = candidates[candidates["product"].isin(products)]
        customers = pd.DataFrame({ENTITY: _sorted_codes(candidates[ENTITY])[1].to_numpy()})
        customers[TIMESTAMP] = snapshot_instant(day)
        features = store.historical_features(customers)  # excluded rows are dropped before any read
        by_tier = {t: len(features.get(t, ())) for t in SERVED_TIERS}
        by_tier["excluded"] = len(customers) - sum(by_tier.values())
        progress(
            "customers at {}: {}".format(day, ", ".join(f"{t} {by_tier.get(t, 0):,}" for t in (*SERVED_TIERS, "excluded")))
        )
        timings["features_s"] = time.perf_counter() - t0
        for service, frame in features.items():
            if frame.empty:
                continue
            # Every customer lacks every feature exactly when every column is empty (checked
            # column by column: the first column holding a value ends it).
            columns = [c for c in store.service_columns(service) if c in frame.columns]
            if all(frame[c].isna().all() for c in columns):
                raise MissingInputError(
                    f"features for {day} are missing for every {service} customer: rebuild the feature store"
                )
        t1 = time.perf_counter()
        run_id = uuid.uuid4().hex[:12]
        scored_at = datetime.now(timezone.utc)
        scores = score_frame(
            candidates, features, models, day, settings.policy.version, settings.policy.legal_basis, run_id, scored_at
        )
        timings["inference_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        clear_stale_staging(settings.scores_dir)
        target = partition_dir(settings, day)
        # A run for some products keeps the others' rows; a run for all replaces the partition.
        published = _with_other_products(target, scores, products, settings.catalogue.ids) if some_products else scores
        if len(published) > len(scores):
            progress(f"kept {len(published) - len(scores):,} rows of products not scored in this run from the partition")
        with staged_dir(target) as staging:
            write_scores(published, staging / "part-0.parquet")
        timings["write_s"] = time.perf_counter() - t2
        means = scores.groupby("product", observed=True)["probability"].mean().round(6).to_dict() if len(scores) else {}
        run = ScoreRun(
            run_id=run_id,
            score_date=day,
            rows=len(scores),
            customers_by_tier={t: int(by_tier.get(t, 0)) for t in (*SERVED_TIERS, "excluded")},
            mean_probability={k: float(v) for k, v in means.items()},
            models={f"{p}/{t}": f"{m.name} v{m.version}" for (p, t), m in models.items()},
            seconds=time.perf_counter() - started,
            timings=timings,
            path=target,
        )
        record_run(settings, run, scored_at)
        return run
    finally:
        lock.release()


def _with_other_products(partition: Path, scores: pd.DataFrame, products: list[str], catalogue: Sequence[str]) -> pd.DataFrame:
    """The partition to publish: ``scores`` and, from the partition already there, the rows
    of the catalogue's products this run did not score (ranks are within a product, so they
    stay valid; each row keeps the run_id of the run that wrote it). A run for some
    products replaces only those products' rows; a product gone from the catalogue goes."""
    if not partition.is_dir():
        return scores
    earlier = pd.read_parquet(partition)
    kept = earlier[~earlier["product"].isin(products) & earlier["product"].isin(list(catalogue))]
    if kept.empty:
        return scores
    kept = kept[SCORE_COLUMNS].assign(score_date=scores["score_date"].iloc[0] if len(scores) else kept["score_date"])
    coded = [c for c in SCORE_COLUMNS if isinstance(scores[c].dtype, pd.CategoricalDtype)]
    merged = pd.concat([scores.astype({c: object for c in coded}), kept.astype({c: object for c in coded})], ignore_index=True)
    merged = merged.sort_values(["product", "rank"], kind="stable").reset_index(drop=True)
    return merged.astype({c: "category" for c in coded})  # written as the same Parquet types as a whole run


def record_run(settings: Settings, run: ScoreRun, scored_at: datetime) -> Path:
    """Write the run's record (read by the ``score_runs`` view)."""
    record = {
        "run_id": run.run_id,
        "score_date": run.score_date.isoformat(),
        "scored_at": scored_at.isoformat(),
        "rows": run.rows,
        "customers_personalised": run.customers_by_tier.get("personalised", 0),
        "customers_basic": run.customers_by_tier.get("basic", 0),
        "customers_excluded": run.customers_by_tier.get("excluded", 0),
        "models": json.dumps(run.models, sort_keys=True),
        "seconds": round(run.seconds, 3),
        "host_pid": os.getpid(),
    }
    path = settings.scores_dir / RUNS_FOLDER / f"{scored_at:%Y%m%dT%H%M%S}-{run.run_id}.json"
    write_bytes_atomic(path, json.dumps(record).encode())
    return path


def read_partition(settings: Settings, day: date) -> pd.DataFrame:
    path = partition_dir(settings, day)
    if not path.is_dir():
        raise MissingInputError(f"no score partition for {day} under {settings.scores_dir}")
    return pd.read_parquet(path)


def score_dates(settings: Settings) -> list[date]:
    """Dates with a published partition, oldest first."""
    if not settings.scores_dir.is_dir():
        return []
    return sorted(
        date.fromisoformat(p.name.split("=", 1)[1])
        for p in settings.scores_dir.iterdir()
        if p.is_dir() and p.name.startswith("score_date=")
    )

