"""Reason codes, reports and the monitor on one real scored bank.

:func:`scored_bank` builds, once per test session, what the analysts' commands read: a
synthetic bank (2500 customers x 20 months) → ``features build`` → ``train`` (two
products, both tiers) → ``score`` at two consecutive month ends whose label windows have
closed. The notebook tests reuse the same folder.
"""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from propensity import reports
from propensity.cli import app, pipeline
from propensity.config import Settings, load_settings
from propensity.errors import MissingInputError, PrivacyGuardError
from propensity.features import personalised_only_columns
from propensity.monitor import MIN_CONVERSIONS
from propensity.registry import load_champion, run_record
from propensity.snapshots import snapshot_instant
from propensity.store import FeatureStore
from tests.conftest import ROOT

CUSTOMERS, MONTHS = 2500, 20
PRODUCTS = ("mortgage", "consumer_loan")
_BANK: dict = {}


def scored_bank(tmp_path_factory) -> dict:
    """Build the shared bank on first use (the module-level cache makes it once per session)."""
    if not _BANK:
        quiet = lambda _: None  # noqa: E731
        data_dir = tmp_path_factory.mktemp("scored_bank")
        settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data_dir)
        pipeline(settings, "synth").run(settings, CUSTOMERS, MONTHS, settings.seed, settings.raw_dir, quiet)
        store = FeatureStore(settings)
        summary = pipeline(settings, "build_features").run(settings, quiet, store)
        pipeline(settings, "train").run(settings, list(PRODUCTS), None, quiet, store)
        days = summary.snapshots[-5:-3]  # their 3-month label windows close by the newest snapshot
        for day in days:
            pipeline(settings, "score").run(settings, day, list(PRODUCTS), quiet, store)
        _BANK.update(settings=settings, store=store, days=days, data_end=summary.snapshots[-1])
    return _BANK


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> dict:
    return scored_bank(tmp_path_factory)


