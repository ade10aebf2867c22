"""Monitoring steps on hand-made frames: PSI, realised lift by decile, AUC decay, windows."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from propensity.monitor import (
    AUC_MARGIN,
    MIN_CONVERSIONS,
    auc_decay,
    categorical_psi,
    consecutive_pairs,
    feature_psi,
    outcome_windows,
    psi,
    psi_band,
    psi_from_shares,
    realised_auc,
    realised_by_decile,
    realised_outcomes,
    score_psi,
    top_features,
)

APRIL, MAY = date(2025, 4, 30), date(2025, 5, 31)


# ------------------------------------------------------------------------------- PSI
def test_psi_of_two_hand_written_decile_distributions():
    expected = [0.1] * 10
    actual = [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15]
    # 2 x (0.05 - 0.1) ln(0.05/0.1) + 2 x (0.15 - 0.1) ln(0.15/0.1)
    assert psi_from_shares(expected, actual) == pytest.approx(0.1098612289, abs=1e-9)


def test_psi_of_identical_distributions_is_zero():
    assert psi_from_shares([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_psi_floors_an_empty_bin():
    # (1 - 0.5) ln(1/0.5) + (0.0001 - 0.5) ln(0.0001/0.5)
    assert psi_from_shares([0.5, 0.5], [1.0, 0.0]) == pytest.approx(4.6043184667, abs=1e-9)


def test_psi_refuses_shares_that_do_not_sum_to_one_or_differ_in_bins():
    with pytest.raises(ValueError, match="sum to 1"):
        psi_from_shares([0.5, 0.4], [0.5, 0.5])
    with pytest.raises(ValueError, match="bins"):
        psi_from_shares([0.5, 0.5], [1.0])


def test_numeric_psi_bins_on_the_reference_deciles():
    reference = np.arange(100, dtype=float)  # ten bins of ten values
    current = np.arange(50, 150, dtype=float)  # five bins empty, four at 0.1, the top bin at 0.6
    # 5 x (0.0001 - 0.1) ln(0.0001/0.1) + (0.6 - 0.1) ln(0.6/0.1)
    assert psi(reference, current) == pytest.approx(4.3463034965, abs=1e-9)
    assert psi(reference, reference.copy()) == 0.0


def test_numeric_psi_counts_missing_values_as_a_bin():
    reference = np.array([1.0, 2.0, np.nan, np.nan])
    current = np.array([1.0, 2.0, 3.0, np.nan])
    # bins: <=1.5 | >1.5 | missing (reference quantile at 0.5 of [1, 2] is 1.5, two bins)
    e, a = [0.25, 0.25, 0.5], [0.25, 0.5, 0.25]
    assert psi(reference, current, bins=2) == pytest.approx(psi_from_shares(e, a))


def test_categorical_psi_by_hand():
    # expected a 0.5, b 0.5; actual a 0.25, b 0.75
    assert categorical_psi(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx(0.2746530722, abs=1e-9)
    assert categorical_psi(["a", None], ["a", None]) == 0.0


def test_psi_without_rows_is_nan_and_its_band_na():
    assert np.isnan(psi([], [1.0]))
    assert psi_band(float("nan")) == "n/a"


@pytest.mark.parametrize("value, band", [(0.0, "stable"), (0.099, "stable"), (0.1, "moderate shift"), (0.25, "major shift")])
def test_psi_bands(value, band):
    assert psi_band(value) == band


# ------------------------------------------------------------------ realised outcomes
def outcomes_frame(deciles: list[int], labels: list[int], day: date = APRIL, product: str = "mortgage") -> pd.DataFrame:
    n = len(deciles)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in range(n)], "score_date": day, "product": product,
            "probability": np.linspace(0.9, 0.1, n), "decile": deciles, "tier": "basic",
            "model_name": f"propensity-{product}-basic", "model_version": "1", "mlflow_run_id": "run1", "label": labels,
        }
    )


def test_lift_of_a_hand_made_decile_table():
    # decile 1: 2 of 2 converted, decile 2: 1 of 3, decile 3: 0 of 5; overall 3 of 10
    frame = outcomes_frame([1, 1, 2, 2, 2, 3, 3, 3, 3, 3], [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    table = realised_by_decile(frame)
    assert table["customers"].tolist() == [2, 3, 5]
    assert table["conversions"].tolist() == [2, 1, 0]
    assert table["conversion_rate"].tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert table["lift"].tolist() == pytest.approx([1.0 / 0.3, (1 / 3) / 0.3, 0.0])


def test_lift_is_per_score_date_and_product():
    a = outcomes_frame([1, 2], [1, 0])  # overall 0.5: lifts 2, 0
    b = outcomes_frame([1, 2, 2, 2], [1, 1, 0, 0], day=MAY)  # overall 0.5: lifts 2, 2/3
    table = realised_by_decile(pd.concat([a, b], ignore_index=True)).set_index(["score_date", "decile"])
    assert table.loc[(APRIL, 1), "lift"] == pytest.approx(2.0)
    assert table.loc[(MAY, 2), "lift"] == pytest.approx((1 / 3) / 0.5)


def test_lift_without_any_conversion_is_nan():
    table = realised_by_decile(outcomes_frame([1, 2], [0, 0]))
    assert table["lift"].isna().all()


def test_realised_outcomes_keep_only_scored_pairs_with_a_label():
    scores = outcomes_frame([1, 2, 3], [0, 0, 0]).drop(columns="label")
    labels = pd.DataFrame(
        {"customer_id": ["C0000000", "C0000002", "C0000009"], "snapshot_date": [APRIL, APRIL, APRIL],
         "product": "mortgage", "label": np.array([1, 0, 1], dtype="int8")}
    )
    out = realised_outcomes(scores, labels)
    assert out["customer_id"].tolist() == ["C0000000", "C0000002"]  # C0000001 has no label, C0000009 no score
    assert out["label"].tolist() == [1, 0]


def test_realised_auc_per_model_and_date():
    frame = outcomes_frame([1, 1, 2, 2], [1, 0, 1, 0])  # probabilities 0.9, 0.633, 0.367, 0.1
    table = realised_auc(frame)
    assert table[["customers", "conversions"]].values.tolist() == [[4, 2]]
    # positives at 0.9 and 0.367, negatives at 0.633 and 0.1: 3 of 4 pairs ordered
    assert table["realised_auc"].iloc[0] == pytest.approx(0.75)


def auc_rows(rows: list[tuple[str, float, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"score_date": APRIL, "product": "mortgage", "tier": "basic", "model_name": "m", "model_version": "1",
          "mlflow_run_id": run, "customers": customers, "conversions": conversions, "conversion_rate": conversions / customers,
          "mean_probability": 0.1, "realised_auc": auc} for run, auc, customers, conversions in rows]
    )


def test_auc_decay_flags_a_drop_beyond_the_margin_only():
    table = auc_decay(
        auc_rows([("r1", 0.70, 500, 40), ("r2", 0.78, 500, 40), ("r3", 0.60, 500, MIN_CONVERSIONS - 1), ("r4", 0.70, 500, 40)]),
        {"r1": 0.80, "r2": 0.80, "r3": 0.80},
        margin=AUC_MARGIN,
    )
    assert table["status"].tolist() == ["AUC decay", "ok", "too few conversions", "no test AUC"]
    assert table["auc_drop"].iloc[0] == pytest.approx(0.10)


def test_a_score_date_the_model_learnt_from_is_in_sample():
    rows = auc_rows([("r1", 0.95, 500, 40), ("r2", 0.95, 500, 40)])  # score dates: APRIL
    table = auc_decay(rows, {"r1": 0.80, "r2": 0.80}, fitted_until={"r1": APRIL, "r2": date(2025, 3, 31)})
    assert table["status"].tolist() == ["in sample", "ok"]


def test_auc_decay_margin_is_a_parameter():
    rows = auc_rows([("r1", 0.70, 500, 40)])
    assert auc_decay(rows, {"r1": 0.80}, margin=0.2)["status"].tolist() == ["ok"]
    assert auc_decay(rows, {"r1": 0.80}, margin=0.05)["status"].tolist() == ["AUC decay"]


def test_outcome_windows_know_which_labels_are_complete(settings):
    scores = pd.DataFrame({"score_date": [APRIL, APRIL, date(2025, 7, 31)], "product": ["mortgage", "mortgage", "mortgage"]})
    windows = outcome_windows(scores, settings.catalogue, data_end=date(2025, 8, 31))
    horizon = settings.catalogue.products["mortgage"].label.horizon_months
    assert horizon == 3
    assert windows["labels_complete_on"].tolist() == [date(2025, 7, 31), date(2025, 10, 31)]
    assert windows["labelled"].tolist() == [True, False]


# -------------------------------------------------------------------------- stability
def test_consecutive_pairs_are_ordered():
    assert consecutive_pairs([MAY, APRIL, date(2025, 6, 30)]) == [(APRIL, MAY), (MAY, date(2025, 6, 30))]
    assert consecutive_pairs([APRIL]) == []


def test_score_psi_per_product_for_all_tiers_and_each_tier():
    p = np.linspace(0.01, 0.5, 20)
    rows = []
    for day in (APRIL, MAY):
        for i, value in enumerate(p):
            rows.append({"score_date": day, "product": "mortgage", "tier": "basic" if i % 2 else "personalised", "probability": value})
    table = score_psi(pd.DataFrame(rows))
    assert table["tier"].tolist() == ["all", "basic", "personalised"]
    assert table["psi"].tolist() == [0.0, 0.0, 0.0]
    assert set(table["band"]) == {"stable"}
    assert table["customers_from"].tolist() == [20, 10, 10]


def test_feature_psi_of_named_top_features():
    a = pd.DataFrame({"age_years": np.arange(100, dtype=float), "region": ["Oslo", "Bergen"] * 50})
    b = pd.DataFrame({"age_years": np.arange(50, 150, dtype=float), "region": ["Oslo", "Bergen"] * 50})
    table = feature_psi({(APRIL, "basic"): a, (MAY, "basic"): b}, {("mortgage", "basic"): ["age_years", "region", "absent"]}, [(APRIL, MAY)])
    assert table["feature"].tolist() == ["age_years", "region"]
    assert table["psi"].tolist() == pytest.approx([4.3463034965, 0.0])
    assert table["band"].tolist() == ["major shift", "stable"]


def test_top_features_leave_out_unused_ones_and_break_ties_by_name():
    importance = pd.Series({"b": 5.0, "a": 5.0, "c": 9.0, "unused": 0.0})
    assert top_features(importance, 3) == ["c", "a", "b"]
    assert top_features(importance, 10) == ["c", "a", "b"]
