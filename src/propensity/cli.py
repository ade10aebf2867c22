"""The ``propensity`` command line. Each command loads the settings once and runs a job
from ``pipelines/``; errors of the project's own types end with a message and exit 1."""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from collections.abc import Callable
from datetime import date
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from propensity.config import Settings, load_settings
from propensity.errors import PropensityError

# Job logs are read in files, not terminals: give tables room instead of 80 columns.
# Outside a terminal (cron logs, pipes) tables take the width they need: an id cut short
# in a log cannot be copied from it.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 1000)

app = typer.Typer(
    help="Consent-aware propensity scoring: synthetic bank, contract checks, Feast features, "
    "LightGBM models in MLflow, score tables for analysts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
features_app = typer.Typer(help="Build and inspect the consent-gated feature store.", no_args_is_help=True, rich_markup_mode="markdown")
models_app = typer.Typer(help="Registered models and their champions.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")

ConfOption = Annotated[Optional[Path], typer.Option("--conf", help=(
    "pipeline.yaml to use (default: $PROPENSITY_CONF, else conf/ of the project). It must lie in a conf/ folder of a "
    "project: its relative paths and the jobs (pipelines/) are read from the folder above that conf/."))]


def _settings(conf: Path | None) -> Settings:
    # Library deprecation chatter (ibis, Feast) is noise for an operator reading a job log.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    return load_settings(conf)


def pipeline(settings: Settings, name: str) -> ModuleType:
    """Load ``pipelines/<name>.py`` of the project the settings belong to."""
    path = settings.root / "pipelines" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"propensity_pipeline_{name}", path)
    if spec is None or not path.is_file():
        raise PropensityError(
            f"pipeline {path} not found: jobs are read from pipelines/ of the project the settings belong to "
            f"({settings.root}, the folder above the conf/ folder of the pipeline.yaml used); keep the pipeline.yaml "
            "in the project's conf/ folder and point data_dir and raw_dir elsewhere instead"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def handled(func: Callable) -> Callable:
    """Turn the project's own errors into a clear message and exit code 1."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PropensityError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def parse_date(value: str | None, option: str = "--date") -> date | None:
    """An ISO date from the command line, or a clear usage error naming the option."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date; write it as YYYY-MM-DD, e.g. 2025-06-30", param_hint=option) from None


def not_after_today(day: date | None, option: str, hint: str = "") -> date | None:
    """A deletion date from the command line, refused as a usage error when it lies after
    today (UTC): the rule of :func:`propensity.privacy.deletion_day`."""
    from propensity.privacy import FutureDeletionError, deletion_day

    try:
        deletion_day(day)
    except FutureDeletionError as exc:
        raise typer.BadParameter(f"{exc}{hint}", param_hint=option) from None
    return day


def progress(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}", markup=True)


def print_frame(frame: pd.DataFrame, title: str | None = None, floatfmt: str = "{:.4f}") -> None:
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column), justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*[floatfmt.format(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in row])
    console.print(table)


# --------------------------------------------------------------------------- foundation
@app.command()
@handled
def synth(
    customers: Annotated[Optional[int], typer.Option(min=1, help="Number of customers (default from conf).")] = None,
    months: Annotated[Optional[int], typer.Option(min=2, help="Number of simulated months.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; same seed, same bank.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Raw folder to write (default: raw_dir of conf). truth/ goes beside it.")] = None,
    conf: ConfOption = None,
) -> None:
    """Write a synthetic bank: the 11 contract tables plus truth/ (true probabilities)."""
    s = _settings(conf)
    started = time.perf_counter()
    rows = pipeline(s, "synth").run(
        s, s.synth.customers if customers is None else customers, s.synth.months if months is None else months,
        s.seed if seed is None else seed,
        (out or s.raw_dir).resolve(), progress,
    )
    print_frame(pd.DataFrame({"table": list(rows), "rows": list(rows.values())}), title="synthetic bank")
    progress(f"done in {time.perf_counter() - started:.1f} s")


@app.command()
@handled
def validate(
    path: Annotated[Optional[Path], typer.Argument(help="Raw folder (default: raw_dir of conf).")] = None,
    conf: ConfOption = None,
) -> None:
    """Check a raw folder against the data contract; print a per-table summary or every violation."""
    from propensity import contract

    s = _settings(conf)
    raw = contract.validate((path or s.raw_dir).resolve(), s.policy, s.catalogue)
    frame = contract.summary(raw).reset_index()
    print_frame(frame.astype(object).where(frame.notna(), None), title=f"{raw.folder}: valid")


