"""The model registry: the only module that imports MLflow.

``log_training`` records a training job (``propensity.train.train_models``): one MLflow
parent run with a nested run per product × tier (params, metrics, tags, a pyfunc model
with a signature, an HTML report) → registered model
``propensity-<product>-<tier>`` → aliases. A new version gets ``challenger``; it becomes
``champion`` only when it beats the current champion by the configured margin on the new
test window (the champion is re-scored on the same rows); the first version is champion.

MLflow writes only under the data folder: a SQLite tracking and registry store
(``settings.mlflow_db``) and artifacts under ``settings.mlflow_artifacts``. No training
row is ever logged: no input example, no dataset artifact; the report holds aggregates.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.atomic import write_bytes_atomic
from propensity.config import Settings
from propensity.errors import MissingInputError
from propensity.evaluation import pr_auc, report_html, roc_auc
from propensity.train import (
    FittedProductTier,
    TrainedModel,
    TrainingPlan,
    TrainingResult,
    dataset_fingerprint,
    promotion_decision,
)

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402  (after the environment that keeps it quiet)
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.types.schema import AnyType, ColSpec, Schema  # noqa: E402

EXPERIMENT = "propensity"
MODEL_PREFIX = "propensity-"
CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
REPORT_ARTIFACT = "report.html"
CHANGES_ARTIFACT = "git-changes.patch"  # the job run's record of uncommitted changes to the code

CHAMPION_COLUMNS = ["name", "product", "tier", "version", "run_id", "auc", "oracle_auc", "lift", "ece", "registered_at"]
RESULT_COLUMNS = [
    "product", "tier", "model_name", "version", "champion_version", "promoted", "auc", "pr_auc", "oracle_auc",
    "oracle_gap", "oracle_now_auc", "lift", "brier", "ece", "logistic_auc", "base_rate", "calibration", "best_iteration",
    "rows_train", "rows_valid", "rows_test", "positives_test", "test_window", "run_id", "seconds",
]


def model_name(product: str, tier: str) -> str:
    return f"{MODEL_PREFIX}{product}-{tier}"


# ------------------------------------------------------------------------ connection
def _quiet() -> None:
    for name in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.autolog(disable=True)


def tracking_uri(settings: Settings) -> str:
    return f"sqlite:///{settings.mlflow_db}"


def client(settings: Settings) -> MlflowClient:
    """Point MLflow (tracking and registry) at the data folder and return a client."""
    _quiet()
    settings.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlc = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with warnings.catch_warnings():
        # Opening the SQLite store warns about SQLAlchemy loader options MLflow uses.
        warnings.simplefilter("ignore", DeprecationWarning)
        mlc.search_experiments(max_results=1)
    return mlc


def _experiment_id(mlc: MlflowClient, settings: Settings) -> str:
    found = mlc.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    return mlc.create_experiment(EXPERIMENT, artifact_location=settings.mlflow_artifacts.resolve().as_uri())


def _existing_client(settings: Settings) -> MlflowClient | None:
    """A client for reading, or None when no training ever ran (no store is created)."""
    if not settings.mlflow_db.is_file():
        return None
    return client(settings)


# -------------------------------------------------------------------------- the model
class PropensityModel(mlflow.pyfunc.PythonModel):
    """The pyfunc of a product × tier: ``predict`` returns calibrated probabilities of
    the positive class (1-D float64), one per input row."""

    def __init__(self, model):
        self.model = model

    # A DataFrame hint: MLflow validates the input against the logged signature.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        return self.model.probability(pd.DataFrame(model_input))


def signature(features: Sequence[str], string_features: Sequence[str]) -> ModelSignature:
    """Input: the service's columns in order (strings as ``string``; numbers of any dtype,
    as Feast returns int64 or float64 depending on nulls). Output: ``probability``."""
    strings = set(string_features)
    inputs = Schema([ColSpec("string", c) if c in strings else ColSpec(AnyType(), c) for c in features])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "probability")]))


def _requirements() -> list[str]:
    out = []
    for package in ("lightgbm", "scikit-learn", "pandas", "numpy", "scipy", "cloudpickle"):
        try:
            out.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(package)
    return out


@dataclass(frozen=True)
class ChampionModel:
    """The champion of a product × tier, loaded from the registry."""

    name: str
    version: str
    run_id: str
    product: str
    tier: str
    feature_service: str
    features: list[str]
    metrics: dict[str, float]
    _pyfunc: object = field(default=None, repr=False, compare=False)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities (float64 in [0, 1]) for rows with the service's columns."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise MissingInputError(
                f"{self.name} v{self.version} needs feature columns the frame lacks: {missing[:5]}; "
                f"read features through the {self.feature_service!r} FeatureService"
            )
        if len(frame) == 0:
            return np.empty(0, dtype=np.float64)
        # The pyfunc's own predict enforces its schema column by column, which costs ~20x
        # the model itself on large frames; the model behind it gives identical numbers
        # (tested against mlflow.pyfunc.load_model in the scoring tests).
        rows = frame if list(frame.columns) == self.features else frame[self.features]
        out = self.calibrated_model().probability(rows)
        return np.asarray(out, dtype=np.float64).ravel()

    def encoding_key(self) -> tuple:
        return self.calibrated_model().encoding_key()

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """The model input for ``frame`` as one matrix (rows can be taken from it)."""
        return self.calibrated_model().encode_matrix(frame)

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from :meth:`encode`'s output (same numbers as ``predict``)."""
        return self.calibrated_model().probability_of_encoded(encoded)

    def calibrated_model(self):
        """The fitted ``train.CalibratedModel`` behind the pyfunc (LightGBM pipeline and
        calibrator): feature importance and per-row contributions (reason codes)."""
        return self._pyfunc.unwrap_python_model().model


