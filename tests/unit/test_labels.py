"""Tests of ``propensity.labels`` on hand-written agreement histories (TinyBank)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from propensity.config import Catalogue
from propensity.contract import validate
from propensity.duck import connect
from propensity.labels import eligible_not_holding, label_frame, labelled_snapshots
from propensity.snapshots import month_ends
from tests.bank import TinyBank

SNAPSHOTS = month_ends(date(2024, 1, 1), date(2024, 12, 31))
DATA_END = date(2024, 12, 31)


def _bank() -> TinyBank:
    bank = TinyBank()
    # A: mortgage starts exactly at the horizon end of the 2024-01-31 snapshot.
    bank.customer("A", birth="1985-06-15").agreement("A", "mortgage", "2024-04-30")
    # B: mortgage starts one day after that horizon end.
    bank.customer("B", birth="1985-06-15").agreement("B", "mortgage", "2024-05-01")
    # C: already holds a mortgage (2020..), ended 2024-06-30: eligible again from then.
    bank.customer("C", birth="1985-06-15").agreement("C", "mortgage", "2020-01-01", end="2024-06-30")
    # D: 14 years old: not eligible for a mortgage (min_age 20) nor anything else.
    bank.customer("D", birth="2010-01-01")
    # E: turns 34 on 2024-06-15: eligible for BSU (18..33) up to 2024-05-31.
    bank.customer("E", birth="1990-06-15")
    # F (dnb) and G (sbanken) share group data from 2023: life insurance is dnb only.
    bank.customer("F", birth="1980-01-01", brand="dnb").consent("F", "2023-01-01T00:00:00", "group_data_sharing")
    bank.customer("G", birth="1980-01-01", brand="sbanken").consent("G", "2023-01-01T00:00:00", "group_data_sharing")
    # H: starts home insurance in 2024-03 but shares group data only from 2024-02-15.
    bank.customer("H", birth="1980-01-01").consent("H", "2024-02-15T12:00:00", "group_data_sharing")
    bank.agreement("H", "home_insurance", "2024-03-10", company="insurance")
    # I: holds home insurance without sharing; J: holds it with sharing.
    bank.customer("I", birth="1980-01-01").agreement("I", "home_insurance", "2022-01-01", company="insurance")
    bank.customer("J", birth="1980-01-01").consent("J", "2023-01-01T00:00:00", "group_data_sharing")
    bank.agreement("J", "home_insurance", "2022-01-01", company="insurance")
    # M: shares group data from 2023, withdraws sharing on 2024-05-05 and starts home
    # insurance on 2024-06-15 (group-company data from a time without sharing).
    bank.customer("M", birth="1980-01-01").consent("M", "2023-01-01T00:00:00", "group_data_sharing")
    bank.consent("M", "2024-05-05T12:00:00", "group_data_sharing", granted=False)
    bank.agreement("M", "home_insurance", "2024-06-15", company="insurance")
    # K: a customer only from 2024-06-10; L: closed on 2024-03-31.
    bank.customer("K", birth="1980-01-01", since="2024-06-10")
    bank.customer("L", birth="1980-01-01", closed="2024-03-31")
    return bank


@pytest.fixture(scope="module")
def raw(tmp_path_factory, settings):
    folder = _bank().write(tmp_path_factory.mktemp("labels") / "raw")
    return validate(folder, settings.policy, settings.catalogue)


@pytest.fixture()
def con():
    connection = connect()
    yield connection
    connection.close()


def _labels(con, raw, settings, products, catalogue=None) -> pd.DataFrame:
    return label_frame(con, raw.relation, catalogue or settings.catalogue, settings.policy, SNAPSHOTS, DATA_END, products)


def _label(frame: pd.DataFrame, customer: str, snapshot: str, product: str = "mortgage"):
    rows = frame[(frame["customer_id"] == customer) & (frame["snapshot_date"] == date.fromisoformat(snapshot)) & (frame["product"] == product)]
    return None if rows.empty else int(rows["label"].iloc[0])


def test_start_on_the_horizon_end_is_positive(con, raw, settings):
    frame = _labels(con, raw, settings, ["mortgage"])
    assert _label(frame, "A", "2024-01-31") == 1
    assert _label(frame, "A", "2024-03-31") == 1


def test_start_after_the_horizon_end_is_negative(con, raw, settings):
    frame = _labels(con, raw, settings, ["mortgage"])
    assert _label(frame, "B", "2024-01-31") == 0
    assert _label(frame, "B", "2024-02-29") == 1


def test_start_exactly_at_the_snapshot_means_holding_so_no_row(con, raw, settings):
    frame = _labels(con, raw, settings, ["mortgage"])
    assert _label(frame, "A", "2024-04-30") is None
    assert _label(frame, "A", "2024-05-31") is None


def test_window_start_is_exclusive_with_a_gap(con, raw, settings):
    # gap 1 month: the window of 2024-03-31 is (2024-04-30, 2024-07-31].
    spec = settings.catalogue.model_dump()
    spec["products"]["mortgage"]["label"] = {"gap_months": 1, "horizon_months": 3}
    catalogue = Catalogue.model_validate(spec)
    frame = _labels(con, raw, settings, ["mortgage"], catalogue)
    assert _label(frame, "A", "2024-03-31") == 0  # starts 2024-04-30 = t + gap: outside
    assert _label(frame, "A", "2024-02-29") == 1  # window (2024-03-31, 2024-06-30]
    assert _label(frame, "A", "2024-01-31") == 1  # window (2024-02-29, 2024-05-31]
    assert frame["snapshot_date"].max() == date(2024, 8, 31)  # 08-31 + 4 months = 12-31


def test_holding_at_the_snapshot_gives_no_row_until_it_ends(con, raw, settings):
    frame = _labels(con, raw, settings, ["mortgage"])
    c_dates = sorted(frame.loc[frame["customer_id"] == "C", "snapshot_date"])
    assert c_dates == [date(2024, 6, 30), date(2024, 7, 31), date(2024, 8, 31), date(2024, 9, 30)]
    assert _label(frame, "C", "2024-06-30") == 0


def test_ineligible_age_gives_no_row(con, raw, settings):
    frame = _labels(con, raw, settings, ["mortgage", "bsu"])
    assert "D" not in set(frame["customer_id"])
    e_bsu = sorted(frame.loc[(frame["customer_id"] == "E") & (frame["product"] == "bsu"), "snapshot_date"])
    assert e_bsu == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30), date(2024, 5, 31)]


def test_brand_rule_keeps_only_listed_brands(con, raw, settings):
    frame = _labels(con, raw, settings, ["life_insurance"])
    assert "F" in set(frame["customer_id"])
    assert "G" not in set(frame["customer_id"])
    assert (frame["customer_id"] == "F").sum() == 9  # 2024-01-31 .. 2024-09-30


def test_group_product_rows_only_with_group_data_sharing_at_the_snapshot(con, raw, settings):
    frame = _labels(con, raw, settings, ["home_insurance"])
    h = frame[frame["customer_id"] == "H"].sort_values("snapshot_date")
    # No sharing at 2024-01-31; sharing from 2024-02-15; holds from 2024-03-10.
    assert h["snapshot_date"].tolist() == [date(2024, 2, 29)]
    assert h["label"].tolist() == [1]
    assert "I" not in set(frame["customer_id"])  # no sharing: nothing known, no label
    assert "J" not in set(frame["customer_id"])  # sharing and holding: no label


def test_group_product_rows_only_with_group_data_sharing_over_the_whole_window(con, raw, settings):
    frame = _labels(con, raw, settings, ["home_insurance"])
    m = frame[frame["customer_id"] == "M"].sort_values("snapshot_date")
    # Sharing withdrawn on 2024-05-05: only the 2024-01-31 window (to 2024-04-30) passes
    # wholly under sharing; the start on 2024-06-15 is never read.
    assert m["snapshot_date"].tolist() == [date(2024, 1, 31)]
    assert m["label"].tolist() == [0]


def test_snapshots_whose_window_passes_the_data_end_are_unlabelled(con, raw, settings):
    frame = _labels(con, raw, settings, ["mortgage"])
    assert frame["snapshot_date"].max() == date(2024, 9, 30)
    assert labelled_snapshots(SNAPSHOTS, 0, 3, DATA_END)[-1] == date(2024, 9, 30)
    assert len(labelled_snapshots(SNAPSHOTS, 0, 3, DATA_END)) == 9


def test_only_customers_at_the_snapshot_are_labelled(con, raw, settings):
    frame = _labels(con, raw, settings, ["mortgage"])
    assert sorted(frame.loc[frame["customer_id"] == "K", "snapshot_date"])[0] == date(2024, 6, 30)
    assert sorted(frame.loc[frame["customer_id"] == "L", "snapshot_date"]) == [date(2024, 1, 31), date(2024, 2, 29)]


def test_labels_are_zero_or_one_and_sorted(con, raw, settings):
    frame = _labels(con, raw, settings, ["mortgage", "bsu"])
    assert list(frame.columns) == ["customer_id", "snapshot_date", "product", "label"]
    assert set(frame["label"].unique()) <= {0, 1}
    assert frame.equals(frame.sort_values(["product", "snapshot_date", "customer_id"]).reset_index(drop=True))


def test_eligible_not_holding_scores_group_products_without_sharing(con, raw, settings):
    pairs = eligible_not_holding(con, raw.relation, settings.catalogue, settings.policy, date(2024, 6, 30), ["home_insurance", "mortgage"])
    home = set(pairs.loc[pairs["product"] == "home_insurance", "customer_id"])
    assert "I" in home  # holds it, but without sharing we cannot know: scored
    assert "J" not in home  # holds it and shares: not scored
    assert "H" not in home  # holds it since 2024-03-10 and shares
    mortgage = set(pairs.loc[pairs["product"] == "mortgage", "customer_id"])
    assert mortgage == {"C", "E", "F", "G", "H", "I", "J", "K", "M"}  # A and B hold, D too young, L closed


def test_eligible_not_holding_reports_sharing(con, raw, settings):
    pairs = eligible_not_holding(con, raw.relation, settings.catalogue, settings.policy, date(2024, 6, 30), ["mortgage"])
    sharing = dict(zip(pairs["customer_id"], pairs["group_data_sharing"]))
    assert bool(sharing["F"]) is True
    assert bool(sharing["C"]) is False
