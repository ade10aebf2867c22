"""Datasets by tier, out-of-time splits, LightGBM + calibration + baselines, metrics.

The estimators and metrics here are pure (frames and settings in, frames and fitted
estimators out). The job's steps that read the stores are at the end:
:func:`plan_training` (windows and labels), :func:`train_models` (features per tier
through ``store``, one fit per product × tier, the oracle on synthetic data through
:func:`read_hazard` and :func:`oracle_metrics`), and for notebooks and reports
:func:`training_dataset` (one product × tier as the job builds it) and :func:`tier_rows`
(labelled rows of given snapshots with a tier's features). Logging and registering in
MLflow is ``propensity.registry.log_training``; the ``train`` pipeline composes the two.

* **Datasets by tier.** Labels (``propensity.labels``) give the customer-snapshots; the
  feature store returns features through one FeatureService per tier: a personalised
  model sees only rows personalised at their snapshot, a basic model sees basic and
  personalised rows with basic features only, excluded rows never appear (POLICY.md
  rules 2-4).
* **Split by time, never at random** (:func:`time_split`): the newest fully labelled
  snapshots are the test window, the window before it validates (early stopping and
  calibration), older snapshots train. Between two windows the label months are left
  out, so that every label window of a window ends strictly before the next window's
  first snapshot.
* **Models**: a scikit-learn Pipeline (column frame → ordinal-encoded strings + numeric
  passthrough → LightGBM) early-stopped on the validation window and calibrated on it
  (isotonic or Platt, the one with the lower out-of-fold Brier score on the validation
  window), beside a logistic-regression baseline and the base rate.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from propensity.config import Catalogue, LightGBMParams, LogisticParams, Settings, ValidationWindows
from propensity.duck import connect, sql_literal
from propensity.errors import ConfigError, MissingInputError
from propensity.evaluation import brier, classification_metrics, roc_auc
from propensity.labels import Raw, label_frame, labelled_snapshots
from propensity.snapshots import add_months, instants
from propensity.store import SERVICES, FeatureStore

SPLITS = ("train", "valid", "test")
KEY = ["customer_id", "snapshot_date"]
# Folds of the validation window used to choose the calibration method out of fold
# (a method scored on the rows it was fitted on would always favour isotonic).
CALIBRATION_FOLDS = 5
# The logistic baseline is a yardstick, not a product: fitting it on more rows than this
# (a deterministic sample) costs minutes and changes its AUC in the third decimal.
BASELINE_MAX_ROWS = 200_000
# LightGBM threads: at most settings.n_jobs, and one per this many training rows. On small
# datasets extra OpenMP threads only add synchronisation, and when another process holds
# a core they spin-wait: measured 0.26 s with one thread against 1 s (idle machine) to
# 33 s (one busy core) with two, for 7k rows x 114 features.
ROWS_PER_THREAD = 50_000
# Probabilities are clipped to this distance from 0 and 1 before taking a logit (Platt).
_EPS = 1e-6


# ----------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class Split:
    """Snapshot dates of the train, validation and test windows (each ascending)."""

    train: tuple[date, ...]
    valid: tuple[date, ...]
    test: tuple[date, ...]

    def window(self, name: str) -> tuple[date, date]:
        dates = getattr(self, name)
        return dates[0], dates[-1]

    def describe(self) -> dict[str, str]:
        """``{"train": "2024-01-31..2024-11-30", ...}`` for tags and logs."""
        return {name: f"{self.window(name)[0]}..{self.window(name)[1]}" for name in SPLITS}

    def assign(self, snapshot_dates: pd.Series) -> pd.Series:
        """The window name of each snapshot date (None outside every window)."""
        lookup = {d: name for name in SPLITS for d in getattr(self, name)}
        return snapshot_dates.map(lookup)


def time_split(labelled: Sequence[date], label_months: int, windows: ValidationWindows) -> Split:
    """Out-of-time windows over the labelled snapshots (consecutive month ends).

    ``label_months`` is gap + horizon of the product. The test window is the newest
    ``test_months`` labelled snapshots; the validation window the ``valid_months`` before
    it and the training window every snapshot before that, each separated from the next
    window so that a label window ``(t + gap, t + label_months]`` ends strictly before the
    next window's first snapshot: ``label_months`` snapshots are left out in between.
    Raises ``MissingInputError`` when fewer than ``min_train_months`` remain to train on.
    """
    labelled = sorted(set(labelled))
    if not labelled:
        raise MissingInputError("no fully labelled snapshot: the extracts are shorter than one label window")
    test = tuple(labelled[-windows.test_months :])
    valid_last = add_months(test[0], -(label_months + 1))
    valid = tuple(d for d in labelled if add_months(valid_last, -windows.valid_months) < d <= valid_last)
    train = tuple(d for d in labelled if valid and d <= add_months(valid[0], -(label_months + 1)))
    if len(test) < windows.test_months or len(valid) < windows.valid_months or len(train) < windows.min_train_months:
        need = windows.min_train_months + windows.valid_months + windows.test_months + 2 * label_months
        raise MissingInputError(
            f"too few labelled snapshots ({len(labelled)}: {labelled[0]}..{labelled[-1]}) for "
            f"{windows.min_train_months} training, {windows.valid_months} validation and {windows.test_months} test "
            f"months with {label_months} label months between windows: {need} are needed "
            f"(extend the extracts or lower validation.* in models/training.yaml)"
        )
    return Split(train=train, valid=valid, test=test)


# --------------------------------------------------------------------------- datasets
def entity_frame(labels: pd.DataFrame) -> pd.DataFrame:
    """The distinct customer-snapshots of a label frame as Feast entity rows:
    customer_id, event_timestamp (snapshot instant), snapshot_date; sorted."""
    rows = labels[KEY].drop_duplicates().sort_values(KEY, kind="stable").reset_index(drop=True)
    return pd.DataFrame(
        {
            "customer_id": rows["customer_id"].astype(str).to_numpy(),
            "event_timestamp": instants(pd.Series(pd.to_datetime(rows["snapshot_date"]))).to_numpy(),
            "snapshot_date": rows["snapshot_date"].to_numpy(),
        }
    )


def compact_features(frame: pd.DataFrame, columns: Sequence[str], string_columns: Sequence[str]) -> pd.DataFrame:
    """Features as the models read them: strings as object (missing = NaN), numbers as
    float32 (missing = NaN), in ``columns`` order; key, tier and sharing columns kept."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingInputError(f"feature columns missing from the frame: {missing[:10]}")
    strings = set(string_columns)
    data: dict[str, object] = {}
    for c in [*KEY, "tier", "group_data_sharing"]:
        if c in frame.columns:
            data[c] = frame[c].to_numpy()
    for c in columns:
        if c in strings:
            values = frame[c].astype(object)
            data[c] = values.where(values.notna(), np.nan).to_numpy()
        else:
            data[c] = pd.to_numeric(frame[c], errors="coerce").astype(np.float32).to_numpy()
    return pd.DataFrame(data, index=pd.RangeIndex(len(frame)))


