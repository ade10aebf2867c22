"""HTML reports for analysts, the data behind them, and reason codes for one customer.

Reports are self-contained HTML pages (matplotlib figures embedded as base64 PNG, no
pyplot global state) written to ``<data>/reports/``:

* ``train.html``: per product, every registered champion (one per tier): its test-window
  metrics from MLflow beside the logistic and base-rate baselines, and, re-evaluated on
  its test window through its FeatureService, ROC, calibration and lift by decile; its
  feature importance (total gain);
* ``scores-<D>.html``: the partition of score date D: customers per tier, score
  distributions per product and tier, the models used, and the monitoring section
  (realised lift by decile, realised against test AUC, PSI of scores and top features).

Reports hold aggregates only: the renderers receive no customer row, and
:func:`write_report` refuses a page that names a customer id (``PrivacyGuardError``).

Reason codes (:func:`explain`): the largest contributions (LightGBM ``pred_contrib``, in
log-odds of the uncalibrated score) of the champion of the customer's tier at D to that
customer's score, by input feature. Only features of categories the tier allows are ever
named, and this is checked (``PrivacyGuardError`` otherwise); group-company features of a
customer without group data sharing hold no value and are not named. An excluded customer
gets a message and nothing is read.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.atomic import write_bytes_atomic
from propensity.config import Catalogue, Policy, Settings
from propensity.errors import MissingInputError, PrivacyGuardError
from propensity.evaluation import (
    calibration_figure,
    facts_table,
    figure_html,
    html_page,
    importance_figure,
    lift_figure,
    new_figure,
    png_base64,
    roc_auc,
    roc_figure,
)
from propensity.monitor import Monitoring
from propensity.policy import customer_on
from propensity.snapshots import month_ends, snapshot_instant
from propensity.store import ENTITY, TIMESTAMP, FeatureStore, feature_snapshots, view_specs

Raw = Callable[[str], str]


class Champion(Protocol):
    """What reports and reason codes need of a registered champion (``registry.ChampionModel``)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def product(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def feature_service(self) -> str: ...
    @property
    def features(self) -> list[str]: ...
    @property
    def metrics(self) -> dict[str, float]: ...

    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...

    def calibrated_model(self): ...

# Reason codes shown by default.
TOP_REASONS = 5
# Bins of the score histograms.
HISTOGRAM_BINS = 30
MODELS_COMPARED = (("LightGBM (calibrated)", ""), ("logistic regression", "logistic_"), ("base rate", "base_rate_"))
METRIC_COLUMNS = ("roc_auc", "pr_auc", "lift_top_decile", "brier", "ece")
_IMAGE = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+")
_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")


# ======================================================================= HTML plumbing
def table_html(frame: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    return frame.to_html(index=False, border=0, na_rep="-", float_format=lambda v: floatfmt.format(v))


def paragraph(text: str, cls: str = "") -> str:
    return f'<p{f" class={cls!r}" if cls else ""}>{html.escape(text)}</p>'


@dataclass(frozen=True)
class Section:
    """A titled part of a report: ``level`` 2 or 3, ``body`` HTML."""

    title: str
    body: str
    level: int = 2


def page(title: str, facts: Mapping[str, object], sections: Sequence[Section]) -> str:
    """A self-contained HTML page: title, a facts table, then the sections in order."""
    parts = "\n".join(f"<h{s.level}>{html.escape(s.title)}</h{s.level}>\n{s.body}" for s in sections)
    return html_page(title, f"{facts_table(facts)}\n{parts}")


def customer_ids_in(text: str, customer_ids: Iterable[str]) -> set[str]:
    """The customer ids that occur as a token of the page's text (embedded images left out)."""
    tokens = set(_TOKEN.findall(_IMAGE.sub(" ", text)))
    return tokens & {str(c) for c in customer_ids}


def write_report(settings: Settings, name: str, text: str, customer_ids: Iterable[str] = ()) -> Path:
    """Write ``<data>/reports/<name>.html`` atomically; refuse a page naming a customer."""
    named = customer_ids_in(text, customer_ids)
    if named:
        raise PrivacyGuardError(
            f"report {name!r} would name {len(named)} customer id(s); reports hold aggregates only, nothing was written"
        )
    path = settings.reports_dir / f"{name}.html"
    write_bytes_atomic(path, text.encode("utf-8"))
    return path


# ======================================================================== data access
def newest_snapshot(settings: Settings) -> date:
    return feature_snapshots(settings)[-1]


def window_dates(window: str) -> list[date]:
    """The month ends of a ``"YYYY-MM-DD..YYYY-MM-DD"`` window tag, inclusive."""
    try:
        first, last = (date.fromisoformat(part) for part in window.split(".."))
    except ValueError as exc:
        raise MissingInputError(f"not a data window {window!r}: expected 'YYYY-MM-DD..YYYY-MM-DD'") from exc
    return month_ends(first, last)


def _customers(raw: Raw, threads: int) -> pd.DataFrame:
    from propensity.duck import connect

    con = connect(threads=threads)
    try:
        return con.execute(f"SELECT customer_id, customer_since, closed_at FROM {raw('customers')} ORDER BY customer_id").df()
    finally:
        con.close()


def _members(customers: pd.DataFrame, day: date) -> pd.DataFrame:
    member = customer_on(customers["customer_since"], customers["closed_at"], day)
    ids = customers.loc[member, "customer_id"].astype(str).to_numpy()
    return pd.DataFrame({ENTITY: ids, TIMESTAMP: snapshot_instant(day), "snapshot_date": day})


def customers_at(raw: Raw, day: date, threads: int = 2) -> pd.DataFrame:
    """Entity rows (customer_id, event_timestamp, snapshot_date) of everyone who was a
    customer at the snapshot ``day``, for ``FeatureStore.historical_features`` (which
    then drops the excluded and reads each tier through its own service)."""
    return _members(_customers(raw, threads), day)


def tiers_over_time(store: FeatureStore, raw: Raw, snapshots: Sequence[date], threads: int = 2) -> pd.DataFrame:
    """Customers per tier at each snapshot (people who were customers then): one row per
    snapshot_date with columns personalised, basic, excluded."""
    customers = _customers(raw, threads)
    entity = pd.concat([_members(customers, day) for day in snapshots], ignore_index=True)
    entity["tier"] = store.tiers(entity)["tier"].to_numpy()
    table = pd.crosstab(entity["snapshot_date"], entity["tier"])
    table = table.reindex(columns=["personalised", "basic", "excluded"], fill_value=0)
    table.columns.name = None
    return table.reset_index()


def feature_summary(frames: Mapping[str, pd.DataFrame], policy: Policy, catalogue: Catalogue) -> pd.DataFrame:
    """Per tier (a frame of ``store.historical_features``) and feature: category, rows,
    share with a value, mean / median / 90th percentile (numbers) or most common value
    and distinct values (strings)."""
    where = feature_views(policy, catalogue)
    rows = []
    for tier, frame in frames.items():
        for name in [c for c in frame.columns if c in where]:
            values = frame[name]
            row = {"tier": tier, "feature": name, "category": where[name][1], "rows": len(values),
                   "with_value": float(values.notna().mean()) if len(values) else float("nan")}
            if pd.api.types.is_numeric_dtype(values):
                numbers = values.astype(np.float64)
                row.update(mean=numbers.mean(), median=numbers.median(), p90=numbers.quantile(0.9))
            else:
                counts = values.dropna().astype(str).value_counts()
                row.update(most_common=counts.index[0] if len(counts) else None, distinct=int(len(counts)))
            rows.append(row)
    columns = ["tier", "feature", "category", "rows", "with_value", "mean", "median", "p90", "most_common", "distinct"]
    return pd.DataFrame(rows).reindex(columns=columns)


def comparison_table(metrics: Mapping[str, float]) -> pd.DataFrame:
    """The calibrated LightGBM model beside the logistic and base-rate baselines (and the
    oracle's AUC on synthetic data) from a metrics mapping (MLflow run or
    ``FittedProductTier.metrics``)."""
    rows = [
        {"model": label, **{m: metrics.get(f"{prefix}{m}", np.nan) for m in METRIC_COLUMNS}}
        for label, prefix in MODELS_COMPARED
    ]
    if "oracle_roc_auc" in metrics:
        rows.append({"model": "oracle (true probability)", "roc_auc": metrics["oracle_roc_auc"]})
    return pd.DataFrame(rows).reindex(columns=["model", *METRIC_COLUMNS])


# ====================================================================== training report
@dataclass(frozen=True)
class ChampionEvaluation:
    """A champion, its MLflow record and, when it could be re-evaluated, its test window:
    ``labels`` and ``probability`` (arrays, no customer id)."""

    product: str
    tier: str
    name: str
    version: str
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    importance: pd.Series
    labels: np.ndarray | None = None
    probability: np.ndarray | None = None
    note: str = ""

    @property
    def reevaluated_auc(self) -> float:
        if self.labels is None or self.probability is None:
            return float("nan")
        return roc_auc(self.labels, self.probability)


def evaluate_champion(settings: Settings, store: FeatureStore, raw: Raw, champion: Champion, tags: Mapping[str, str]) -> tuple[ChampionEvaluation, list[str]]:
    """Re-score a champion (``registry.ChampionModel``) on its test window (tag
    ``data_window_test``) through its FeatureService. Returns the evaluation and the
    customer ids it read (for the report's guard)."""
    importance = champion.calibrated_model().feature_importance()
    base = dict(product=champion.product, tier=champion.tier, name=champion.name, version=champion.version,
                metrics=dict(champion.metrics), tags=dict(tags), importance=importance)
    window = tags.get("data_window_test")
    if not window:
        return ChampionEvaluation(**base, note="no test window recorded: metrics from MLflow only"), []
    from propensity.train import tier_rows

    rows = tier_rows(settings, store, raw, champion.product, champion.feature_service, window_dates(window))
    missing = [c for c in champion.features if c not in rows.columns]
    if missing or rows.empty or rows["label"].nunique() < 2:
        why = (f"the FeatureService no longer has {missing[:3]}" if missing
               else f"the test window {window} has {len(rows)} rows and {int(rows['label'].sum()) if len(rows) else 0} conversions")
        return ChampionEvaluation(**base, note=f"not re-evaluated: {why}"), rows["customer_id"].astype(str).tolist()
    probability = champion.predict(rows)
    return (
        ChampionEvaluation(**base, labels=rows["label"].to_numpy(dtype=np.float64), probability=probability),
        rows["customer_id"].astype(str).tolist(),
    )


def champion_table(evaluations: Sequence[ChampionEvaluation]) -> pd.DataFrame:
    """One row per champion: test window, MLflow metrics, baselines, re-evaluated AUC."""
    rows = []
    for e in evaluations:
        m = e.metrics
        rows.append(
            {
                "tier": e.tier, "model": f"{e.name} v{e.version}", "test window": e.tags.get("data_window_test", "-"),
                "rows test": m.get("rows_test", np.nan), "roc_auc": m.get("roc_auc", np.nan),
                "re-evaluated auc": e.reevaluated_auc, "pr_auc": m.get("pr_auc", np.nan),
                "lift top decile": m.get("lift_top_decile", np.nan), "brier": m.get("brier", np.nan),
                "ece": m.get("ece", np.nan), "logistic auc": m.get("logistic_roc_auc", np.nan),
                "oracle auc": m.get("oracle_roc_auc", np.nan), "calibration": e.tags.get("calibration", "-"),
                "categories": e.tags.get("categories", "-"),
            }
        )
    return pd.DataFrame(rows)


def train_report_html(
    evaluations: Sequence[ChampionEvaluation], facts: Mapping[str, object], ece_bins: int = 10
) -> str:
    """The training report: per product a table of its champions, then per champion the
    figures ROC, calibration, lift by decile (when re-evaluated) and importance."""
    sections = []
    if not evaluations:
        sections.append(Section("No champion", paragraph("No registered champion: run `propensity train`.", "note")))
    for product in sorted({e.product for e in evaluations}):
        mine = sorted([e for e in evaluations if e.product == product], key=lambda e: e.tier, reverse=True)
        sections.append(Section(f"Product {product}", table_html(champion_table(mine))))
        for e in mine:
            figures = []
            if e.labels is not None and e.probability is not None:
                label = f"{e.name} v{e.version}"
                figures += [
                    figure_html(f"ROC {product} {e.tier}", roc_figure(e.labels, {label: e.probability})),
                    figure_html(f"Calibration {product} {e.tier}", calibration_figure(e.labels, e.probability, ece_bins)),
                    figure_html(f"Lift by decile {product} {e.tier}", lift_figure(e.labels, e.probability)),
                ]
            figures.append(figure_html(f"Feature importance {product} {e.tier}", importance_figure(e.importance)))
            body = (paragraph(e.note, "note") if e.note else "") + table_html(comparison_table(e.metrics)) + "".join(figures)
            sections.append(Section(f"{product}, {e.tier} tier: {e.name} v{e.version}", body, level=3))
    return page("Training report: champion models", facts, sections)


# ======================================================================== scores report
def tier_counts(scores: pd.DataFrame, excluded: int | None, legal_basis: Mapping[str, str]) -> pd.DataFrame:
    """Customers per tier in a partition (and the excluded count of its run, when known)."""
    counts = scores.groupby("tier", observed=True)["customer_id"].nunique()
    rows = [{"tier": t, "customers": int(counts.get(t, 0)), "legal basis": legal_basis.get(t, "-")}
            for t in ("personalised", "basic")]
    if excluded is not None:
        rows.append({"tier": "excluded", "customers": int(excluded), "legal basis": "none: not scored"})
    frame = pd.DataFrame(rows)
    frame["share"] = frame["customers"] / max(int(frame["customers"].sum()), 1)
    return frame


def models_used(scores: pd.DataFrame) -> pd.DataFrame:
    """Per product and tier: the model (name, version, MLflow run) and its rows."""
    keys = ["product", "tier", "model_name", "model_version", "mlflow_run_id"]
    table = scores.groupby(keys, observed=True).agg(rows=("probability", "size"), mean_probability=("probability", "mean")).reset_index()
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def score_quantiles(scores: pd.DataFrame) -> pd.DataFrame:
    """Per product and tier: rows, mean, median, 90th and 99th percentile and maximum."""
    grouped = scores.groupby(["product", "tier"], observed=True)["probability"]
    table = grouped.agg(rows="size", mean="mean", median="median", maximum="max")
    table["p90"] = grouped.quantile(0.9)
    table["p99"] = grouped.quantile(0.99)
    return table.reset_index()[["product", "tier", "rows", "mean", "median", "p90", "p99", "maximum"]]


def tier_counts_figure(counts: pd.DataFrame) -> str:
    figure, ax = new_figure(4.5, 3.0)
    ax.bar(counts["tier"], counts["customers"], color=["#4c72b0", "#55a868", "#c44e52"][: len(counts)])
    ax.set_ylabel("customers")
    ax.set_title("Customers per tier")
    return png_base64(figure)


def score_distribution_figure(scores: pd.DataFrame, product: str) -> str:
    """Histogram of one product's probabilities, one outline per tier."""
    rows = scores[scores["product"] == product]
    figure, ax = new_figure()
    top = float(rows["probability"].max()) if len(rows) else 1.0
    bins = np.linspace(0.0, max(top, 1e-6), HISTOGRAM_BINS + 1)
    for tier, group in rows.groupby("tier", sort=True, observed=True):
        ax.hist(group["probability"], bins=bins, histtype="step", linewidth=1.5, label=f"{tier} ({len(group):,})")
    ax.set_yscale("log")  # propensities are skewed: a linear axis hides the top of the list
    ax.set_xlabel("probability")
    ax.set_ylabel("customers (log scale)")
    ax.set_title(f"Scores of {product}")
    ax.legend(fontsize=8)
    return png_base64(figure)


def realised_lift_figure(deciles: pd.DataFrame, product: str) -> str:
    """Realised lift by decile for one product, a line per score date."""
    figure, ax = new_figure()
    for day, group in deciles[deciles["product"] == product].groupby("score_date", sort=True, observed=True):
        ax.plot(group["decile"], group["lift"], marker="o", label=str(day))
    ax.axhline(1.0, linestyle=":", color="grey")
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("decile of the score (1 = highest)")
    ax.set_ylabel("realised lift over the conversion rate")
    ax.set_title(f"Realised lift, {product}")
    ax.legend(fontsize=8, title="score date")
    return png_base64(figure)


def monitoring_sections(monitoring: Monitoring) -> list[Section]:
    """The monitoring part of the scores report."""
    sections = []
    warnings = monitoring.warnings
    intro = paragraph(
        f"Outcomes are read from the agreements once a score date's label window has closed (extracts up to "
        f"{monitoring.data_end}). A model is flagged when its realised AUC is more than {monitoring.auc_margin:.3f} "
        "below its test AUC.", "note"
    )
    flagged = "".join(paragraph("warning: " + w, "warning") for w in warnings) or paragraph("No warning.", "note")
    notes = "".join(paragraph(n, "note") for n in monitoring.notes)
    sections.append(Section("Monitoring", intro + flagged + notes))
    deciles = monitoring.deciles
    figures = "".join(
        figure_html(f"Realised lift {product}", realised_lift_figure(deciles, product))
        for product in sorted(set(deciles["product"]))
    )
    body = figures + table_html(deciles) if not deciles.empty else paragraph(
        "No score date's label window has closed yet.", "note")
    sections.append(Section("Realised conversion by decile", body, level=3))
    sections.append(Section("Realised AUC against test AUC", table_html(monitoring.auc), level=3))
    sections.append(Section("Score stability (PSI between consecutive score dates)", table_html(monitoring.score_psi), level=3))
    sections.append(Section("Feature stability (PSI of each champion's top features)", table_html(monitoring.feature_psi), level=3))
    return sections


def scores_report_html(
    scores: pd.DataFrame,
    day: date,
    legal_basis: Mapping[str, str],
    generated_at: datetime,
    excluded: int | None = None,
    monitoring: Monitoring | None = None,
) -> str:
    """The report of one score partition (see the module docstring). ``scores`` is the
    partition; only its aggregates reach the page."""
    counts = tier_counts(scores, excluded, legal_basis)
    facts = {
        "score date": day,
        "score rows": f"{len(scores):,}",
        "customers scored": f"{scores['customer_id'].nunique():,}",
        "products": ", ".join(sorted(scores["product"].unique())),
        "policy version": ", ".join(sorted(scores["policy_version"].astype(str).unique())),
        "scoring run": ", ".join(sorted(scores["run_id"].astype(str).unique())),
        "report generated": f"{generated_at:%Y-%m-%d %H:%M:%S %Z}",
    }
    sections = [
        Section("Customers per tier", table_html(counts, "{:.3f}") + figure_html("Customers per tier", tier_counts_figure(counts))),
        Section("Models used", table_html(models_used(scores))),
        Section(
            "Score distributions",
            table_html(score_quantiles(scores))
            + "".join(
                figure_html(f"Scores of {p}", score_distribution_figure(scores, p)) for p in sorted(scores["product"].unique())
            ),
        ),
    ]
    if monitoring is not None:
        sections += monitoring_sections(monitoring)
    return page(f"Scores of {day}", facts, sections)


# ========================================================================= reason codes
def feature_views(policy: Policy, catalogue: Catalogue) -> dict[str, tuple[str, str, bool]]:
    """feature name -> (view, category, group_company), from the policy's views."""
    return {name: (v.name, v.category, v.group_company) for v in view_specs(policy, catalogue) for name in v.feature_names}


def check_permitted(features: Iterable[str], tier: str, policy: Policy, catalogue: Catalogue) -> None:
    """Raise ``PrivacyGuardError`` unless every feature belongs to a category the tier may use."""
    where = feature_views(policy, catalogue)
    allowed = set(policy.categories_for(tier))
    bad = sorted(f for f in features if f not in where or where[f][1] not in allowed)
    if bad:
        described = ", ".join(f"{f} ({where[f][1] if f in where else 'no category'})" for f in bad[:5])
        raise PrivacyGuardError(
            f"{len(bad)} feature(s) outside the categories the {tier} tier may use ({', '.join(sorted(allowed))}): "
            f"{described}; refusing to name them"
        )


def contributions(model, frame: pd.DataFrame) -> pd.DataFrame:
    """Per row, each input feature's contribution to the LightGBM score (log-odds, before
    calibration; LightGBM ``pred_contrib``) and the ``bias``; they sum to the raw logit.

    ``model`` is a ``train.CalibratedModel``; columns are its features in order, then bias.
    """
    from sklearn.pipeline import Pipeline

    prepare = Pipeline(model.pipeline.steps[:-1])
    x = prepare.transform(frame.reset_index(drop=True))
    booster_model = model.pipeline.named_steps["model"]
    values = booster_model.predict(x, pred_contrib=True)
    names = list(booster_model.booster_.feature_name())
    if set(names) != set(model.features):
        raise MissingInputError(f"the booster's features {names[:5]} are not the model's inputs {model.features[:5]}")
    out = pd.DataFrame(np.asarray(values, dtype=np.float64), columns=[*names, "bias"])
    return out[[*model.features, "bias"]]


def reason_codes(
    contribution: pd.Series,
    values: pd.Series,
    tier: str,
    group_data_sharing: bool,
    policy: Policy,
    catalogue: Catalogue,
    top: int | None = TOP_REASONS,
) -> pd.DataFrame:
    """The ``top`` features (all when None) by absolute contribution for one row: rank,
    feature, category, value, contribution (log-odds), effect (raises / lowers).

    Group-company features without group data sharing hold no value and are not named;
    features with no contribution are left out. Every named feature is checked against
    the tier's categories (``PrivacyGuardError``).
    """
    where = feature_views(policy, catalogue)
    named = [f for f in contribution.index if f != "bias"]
    if not group_data_sharing:
        named = [f for f in named if not (f in where and where[f][2])]
    frame = pd.DataFrame({"feature": named, "contribution": contribution[named].to_numpy(dtype=np.float64)})
    frame = frame[frame["contribution"] != 0]
    frame = frame.assign(size=frame["contribution"].abs()).sort_values(["size", "feature"], ascending=[False, True], kind="stable")
    frame = frame.head(top) if top is not None else frame
    check_permitted(frame["feature"], tier, policy, catalogue)
    frame = frame.drop(columns="size").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    frame.insert(2, "category", [where[f][1] for f in frame["feature"]])
    frame.insert(3, "value", [values.get(f) for f in frame["feature"]])
    frame["effect"] = np.where(frame["contribution"] > 0, "raises", "lowers")
    return frame


@dataclass(frozen=True)
class Explanation:
    """Reason codes of one customer's score for one product at one date. For an excluded
    customer only ``message`` is set."""

    customer_id: str
    product: str
    at: date
    tier: str
    message: str
    legal_basis: str | None = None
    model: str | None = None
    probability: float | None = None
    bias: float | None = None
    scored: str | None = None
    reasons: pd.DataFrame | None = None
    categories: list[str] = field(default_factory=list)


def explain(
    settings: Settings,
    store: FeatureStore,
    load_champion: Callable[[Settings, str, str], Champion],
    customer_id: str,
    product: str,
    day: date,
    top: int | None = TOP_REASONS,
) -> Explanation:
    """Reason codes for a customer × product at a snapshot ``day``, from the champion of
    the customer's tier at ``day`` through that tier's FeatureService. An excluded
    customer (objection to profiling, or not a customer then) gets a message and nothing
    is read or loaded."""
    from propensity.score import partition_dir, resolve_score_date

    if product not in settings.catalogue.products:
        raise MissingInputError(f"unknown product {product!r}; the catalogue has {list(settings.catalogue.ids)}")
    day = resolve_score_date(settings, day)
    entity = pd.DataFrame({ENTITY: [str(customer_id)], TIMESTAMP: [snapshot_instant(day)]})
    state = store.tiers(entity).iloc[0]
    tier, sharing = str(state["tier"]), bool(state["group_data_sharing"])
    if tier not in settings.policy.legal_basis:
        return Explanation(
            customer_id, product, day, tier,
            f"customer {customer_id} is {tier} at {day} (an objection to profiling, or not a customer then): "
            "no features are read, no score is given and nothing is explained",
        )
    champion = load_champion(settings, product, tier)
    check_permitted(champion.features, tier, settings.policy, settings.catalogue)
    frames = store.historical_features(entity, service=tier)
    if tier not in frames or frames[tier].empty:
        raise MissingInputError(f"no {tier} feature row for customer {customer_id} at {day}")
    frame = frames[tier]
    model = champion.calibrated_model()
    contribution = contributions(model, frame).iloc[0]
    probability = float(champion.predict(frame)[0])
    reasons = reason_codes(contribution, frame.iloc[0], tier, sharing, settings.policy, settings.catalogue, top)
    scored = None
    folder = partition_dir(settings, day)
    if folder.is_dir():
        hit = pd.read_parquet(folder, filters=[("customer_id", "==", str(customer_id)), ("product", "==", product)])
        if hit.empty:
            scored = f"no score row at {day} for {product} (not eligible, already holding, or not scored)"
        else:
            row = hit.iloc[0]
            scored = (f"scored {row['probability']:.4f} (decile {row['decile']}, rank {row['rank']:,}) "
                      f"by {row['model_name']} v{row['model_version']} at {day}")
    return Explanation(
        customer_id, product, day, tier,
        f"customer {customer_id} at {day}: tier {tier}; {product} explained with {champion.name} v{champion.version}",
        legal_basis=settings.policy.legal_basis[tier],
        model=f"{champion.name} v{champion.version}",
        probability=probability,
        bias=float(contribution["bias"]),
        scored=scored,
        reasons=reasons,
        categories=list(settings.policy.categories_for(tier)),
    )
