from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propensity.config import load_settings
from propensity.errors import MissingInputError
from propensity.score import _ranking, _sorted_codes, rank_within_product, resolve_score_date
from tests.conftest import ROOT


def test_rank_and_decile_within_product_break_ties_by_customer():
    scores = pd.DataFrame(
        {
            "customer_id": [f"C{i:02d}" for i in range(20)] + ["X1", "X2"],
            "product": ["mortgage"] * 20 + ["bsu"] * 2,
            "probability": [i / 100 for i in range(20)] + [0.5, 0.5],
        }
    )
    ranked = rank_within_product(scores)
    mortgage = ranked[ranked["product"] == "mortgage"]
    assert mortgage["customer_id"].iloc[0] == "C19" and mortgage["rank"].iloc[0] == 1
    assert mortgage["decile"].tolist() == [d for d in range(1, 11) for _ in range(2)]
    bsu = ranked[ranked["product"] == "bsu"]
    assert bsu[["customer_id", "rank", "decile"]].values.tolist() == [["X1", 1, 5], ["X2", 2, 5]]  # a tie shares a decile


def test_equal_probabilities_share_the_decile_of_their_first_rank():
    scores = pd.DataFrame({"customer_id": [f"C{i:02d}" for i in range(10)], "product": "bsu",
                           "probability": [0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1, 0.0]})
    ranked = rank_within_product(scores)
    assert ranked["rank"].tolist() == list(range(1, 11))  # ranks stay unique (ties by customer_id)
    # ranks 2..6 tie: decile 2; ranks 7..8 tie: decile 7
    assert ranked["decile"].tolist() == [1, 2, 2, 2, 2, 2, 7, 7, 9, 10]
    # A product whose scores all tie is all in the top decile (never an empty one).
    assert rank_within_product(scores.assign(probability=0.3))["decile"].tolist() == [1] * 10


@pytest.fixture()
def with_manifest(tmp_path):
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    settings.features_dir.mkdir(parents=True)
    (settings.features_dir / "manifest.json").write_text(json.dumps({"snapshots": ["2025-05-31", "2025-06-30"]}))
    return settings


def test_score_date_defaults_to_newest_snapshot(with_manifest):
    assert resolve_score_date(with_manifest, None) == date(2025, 6, 30)


def test_score_date_past_newest_snapshot_is_refused_as_stale(with_manifest):
    with pytest.raises(MissingInputError, match="stale features: the newest feature snapshot is 2025-06-30"):
        resolve_score_date(with_manifest, date(2025, 7, 31))


def test_score_date_without_a_snapshot_is_refused(with_manifest):
    with pytest.raises(MissingInputError, match="no feature snapshot for 2025-06-15"):
        resolve_score_date(with_manifest, date(2025, 6, 15))


def test_no_feature_store_is_a_clear_error(tmp_path):
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    with pytest.raises(MissingInputError, match="run `propensity features build`"):
        resolve_score_date(settings, None)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30), st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])), max_size=60))
def test_ranking_orders_by_product_then_probability_then_customer(rows):
    rows = list({(p, c): q for p, c, q in rows}.items())  # one row per product and customer
    product = np.array([p for (p, _), _ in rows], dtype=np.int64)
    customer = np.array([c for (_, c), _ in rows], dtype=np.int64)
    probability = np.array([q for _, q in rows], dtype=np.float64)
    order, rank, decile = _ranking(product, probability, customer)
    assert np.array_equal(order, np.lexsort((customer, -probability, product)))
    for p in np.unique(product):
        ranks = rank[product[order] == p]
        assert ranks.tolist() == list(range(1, len(ranks) + 1))
    assert ((decile >= 1) & (decile <= 10)).all()
    for p in np.unique(product):  # equal probabilities of a product share one decile
        mine = product[order] == p
        by_probability = pd.Series(decile[mine]).groupby(probability[order][mine]).nunique()
        assert (by_probability == 1).all()


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(["c", "a", "c", "b"]),
        pd.Series(pd.Categorical(["c", "a", "c", "b"], categories=["z", "c", "b", "a", "unused"])),
        pd.Series(pd.Categorical(["c", "a", "c", "b"], categories=["a", "b", "c", "d"])),
    ],
)
def test_sorted_codes_number_the_values_present_in_sorted_order(values):
    codes, categories = _sorted_codes(values)
    assert categories.tolist() == ["a", "b", "c"] and codes.tolist() == [2, 0, 2, 1]