def load_champion(settings: Settings, product: str, tier: str) -> ChampionModel:
    """The version of ``propensity-<product>-<tier>`` with alias ``champion``.

    Raises ``MissingInputError`` naming the model when there is none.
    """
    name = model_name(product, tier)
    mlc = _existing_client(settings)
    version = _alias_version(mlc, name, CHAMPION) if mlc is not None else None
    if version is None:
        raise MissingInputError(
            f"no champion model {name!r} in {tracking_uri(settings)}: run `propensity train` "
            f"(for product {product!r}, tier {tier!r})"
        )
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    # Trained with as few threads as its data warranted; scoring frames are larger.
    pyfunc.unwrap_python_model().model.pipeline[-1].set_params(n_jobs=settings.n_jobs)
    run = mlc.get_run(version.run_id)
    features = pyfunc.metadata.get_input_schema().input_names()
    return ChampionModel(
        name=name,
        version=str(version.version),
        run_id=version.run_id,
        product=product,
        tier=tier,
        feature_service=run.data.tags.get("feature_service", tier),
        features=list(features),
        metrics=dict(run.data.metrics),
        _pyfunc=pyfunc,
    )


def list_champions(settings: Settings) -> pd.DataFrame:
    """One row per registered ``propensity-*`` model that has a champion: name, product,
    tier, version, run_id, auc, oracle_auc, lift, ece, registered_at (UTC)."""
    mlc = _existing_client(settings)
    rows = []
    if mlc is not None:
        for registered in mlc.search_registered_models(filter_string=f"name LIKE '{MODEL_PREFIX}%'"):
            version = _alias_version(mlc, registered.name, CHAMPION)
            if version is None:
                continue
            metrics = mlc.get_run(version.run_id).data.metrics
            rows.append(
                {
                    "name": registered.name,
                    "product": version.tags.get("product"),
                    "tier": version.tags.get("tier"),
                    "version": str(version.version),
                    "run_id": version.run_id,
                    "auc": metrics.get("roc_auc", np.nan),
                    "oracle_auc": metrics.get("oracle_roc_auc", np.nan),
                    "lift": metrics.get("lift_top_decile", np.nan),
                    "ece": metrics.get("ece", np.nan),
                    "registered_at": pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC"),
                }
            )
    frame = pd.DataFrame(rows, columns=CHAMPION_COLUMNS)
    return frame.sort_values("name", kind="stable").reset_index(drop=True)


