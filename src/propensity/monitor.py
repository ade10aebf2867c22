"""Monitoring of published scores: realised lift, score and feature stability, AUC decay.

Once the label window of a score date has passed (``D + gap + horizon`` month ends on or
before the newest snapshot of the extracts), the outcome of every scored customer ×
product is known from the raw agreements, by the rule that labelled the training rows
(:func:`propensity.labels.label_frame`): eligible and not holding at D, converted when an
agreement of the product starts in the window. Scored pairs the rule does not label (a
group-company product without group data sharing) have no outcome and are left out. From
the outcomes:

* **realised conversion by decile** of the score (decile 1 = the top tenth, as written by
  the scoring job) and its lift over the date's overall conversion rate;
* **realised ROC AUC** of each model that scored (per score date, product and tier),
  beside the AUC it had on its test window (its MLflow run). A model whose realised AUC
  is below its test AUC by more than ``auc_margin`` is flagged ``AUC decay``; the margin
  defaults to :data:`AUC_MARGIN` (the ``--auc-margin`` option of ``propensity monitor``).
  With fewer than :data:`MIN_CONVERSIONS` conversions (or non-conversions) the AUC is too
  noisy to judge and the row says so instead of warning; a score date on or before the end
  of the model's validation window is ``in sample`` (the model learnt from its outcomes).

Between consecutive score dates, the **population stability index** (PSI) of the scores
per product and tier and of the top features of each champion (read through the tier's
FeatureService, so a feature is only ever read for customers whose tier allows it).

The frames of :class:`Monitoring` are aggregates: none holds a customer id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from datetime import date

import numpy as np
import numpy.typing as npt
import pandas as pd

from propensity.config import Catalogue, Settings
from propensity.errors import MissingInputError
from propensity.snapshots import add_months

if TYPE_CHECKING:  # annotations only
    from propensity.store import FeatureStore

# A realised AUC this far (or further) below the model's test AUC raises a warning.
AUC_MARGIN = 0.05
# Fewer conversions (or non-conversions) than this in a group: its AUC is not judged.
MIN_CONVERSIONS = 10
# Equal-mass bins of the reference month for the PSI of a numeric variable.
PSI_BINS = 10
# Share given to an empty bin so that the logarithm stays finite (a common convention).
PSI_FLOOR = 1e-4
# Conventional PSI bands: below 0.1 stable, 0.1 to 0.25 a moderate shift, above a major one.
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
# Features per champion whose stability is tracked (the largest total gain).
TOP_FEATURES = 5
MISSING = "(missing)"

Raw = Callable[[str], str]

DECILE_COLUMNS = ["score_date", "product", "decile", "customers", "conversions", "conversion_rate", "mean_probability", "lift"]
AUC_COLUMNS = [
    "score_date", "product", "tier", "model_name", "model_version", "mlflow_run_id", "customers", "conversions",
    "conversion_rate", "mean_probability", "realised_auc", "test_auc", "auc_drop", "status",
]
SCORE_PSI_COLUMNS = ["from_date", "to_date", "product", "tier", "customers_from", "customers_to", "psi", "band"]
FEATURE_PSI_COLUMNS = ["from_date", "to_date", "product", "tier", "feature", "psi", "band"]
WINDOW_COLUMNS = ["score_date", "product", "labels_complete_on", "labelled"]


# ------------------------------------------------------------------------------- PSI
def psi_from_shares(expected: npt.ArrayLike, actual: npt.ArrayLike, floor: float = PSI_FLOOR) -> float:
    """PSI = sum over bins of (actual - expected) * ln(actual / expected).

    ``expected`` (the reference month) and ``actual`` are the shares of the rows in each
    bin, in the same bin order, each summing to 1. An empty bin counts as ``floor``.
    """
    e = np.asarray(expected, dtype=np.float64).ravel()
    a = np.asarray(actual, dtype=np.float64).ravel()
    if e.shape != a.shape:
        raise ValueError(f"the two distributions have {e.size} and {a.size} bins; they must share their bins")
    if e.size == 0:
        return float("nan")
    for name, shares in (("expected", e), ("actual", a)):
        if np.any(shares < 0) or not math.isclose(float(shares.sum()), 1.0, abs_tol=1e-6):
            raise ValueError(f"{name} shares must be non-negative and sum to 1, got sum {shares.sum():.6f}")
    e = np.maximum(e, floor)
    a = np.maximum(a, floor)
    return float(np.sum((a - e) * np.log(a / e)))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, bins: int = PSI_BINS) -> float:
    """PSI of a numeric variable: bins are the reference's equal-mass bins (its quantiles,
    repeated edges merged), missing values (NaN) a bin of their own. NaN when either side
    has no row."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    finite = ref[~np.isnan(ref)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if finite.size else np.empty(0)

    def counts(x: np.ndarray) -> np.ndarray:
        present = x[~np.isnan(x)]
        binned = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
        return np.append(binned, np.isnan(x).sum()).astype(np.float64)

    return psi_from_shares(_shares(counts(ref)), _shares(counts(cur)))


