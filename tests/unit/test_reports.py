"""Report pages and reason codes on hand-made inputs: the figures and sections each page
must hold, no customer id on any page, and reason codes that never name a feature of a
category the customer's tier may not use."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pytest

from propensity.config import load_settings
from propensity.errors import PrivacyGuardError
from propensity.features import personalised_only_columns
from propensity.monitor import Monitoring, auc_decay, realised_auc, realised_by_decile, score_psi
from propensity.reports import (
    ChampionEvaluation,
    check_permitted,
    comparison_table,
    customer_ids_in,
    reason_codes,
    scores_report_html,
    train_report_html,
    window_dates,
    write_report,
)
from tests.conftest import ROOT

APRIL, MAY = date(2025, 4, 30), date(2025, 5, 31)
NOW = datetime(2025, 6, 3, 6, 0, tzinfo=timezone.utc)
IMG = re.compile(r"<img ")


def partition(day: date, n: int = 60, seed: int = 1) -> pd.DataFrame:
    """A score partition as the scoring job writes it: two products, both tiers."""
    rng = np.random.default_rng(seed)
    rows = []
    for product in ("mortgage", "car_loan"):
        p = rng.beta(1, 30, n)
        order = np.argsort(-p, kind="stable")
        rank = np.empty(n, dtype=int)
        rank[order] = np.arange(1, n + 1)
        for i in range(n):
            tier = "personalised" if i % 2 else "basic"
            rows.append(
                {"customer_id": f"C{i:07d}", "score_date": day, "product": product, "probability": p[i],
                 "rank": rank[i], "decile": int(np.ceil(rank[i] * 10 / n)), "tier": tier,
                 "legal_basis": "consent" if tier == "personalised" else "legitimate_interest",
                 "model_name": f"propensity-{product}-{tier}", "model_version": "2", "mlflow_run_id": f"run-{product}-{tier}",
                 "policy_version": "2026.1", "scored_at": pd.Timestamp(NOW), "run_id": "abc123"}
            )
    return pd.DataFrame(rows)


def monitoring_of(history: pd.DataFrame, day: date) -> Monitoring:
    """A monitor result over hand-made outcomes: the top decile converts."""
    outcomes = history.assign(label=(history["decile"] <= 2).astype(int))
    auc = auc_decay(realised_auc(outcomes), {r: 0.99 for r in outcomes["mlflow_run_id"]}, margin=0.05)
    return Monitoring(
        auc_margin=0.05, data_end=date(2025, 8, 31), score_dates=sorted(set(history["score_date"])),
        windows=pd.DataFrame(), deciles=realised_by_decile(outcomes), auc=auc, score_psi=score_psi(history),
        feature_psi=pd.DataFrame(columns=["from_date", "to_date", "product", "tier", "feature", "psi", "band"]),
        notes=["car_loan scores of 2025-07-31: outcomes complete on 2025-10-31, not yet known"],
    )


# ------------------------------------------------------------------------ scores report
def test_scores_report_has_tier_counts_and_one_distribution_per_product():
    scores = partition(MAY)
    page = scores_report_html(scores, MAY, {"personalised": "consent", "basic": "legitimate_interest"}, NOW, excluded=7)
    assert len(IMG.findall(page)) == 1 + 2
    for title in ("Customers per tier", "Models used", "Score distributions"):
        assert f"<h2>{title}</h2>" in page
    assert 'alt="Scores of mortgage"' in page and 'alt="Scores of car_loan"' in page
    assert "propensity-car_loan-basic" in page  # the models used are named
    assert ">7<" in page  # the excluded count of the run


def test_scores_report_names_no_customer():
    scores = partition(MAY)
    page = scores_report_html(scores, MAY, {"personalised": "consent", "basic": "legitimate_interest"}, NOW)
    assert customer_ids_in(page, scores["customer_id"]) == set()
    assert not re.search(r"C\d{7}", re.sub(r"base64,[A-Za-z0-9+/=]+", "", page))


def test_scores_report_monitoring_section_has_a_lift_figure_per_product_and_the_warnings():
    history = pd.concat([partition(APRIL, seed=1), partition(MAY, seed=2)], ignore_index=True)
    monitoring = monitoring_of(history, MAY)
    page = scores_report_html(partition(MAY, seed=2), MAY, {"personalised": "consent", "basic": "legitimate_interest"}, NOW,
                              monitoring=monitoring)
    assert len(IMG.findall(page)) == 1 + 2 + 2
    for title in ("Monitoring", "Realised conversion by decile", "Realised AUC against test AUC",
                  "Score stability (PSI between consecutive score dates)"):
        assert f">{title}</h" in page
    assert monitoring.warnings and all(w.split(",")[0] in page for w in monitoring.warnings)
    assert "not yet known" in page
    assert customer_ids_in(page, history["customer_id"]) == set()


# ---------------------------------------------------------------------- training report
def evaluation(tier: str, with_window: bool = True) -> ChampionEvaluation:
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.1).astype(float)
    p = np.clip(0.05 + 0.3 * y + rng.normal(0, 0.1, 400), 0, 1)
    metrics = {"roc_auc": 0.8, "pr_auc": 0.3, "lift_top_decile": 3.0, "brier": 0.08, "ece": 0.01, "logistic_roc_auc": 0.7,
               "base_rate_roc_auc": 0.5, "rows_test": 400.0}
    return ChampionEvaluation(
        product="mortgage", tier=tier, name=f"propensity-mortgage-{tier}", version="3", metrics=metrics,
        tags={"data_window_test": "2025-04-30..2025-05-31", "calibration": "isotonic", "categories": "personal"},
        importance=pd.Series({"age_years": 10.0, "logins_3m": 4.0}),
        labels=y if with_window else None, probability=p if with_window else None,
        note="" if with_window else "not re-evaluated: the FeatureService no longer has ['x']",
    )


def test_training_report_has_roc_calibration_lift_and_importance_per_champion():
    page = train_report_html([evaluation("personalised"), evaluation("basic")], {"champions": 2})
    assert len(IMG.findall(page)) == 2 * 4
    for figure in ("ROC", "Calibration", "Lift by decile", "Feature importance"):
        assert f'alt="{figure} mortgage personalised"' in page
        assert f'alt="{figure} mortgage basic"' in page
    assert "<h2>Product mortgage</h2>" in page
    assert "propensity-mortgage-basic v3" in page


def test_training_report_of_a_champion_not_re_evaluated_shows_importance_and_why():
    page = train_report_html([evaluation("basic", with_window=False)], {})
    assert len(IMG.findall(page)) == 1
    assert "not re-evaluated" in page


def test_training_report_without_champions_says_so():
    page = train_report_html([], {})
    assert "No registered champion" in page and not IMG.findall(page)


def test_comparison_table_puts_the_model_beside_its_baselines():
    table = comparison_table({"roc_auc": 0.8, "logistic_roc_auc": 0.7, "base_rate_roc_auc": 0.5, "oracle_roc_auc": 0.85})
    assert table["model"].tolist() == ["LightGBM (calibrated)", "logistic regression", "base rate", "oracle (true probability)"]
    assert table["roc_auc"].tolist() == [0.8, 0.7, 0.5, 0.85]


# ------------------------------------------------------------------------ the page guard
def test_write_report_refuses_a_page_that_names_a_customer(tmp_path):
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    with pytest.raises(PrivacyGuardError, match="1 customer id"):
        write_report(settings, "leaky", "<p>top customer: C0000042</p>", ["C0000042", "C0000043"])
    assert not (settings.reports_dir / "leaky.html").exists()
    path = write_report(settings, "clean", "<p>42 customers</p>", ["C0000042"])
    assert path.read_text() == "<p>42 customers</p>"


def test_customer_ids_inside_embedded_images_do_not_count():
    text = '<img src="data:image/png;base64,AAC0000042AA="/> C0000043'
    assert customer_ids_in(text, ["C0000042", "C0000043"]) == {"C0000043"}


def test_window_dates_are_the_month_ends_of_a_window_tag():
    assert window_dates("2025-03-31..2025-05-31") == [date(2025, 3, 31), APRIL, MAY]


# -------------------------------------------------------------------------- reason codes
def test_basic_reasons_refuse_a_transactions_feature(settings):
    contribution = pd.Series({"age_years": 0.4, "salary_inflow_3m_nok": 0.9, "bias": -4.0})
    with pytest.raises(PrivacyGuardError, match="salary_inflow_3m_nok \\(transactions\\)"):
        reason_codes(contribution, pd.Series({"age_years": 40, "salary_inflow_3m_nok": 1.0}), "basic", True,
                     settings.policy, settings.catalogue)


def test_the_guard_refuses_every_personalised_only_feature_for_basic(settings):
    for feature in personalised_only_columns(settings.policy, settings.catalogue):
        with pytest.raises(PrivacyGuardError):
            check_permitted([feature], "basic", settings.policy, settings.catalogue)
    with pytest.raises(PrivacyGuardError, match="no category"):
        check_permitted(["made_up_feature"], "personalised", settings.policy, settings.catalogue)
    check_permitted(["salary_inflow_3m_nok", "employer_sector"], "personalised", settings.policy, settings.catalogue)


def test_reasons_are_ordered_by_size_and_leave_out_zero_and_unshared_group_data(settings):
    contribution = pd.Series(
        {"age_years": 0.4, "logins_3m": -0.7, "household_size": 0.0, "holds_home_insurance": 1.5, "postal_area": 0.1, "bias": -4.0}
    )
    values = pd.Series({"age_years": 40, "logins_3m": 0, "household_size": 2, "holds_home_insurance": None, "postal_area": 1})
    table = reason_codes(contribution, values, "basic", False, settings.policy, settings.catalogue, top=2)
    assert table["feature"].tolist() == ["logins_3m", "age_years"]
    assert table["effect"].tolist() == ["lowers", "raises"]
    assert table["category"].tolist() == ["digital_behaviour", "personal"]
    assert table["rank"].tolist() == [1, 2]
    shared = reason_codes(contribution, values, "basic", True, settings.policy, settings.catalogue, top=None)
    assert shared["feature"].tolist() == ["holds_home_insurance", "logins_3m", "age_years", "postal_area"]