# ------------------------------------------------------------------------------ features
@features_app.command("build")
@handled
def features_build(conf: ConfOption = None) -> None:
    """Validate the extracts, build the feature tables at every month end, apply the Feast
    repo and materialise the newest snapshot into the online store."""
    s = _settings(conf)
    summary = pipeline(s, "build_features").run(s, progress)
    print_frame(pd.DataFrame({"view": list(summary.rows), "rows": list(summary.rows.values())}), title="feature views")
    tiers = ", ".join(f"{k} {v:,}" for k, v in summary.customers_by_tier.items())
    progress(f"customers at {summary.snapshots[-1]}: {tiers} (excluded customers have no feature rows)")


@features_app.command("show")
@handled
def features_show(
    customer: Annotated[str, typer.Option(help="customer_id")],
    at: Annotated[str, typer.Option(help="Snapshot date (a month end, YYYY-MM-DD).")],
    conf: ConfOption = None,
) -> None:
    """Print a customer's features at a snapshot, per category, and whether the category was
    permitted and why."""
    from propensity.store import FeatureStore, feature_report

    s = _settings(conf)
    day = parse_date(at, "--at")  # before the store is opened: a typo costs nothing
    report = feature_report(FeatureStore(s), customer, day)
    console.print(report.header)
    for section in report.sections:
        console.print(f"\n[bold]{section.view}[/] ({section.category}) - {section.verdict}", markup=True)
        if section.values is not None:
            print_frame(section.values.astype(object).where(section.values.notna(), None))


def main() -> None:  # pragma: no cover
    app()


# ------------------------------------------------------------------------------ training
TRAIN_COLUMNS = ["product", "tier", "auc", "oracle_auc", "oracle_gap", "logistic_auc", "lift", "ece", "version",
                 "champion_version", "promoted", "rows_train", "seconds"]


@app.command()
@handled
def train(
    products: Annotated[Optional[list[str]], typer.Option("--products", help="Products to train (default: the catalogue).")] = None,
    tiers: Annotated[Optional[list[str]], typer.Option("--tiers", help="Tiers: personalised, basic (default: both).")] = None,
    conf: ConfOption = None,
) -> None:
    """Train one calibrated LightGBM model per product and tier, out of time, log it in
    MLflow and register it; a new version becomes champion only if it beats the current
    champion on the same test window."""
    s = _settings(conf)
    result = pipeline(s, "train").run(s, products or None, tiers or None, progress)
    table = result.table[[c for c in TRAIN_COLUMNS if c in result.table.columns]]
    print_frame(table.astype(object).where(table.notna(), None), title=f"training run {result.parent_run_id}")
    for name, reason in result.skipped.items():
        progress(f"skipped {name}: {reason}")
    progress(f"{len(result.table)} models in {result.seconds:.0f} s; MLflow: {s.mlflow_db}")


@models_app.command("list")
@handled
def models_list(conf: ConfOption = None) -> None:
    """Show the champion of every registered model with its test metrics."""
    from propensity.registry import list_champions

    s = _settings(conf)
    frame = list_champions(s)
    if frame.empty:
        progress("no registered models yet: run `propensity train`")
        return
    print_frame(frame.astype(object).where(frame.notna(), None), title="champions")


# ------------------------------------------------------------------------------- scoring
@app.command()
@handled
def score(
    date_: Annotated[Optional[str], typer.Option("--date", help="Score date, a month end with features (default: the newest; refused as stale when the extracts cover a later month end).")] = None,
    products: Annotated[Optional[list[str]], typer.Option("--products", help="Products to score (default: all). Only their rows of the date's partition are replaced; the other products' rows stay.")] = None,
    conf: ConfOption = None,
) -> None:
    """Score customers with each product's champion model and publish scores/score_date=D/.

    Idempotent (a re-run replaces the partition with identical probabilities; with
    --products, only those products' rows), atomic (a failed run leaves the previous
    partition), locked (one run per data folder)."""
    s = _settings(conf)
    run = pipeline(s, "score").run(s, parse_date(date_), products or None, progress)
    summary = pd.DataFrame({"product": list(run.mean_probability), "mean_probability": list(run.mean_probability.values())})
    print_frame(summary, title=f"scores {run.score_date} (run {run.run_id})")
    tiers = ", ".join(f"{k} {v:,}" for k, v in run.customers_by_tier.items())
    progress(f"{run.rows:,} rows; customers: {tiers}; {run.seconds:.1f} s -> {run.path}")