def run_record(settings: Settings, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics and tags of a logged run (test-window metrics, data windows, FeatureService),
    for reports and monitoring. Raises ``MissingInputError`` when the run is unknown."""
    mlc = _existing_client(settings)
    try:
        run = mlc.get_run(run_id) if mlc is not None else None
    except MlflowException:
        run = None
    if run is None:
        raise MissingInputError(f"no MLflow run {run_id!r} in {tracking_uri(settings)}: was the data folder's MLflow store replaced?")
    return dict(run.data.metrics), dict(run.data.tags)


def _alias_version(mlc: MlflowClient, name: str, alias: str):
    try:
        return mlc.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


# ----------------------------------------------------------------------- provenance
def git_commit(root: Path) -> str:
    """The commit checked out at ``root`` (what ``git rev-parse HEAD`` prints), read from
    the ``.git`` folder without running git; ``"unknown"`` outside a repository."""
    for folder in (root, *root.parents):
        dot_git = folder / ".git"
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text().strip()
            if not text.startswith("gitdir:"):
                return "unknown"
            git_dir = (folder / text.split(":", 1)[1].strip()).resolve()
        elif dot_git.is_dir():
            git_dir = dot_git
        else:
            continue
        return _resolve_head(git_dir)
    return "unknown"


# The code a model is built by; notebooks are left out (their outputs may hold customer rows,
# and MLflow artifacts must hold none).
CODE_PATHS = ("src", "pipelines", "features", "conf", "models", "pyproject.toml")


def git_changes(root: Path) -> str | None:
    """What differs from the commit in the code a model is built by (:data:`CODE_PATHS`):
    the diff of tracked files against HEAD, then the names of untracked files; "" for a
    clean tree, None where git cannot tell (no git, not a repository)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    diff = git("diff", "HEAD", "--no-color", "--no-ext-diff", "--", *CODE_PATHS)
    untracked = git("ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS)
    if diff is None or untracked is None:
        return None
    listed = "".join(f"# untracked: {name}\n" for name in untracked.splitlines())
    return diff + listed


def _resolve_head(git_dir: Path) -> str:
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return "unknown"
    if not head.startswith("ref:"):
        return head or "unknown"
    ref = head.split(":", 1)[1].strip()
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            parts = line.strip().split(" ")
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    return "unknown"


# ------------------------------------------------------------------------ the job
def log_training(
    settings: Settings,
    plan: TrainingPlan,
    models: Iterable[TrainedModel],
    progress: Callable[[str], None] = print,
) -> TrainingResult:
    """Log, register and gate each of ``models`` (``propensity.train.train_models``) in
    one MLflow parent run with a nested run per product × tier; the training job's record.

    ``models`` is consumed inside the parent run, so an error while fitting ends the run
    as FAILED. Returns the per product × tier table (``TrainingResult.table``) and the
    models skipped, by registered name, with the reason. Raises ``MissingInputError`` when
    no model was trained.
    """
    mlc = client(settings)
    experiment_id = _experiment_id(mlc, settings)
    commit = git_commit(settings.root)
    changes = git_changes(settings.root)
    # A model trained from a tree with uncommitted changes is traced by the commit and the
    # changes (logged as a patch on the job's run): the commit alone would not rebuild it.
    dirty = "unknown" if changes is None else str(bool(changes)).lower()
    rows: list[dict] = []
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}") as parent:
        mlflow.set_tags(
            {
                "job": "train",
                "policy_version": settings.policy.version,
                "git_commit": commit,
                "git_dirty": dirty,
                "products": ",".join(plan.products),
                "tiers": ",".join(plan.tiers),
                "data_end": plan.data_end.isoformat(),
                "seed": str(settings.seed),
            }
        )
        if changes:
            mlflow.log_text(changes, CHANGES_ARTIFACT)
        for trained in models:
            row = _log_product_tier(mlc, settings, trained, {"git_commit": commit, "git_dirty": dirty}, experiment_id)
            row["seconds"] = time.perf_counter() - trained.started  # dataset, fit, evaluation and logging
            rows.append(row)
            progress(
                f"{row['model_name']:<40} v{row['version']:<3} auc {row['auc']:.3f}"
                + (f" (oracle {row['oracle_auc']:.3f})" if not np.isnan(row["oracle_auc"]) else "")
                + f" lift {row['lift']:.2f} ece {row['ece']:.4f} logistic {row['logistic_auc']:.3f}"
                + f" {'promoted' if row['promoted'] else 'kept v' + str(row['champion_version'])}"
                + f" {row['seconds']:.1f} s"
            )
            if row["promoted"] and row["auc"] < 0.5:
                # Kept as the rule says (a first version becomes champion), but not silently.
                progress(f"warning: {row['model_name']} v{row['version']} is champion and ranks its test window worse "
                         f"than chance (AUC {row['auc']:.3f} on {row['positives_test']} positives): check its data before "
                         "scoring with it")
        skipped = {model_name(product, tier): reason for (product, tier), reason in sorted(plan.skipped.items())}
        if not rows:
            # The parent run ends as failed: a job that trained nothing must not look done.
            raise MissingInputError("no model could be trained: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        summary = table[["product", "tier", "version", "promoted", "auc", "oracle_auc", "ece"]]
        mlflow.log_text(summary.to_csv(index=False), "summary.csv")
        if skipped:
            mlflow.set_tag("skipped", ", ".join(skipped))
    seconds = time.perf_counter() - plan.started  # labels, features, fits and logging
    progress(f"trained {len(table)} model(s), skipped {len(skipped)}, in {seconds:.0f} s (MLflow run {parent.info.run_id})")
    return TrainingResult(
        table=table, parent_run_id=parent.info.run_id, experiment_id=experiment_id, seconds=seconds, skipped=skipped
    )


def _log_product_tier(mlc: MlflowClient, settings: Settings, trained: TrainedModel, source: dict[str, str],
                      experiment_id: str) -> dict:
    fitted, data, split = trained.fitted, trained.data, trained.split
    columns, strings = trained.features.columns, trained.features.strings
    product, tier = fitted.product, fitted.tier
    name = model_name(product, tier)
    catalogue, policy, training = settings.catalogue, settings.policy, settings.training
    spec = catalogue.products[product]
    test = data[data["split"] == "test"]
    metrics = dict(fitted.metrics)
    oracle = trained.oracle

    windows = split.describe()
    train_rows = data[data["split"] == "train"]
    tags = {
        "product": product,
        "tier": tier,
        "company": spec.company,
        "feature_service": tier,
        "categories": ",".join(trained.features.categories),
        "tiers": ",".join(sorted(data["tier"].unique())) if "tier" in data else tier,
        "policy_version": policy.version,
        **source,
        "data_window_train": windows["train"],
        "data_window_valid": windows["valid"],
        "data_window_test": windows["test"],
        "dataset_fingerprint": dataset_fingerprint(train_rows),
        "dataset_fingerprint_valid": dataset_fingerprint(data[data["split"] == "valid"]),
        "dataset_fingerprint_test": dataset_fingerprint(test),
        "calibration": fitted.model.calibration,
        "label_window": f"gap {spec.label.gap_months} months, horizon {spec.label.horizon_months} months",
    }
    params = {
        **{f"lgbm_{k}": v for k, v in training.lightgbm.model_dump().items()},
        **{f"logistic_{k}": v for k, v in training.logistic.model_dump().items()},
        "calibration_methods": ",".join(training.calibration.methods),
        "ece_bins": training.metrics.ece_bins,
        "promotion_metric": training.promotion.metric,
        "promotion_margin": training.promotion.margin,
        "seed": settings.seed,
        "n_jobs": settings.n_jobs,
        "lgbm_threads": fitted.extra.get("lightgbm_threads", settings.n_jobs),
        "n_features": len(columns),
        "gap_months": spec.label.gap_months,
        "horizon_months": spec.label.horizon_months,
    }
    for split_name, count in fitted.rows.items():
        metrics[f"rows_{split_name}"] = float(count)
    for split_name in ("train", "valid", "test"):
        part = data[data["split"] == split_name]
        for tier_name in ("personalised", "basic"):
            count = int((part["tier"] == tier_name).sum()) if "tier" in part else 0
            metrics[f"rows_{split_name}_{tier_name}"] = float(count)
    metrics["best_iteration"] = float(fitted.best_iteration)
    for method, value in fitted.calibration_brier.items():
        metrics[f"calibration_brier_{method}"] = value
    metrics["fit_seconds"] = fitted.seconds

    # The nested run names the experiment too: without it MLflow files the run (and its
    # model and report) under the default experiment, whose artifacts go to ./mlruns.
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{product}-{tier}", nested=True) as run:
        mlflow.set_tags(tags)
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        version = _log_and_register(mlc, name, fitted, columns, strings, run.info.run_id, tags)
        mlc.set_registered_model_alias(name, CHALLENGER, version)

        promoted, champion_version, champion_metric = _gate(mlc, settings, name, version, test, fitted)
        if champion_metric is not None:
            mlflow.log_metric(f"champion_{training.promotion.metric}_same_test", champion_metric)
        mlflow.set_tags({"promoted": str(promoted).lower(), "previous_champion_version": champion_version or "none"})
        mlc.set_model_version_tag(name, version, "promoted", str(promoted).lower())
        if promoted:
            mlc.set_registered_model_alias(name, CHAMPION, version)
        html = _report(name, version, fitted, metrics, tags, oracle, promoted, champion_version, training.metrics.ece_bins)
        mlflow.log_text(html, REPORT_ARTIFACT)
        write_bytes_atomic(settings.reports_dir / "models" / f"{name}.html", html.encode("utf-8"))

    return {
        "product": product,
        "tier": tier,
        "model_name": name,
        "version": version,
        "champion_version": version if promoted else champion_version,
        "promoted": bool(promoted),
        "auc": metrics["roc_auc"],
        "pr_auc": metrics["pr_auc"],
        "oracle_auc": metrics.get("oracle_roc_auc", np.nan),
        "oracle_gap": metrics.get("oracle_gap", np.nan),
        "oracle_now_auc": metrics.get("oracle_now_roc_auc", np.nan),
        "lift": metrics["lift_top_decile"],
        "brier": metrics["brier"],
        "ece": metrics["ece"],
        "logistic_auc": metrics["logistic_roc_auc"],
        "base_rate": fitted.base_rate,
        "calibration": fitted.model.calibration,
        "best_iteration": fitted.best_iteration,
        "rows_train": fitted.rows["train"],
        "rows_valid": fitted.rows["valid"],
        "rows_test": fitted.rows["test"],
        "positives_test": int(np.sum(fitted.test_labels)),
        "test_window": windows["test"],
        "run_id": run.info.run_id,
        "seconds": fitted.seconds,
    }


def _log_and_register(
    mlc: MlflowClient,
    name: str,
    fitted: FittedProductTier,
    columns: list[str],
    strings: list[str],
    run_id: str,
    tags: dict[str, str],
) -> str:
    """Log the pyfunc in the active run and register it as a new version of ``name``.

    Registration goes through the client, which prints nothing (the fluent
    ``registered_model_name`` route prints to stderr). Returns the version number.
    """
    with warnings.catch_warnings():
        # MLflow warns that no input example was given: on purpose, it would hold
        # customer rows. And that a Python object is pickled: it is our own class.
        warnings.simplefilter("ignore", UserWarning)
        pyfunc_logger = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_logger.level
        pyfunc_logger.setLevel(logging.ERROR)
        try:
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=PropensityModel(fitted.model),
                signature=signature(columns, strings),
                pip_requirements=_requirements(),
            )
        finally:
            pyfunc_logger.setLevel(level)
    try:
        mlc.get_registered_model(name)
    except MlflowException:
        mlc.create_registered_model(
            name,
            tags={"product": fitted.product, "tier": fitted.tier},
            description=f"Propensity to start {fitted.product} within the label window, {fitted.tier} tier.",
        )
    keys = ("product", "tier", "feature_service", "policy_version", "data_window_test", "dataset_fingerprint")
    version = mlc.create_model_version(
        name, source=info.model_uri, run_id=run_id, model_id=info.model_id, tags={k: tags[k] for k in keys}
    )
    return str(version.version)


def _gate(
    mlc: MlflowClient, settings: Settings, name: str, version: str, test: pd.DataFrame, fitted: FittedProductTier
) -> tuple[bool, str | None, float | None]:
    """Promote or not: (promoted, current champion version, champion's metric on these rows).

    The champion is re-scored on the challenger's test rows. A champion whose features the
    rows no longer have (the FeatureService changed) cannot be compared and is replaced.
    """
    promotion = settings.training.promotion
    current = _alias_version(mlc, name, CHAMPION)
    challenger_metric = _promotion_metric(promotion.metric, fitted.test_labels, fitted.test_probability)
    if current is None:
        return True, None, None
    champion = mlflow.pyfunc.load_model(f"models:/{name}/{current.version}")
    features = champion.metadata.get_input_schema().input_names()
    if any(c not in test.columns for c in features):
        return True, str(current.version), None
    p = np.asarray(champion.predict(test[features].reset_index(drop=True)), dtype=np.float64).ravel()
    champion_metric = _promotion_metric(promotion.metric, fitted.test_labels, p)
    return promotion_decision(challenger_metric, champion_metric, promotion.margin), str(current.version), champion_metric


def _promotion_metric(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    return roc_auc(y, p) if metric == "roc_auc" else pr_auc(y, p)


def _report(
    name: str,
    version: str,
    fitted: FittedProductTier,
    metrics: dict,
    tags: dict,
    oracle: np.ndarray | None,
    promoted: bool,
    champion_version: str | None,
    ece_bins: int,
) -> str:
    curves = {"LightGBM (calibrated)": fitted.test_probability, "logistic regression": fitted.logistic_probability}
    if oracle is not None:
        curves["oracle (true probability)"] = oracle
    names = [("LightGBM (calibrated)", ""), ("logistic regression", "logistic_"), ("base rate", "base_rate_")]
    table = pd.DataFrame(
        [
            {
                "model": label,
                "roc_auc": metrics.get(f"{prefix}roc_auc"),
                "pr_auc": metrics.get(f"{prefix}pr_auc"),
                "lift_top_decile": metrics.get(f"{prefix}lift_top_decile"),
                "brier": metrics.get(f"{prefix}brier"),
                "ece": metrics.get(f"{prefix}ece"),
            }
            for label, prefix in names
        ]
    )
    if oracle is not None:
        table.loc[len(table)] = {"model": "oracle (true probability)", "roc_auc": metrics.get("oracle_roc_auc")}
    facts = {
        "model": f"{name} v{version}",
        "status": "champion" if promoted else f"challenger (champion stays v{champion_version})",
        "FeatureService": tags["feature_service"],
        "categories": tags["categories"],
        "policy version": tags["policy_version"],
        "train window": tags["data_window_train"],
        "validation window": tags["data_window_valid"],
        "test window": tags["data_window_test"],
        "rows train / valid / test": " / ".join(str(fitted.rows[s]) for s in ("train", "valid", "test")),
        "calibration": f"{tags['calibration']} (out-of-fold Brier: "
        + ", ".join(f"{k} {v:.5f}" for k, v in fitted.calibration_brier.items())
        + ")",
        "boosting rounds": fitted.best_iteration,
        "git commit": tags["git_commit"],
    }
    return report_html(
        f"{name} v{version}",
        facts,
        table,
        fitted.test_labels,
        curves,
        "LightGBM (calibrated)",
        fitted.model.feature_importance(),
        ece_bins,
    )