def invoke(settings: Settings, *args: str):
    result = CliRunner().invoke(app, [*args, "--conf", str(ROOT / "conf" / "pipeline.yaml")],
                                env={"PROPENSITY_DATA_DIR": str(settings.data_dir), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def customers_by_tier(bank: dict, day: date) -> pd.DataFrame:
    """Customers (members at ``day``) with their tier."""
    settings, store = bank["settings"], bank["store"]
    customers = pd.read_parquet(settings.raw_dir / "customers.parquet")
    since, closed = customers["customer_since"], customers["closed_at"]
    members = customers[(since <= day) & (closed.isna() | (closed > day))]
    entity = pd.DataFrame({"customer_id": members["customer_id"].astype(str), "event_timestamp": snapshot_instant(day)})
    return entity.assign(tier=store.tiers(entity)["tier"].to_numpy())


_CHAMPIONS: dict = {}


def champion(settings: Settings, product: str, tier: str):
    """``load_champion``, loaded once per product x tier (the explain tests call it per customer)."""
    if (product, tier) not in _CHAMPIONS:
        _CHAMPIONS[(product, tier)] = load_champion(settings, product, tier)
    return _CHAMPIONS[(product, tier)]


def all_customer_ids(settings: Settings) -> list[str]:
    return pd.read_parquet(settings.raw_dir / "customers.parquet", columns=["customer_id"])["customer_id"].astype(str).tolist()


# -------------------------------------------------------------------------- reason codes
def test_basic_customers_reasons_never_name_a_transactions_or_employer_feature(bank):
    settings, store, day = bank["settings"], bank["store"], bank["days"][-1]
    basic = customers_by_tier(bank, day).query("tier == 'basic'")["customer_id"].head(20)
    forbidden = set(personalised_only_columns(settings.policy, settings.catalogue))
    allowed = set(settings.policy.categories_for("basic"))
    named = set()
    for customer in basic:
        found = reports.explain(settings, store, champion, customer, "mortgage", day, top=None)
        assert found.tier == "basic" and found.model.startswith("propensity-mortgage-basic v")
        assert set(found.reasons["category"]) <= allowed
        assert not set(found.reasons["feature"]) & forbidden
        named |= set(found.reasons["feature"])
    assert len(named) > 10  # the contributions are real, not empty tables


def test_personalised_customers_may_get_transactions_reasons(bank):
    settings, store, day = bank["settings"], bank["store"], bank["days"][-1]
    personalised = customers_by_tier(bank, day).query("tier == 'personalised'")["customer_id"].head(10)
    categories = set()
    for customer in personalised:
        found = reports.explain(settings, store, champion, customer, "mortgage", day)
        assert found.tier == "personalised" and found.legal_basis == "consent"
        categories |= set(found.reasons["category"])
    assert "transactions" in categories


def test_contributions_add_up_to_the_raw_logit(bank):
    settings, store, day = bank["settings"], bank["store"], bank["days"][-1]
    ids = customers_by_tier(bank, day).query("tier == 'basic'")["customer_id"].head(50)
    entity = pd.DataFrame({"customer_id": ids, "event_timestamp": snapshot_instant(day)})
    frame = store.historical_features(entity, service="basic")["basic"]
    model = load_champion(settings, "consumer_loan", "basic").calibrated_model()
    contrib = reports.contributions(model, frame)
    raw = model.raw_score(frame)
    np.testing.assert_allclose(contrib.sum(axis=1), np.log(raw / (1 - raw)), rtol=1e-6, atol=1e-6)
    assert list(contrib.columns) == [*model.features, "bias"]


def test_a_personalised_model_is_refused_for_a_basic_customer_before_any_read(bank):
    settings, store, day = bank["settings"], bank["store"], bank["days"][-1]
    customer = customers_by_tier(bank, day).query("tier == 'basic'")["customer_id"].iloc[0]

    def wrong_champion(s, product, tier):
        return load_champion(s, product, "personalised")

    with pytest.raises(PrivacyGuardError, match="basic tier may use"):
        reports.explain(settings, store, wrong_champion, customer, "mortgage", day)


class _SpyStore:
    """A feature store that records reads."""

    def __init__(self, store):
        self._store, self.reads = store, 0

    def tiers(self, entity):
        return self._store.tiers(entity)

    def historical_features(self, *args, **kwargs):
        self.reads += 1
        return self._store.historical_features(*args, **kwargs)


def test_excluded_customer_gets_a_message_and_nothing_else(bank):
    settings, store, day = bank["settings"], bank["store"], bank["days"][-1]
    customer = customers_by_tier(bank, day).query("tier == 'excluded'")["customer_id"].iloc[0]
    spy = _SpyStore(store)

    def no_model(*_):
        raise AssertionError("no model may be loaded for an excluded customer")

    found = reports.explain(settings, spy, no_model, customer, "mortgage", day)
    assert found.reasons is None and found.model is None and found.probability is None
    assert spy.reads == 0
    assert "excluded" in found.message

    output = invoke(settings, "explain", "--customer", customer, "--product", "mortgage", "--date", day.isoformat())
    assert "excluded" in output and "no features are read" in output
    features = set(store.service_columns("personalised"))
    assert not any(name in output for name in features)
    assert len(output.strip().splitlines()) <= 2  # the message, wrapped at most once


def test_explain_command_prints_the_reasons_of_a_basic_customer(bank):
    settings, day = bank["settings"], bank["days"][-1]
    customer = customers_by_tier(bank, day).query("tier == 'basic'")["customer_id"].iloc[0]
    output = invoke(settings, "explain", "--customer", customer, "--product", "consumer_loan", "--date", day.isoformat(), "--top", "3")
    assert "tier basic" in output and "legitimate_interest" in output
    assert "propensity-consumer_loan-basic" in output
    assert "top 3 reasons" in output
    forbidden = personalised_only_columns(settings.policy, settings.catalogue)
    assert not any(name in output for name in forbidden)


# ------------------------------------------------------------------------------- reports
IMG = re.compile(r"<img ")


def test_report_train_has_four_figures_per_champion_and_no_customer_id(bank):
    settings = bank["settings"]
    output = invoke(settings, "report", "train")
    assert "training report ->" in output
    page = (settings.reports_dir / "train.html").read_text()
    assert len(IMG.findall(page)) == 4 * 2 * len(PRODUCTS)
    for product in PRODUCTS:
        assert f"<h2>Product {product}</h2>" in page
        for tier in ("personalised", "basic"):
            for figure in ("ROC", "Calibration", "Lift by decile", "Feature importance"):
                assert f'alt="{figure} {product} {tier}"' in page
    assert reports.customer_ids_in(page, all_customer_ids(settings)) == set()


def test_re_evaluation_on_the_test_window_reproduces_the_logged_auc(bank):
    settings, store = bank["settings"], bank["store"]
    from propensity import contract

    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    champion = load_champion(settings, "consumer_loan", "personalised")
    _, tags = run_record(settings, champion.run_id)
    evaluation, ids = reports.evaluate_champion(settings, store, raw.relation, champion, tags)
    assert evaluation.reevaluated_auc == pytest.approx(champion.metrics["roc_auc"], abs=1e-9)
    assert len(ids) == champion.metrics["rows_test"]


def test_report_scores_has_tiers_distributions_lift_and_no_customer_id(bank):
    settings, day = bank["settings"], bank["days"][-1]
    output = invoke(settings, "report", "scores", "--date", day.isoformat())
    assert "scores report ->" in output
    page = (settings.reports_dir / f"scores-{day.isoformat()}.html").read_text()
    # customers per tier, a distribution per product, a realised-lift figure per product
    assert len(IMG.findall(page)) == 1 + len(PRODUCTS) + len(PRODUCTS)
    for title in ("Customers per tier", "Models used", "Score distributions", "Monitoring"):
        assert f"<h2>{title}</h2>" in page
    for title in ("Realised conversion by decile", "Realised AUC against test AUC"):
        assert f"<h3>{title}</h3>" in page
    for product in PRODUCTS:
        assert f"propensity-{product}-basic" in page and f"propensity-{product}-personalised" in page
    assert reports.customer_ids_in(page, all_customer_ids(settings)) == set()


# ------------------------------------------------------------------------------- monitor
def test_monitor_realised_lift_covers_the_scored_and_labelled_customers(bank):
    settings, store = bank["settings"], bank["store"]
    found = pipeline(settings, "report").monitoring(settings, store=store, progress=lambda _: None)
    assert found.score_dates == list(bank["days"])
    assert found.windows["labelled"].all()
    deciles = found.deciles
    assert set(deciles["decile"]) == set(range(1, 11))
    for (_, _), group in deciles.groupby(["score_date", "product"]):
        # lift averages to one over the customers (the definition of lift)
        assert np.average(group["lift"], weights=group["customers"]) == pytest.approx(1.0)
    # the same customers counted per model as per decile
    assert found.auc["customers"].sum() == deciles["customers"].sum()
    assert set(found.score_psi["tier"]) == {"all", "personalised", "basic"}
    assert len(found.feature_psi) > 0 and found.feature_psi["psi"].notna().all()
    assert not found.deciles.columns.isin(["customer_id"]).any()


class _RefusingStore(_SpyStore):
    """A feature store that refuses every read, as a stale store does."""

    def historical_features(self, *args, **kwargs):
        raise MissingInputError("the feature store was built under policy version 2020.1: rebuild it")


def test_monitor_without_readable_features_keeps_everything_but_the_feature_psi(bank):
    settings, store = bank["settings"], bank["store"]
    found = pipeline(settings, "report").monitoring(settings, store=_RefusingStore(store), progress=lambda _: None)
    assert found.feature_psi.empty
    assert any(n.startswith("feature PSI not computed:") and "2020.1" in n for n in found.notes)
    assert len(found.score_psi) > 0 and len(found.deciles) > 0 and len(found.auc) > 0


def test_monitor_warns_per_model_whose_auc_fell_below_its_test_auc_by_the_margin(bank):
    settings, store = bank["settings"], bank["store"]
    # A margin of -1 flags every judged model: the realised AUC is always above test AUC - (-1).
    found = pipeline(settings, "report").monitoring(settings, auc_margin=-1.0, store=store, progress=lambda _: None)
    judged = found.auc[(found.auc["conversions"] >= MIN_CONVERSIONS)
                       & (found.auc["customers"] - found.auc["conversions"] >= MIN_CONVERSIONS)]
    assert len(judged) > 0
    assert (judged["status"] == "AUC decay").all()
    assert len([w for w in found.warnings if "realised AUC" in w]) == len(judged)

    output = invoke(settings, "monitor", "--auc-margin", "-1")
    assert "warning:" in output and "realised AUC" in output
    relaxed = invoke(settings, "monitor", "--auc-margin", "1")
    assert "AUC decay" not in relaxed
    strict = CliRunner().invoke(
        app, ["monitor", "--auc-margin", "-1", "--fail-on-warning", "--conf", str(ROOT / "conf" / "pipeline.yaml")],
        env={"PROPENSITY_DATA_DIR": str(settings.data_dir)},
    )
    assert strict.exit_code == 2  # for alerting from cron