def categorical_psi(reference: Sequence[object], current: Sequence[object]) -> float:
    """PSI of a categorical variable: one bin per value seen in either month, missing
    values a bin of their own. NaN when either side has no row."""
    ref = pd.Series(reference, dtype=object)
    cur = pd.Series(current, dtype=object)
    if ref.empty or cur.empty:
        return float("nan")
    ref = ref.where(ref.notna(), MISSING).astype(str)
    cur = cur.where(cur.notna(), MISSING).astype(str)
    values = sorted(set(ref) | set(cur))
    e = ref.value_counts().reindex(values, fill_value=0).to_numpy(dtype=np.float64)
    a = cur.value_counts().reindex(values, fill_value=0).to_numpy(dtype=np.float64)
    return psi_from_shares(_shares(e), _shares(a))


def feature_psi_value(reference: pd.Series, current: pd.Series, bins: int = PSI_BINS) -> float:
    """PSI of one feature between two months: numeric or categorical by its dtype."""
    if pd.api.types.is_numeric_dtype(reference) and pd.api.types.is_numeric_dtype(current):
        return psi(reference.to_numpy(dtype=np.float64, na_value=np.nan), current.to_numpy(dtype=np.float64, na_value=np.nan), bins)
    return categorical_psi(reference.to_numpy(dtype=object), current.to_numpy(dtype=object))


def psi_band(value: float) -> str:
    """``stable`` below :data:`PSI_MODERATE`, ``moderate shift`` below :data:`PSI_MAJOR`,
    else ``major shift`` (``n/a`` for NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value < PSI_MODERATE:
        return "stable"
    return "moderate shift" if value < PSI_MAJOR else "major shift"


# ------------------------------------------------------------------ realised outcomes
def labels_complete_on(score_date: date, product: str, catalogue: Catalogue) -> date:
    """The month end on which the label window of a score date closes for a product."""
    label = catalogue.products[product].label
    return add_months(score_date, label.gap_months + label.horizon_months)


def _as_dates(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values).dt.date


def outcome_windows(scores: pd.DataFrame, catalogue: Catalogue, data_end: date) -> pd.DataFrame:
    """Per score date and product of ``scores``: the month end its labels are complete on
    and whether that is on or before ``data_end`` (the newest snapshot of the extracts)."""
    pairs = pd.DataFrame({"score_date": _as_dates(scores["score_date"]), "product": scores["product"].astype(str)})
    pairs = pairs.drop_duplicates().sort_values(["score_date", "product"], kind="stable").reset_index(drop=True)
    pairs["labels_complete_on"] = [labels_complete_on(d, p, catalogue) for d, p in zip(pairs["score_date"], pairs["product"])]
    pairs["labelled"] = pairs["labels_complete_on"] <= data_end
    return pairs[WINDOW_COLUMNS]


def realised_outcomes(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Score rows joined to their delayed labels (an inner join on customer, product and
    score date = snapshot date): the score columns and ``label`` (0/1).

    ``labels`` is a :func:`propensity.labels.label_frame`. Holds customer ids: an input
    of the aggregates below, never an output of a report.
    """
    keep = ["customer_id", "score_date", "product", "probability", "decile", "tier", "model_name", "model_version", "mlflow_run_id"]
    left = scores[keep].copy()
    left["customer_id"] = left["customer_id"].astype(str)
    left["score_date"] = _as_dates(left["score_date"])
    right = pd.DataFrame(
        {
            "customer_id": labels["customer_id"].astype(str).to_numpy(),
            "score_date": _as_dates(labels["snapshot_date"]).to_numpy(),
            "product": labels["product"].astype(str).to_numpy(),
            "label": labels["label"].astype(np.int64).to_numpy(),
        }
    )
    out = left.merge(right, on=["customer_id", "score_date", "product"], how="inner", validate="one_to_one")
    return out.sort_values(["score_date", "product", "decile", "customer_id"], kind="stable").reset_index(drop=True)