@app.command()
@handled
def sql(
    query: Annotated[str, typer.Argument(help="SQL over the views scores, latest_scores, scores_wide, score_runs.")],
    limit: Annotated[int, typer.Option(help="Print at most this many rows.")] = 50,
    conf: ConfOption = None,
) -> None:
    """Run a query against the analysts' views over the score partitions (the views of data/warehouse.duckdb)."""
    from propensity import warehouse

    s = _settings(conf)
    frame = warehouse.query(s, query)
    print_frame(frame.head(limit).astype(object).where(frame.head(limit).notna(), None))
    if len(frame) > limit:
        console.print(f"... {len(frame) - limit:,} more rows (use --limit)")


# ----------------------------------------------------------------------------- campaigns
campaign_app = typer.Typer(help="Campaign lists: build, finalise at send time, responses, uplift.", no_args_is_help=True, rich_markup_mode="markdown")
matching_app = typer.Typer(help="Hashed customer-matching audiences for social and news media.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(campaign_app, name="campaign")
app.add_typer(matching_app, name="matching")


@campaign_app.command("build")
@handled
def campaign_build(
    spec: Annotated[Path, typer.Argument(help="Campaign spec (YAML), e.g. conf/campaigns/mortgage_email.yaml.")],
    replace: Annotated[bool, typer.Option("--replace", help="Rebuild a campaign that is built but not finalised.")] = False,
    conf: ConfOption = None,
) -> None:
    """Build a campaign list from the newest scores at or before the send date: drop reserved,
    unconsented, excluded and over-contacted customers, hold out a control group per decile,
    write `data/campaigns/<id>/` and append the contacts to the campaign log."""
    s = _settings(conf)
    built = pipeline(s, "campaign").build(s, spec.resolve(), replace, progress)
    print_frame(built.reasons[["reason", "customers"]], title=f"{built.campaign_id}: one reason per customer, first that applies")
    rules = ", ".join(f"{k} {v:,}" for k, v in built.contact_rules.items())
    progress(f"scores of {built.score_date}; send {built.send_at}; contact policy: {rules}")
    progress(f"{built.treated:,} to contact, {built.control:,} in the control group -> {built.path}")


@campaign_app.command("finalise")
@handled
def campaign_finalise(
    campaign: Annotated[str, typer.Argument(help="campaign_id of a built campaign.")],
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="Check consents and reservations as of this UTC instant (default: now).")] = None,
    conf: ConfOption = None,
) -> None:
    """Re-check a built list against reservations, consents and objections as of now and
    remove whoever may no longer be contacted (status: finalised)."""
    from propensity.target import parse_instant

    s = _settings(conf)
    done = pipeline(s, "campaign").finalise(s, campaign, parse_instant(as_of), progress)
    print_frame(done.counts, title=f"{campaign}: removed as of {done.as_of}")
    progress(f"{done.treated:,} to contact, {done.control:,} in the control group (finalised)")


@campaign_app.command("responses")
@handled
def campaign_responses(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet: campaign_id, customer_id, response, responded_at.")],
    conf: ConfOption = None,
) -> None:
    """Add response rows (none, opened, clicked, converted) of treated and control customers
    to the campaign log; a bad file is refused whole."""
    s = _settings(conf)
    pipeline(s, "campaign").responses(s, file.resolve(), progress)


@campaign_app.command("evaluate")
@handled
def campaign_evaluate(
    campaign: Annotated[str, typer.Argument(help="campaign_id of a built campaign.")],
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence level of the uplift interval, a share (0.95 for 95 %).")] = 0.95,
    conf: ConfOption = None,
) -> None:
    """Conversion of treated vs control customers, overall and per decile, with the uplift's
    confidence interval."""
    s = _settings(conf)
    frame = pipeline(s, "campaign").evaluate(s, campaign, confidence)
    print_frame(frame, title=f"{campaign}: conversion, treated vs control ({confidence:.0%} interval)")


@matching_app.command("export")
@handled
def matching_export(
    spec: Annotated[Path, typer.Argument(help="Campaign spec (YAML) with a customer_matching section.")],
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="Export instant, UTC (default: now).")] = None,
    conf: ConfOption = None,
) -> None:
    """Write a hashed e-mail/phone audience (SHA-256, no clear text) to `data/matching/<id>/`,
    without customers who reserved against customer matching or are excluded."""
    from propensity.target import parse_instant

    s = _settings(conf)
    done = pipeline(s, "campaign").export_matching(s, spec.resolve(), parse_instant(as_of), progress)
    print_frame(done.reasons, title=f"{done.campaign_id}: customer-matching export")
    progress(f"{done.exported:,} customers -> {done.path / 'upload.csv'}; deleted on {done.delete_on}")