def tier_dataset(labels: pd.DataFrame, features: pd.DataFrame, split: Split) -> pd.DataFrame:
    """Label rows of one product joined to one tier's feature rows, with a ``split`` column.

    ``features`` holds only the customer-snapshots the tier's service may read (the store
    has dropped the others), so the inner join keeps exactly the permitted rows. Rows
    outside the three windows are dropped. Sorted by split, snapshot, customer.
    """
    rows = labels[[*KEY, "label"]].copy()
    rows["split"] = split.assign(rows["snapshot_date"])
    rows = rows[rows["split"].notna()]
    out = rows.merge(features, on=KEY, how="inner", validate="one_to_one")
    order = out["split"].map({name: i for i, name in enumerate(SPLITS)})
    out = out.assign(_order=order).sort_values(["_order", "snapshot_date", "customer_id"], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def dataset_fingerprint(rows: pd.DataFrame) -> str:
    """sha256 of the sorted ``customer_id|snapshot_date|label`` lines of the rows."""
    ordered = rows.sort_values(KEY, kind="stable")
    lines = (
        ordered["customer_id"].astype(str)
        + "|"
        + pd.to_datetime(ordered["snapshot_date"]).dt.strftime("%Y-%m-%d")
        + "|"
        + ordered["label"].astype(int).astype(str)
    )
    return hashlib.sha256("\n".join(lines.tolist()).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------ estimators
class FeatureFrame(TransformerMixin, BaseEstimator):
    """Selects the service's feature columns in contract order and fixes their types:
    strings to object with NaN for missing, everything else to float32. Extra columns of
    the input are ignored; a missing one is refused (the model's contract is its service)."""

    def __init__(self, features: Sequence[str] = (), string_features: Sequence[str] = ()):
        self.features = features
        self.string_features = string_features

    def fit(self, X: pd.DataFrame, y: object = None) -> "FeatureFrame":
        self.transform(X.head(0))
        self.n_features_in_ = len(self.features)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.features if c not in X.columns]
        if missing:
            raise MissingInputError(
                f"the model needs {len(missing)} feature column(s) the frame lacks, e.g. {missing[:5]}; "
                "read features through the FeatureService the model records"
            )
        strings = set(self.string_features)
        data = {}
        for c in self.features:
            if c in strings:
                values = X[c].astype(object)
                data[c] = values.where(values.notna(), np.nan).to_numpy()
            else:
                data[c] = pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
        return pd.DataFrame(data, index=pd.RangeIndex(len(X)))

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(self.features, dtype=object)


def _number_column(values: pd.Series) -> np.ndarray:
    """A numeric column as float32 (missing = NaN), as ``FeatureFrame`` types it."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=np.float32, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)


def _ordinal_codes(values: pd.Series, categories: np.ndarray) -> np.ndarray:
    """What the fitted ``OrdinalEncoder`` gives one string column: the category's index,
    NaN for a missing or unknown value (missing sorts last in ``categories``, so the
    indices of the other categories are unchanged)."""
    known = pd.Index([c for c in categories if not (isinstance(c, float) and np.isnan(c)) and c is not None])
    typed = values.astype(object)
    codes = known.get_indexer(typed.where(typed.notna(), None)).astype(np.float32)
    codes[codes < 0] = np.nan
    return codes


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): tames money amounts for the linear baseline."""
    return np.sign(x) * np.log1p(np.abs(x))


def lightgbm_pipeline(
    features: Sequence[str], string_features: Sequence[str], params: LightGBMParams, *, n_jobs: int, seed: int
) -> Pipeline:
    """Unfitted: FeatureFrame → ColumnTransformer (ordinal strings, numeric passthrough) →
    LGBMClassifier (deterministic, seeded). Strings become LightGBM categorical features."""
    from lightgbm import LGBMClassifier

    strings = [c for c in features if c in set(string_features)]
    numbers = [c for c in features if c not in set(string_features)]
    parts = []
    if strings:
        parts.append(
            (
                "strings",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan, dtype=np.float32
                ),
                strings,
            )
        )
    if numbers:
        parts.append(("numbers", "passthrough", numbers))
    columns = ColumnTransformer(parts, verbose_feature_names_out=False).set_output(transform="pandas")
    model = LGBMClassifier(
        n_estimators=params.n_estimators,
        learning_rate=params.learning_rate,
        num_leaves=params.num_leaves,
        min_child_samples=params.min_child_samples,
        subsample=params.subsample,
        subsample_freq=params.subsample_freq,
        colsample_bytree=params.colsample_bytree,
        reg_lambda=params.reg_lambda,
        class_weight=params.class_weight,
        n_jobs=n_jobs,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    return Pipeline([("frame", FeatureFrame(list(features), strings)), ("columns", columns), ("model", model)])


def lightgbm_threads(rows: int, n_jobs: int) -> int:
    """Threads for a LightGBM fit on ``rows`` rows: between 1 and ``n_jobs``."""
    return max(1, min(n_jobs, rows // ROWS_PER_THREAD))


def fit_lightgbm(
    pipeline: Pipeline,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    *,
    early_stopping_rounds: int,
) -> Pipeline:
    """Fit the pipeline on ``train`` (its ``label`` column), early-stopping on ``valid``."""
    import lightgbm

    prepare = Pipeline(pipeline.steps[:-1])
    x_train = prepare.fit_transform(train, train["label"])
    x_valid = prepare.transform(valid)
    strings = list(pipeline.named_steps["frame"].string_features)
    model = pipeline.named_steps["model"]
    with warnings.catch_warnings():
        # LightGBM 4.7 renames eval_set to eval_X/eval_y; eval_set works on every supported version.
        warnings.filterwarnings("ignore", message=".*'eval_set' is deprecated.*")
        model.fit(
            x_train,
            train["label"].to_numpy(),
            eval_set=[(x_valid, valid["label"].to_numpy())],
            categorical_feature=strings or "auto",
            callbacks=[lightgbm.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)],
        )
    return pipeline


def logistic_pipeline(features: Sequence[str], string_features: Sequence[str], params: LogisticParams, *, seed: int) -> Pipeline:
    """Unfitted baseline: impute + one-hot strings, impute (with indicators) + signed log +
    scale numbers, logistic regression."""
    strings = [c for c in features if c in set(string_features)]
    numbers = [c for c in features if c not in set(string_features)]
    parts = []
    if strings:
        parts.append(
            (
                "strings",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", min_frequency=20)),
                    ]
                ),
                strings,
            )
        )
    if numbers:
        parts.append(
            (
                "numbers",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                        ("log", FunctionTransformer(signed_log1p)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numbers,
            )
        )
    return Pipeline(
        [
            ("frame", FeatureFrame(list(features), strings)),
            ("columns", ColumnTransformer(parts)),
            ("model", LogisticRegression(C=params.C, max_iter=params.max_iter, random_state=seed)),
        ]
    )


def baseline_sample(train: pd.DataFrame, seed: int) -> pd.DataFrame:
    """At most BASELINE_MAX_ROWS training rows, drawn with the seed (all rows if fewer)."""
    if len(train) <= BASELINE_MAX_ROWS:
        return train
    return train.sample(n=BASELINE_MAX_ROWS, random_state=seed).sort_index()


# ------------------------------------------------------------------------ calibration
ISOTONIC_TOP_ROWS = 100


class IsotonicCalibrator:
    """Isotonic regression of outcome on score, clipped outside the fitted range.

    Isotonic regression fits a step per run of equal outcomes, so a handful of positives
    at the very top of the validation window would become a probability of 1. The curve
    is capped at the positive rate of the top ``ISOTONIC_TOP_ROWS`` validation rows (or
    the top 1%, whichever is larger): still monotone, never more certain than the data.
    """

    method = "isotonic"

    def fit(self, scores: np.ndarray, y: np.ndarray) -> "IsotonicCalibrator":
        scores = np.asarray(scores, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        top = max(ISOTONIC_TOP_ROWS, len(y) // 100)
        cap = float(y[np.argsort(-scores, kind="stable")[:top]].mean()) if len(y) else 1.0
        self.model_ = IsotonicRegression(y_min=0.0, y_max=max(cap, _EPS), out_of_bounds="clip").fit(scores, y)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(self.model_.predict(np.asarray(scores, dtype=np.float64)), 0.0, 1.0)


class SigmoidCalibrator:
    """Platt scaling: a logistic regression on the logit of the score."""

    method = "sigmoid"

    def fit(self, scores: np.ndarray, y: np.ndarray) -> "SigmoidCalibrator":
        y = np.asarray(y)
        if y.min() == y.max():
            self.constant_ = float(y.mean())
            return self
        self.constant_ = None
        self.model_ = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(scores)[:, None], y)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        if self.constant_ is not None:
            return np.full(len(scores), self.constant_)
        return self.model_.predict_proba(_logit(scores)[:, None])[:, 1]


def _logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


CALIBRATORS = {"isotonic": IsotonicCalibrator, "sigmoid": SigmoidCalibrator}


def calibration_folds(customer_ids: pd.Series, folds: int = CALIBRATION_FOLDS) -> np.ndarray:
    """A fold number per row from a hash of the customer (a customer stays in one fold)."""
    hashed = pd.util.hash_pandas_object(customer_ids.astype(str).reset_index(drop=True), index=False).to_numpy()
    return (hashed % np.uint64(folds)).astype(np.int64)


def choose_calibration(
    scores: np.ndarray, y: np.ndarray, folds: np.ndarray, methods: Sequence[str]
) -> tuple[str, object, dict[str, float]]:
    """The calibration method with the lowest out-of-fold Brier score, refitted on all rows.

    Each method is fitted on all folds but one and scored on the one left out; the
    method with the lower mean squared error over all rows wins (ties: the first listed).
    Returns (method name, fitted calibrator, {method: out-of-fold Brier}).
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    scored: dict[str, float] = {}
    for method in methods:
        out = np.empty_like(scores)
        for fold in np.unique(folds):
            held = folds == fold
            out[held] = CALIBRATORS[method]().fit(scores[~held], y[~held]).transform(scores[held])
        scored[method] = brier(y, out)
    best = min(methods, key=lambda m: (scored[m], list(methods).index(m)))
    return best, CALIBRATORS[best]().fit(scores, y), scored


class CalibratedModel:
    """A fitted pipeline and the calibrator of its scores: calibrated probabilities.

    ``predict_proba`` returns the two class columns (scikit-learn convention);
    ``probability`` the positive class as a 1-D float64 array.
    """

    def __init__(self, pipeline: Pipeline, calibrator: object, features: Sequence[str], string_features: Sequence[str]):
        self.pipeline = pipeline
        self.calibrator = calibrator
        self.features = list(features)
        self.string_features = list(string_features)

    @property
    def calibration(self) -> str:
        return self.calibrator.method

    def raw_score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(frame)[:, 1]

    def encoding_key(self) -> tuple:
        """What the fitted preprocessing depends on: models with equal keys encode a frame
        identically, so a scoring job encodes each frame once for all of them."""
        strings = self.pipeline.named_steps["columns"].named_transformers_.get("strings")
        categories = tuple(tuple(str(v) for v in c) for c in strings.categories_) if strings is not None else ()
        return (tuple(self.features), tuple(self.string_features), categories)

    def encode(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The LightGBM input for ``frame`` (every step of the pipeline but the model)."""
        return self.pipeline[:-1].transform(frame)

    def encode_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """:meth:`encode` as one C-contiguous float32 matrix (every encoded column is
        float32, so this is also what LightGBM converts the encoded frame to), built a
        column at a time: numbers converted, strings as codes against the fitted
        categories. Rows can then be taken and predicted without a per-model conversion.
        Equal to ``encode(frame).to_numpy()`` (tested)."""
        self.pipeline.named_steps["frame"].transform(frame.head(0))  # refuses missing columns
        columns = self.pipeline.named_steps["columns"]
        parts = [(t, list(c)) for name, t, c in columns.transformers_ if not (name == "remainder" and t == "drop")]
        out = np.empty((len(frame), sum(len(c) for _, c in parts)), dtype=np.float32)
        j = 0
        for transformer, names in parts:
            if isinstance(transformer, OrdinalEncoder):
                for i, name in enumerate(names):
                    out[:, j + i] = _ordinal_codes(frame[name], transformer.categories_[i])
            elif transformer == "passthrough" or (isinstance(transformer, FunctionTransformer) and transformer.func is None):
                # Column by column: selecting the columns first would copy the frame.
                for i, name in enumerate(names):
                    out[:, j + i] = _number_column(frame[name])
            else:  # a step this shortcut does not know: the pipeline's own transform
                return np.ascontiguousarray(self.encode(frame).to_numpy(dtype=np.float32))
            j += len(names)
        return out

    def probability_of_encoded(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from :meth:`encode_matrix` output: the booster called
        directly (what ``predict_proba`` does after its input checks)."""
        if len(matrix) == 0:
            return np.empty(0, dtype=np.float64)
        model = self.pipeline[-1]
        raw = model.booster_.predict(matrix, num_threads=model.n_jobs if (model.n_jobs or 0) > 0 else 0)
        return np.asarray(self.calibrator.transform(raw), dtype=np.float64)

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self.calibrator.transform(self.raw_score(frame)), dtype=np.float64)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = self.probability(frame)
        return np.column_stack([1 - p, p])

    def feature_importance(self) -> pd.Series:
        """Total gain per feature of the LightGBM model, in feature order."""
        booster = self.pipeline.named_steps["model"].booster_
        names = booster.feature_name()
        return pd.Series(booster.feature_importance(importance_type="gain"), index=names, name="gain")


# ---------------------------------------------------------------------------- fitting
@dataclass
class FittedProductTier:
    """The models of one product and tier and their numbers on the test window."""

    product: str
    tier: str
    model: CalibratedModel
    metrics: dict[str, float]
    rows: dict[str, int]
    rows_by_tier: dict[str, int]
    calibration_brier: dict[str, float]
    best_iteration: int
    test_labels: np.ndarray
    test_probability: np.ndarray
    logistic_probability: np.ndarray
    base_rate: float
    seconds: float
    extra: dict[str, object] = field(default_factory=dict)


def fit_product_tier(
    data: pd.DataFrame,
    product: str,
    tier: str,
    features: Sequence[str],
    string_features: Sequence[str],
    settings: Settings,
) -> FittedProductTier:
    """Fit LightGBM (+ calibration) and the baselines on a tier dataset; score the test window.

    ``data`` comes from :func:`tier_dataset` (``split`` and ``label`` columns). Metric
    names: ``roc_auc``, ``pr_auc``, ``lift_top_decile``, ``brier``, ``ece`` for the
    calibrated LightGBM model, the same prefixed ``logistic_`` and ``base_rate_``.
    """
    started = time.perf_counter()
    training = settings.training
    parts = {name: data[data["split"] == name] for name in SPLITS}
    for name, part in parts.items():
        if part.empty or part["label"].nunique() < 2:
            raise MissingInputError(
                f"{product} / {tier}: the {name} window has {len(part)} rows and "
                f"{int(part['label'].sum()) if len(part) else 0} positives; both classes are needed to train and evaluate"
            )
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    threads = lightgbm_threads(len(train), settings.n_jobs)
    pipeline = lightgbm_pipeline(features, string_features, training.lightgbm, n_jobs=threads, seed=settings.seed)
    fit_lightgbm(pipeline, train, valid, early_stopping_rounds=training.lightgbm.early_stopping_rounds)
    valid_scores = pipeline.predict_proba(valid)[:, 1]
    method, calibrator, calibration_brier = choose_calibration(
        valid_scores, valid["label"].to_numpy(), calibration_folds(valid["customer_id"]), training.calibration.methods
    )
    model = CalibratedModel(pipeline, calibrator, features, string_features)
    y_test = test["label"].to_numpy(dtype=np.float64)
    p_test = model.probability(test)

    logistic = logistic_pipeline(features, string_features, training.logistic, seed=settings.seed)
    sample = baseline_sample(train, settings.seed)
    logistic.fit(sample, sample["label"].to_numpy())
    p_logistic = logistic.predict_proba(test)[:, 1]
    base_rate = float(train["label"].mean())
    p_base = np.full(len(test), base_rate)

    bins = training.metrics.ece_bins
    metrics = classification_metrics(y_test, p_test, bins)
    metrics.update({f"logistic_{k}": v for k, v in classification_metrics(y_test, p_logistic, bins).items()})
    metrics.update({f"base_rate_{k}": v for k, v in classification_metrics(y_test, p_base, bins).items()})
    metrics["raw_roc_auc"] = roc_auc(y_test, model.raw_score(test))
    metrics["train_base_rate"] = base_rate
    best = pipeline.named_steps["model"].best_iteration_ or training.lightgbm.n_estimators
    return FittedProductTier(
        product=product,
        tier=tier,
        model=model,
        metrics=metrics,
        rows={name: int(len(part)) for name, part in parts.items()},
        rows_by_tier={str(k): int(v) for k, v in data["tier"].value_counts().sort_index().items()} if "tier" in data else {},
        calibration_brier=calibration_brier,
        best_iteration=int(best),
        test_labels=y_test,
        test_probability=p_test,
        logistic_probability=p_logistic,
        base_rate=base_rate,
        seconds=time.perf_counter() - started,
        extra={"lightgbm_threads": threads},
    )


# ---------------------------------------------------------------------- oracle & gate
def oracle_probability(rows: pd.DataFrame, hazard: pd.DataFrame, gap_months: int, horizon_months: int) -> np.ndarray:
    """The true probability of each row's label from the synthetic truth.

    ``rows`` has customer_id, snapshot_date; ``hazard`` has customer_id, snapshot_date,
    p_start (the probability of starting the product during the month after that month
    end) for one product. The label window of a row at t covers the months after
    t+gap, ..., t+gap+horizon-1, so the probability is 1 - prod_k (1 - p_start(t+gap+k)).
    A month without a truth row counts as p_start = 0. Returns one value per row, in order.
    """
    base = pd.DataFrame(
        {
            "customer_id": rows["customer_id"].astype(str).to_numpy(),
            "snapshot_date": pd.to_datetime(rows["snapshot_date"]).dt.date.to_numpy(),
            "_row": np.arange(len(rows)),
        }
    )
    truth = hazard[["customer_id", "snapshot_date", "p_start"]].copy()
    truth["customer_id"] = truth["customer_id"].astype(str)
    truth["snapshot_date"] = pd.to_datetime(truth["snapshot_date"]).dt.date
    log_survival = np.zeros(len(rows))
    for k in range(gap_months, gap_months + horizon_months):
        shifted = base.assign(snapshot_date=[add_months(d, k) for d in base["snapshot_date"]])
        joined = shifted.merge(truth, on=["customer_id", "snapshot_date"], how="left").sort_values("_row")
        p = joined["p_start"].fillna(0.0).clip(0.0, 1.0).to_numpy(dtype=np.float64)
        log_survival += np.log1p(-np.minimum(p, 1 - 1e-12))
    return 1.0 - np.exp(log_survival)


def oracle_now_probability(rows: pd.DataFrame, hazard: pd.DataFrame, horizon_months: int) -> np.ndarray:
    """The label probability from what holds at the snapshot only: the hazard drawn from
    each row's state at t (``p_start`` at t) held over the whole window,
    1 - (1 - p_start(t))^horizon. :func:`oracle_probability` also reads the hazards of the
    months after t, which depend on how the customer's states move after t (no model can
    know that); this one does not. Neither is reachable exactly (traits are only seen
    through noisy data), but the difference between the two shows how much of a model's
    gap to the oracle is the future."""
    now = oracle_probability(rows, hazard, 0, 1)
    return 1.0 - (1.0 - now) ** horizon_months


def promotion_decision(challenger: float, champion: float | None, margin: float) -> bool:
    """Whether a challenger replaces the champion: always when there is none (or its
    metric cannot be computed); otherwise only if it beats it by at least ``margin``."""
    if champion is None or (isinstance(champion, float) and math.isnan(champion)):
        return True
    if isinstance(challenger, float) and math.isnan(challenger):
        return False
    return challenger >= champion + margin


@dataclass(frozen=True)
class TrainingResult:
    """What a training job did: one row per product × tier (``table``) and the MLflow run.

    ``table`` columns: product, tier, model_name, version, champion_version, promoted,
    auc, pr_auc, oracle_auc, oracle_gap, oracle_now_auc, lift, brier, ece, logistic_auc, base_rate,
    calibration, best_iteration, rows_train, rows_valid, rows_test, positives_test, test_window, run_id,
    seconds. ``skipped`` names the models that could not be trained, with the reason.
    """

    table: pd.DataFrame
    parent_run_id: str
    experiment_id: str
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)  # model name -> why it was not trained


# ------------------------------------------------------------- the job (reads the stores)
TRUTH_FILE = "product_hazard.parquet"


def training_selection(
    catalogue: Catalogue, products: Sequence[str] | None, tiers: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The products (default: the catalogue) and tiers (default: both served tiers) to
    train; ``ConfigError`` naming any unknown one."""
    products = list(products) if products else list(catalogue.ids)
    tiers = list(tiers) if tiers else list(SERVICES)
    unknown = [t for t in tiers if t not in SERVICES]
    if unknown:
        raise ConfigError(f"unknown tier(s) {unknown}; models exist for {list(SERVICES)}")
    unknown = [p for p in products if p not in catalogue.products]
    if unknown:
        raise ConfigError(f"unknown product(s) {unknown}; the catalogue (models/products.yaml) has {list(catalogue.ids)}")
    return products, tiers


def product_split(settings: Settings, product: str, snapshots: Sequence[date]) -> Split:
    """The out-of-time windows of a product over the feature store's ``snapshots``
    (labels close on the newest one); ``MissingInputError`` when they cannot be filled."""
    label = settings.catalogue.products[product].label
    labelled = labelled_snapshots(snapshots, label.gap_months, label.horizon_months, snapshots[-1])
    return time_split(labelled, label.gap_months + label.horizon_months, settings.training.validation)


def read_labels(settings: Settings, raw: Raw, products: Sequence[str], snapshots: Sequence[date], data_end: date) -> pd.DataFrame:
    """Labels of ``products`` at ``snapshots`` (``propensity.labels.label_frame``)."""
    con = connect(threads=settings.n_jobs)
    try:
        return label_frame(con, raw, settings.catalogue, settings.policy, list(snapshots), data_end, list(products))
    finally:
        con.close()


@dataclass
class TierFeatures:
    """The features of labelled customer-snapshots that one tier's service may read."""

    tier: str
    frame: pd.DataFrame  # customer_id, snapshot_date, tier, group_data_sharing, *columns
    columns: list[str]
    strings: list[str]
    categories: list[str]


def tier_features(store: FeatureStore, labels: pd.DataFrame, tier: str) -> TierFeatures:
    """Features of the customer-snapshots of ``labels`` through a tier's FeatureService,
    compacted (:func:`compact_features`). The store drops the rows the tier may not read."""
    columns, strings = store.service_columns(tier), store.service_strings(tier)
    frames = store.historical_features(entity_frame(labels), service=tier) if len(labels) else {}
    if tier in frames:
        frame = compact_features(frames[tier], columns, strings)
    else:
        frame = pd.DataFrame(columns=[*KEY, "tier", "group_data_sharing", *columns])
    return TierFeatures(tier, frame, columns, strings, store.service_categories(tier))


def tier_rows(settings: Settings, store: FeatureStore, raw: Raw, product: str, tier: str, snapshots: Sequence[date]) -> pd.DataFrame:
    """Labelled customer-snapshots of a product at ``snapshots`` that the tier's service may
    read, with their features: customer_id, snapshot_date, label, tier, group_data_sharing
    and the service's columns (the rows a model of that tier was tested on, for its test
    window). Labels close on the newest snapshot of the feature store."""
    labels = read_labels(settings, raw, [product], snapshots, store.snapshots()[-1])
    features = tier_features(store, labels, tier)
    return labels[[*KEY, "label"]].merge(features.frame, on=KEY, how="inner", validate="one_to_one")


def training_dataset(settings: Settings, store: FeatureStore, raw: Raw, product: str, tier: str):
    """The dataset the training job builds for a product × tier: ``(data, columns,
    string_columns, split)``, ``data`` with ``split`` and ``label`` columns (see
    :func:`tier_dataset`), ready for :func:`fit_product_tier`."""
    snapshots = store.snapshots()
    split = product_split(settings, product, snapshots)
    labels = read_labels(settings, raw, [product], [*split.train, *split.valid, *split.test], snapshots[-1])
    features = tier_features(store, labels, tier)
    return tier_dataset(labels, features.frame, split), features.columns, features.strings, split


@dataclass
class TrainingPlan:
    """What a training job fits: the products and tiers, each product's windows and the
    labels of every snapshot a window uses. ``skipped`` maps (product, tier) to why it is
    not trained; :func:`train_models` adds the pairs it has to skip."""

    products: list[str]
    tiers: list[str]
    splits: dict[str, Split]
    labels: pd.DataFrame
    data_end: date
    started: float  # perf_counter when planning began (the job's time counts from here)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)


def plan_training(
    settings: Settings,
    store: FeatureStore,
    raw: Raw,
    products: Sequence[str] | None = None,
    tiers: Sequence[str] | None = None,
    progress: Callable[[str], None] = print,
) -> TrainingPlan:
    """Windows per product over the feature store's snapshots, then the labels of every
    snapshot some window uses. A product whose data cannot fill its windows is skipped
    (both tiers); ``MissingInputError`` when no product can be trained."""
    started = time.perf_counter()
    products, tiers = training_selection(settings.catalogue, products, tiers)
    snapshots = store.snapshots()
    splits: dict[str, Split] = {}
    skipped: dict[tuple[str, str], str] = {}
    for product in products:
        try:
            splits[product] = product_split(settings, product, snapshots)
        except MissingInputError as exc:
            skipped.update({(product, tier): str(exc) for tier in tiers})
            progress(f"skipped {product}: {exc}")
    if not splits:
        raise MissingInputError("no product can be trained: " + "; ".join(sorted(set(skipped.values()))))
    products = [p for p in products if p in splits]
    needed = sorted({d for s in splits.values() for d in (*s.train, *s.valid, *s.test)})
    labels = read_labels(settings, raw, products, needed, snapshots[-1])
    progress(f"labels: {len(labels):,} customer-snapshot-products over {len(needed)} snapshots ({needed[0]}..{needed[-1]})")
    return TrainingPlan(products, tiers, splits, labels, snapshots[-1], started, skipped)


@dataclass
class TrainedModel:
    """One fitted product × tier with what logging it needs: its dataset (``split`` and
    ``label`` columns), windows, the service's columns and categories, and on synthetic
    data the oracle probability of each test row (``None`` without ``truth/``)."""

    fitted: FittedProductTier
    data: pd.DataFrame
    split: Split
    features: TierFeatures
    oracle: np.ndarray | None
    started: float  # perf_counter when its dataset was built


def train_models(
    settings: Settings, store: FeatureStore, plan: TrainingPlan, progress: Callable[[str], None] = print
) -> Iterator[TrainedModel]:
    """Fit the plan's models one at a time: per tier, the features of every labelled
    customer-snapshot through that tier's service, then per product its dataset, fit and
    test metrics (with the oracle's on synthetic data). A product × tier whose window lacks
    a class is recorded in ``plan.skipped`` and the others go on."""
    for tier in plan.tiers:
        t0 = time.perf_counter()
        features = tier_features(store, plan.labels, tier)
        progress(f"features [{tier}]: {len(features.frame):,} rows x {len(features.columns)} columns in {time.perf_counter() - t0:.1f} s")
        for product in plan.products:
            started = time.perf_counter()
            split = plan.splits[product]
            data = tier_dataset(plan.labels[plan.labels["product"] == product], features.frame, split)
            try:
                fitted = fit_product_tier(data, product, tier, features.columns, features.strings, settings)
            except MissingInputError as exc:
                # One rare product must not sink the other models of the job.
                plan.skipped[(product, tier)] = str(exc)
                progress(f"skipped: {exc}")  # the reason names the product and tier
                continue
            oracle = oracle_metrics(settings, fitted, data[data["split"] == "test"], split)
            yield TrainedModel(fitted, data, split, features, oracle, started)


def read_hazard(settings: Settings, product: str, dates: Sequence[date], months_after: int) -> pd.DataFrame | None:
    """The synthetic truth's hazards of ``product`` from the first of ``dates`` to
    ``months_after`` months past the last (a label window reads the months after t);
    ``None`` when the data folder has no truth (a real bank)."""
    path = settings.truth_dir / TRUTH_FILE
    if not path.is_file():
        return None
    con = connect(threads=settings.n_jobs)
    try:
        return con.execute(
            f"SELECT customer_id, snapshot_date, p_start FROM read_parquet({sql_literal(path)}) "
            f"WHERE product = ? AND snapshot_date BETWEEN ? AND ?",
            [product, min(dates), add_months(max(dates), months_after)],
        ).df()
    finally:
        con.close()


def oracle_metrics(settings: Settings, fitted: FittedProductTier, test: pd.DataFrame, split: Split) -> np.ndarray | None:
    """On synthetic data, add the oracle's AUC on the test rows to ``fitted.metrics``
    (``oracle_roc_auc``, ``oracle_gap``, ``oracle_now_roc_auc``) and return the oracle
    probability of each test row; ``None`` (metrics unchanged) without a truth."""
    label = settings.catalogue.products[fitted.product].label
    hazard = read_hazard(settings, fitted.product, split.test, label.gap_months + label.horizon_months - 1)
    if hazard is None:
        return None
    oracle = oracle_probability(test, hazard, label.gap_months, label.horizon_months)
    fitted.metrics["oracle_roc_auc"] = roc_auc(fitted.test_labels, oracle)
    fitted.metrics["oracle_gap"] = fitted.metrics["oracle_roc_auc"] - fitted.metrics["roc_auc"]
    now = oracle_now_probability(test, hazard, label.horizon_months)
    fitted.metrics["oracle_now_roc_auc"] = roc_auc(fitted.test_labels, now)
    return oracle