def realised_by_decile(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per score date, product and decile: customers, conversions, conversion rate, mean
    predicted probability and lift (the decile's conversion rate over the rate of all the
    date's customers of that product; NaN when nobody converted)."""
    if outcomes.empty:
        return pd.DataFrame(columns=DECILE_COLUMNS)
    table = (
        outcomes.groupby(["score_date", "product", "decile"], sort=True, observed=True)
        .agg(customers=("label", "size"), conversions=("label", "sum"), mean_probability=("probability", "mean"))
        .reset_index()
    )
    table["conversion_rate"] = table["conversions"] / table["customers"]
    totals = table.groupby(["score_date", "product"], observed=True)[["customers", "conversions"]].transform("sum")
    overall = totals["conversions"] / totals["customers"]
    table["lift"] = (table["conversion_rate"] / overall.where(overall > 0)).astype(np.float64)
    table["conversions"] = table["conversions"].astype(np.int64)
    table["decile"] = table["decile"].astype(np.int64)
    return table[DECILE_COLUMNS]


def realised_auc(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per score date, product, tier and model (name, version, MLflow run): customers,
    conversions, conversion rate, mean predicted probability and the realised ROC AUC."""
    from propensity.evaluation import roc_auc  # scikit-learn: kept out of the CLI's start-up

    keys = ["score_date", "product", "tier", "model_name", "model_version", "mlflow_run_id"]
    rows = []
    for key, group in outcomes.groupby(keys, sort=True, observed=True):
        y = group["label"].to_numpy(dtype=np.float64)
        p = group["probability"].to_numpy(dtype=np.float64)
        rows.append(
            dict(
                zip(keys, key),
                customers=int(y.size),
                conversions=int(y.sum()),
                conversion_rate=float(y.mean()),
                mean_probability=float(p.mean()),
                realised_auc=roc_auc(y, p),
            )
        )
    return pd.DataFrame(rows, columns=[*keys, "customers", "conversions", "conversion_rate", "mean_probability", "realised_auc"])


def auc_decay(realised: pd.DataFrame, test_auc: Mapping[str, float], margin: float = AUC_MARGIN,
              fitted_until: Mapping[str, date] | None = None) -> pd.DataFrame:
    """``realised`` (from :func:`realised_auc`) with the test AUC of each row's MLflow run,
    the drop (test minus realised) and a status: ``AUC decay`` when the realised AUC is
    more than ``margin`` below the test AUC, ``ok`` otherwise; ``in sample`` when the
    score date is on or before the end of the run's validation window (``fitted_until``:
    the model learnt from those labels, so the realised AUC says nothing of its decay);
    ``too few conversions`` when a class has fewer than :data:`MIN_CONVERSIONS` rows,
    ``no test AUC`` when the run's metric is unknown."""
    out = realised.copy()
    out["test_auc"] = [float(test_auc.get(run, float("nan"))) for run in out["mlflow_run_id"]]
    out["auc_drop"] = out["test_auc"] - out["realised_auc"]
    few = (out["conversions"] < MIN_CONVERSIONS) | (out["customers"] - out["conversions"] < MIN_CONVERSIONS)
    fitted_until = fitted_until or {}
    seen = np.array([run in fitted_until and day <= fitted_until[run]
                     for run, day in zip(out["mlflow_run_id"], _as_dates(out["score_date"]))], dtype=bool)
    status = np.where(
        seen,
        "in sample",
        np.where(
            few,
            "too few conversions",
            np.where(out["test_auc"].isna(), "no test AUC", np.where(out["auc_drop"] > margin, "AUC decay", "ok")),
        ),
    )
    out["status"] = pd.Series(status, index=out.index, dtype=object)
    return out[AUC_COLUMNS]


# -------------------------------------------------------------------------- stability
def consecutive_pairs(days: Sequence[date]) -> list[tuple[date, date]]:
    """Each score date with the one before it, oldest pair first."""
    ordered = sorted(set(days))
    return list(zip(ordered[:-1], ordered[1:]))


def score_psi(scores: pd.DataFrame, bins: int = PSI_BINS) -> pd.DataFrame:
    """PSI of the probabilities between consecutive score dates, per product for all
    tiers together (``tier`` = ``all``) and per tier."""
    frame = scores[["score_date", "product", "tier", "probability"]].copy()
    frame["score_date"] = _as_dates(frame["score_date"])
    rows = []
    for before, after in consecutive_pairs(frame["score_date"].unique()):
        a = frame[frame["score_date"] == before]
        b = frame[frame["score_date"] == after]
        for product in sorted(set(a["product"]) & set(b["product"])):
            pa, pb = a[a["product"] == product], b[b["product"] == product]
            for tier in ("all", *sorted(set(pa["tier"]) & set(pb["tier"]))):
                ra = pa if tier == "all" else pa[pa["tier"] == tier]
                rb = pb if tier == "all" else pb[pb["tier"] == tier]
                value = psi(ra["probability"].to_numpy(), rb["probability"].to_numpy(), bins)
                rows.append(
                    {"from_date": before, "to_date": after, "product": product, "tier": tier,
                     "customers_from": len(ra), "customers_to": len(rb), "psi": value, "band": psi_band(value)}
                )
    return pd.DataFrame(rows, columns=SCORE_PSI_COLUMNS)


def feature_psi(
    features: Mapping[tuple[date, str], pd.DataFrame],
    top_features: Mapping[tuple[str, str], Sequence[str]],
    pairs: Sequence[tuple[date, date]],
    bins: int = PSI_BINS,
) -> pd.DataFrame:
    """PSI of each champion's top features between the dates of each pair.

    ``features[(day, tier)]`` holds the feature rows of the customers scored with that
    tier's models at that day; ``top_features[(product, tier)]`` names the features.
    A feature missing from either month's frame is skipped.
    """
    rows = []
    for before, after in pairs:
        for (product, tier), names in sorted(top_features.items()):
            a, b = features.get((before, tier)), features.get((after, tier))
            if a is None or b is None:
                continue
            for name in names:
                if name not in a.columns or name not in b.columns:
                    continue
                value = feature_psi_value(a[name], b[name], bins)
                rows.append({"from_date": before, "to_date": after, "product": product, "tier": tier,
                             "feature": name, "psi": value, "band": psi_band(value)})
    return pd.DataFrame(rows, columns=FEATURE_PSI_COLUMNS)


# ------------------------------------------------------------------------------ the job
@dataclass(frozen=True)
class Monitoring:
    """What the monitor found (aggregates only)."""

    auc_margin: float
    data_end: date
    score_dates: list[date]
    windows: pd.DataFrame
    deciles: pd.DataFrame
    auc: pd.DataFrame
    score_psi: pd.DataFrame
    feature_psi: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """One sentence per AUC decay and per major shift of scores or features."""
        out = []
        for row in self.auc[self.auc["status"] == "AUC decay"].itertuples(index=False):
            out.append(
                f"{row.model_name} v{row.model_version}, scores of {row.score_date}: realised AUC {row.realised_auc:.3f} "
                f"is {row.auc_drop:.3f} below its test AUC {row.test_auc:.3f} (margin {self.auc_margin:.3f}); "
                "retrain or investigate the features"
            )
        for row in self.score_psi[self.score_psi["band"] == "major shift"].itertuples(index=False):
            out.append(f"scores of {row.product} ({row.tier}) shifted from {row.from_date} to {row.to_date}: PSI {row.psi:.2f}")
        for row in self.feature_psi[self.feature_psi["band"] == "major shift"].itertuples(index=False):
            out.append(
                f"feature {row.feature} of {row.product} ({row.tier}) shifted from {row.from_date} to {row.to_date}: PSI {row.psi:.2f}"
            )
        return out


def score_history(settings: Settings, until: date | None = None) -> pd.DataFrame:
    """Every published score partition on or before ``until`` (all when None), one frame."""
    from propensity.score import read_partition, score_dates

    days = [d for d in score_dates(settings) if until is None or d <= until]
    if not days:
        raise MissingInputError(
            f"no score partition{' on or before ' + str(until) if until else ''} under {settings.scores_dir}: "
            "run `propensity score` first"
        )
    return pd.concat([read_partition(settings, d) for d in days], ignore_index=True)


def scored_features(store: FeatureStore, scores: pd.DataFrame, day: date, tier: str) -> pd.DataFrame:
    """Feature rows, through the tier's FeatureService, of the customers scored with that
    tier's models at ``day`` (the store drops any row the tier may not read)."""
    from propensity.snapshots import snapshot_instant

    rows = scores[(_as_dates(scores["score_date"]) == day) & (scores["tier"] == tier)]
    ids = np.sort(rows["customer_id"].astype(str).unique())
    if ids.size == 0:
        return pd.DataFrame()
    entity = pd.DataFrame({"customer_id": ids, "event_timestamp": snapshot_instant(day)})
    frames = store.historical_features(entity, service=tier)
    return frames.get(tier, pd.DataFrame())


def monitoring(
    settings: Settings,
    store: FeatureStore,
    raw: Raw,
    test_auc_of: Callable[[str], float],
    top_features_of: Callable[[str, str], Sequence[str]],
    auc_margin: float = AUC_MARGIN,
    until: date | None = None,
    progress: Callable[[str], None] = lambda _: None,
    fitted_until_of: Callable[[str], date | None] = lambda _: None,
) -> Monitoring:
    """The monitor over every score date on or before ``until``.

    ``store`` is a :class:`propensity.store.FeatureStore`; ``raw`` maps a table name to a
    DuckDB FROM-expression (labels read agreements, customers and consents);
    ``test_auc_of(run_id)`` is the test AUC of an MLflow run and
    ``top_features_of(product, tier)`` the champion's top features (both may raise
    ``MissingInputError``: the row then says so); ``fitted_until_of(run_id)`` the end of the
    run's validation window (None when unknown). Feature PSI is computed for the newest
    pair of score dates only (what a scheduled run adds; earlier pairs were its
    predecessors' newest); score PSI for every pair.
    """
    from propensity.duck import connect
    from propensity.labels import label_frame
    from propensity.store import feature_snapshots

    history = score_history(settings, until)
    days = sorted(set(_as_dates(history["score_date"])))
    data_end = feature_snapshots(settings)[-1]
    windows = outcome_windows(history, settings.catalogue, data_end)
    notes: list[str] = []
    due = windows[windows["labelled"]]
    pending = windows[~windows["labelled"]]
    for row in pending.itertuples(index=False):
        notes.append(f"{row.product} scores of {row.score_date}: outcomes complete on {row.labels_complete_on}, not yet known")
    outcomes = pd.DataFrame(columns=["customer_id", "score_date", "product", "probability", "decile", "tier",
                                     "model_name", "model_version", "mlflow_run_id", "label"])
    if not due.empty:
        progress(f"realised outcomes for {len(due)} score date x product pair(s), extracts up to {data_end}")
        con = connect(threads=settings.n_jobs)
        try:
            labels = label_frame(
                con, raw, settings.catalogue, settings.policy, sorted(set(due["score_date"])), data_end,
                sorted(set(due["product"])),
            )
        finally:
            con.close()
        keep = history[pd.MultiIndex.from_arrays([_as_dates(history["score_date"]), history["product"]]).isin(
            pd.MultiIndex.from_frame(due[["score_date", "product"]])
        )]
        outcomes = realised_outcomes(keep, labels)
    test_auc: dict[str, float] = {}
    fitted_until: dict[str, date] = {}
    for run in sorted(set(outcomes["mlflow_run_id"])):
        try:
            test_auc[run] = float(test_auc_of(run))
            until_day = fitted_until_of(run)
        except MissingInputError as exc:
            notes.append(str(exc))
            continue
        if until_day is not None:
            fitted_until[run] = until_day
    auc = auc_decay(realised_auc(outcomes), test_auc, auc_margin, fitted_until)

    pairs = consecutive_pairs(days)[-1:]
    tops: dict[tuple[str, str], list[str]] = {}
    frames: dict[tuple[date, str], pd.DataFrame] = {}
    if pairs:
        before, after = pairs[0]
        latest = history[_as_dates(history["score_date"]) == after]
        for product, tier in sorted(set(zip(latest["product"], latest["tier"]))):
            try:
                tops[(product, tier)] = list(top_features_of(product, tier))
            except MissingInputError as exc:
                notes.append(str(exc))
        try:
            for tier in sorted({t for _, t in tops}):
                for day in (before, after):
                    progress(f"features of the {tier} customers scored at {day}")
                    frames[(day, tier)] = scored_features(store, history, day, tier)
        except MissingInputError as exc:
            # A store that may not be read (stale, rebuilt without those days) costs the
            # feature PSI only: score PSI and realised lift do not read features.
            frames = {}
            notes.append(f"feature PSI not computed: {exc}")
    return Monitoring(
        auc_margin=auc_margin,
        data_end=data_end,
        score_dates=days,
        windows=windows,
        deciles=realised_by_decile(outcomes),
        auc=auc,
        score_psi=score_psi(history),
        feature_psi=feature_psi(frames, tops, pairs),
        notes=notes,
    )


def top_features(importance: pd.Series, n: int = TOP_FEATURES) -> list[str]:
    """The ``n`` features of largest importance (ties by name), those with none left out."""
    positive = importance[importance > 0]
    frame = pd.DataFrame({"feature": positive.index.astype(str), "value": positive.to_numpy()})
    return frame.sort_values(["value", "feature"], ascending=[False, True], kind="stable")["feature"].head(n).tolist()