@matching_app.command("purge")
@handled
def matching_purge(
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="Delete exports due on or before this date (default: today, UTC).")] = None,
    conf: ConfOption = None,
) -> None:
    """Delete customer-matching exports whose deletion date has come."""
    from propensity.target import parse_instant

    day = not_after_today(parse_instant(as_of).date() if as_of else None, "--as-of")
    s = _settings(conf)
    purged = pipeline(s, "campaign").purge_matching(s, day)
    frame = pd.DataFrame(
        {"campaign_id": [p.campaign_id for p in purged], "delete_on": [str(p.delete_on) for p in purged],
         "deleted": ["yes" if p.deleted else "no" for p in purged]}
    )
    print_frame(frame, title="customer-matching exports")


# ------------------------------------------------------------------------------- privacy
privacy_app = typer.Typer(help="Erasure, retention purge and access export (POLICY.md rules 7 and 8).", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(privacy_app, name="privacy")


@privacy_app.command("erase")
@handled
def privacy_erase(
    customer: Annotated[list[str], typer.Option("--customer", help="customer_id to erase (repeat for several).")],
    conf: ConfOption = None,
) -> None:
    """Remove customers from every store the project writes, keep them out of later runs
    (suppression register) and write an erasure receipt per customer."""
    s = _settings(conf)
    receipts = pipeline(s, "privacy").erase(s, customer, progress)
    for receipt in receipts:
        stores = pd.DataFrame(
            [{"store": e.store, "rows_removed": e.rows_removed, "files_changed": e.files_changed}
             for e in receipt.stores if e.rows_removed or e.files_changed]
        )
        title = f"customer sha256 {receipt.customer_sha256[:16]}...: {receipt.rows_removed:,} row(s) removed"
        if stores.empty:
            progress(title + (" - nothing found (already erased)" if receipt.previously_suppressed else " - nothing found"))
        else:
            print_frame(stores, title=title)
        for held in receipt.raw_files:
            progress(f"  the bank's extract {held['path']} still holds {held['rows']} row(s) (not ours to change)")
        progress(f"receipt {receipt.path}")


@privacy_app.command("purge")
@handled
def privacy_purge(
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="Apply retention as of this date, YYYY-MM-DD (default: today, UTC).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be deleted and change nothing.")] = False,
    conf: ConfOption = None,
) -> None:
    """Delete features, scores, lists and matching exports older than the marketing retention
    period and campaign-log rows older than the contact-log period (conf/policy.yaml)."""
    from propensity.privacy import purge_frame

    day = parse_date(as_of, "--as-of")
    if not dry_run:
        not_after_today(day, "--as-of", "; preview it with --dry-run")
    s = _settings(conf)
    items, exports = pipeline(s, "privacy").run(s, day, dry_run, progress)
    verb = "would delete" if dry_run else "deleted"
    if items:
        print_frame(purge_frame(items), title=f"retention purge: {verb}")
    else:
        progress("retention purge: nothing is due")
    gone = [e.campaign_id for e in exports if e.deleted]
    if gone:
        progress(f"customer-matching exports deleted: {', '.join(gone)}")


@privacy_app.command("export")
@handled
def privacy_export(
    customer: Annotated[str, typer.Option("--customer", help="customer_id whose data to export.")],
    conf: ConfOption = None,
) -> None:
    """Write everything held about a customer (JSON and HTML) to `data/privacy/exports/<sha256>/`."""
    s = _settings(conf)
    done = pipeline(s, "privacy").export(s, customer, progress)
    counts = done.document["stores"]
    print_frame(pd.DataFrame({"store": list(counts), "rows": list(counts.values())}), title="rows held per store")
    progress(f"export -> {done.path / 'export.json'} and export.html")


@privacy_app.command("inventory")
@handled
def privacy_inventory(conf: ConfOption = None) -> None:
    """List every store the project writes, how a customer's rows are found and its retention."""
    from propensity.privacy import inventory_frame

    s = _settings(conf)
    print_frame(inventory_frame(s), title=f"stores under {s.data_dir}")


# ------------------------------------------------------------ reports, monitoring, reason codes
from propensity.monitor import AUC_MARGIN  # noqa: E402  (the default of --auc-margin)

