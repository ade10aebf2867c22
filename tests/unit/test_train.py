"""Tests of ``propensity.train`` and ``propensity.evaluation``: splits, metrics, calibration, gate."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from propensity.config import ValidationWindows
from propensity.errors import MissingInputError
from propensity.evaluation import (
    brier,
    calibration_table,
    expected_calibration_error,
    lift_by_decile,
    lift_top_fraction,
)
from propensity.snapshots import add_months, month_ends
from propensity.train import (
    FeatureFrame,
    Split,
    choose_calibration,
    dataset_fingerprint,
    oracle_now_probability,
    oracle_probability,
    promotion_decision,
    tier_dataset,
    time_split,
)

WINDOWS = ValidationWindows(test_months=2, valid_months=2, min_train_months=6)
LABELLED = month_ends(date(2024, 1, 1), date(2025, 9, 30))  # 21 month ends


# ------------------------------------------------------------------------ splits
def test_split_puts_the_newest_labelled_snapshots_in_test():
    split = time_split(LABELLED, 3, WINDOWS)
    assert split.test == (date(2025, 8, 31), date(2025, 9, 30))


def test_split_leaves_the_label_months_out_between_windows():
    split = time_split(LABELLED, 3, WINDOWS)
    assert split.valid == (date(2025, 3, 31), date(2025, 4, 30))
    assert split.train[-1] == date(2024, 11, 30)
    assert split.train[0] == date(2024, 1, 31)
    assert len(split.train) == 11


def test_split_label_windows_end_before_the_next_window_starts():
    for label_months in (1, 3, 4):
        split = time_split(LABELLED, label_months, WINDOWS)
        assert add_months(split.train[-1], label_months) < split.valid[0]
        assert add_months(split.valid[-1], label_months) < split.test[0]
        assert not set(split.train) & set(split.valid)
        assert not set(split.valid) & set(split.test)


def test_split_with_a_gap_counts_gap_and_horizon():
    split = time_split(LABELLED, 4, WINDOWS)  # gap 1 + horizon 3
    assert split.valid == (date(2025, 2, 28), date(2025, 3, 31))
    assert split.train[-1] == date(2024, 9, 30)


def test_split_refuses_too_few_snapshots():
    with pytest.raises(MissingInputError, match="too few labelled snapshots"):
        time_split(LABELLED[:15], 3, WINDOWS)


def test_split_assigns_window_names():
    split = Split(train=(date(2024, 1, 31),), valid=(date(2024, 5, 31),), test=(date(2024, 9, 30),))
    dates = pd.Series([date(2024, 1, 31), date(2024, 3, 31), date(2024, 9, 30)])
    assigned = split.assign(dates)
    assert assigned[0] == "train" and pd.isna(assigned[1]) and assigned[2] == "test"
    assert split.describe()["valid"] == "2024-05-31..2024-05-31"


# ----------------------------------------------------------------------- metrics
Y = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 1], dtype=float)
P = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])


def test_lift_of_the_top_decile_by_hand():
    # Top 1 of 10 rows is a positive: rate 1.0 over a base rate of 0.3.
    assert lift_top_fraction(Y, P, 0.1) == pytest.approx(1 / 0.3)
    # Top 3 (ceil(0.25 * 10)): one positive of three.
    assert lift_top_fraction(Y, P, 0.25) == pytest.approx((1 / 3) / 0.3)


def test_tied_rows_are_never_told_apart():
    # Rows tied at the cut count by their mean outcome, in either order.
    assert lift_top_fraction([0, 1], [0.5, 0.5], 0.5) == pytest.approx(1.0)
    assert lift_top_fraction([1, 0], [0.5, 0.5], 0.5) == pytest.approx(1.0)
    # Top 2 of 4: the 0.9 row (a positive) and half of the two 0.5 rows (one positive).
    assert lift_top_fraction([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1], 0.5) == pytest.approx((1 + 0.5) / 2 / 0.5)
    # A constant prediction: one bin, so ECE is |p - rate| and the top decile has lift 1.
    y = np.r_[np.ones(30), np.zeros(970)]
    assert expected_calibration_error(y, np.full(1000, 0.03), 10) == pytest.approx(0.0)
    assert lift_top_fraction(y, np.full(1000, 0.03)) == pytest.approx(1.0)
    assert calibration_table(y, np.full(1000, 0.03), 10)["rows"].tolist() == [1000]


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from([0.01, 0.02, 0.05, 0.1, 0.3])), min_size=1, max_size=60),
       st.randoms(use_true_random=False))
def test_metrics_do_not_depend_on_row_order(rows, rnd):
    y, p = (np.array(v, dtype=float) for v in zip(*rows))
    shuffled = list(range(len(rows)))
    rnd.shuffle(shuffled)
    ys, ps = y[shuffled], p[shuffled]
    same = lambda a, b: (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b)  # noqa: E731
    assert same(lift_top_fraction(y, p), lift_top_fraction(ys, ps))
    assert same(expected_calibration_error(y, p, 10), expected_calibration_error(ys, ps, 10))
    pd.testing.assert_frame_equal(lift_by_decile(y, p), lift_by_decile(ys, ps))


def test_ece_by_hand_with_equal_mass_bins():
    # Two bins of five rows sorted by p: low (0.05, 0.1, 0.2, 0.3, 0.4) with positives 1/5,
    # high (0.5, 0.6, 0.7, 0.8, 0.9) with positives 2/5.
    low = abs(np.mean([0.05, 0.1, 0.2, 0.3, 0.4]) - 0.2)
    high = abs(np.mean([0.5, 0.6, 0.7, 0.8, 0.9]) - 0.4)
    assert expected_calibration_error(Y, P, 2) == pytest.approx(0.5 * low + 0.5 * high)
    assert expected_calibration_error(Y, P, 2) == pytest.approx(0.155)


def test_ece_is_zero_when_every_bin_matches():
    y = np.array([0, 1, 0, 0, 1, 1])
    p = np.array([0.5, 0.5, 0.0, 0.0, 1.0, 1.0])
    assert expected_calibration_error(y, p, 3) == pytest.approx(0.0)


def test_calibration_table_rows_per_bin():
    table = calibration_table(Y, P, 3)
    assert table["rows"].tolist() == [4, 3, 3]


def test_lift_by_decile_ranks_the_highest_first():
    table = lift_by_decile(Y, P)
    assert table["decile"].tolist() == list(range(1, 11))
    assert table.loc[0, "positive_rate"] == 1.0
    assert table.loc[0, "lift"] == pytest.approx(1 / 0.3)


def test_brier_by_hand():
    assert brier([1, 0], [0.75, 0.25]) == pytest.approx(0.0625)


# ------------------------------------------------------------------- calibration
def test_calibration_picks_isotonic_when_the_truth_is_a_step():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 20000)
    y = (rng.uniform(size=scores.size) < np.where(scores < 0.5, 0.05, 0.6)).astype(float)
    method, calibrator, briers = choose_calibration(scores, y, np.arange(scores.size) % 5, ["sigmoid", "isotonic"])
    assert method == "isotonic"
    assert briers["isotonic"] < briers["sigmoid"]
    assert calibrator.transform(np.array([0.25, 0.75])) == pytest.approx([0.05, 0.6], abs=0.02)


def test_calibration_picks_sigmoid_when_the_truth_is_a_sigmoid_of_few_rows():
    rng = np.random.default_rng(2)
    scores = rng.uniform(0.01, 0.99, 400)
    logit = np.log(scores / (1 - scores))
    y = (rng.uniform(size=scores.size) < 1 / (1 + np.exp(-(1.5 * logit - 1)))).astype(float)
    method, _, briers = choose_calibration(scores, y, np.arange(scores.size) % 5, ["isotonic", "sigmoid"])
    assert method == "sigmoid"
    assert briers["sigmoid"] < briers["isotonic"]


# -------------------------------------------------------------------- datasets
def test_tier_dataset_keeps_only_rows_the_tier_returned():
    labels = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "b"],
            "snapshot_date": [date(2024, 1, 31), date(2024, 1, 31), date(2024, 5, 31), date(2024, 9, 30)],
            "product": "mortgage",
            "label": [0, 1, 1, 0],
        }
    )
    features = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b"],
            "snapshot_date": [date(2024, 1, 31), date(2024, 5, 31), date(2024, 9, 30)],
            "tier": "personalised",
            "x": [1.0, 2.0, 3.0],
        }
    )
    split = Split(train=(date(2024, 1, 31),), valid=(date(2024, 5, 31),), test=(date(2024, 9, 30),))
    data = tier_dataset(labels, features, split)
    assert data[["customer_id", "split", "label", "x"]].values.tolist() == [
        ["a", "train", 0, 1.0],
        ["a", "valid", 1, 2.0],
        ["b", "test", 0, 3.0],
    ]


def test_fingerprint_ignores_row_order_and_sees_labels():
    rows = pd.DataFrame({"customer_id": ["a", "b"], "snapshot_date": [date(2024, 1, 31)] * 2, "label": [0, 1]})
    assert dataset_fingerprint(rows) == dataset_fingerprint(rows.iloc[::-1])
    assert dataset_fingerprint(rows) != dataset_fingerprint(rows.assign(label=[1, 1]))
    assert len(dataset_fingerprint(rows)) == 64


def test_feature_frame_refuses_a_missing_column():
    frame = FeatureFrame(["age_years", "gender"], ["gender"])
    with pytest.raises(MissingInputError, match="gender"):
        frame.fit(pd.DataFrame({"age_years": [30]}))


def test_feature_frame_orders_and_types_columns():
    frame = FeatureFrame(["age_years", "gender"], ["gender"]).fit(pd.DataFrame({"gender": ["f"], "age_years": [1]}))
    out = frame.transform(pd.DataFrame({"extra": [1, 2], "gender": ["f", None], "age_years": [30, None]}))
    assert list(out.columns) == ["age_years", "gender"]
    assert out["age_years"].dtype == np.float32
    assert np.isnan(out["age_years"].iloc[1])
    assert out["gender"].iloc[0] == "f" and pd.isna(out["gender"].iloc[1])


# --------------------------------------------------------------------- oracle
def test_oracle_combines_the_monthly_hazards_of_the_window():
    rows = pd.DataFrame({"customer_id": ["a", "b"], "snapshot_date": [date(2024, 1, 31), date(2024, 1, 31)]})
    hazard = pd.DataFrame(
        {
            "customer_id": ["a"] * 4 + ["b"],
            "snapshot_date": [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30), date(2024, 1, 31)],
            "p_start": [0.1, 0.2, 0.3, 0.5, 0.4],
        }
    )
    assert oracle_probability(rows, hazard, 0, 3) == pytest.approx([1 - 0.9 * 0.8 * 0.7, 0.4])
    assert oracle_probability(rows, hazard, 1, 3) == pytest.approx([1 - 0.8 * 0.7 * 0.5, 0.0])
    # At t only: the hazard of the state at t held over the window; later months unread.
    assert oracle_now_probability(rows, hazard, 3) == pytest.approx([1 - 0.9**3, 1 - 0.6**3])


# ----------------------------------------------------------------------- gate
def test_first_model_is_always_promoted():
    assert promotion_decision(0.6, None, 0.002) is True


def test_challenger_must_beat_the_champion_by_the_margin():
    assert promotion_decision(0.803, 0.800, 0.002) is True
    assert promotion_decision(0.801, 0.800, 0.002) is False
    assert promotion_decision(0.790, 0.800, 0.002) is False
    assert promotion_decision(0.800, 0.800, 0.0) is True


def test_unscorable_champion_is_replaced_and_unscorable_challenger_is_not_promoted():
    assert promotion_decision(0.7, float("nan"), 0.002) is True
    assert promotion_decision(float("nan"), 0.7, 0.002) is False


def test_isotonic_calibration_is_capped_at_the_rate_of_the_top_rows():
    from propensity.train import IsotonicCalibrator

    scores = np.linspace(0, 1, 1000)
    y = np.zeros(1000)
    y[-3:] = 1  # three positives at the very top would make isotonic predict 1.0
    y[::100] = 1
    calibrated = IsotonicCalibrator().fit(scores, y).transform(scores)
    assert calibrated.max() == pytest.approx(y[-100:].mean())  # 4 positives in the top 100
    assert np.all(np.diff(calibrated) >= 0)


# ------------------------------------------------------------------ encoding for scoring
def _fitted_calibrated_model():
    from sklearn.isotonic import IsotonicRegression

    from propensity.config import LightGBMParams
    from propensity.train import CalibratedModel, fit_lightgbm, lightgbm_pipeline

    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame(
        {
            "age_years": rng.integers(18, 80, n),
            "region": rng.choice(["Oslo", "Vest", None], n),
            "balance_nok": rng.normal(1000, 300, n),
            "sector": rng.choice(["finance", "health"], n),
        }
    )
    frame["label"] = (rng.random(n) < 0.2 + 0.3 * (frame["region"] == "Oslo")).astype(int)
    features, strings = ["age_years", "region", "balance_nok", "sector"], ["region", "sector"]
    pipeline = lightgbm_pipeline(features, strings, LightGBMParams(n_estimators=20, min_child_samples=5), n_jobs=1, seed=0)
    fit_lightgbm(pipeline, frame.iloc[:300], frame.iloc[300:], early_stopping_rounds=5)
    calibrator = IsotonicRegression(out_of_bounds="clip").fit(pipeline.predict_proba(frame)[:, 1], frame["label"])
    calibrator.method = "isotonic"
    return CalibratedModel(pipeline, calibrator, features, strings)


MODEL = None
rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 120)),
        st.sampled_from(["Oslo", "Vest", "Nord", None]),  # "Nord" was never seen in training
        st.one_of(st.none(), st.floats(-1e6, 1e6)),
        st.sampled_from(["finance", "health", "retail", None]),
    ),
    min_size=1,
    max_size=30,
)


@hsettings(max_examples=60, deadline=None, derandomize=True)
@given(rows=rows)
def test_encode_matrix_equals_the_pipelines_own_encoding(rows):
    global MODEL
    MODEL = MODEL or _fitted_calibrated_model()
    frame = pd.DataFrame(rows, columns=["age_years", "region", "balance_nok", "sector"]).assign(extra=1)
    expected = MODEL.encode(frame).to_numpy()
    matrix = MODEL.encode_matrix(frame)
    assert matrix.dtype == expected.dtype == np.float32 and matrix.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_array_equal(MODEL.probability_of_encoded(matrix), MODEL.probability(frame))


def test_oracle_reads_the_hazards_of_every_month_of_the_last_test_rows_window(tmp_path):
    from propensity.config import load_settings
    from propensity.train import TRUTH_FILE, read_hazard
    from tests.conftest import ROOT

    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    months = [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30), date(2024, 5, 31)]
    settings.truth_dir.mkdir(parents=True)
    pd.DataFrame(
        {"customer_id": "a", "snapshot_date": months, "product": "mortgage", "p_start": [0.1, 0.2, 0.3, 0.4, 0.5]}
    ).to_parquet(settings.truth_dir / TRUTH_FILE)
    test_window = months[:2]
    hazard = read_hazard(settings, "mortgage", test_window, months_after=2)  # gap 0, horizon 3
    rows = pd.DataFrame({"customer_id": ["a"], "snapshot_date": [months[1]]})
    assert oracle_probability(rows, hazard, 0, 3) == pytest.approx([1 - 0.8 * 0.7 * 0.6])