report_app = typer.Typer(help="Self-contained HTML reports (aggregates only) under data/reports/.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(report_app, name="report")
AucMarginOption = Annotated[
    float,
    typer.Option("--auc-margin", help="Warn when a model's realised AUC is more than this below its test AUC."),
]


@report_app.command("train")
@handled
def report_train(conf: ConfOption = None) -> None:
    """Write data/reports/train.html: every champion's metrics and figures.

    Per product, each champion's test metrics beside the baselines, its ROC, calibration
    and lift by decile (re-evaluated on its test window) and its feature importance."""
    s = _settings(conf)
    path = pipeline(s, "report").train(s, progress)
    progress(f"training report -> {path}")


@report_app.command("scores")
@handled
def report_scores(
    date_: Annotated[Optional[str], typer.Option("--date", help="Score date with a partition (default: the newest).")] = None,
    auc_margin: AucMarginOption = AUC_MARGIN,
    conf: ConfOption = None,
) -> None:
    """Write data/reports/scores-D.html: a score partition and its monitoring.

    Customers per tier, score distributions per product and tier, the models used, and
    monitoring (realised lift, realised vs test AUC, PSI). Aggregates only."""
    s = _settings(conf)
    path = pipeline(s, "report").scores(s, parse_date(date_), auc_margin, progress)
    progress(f"scores report -> {path}")


@app.command()
@handled
def monitor(
    auc_margin: AucMarginOption = AUC_MARGIN,
    fail_on_warning: Annotated[bool, typer.Option("--fail-on-warning", help="Exit with code 2 when there is a warning (for alerting from cron).")] = False,
    conf: ConfOption = None,
) -> None:
    """Realised lift and AUC of past scores; PSI of scores and top features.

    For score dates whose label window has closed: realised conversion and lift by decile,
    realised AUC against test AUC (a warning when lower by more than --auc-margin). PSI
    of scores and of the champions' top features between consecutive score dates."""
    s = _settings(conf)
    found = pipeline(s, "report").monitoring(s, auc_margin, None, progress)
    if not found.deciles.empty:
        lift = found.deciles.pivot_table(index=["score_date", "product"], columns="decile", values="lift").reset_index()
        lift.columns = [str(c) for c in lift.columns]
        print_frame(lift, title="realised lift by decile (1 = highest scores)", floatfmt="{:.2f}")
    auc = found.auc.assign(version="v" + found.auc["model_version"].astype(str))
    auc = auc[["score_date", "product", "tier", "version", "customers", "conversions", "realised_auc", "test_auc", "auc_drop", "status"]]
    print_frame(auc.astype(object).where(auc.notna(), None), title=f"realised AUC against test AUC (margin {auc_margin:.3f})", floatfmt="{:.3f}")
    print_frame(found.score_psi, title="score stability (PSI)", floatfmt="{:.3f}")
    print_frame(found.feature_psi, title="feature stability (PSI of top features, newest pair of dates)", floatfmt="{:.3f}")
    for note in found.notes:
        progress(note)
    for warning in found.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", markup=True, soft_wrap=True)
    if not found.warnings:
        progress("no warning")
    elif fail_on_warning:
        raise typer.Exit(2)


@app.command()
@handled
def explain(
    customer: Annotated[str, typer.Option("--customer", help="customer_id")],
    product: Annotated[str, typer.Option("--product", help="Product id of the catalogue.")],
    date_: Annotated[str, typer.Option("--date", help="Snapshot date (a month end with features, YYYY-MM-DD).")],
    top: Annotated[int, typer.Option("--top", min=1, help="Number of reasons to print.")] = 5,
    conf: ConfOption = None,
) -> None:
    """Print the top reasons behind a customer's score (permitted categories only).

    The LightGBM contributions of the champion of the customer's tier at the date, by
    feature, only from categories that tier may use. An excluded customer gets a message
    and nothing else."""
    s = _settings(conf)
    found = pipeline(s, "report").explain(s, customer, product, parse_date(date_), top)
    console.print(escape(found.message))
    if found.reasons is None:
        return
    console.print(f"legal basis: {found.legal_basis}; categories the tier may use: {', '.join(found.categories)}")
    console.print(f"probability {found.probability:.4f} (calibrated); baseline {found.bias:.3f} log-odds before contributions")
    if found.scored:
        console.print(escape(found.scored))
    reasons = found.reasons.assign(value=[_shown(v) for v in found.reasons["value"]])
    print_frame(reasons, title=f"top {len(reasons)} reasons (contribution in log-odds of the LightGBM score)")


def _shown(value: object) -> str:
    """A feature value as the explain table prints it (missing: empty)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return str(value)
