"""Feature tables on hand-written consent histories (real DuckDB, the real SQL)."""

from __future__ import annotations


import pandas as pd
import pytest
import yaml

from propensity import contract
from propensity.config import load_settings
from propensity.features import build_offline_store, personalised_only_columns, views_for_tier
from tests.bank import TinyBank
from tests.conftest import ROOT

MONTHS = ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]


def history() -> TinyBank:
    bank = TinyBank()
    # P: consent granted mid-February, withdrawn mid-March, re-granted in April.
    bank.customer("P").consent("P", "2024-02-15T09:00:00Z").consent("P", "2024-03-15T09:00:00Z", granted=False)
    bank.consent("P", "2024-04-02T09:00:00Z")
    # O: personalised, objects to profiling in February.
    bank.customer("O").consent("O", "2023-06-01T00:00:00Z").reservation("O", "2024-02-10T00:00:00Z")
    # G: group sharing from March only; holds home insurance since January.
    bank.customer("G").consent("G", "2024-03-01T00:00:00Z", purpose="group_data_sharing")
    bank.agreement("G", "home_insurance", "2024-01-10", company="insurance")
    # N: joins in March, leaves at the end of April (closed_at 2024-04-30: not a customer that day).
    bank.customer("N", since="2024-03-05", closed="2024-04-30").consent("N", "2024-03-05T00:00:00Z")
    for cid in "POGN":
        bank.employment(cid, "2023-01-01").demographics(cid, "2023-01-01")
        for month in MONTHS:
            if cid != "N" or month >= "2024-03-31":
                # G's current balance grows by 1,000 a month; the others' stays at 1,000.
                bank.balance(cid, month, "current", 1000.0 * (MONTHS.index(month) + 1 if cid == "G" else 1))
                bank.transaction(cid, month[:8] + "10T12:00:00Z", -200.0, merchant_category="travel")
                bank.transaction(cid, month[:8] + "25T12:00:00Z", 30000.0, kind="salary", merchant_category=None)
    # P moves money out in February: one large transfer, one just below the threshold.
    bank.transaction("P", "2024-02-12T12:00:00Z", -5000.0, kind="transfer", merchant_category=None)
    bank.transaction("P", "2024-02-13T12:00:00Z", -4999.0, kind="transfer", merchant_category=None)
    return bank


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data = tmp_path_factory.mktemp("features")
    history().write(data / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    summary = build_offline_store(settings, raw.relation)
    return settings, summary


def view(settings, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(settings.features_dir / f"{name}.parquet")
    frame["month"] = frame["event_timestamp"].dt.strftime("%Y-%m")
    return frame


def months_of(frame: pd.DataFrame, cid: str) -> list[str]:
    return frame.loc[frame["customer_id"] == cid, "month"].tolist()


def test_snapshots_cover_every_complete_month(built):
    _, summary = built
    assert [d.isoformat() for d in summary.snapshots] == MONTHS


def test_transactions_exist_only_for_personalised_customer_snapshots(built):
    settings, _ = built
    tx = view(settings, "transactions")
    assert months_of(tx, "P") == ["2024-02", "2024-04"]  # granted mid-Feb, withdrawn mid-Mar, re-granted Apr
    assert months_of(tx, "O") == ["2024-01"]  # objected in February
    assert months_of(tx, "G") == []  # never consented
    assert months_of(tx, "N") == ["2024-03"]  # a customer in March only


def test_personalised_snapshot_aggregates_its_whole_lookback(built):
    settings, _ = built
    tx = view(settings, "transactions").set_index(["customer_id", "month"])
    assert tx.loc[("P", "2024-02"), "spend_travel_3m_nok"] == 400.0
    assert tx.loc[("P", "2024-02"), "spend_travel_1m_nok"] == 200.0
    assert tx.loc[("P", "2024-04"), "salary_inflow_3m_nok"] == 90000.0


def test_large_transfers_count_in_their_three_month_window(built):
    settings, _ = built
    tx = view(settings, "transactions").set_index(["customer_id", "month"])
    assert tx.loc[("P", "2024-02"), "large_transfers_out_3m"] == 1  # -5,000 counts, -4,999 does not
    assert tx.loc[("P", "2024-04"), "large_transfers_out_3m"] == 1  # February is in April's window
    assert tx.loc[("P", "2024-04"), "transfers_out_3m_nok"] == 9999.0


def test_balance_averages_and_changes_read_the_months_before(built):
    settings, _ = built
    balance = view(settings, "account_balance").set_index(["customer_id", "month"])
    assert balance.loc[("G", "2024-01"), "balance_current_avg_12m_nok"] == 1000.0
    assert balance.loc[("G", "2024-02"), "balance_current_avg_12m_nok"] == 1500.0
    assert balance.loc[("G", "2024-04"), "balance_current_avg_12m_nok"] == 2500.0
    assert balance.loc[("G", "2024-04"), "balance_current_change_3m_nok"] == 3000.0
    assert pd.isna(balance.loc[("G", "2024-03"), "balance_current_change_3m_nok"])  # no December balance
    # N joined in March: its average reads only the months it has.
    assert balance.loc[("N", "2024-03"), "balance_current_avg_12m_nok"] == 1000.0


def test_employer_follows_the_same_gate_as_transactions(built):
    settings, _ = built
    assert months_of(view(settings, "employer"), "P") == ["2024-02", "2024-04"]


def test_objecting_customer_has_no_row_in_any_view_from_the_objection(built):
    settings, _ = built
    for spec in views_for_tier("personalised", settings.policy, settings.catalogue):
        months = months_of(view(settings, spec.name), "O")
        assert all(m < "2024-02" for m in months), spec.name


def test_basic_views_exist_for_basic_and_personalised_snapshots(built):
    settings, _ = built
    personal = view(settings, "personal")
    assert months_of(personal, "G") == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert months_of(personal, "P") == ["2024-01", "2024-02", "2024-03", "2024-04"]


def test_non_customers_have_no_rows(built):
    settings, _ = built
    assert months_of(view(settings, "personal"), "N") == ["2024-03"]  # joined in March, closed on 30 April


def test_group_company_data_only_with_group_sharing(built):
    settings, _ = built
    group = view(settings, "group_agreements")
    assert months_of(group, "G") == ["2024-03", "2024-04"]
    assert group.loc[group["customer_id"] == "G", "holds_home_insurance"].tolist() == [1, 1]
    assert months_of(group, "P") == []
    agreements = view(settings, "agreements")
    assert "holds_home_insurance" not in agreements.columns


def test_group_sharing_off_means_no_insurance_agreement_counted(built):
    settings, _ = built
    agreements = view(settings, "agreements").set_index(["customer_id", "month"])
    assert agreements.loc[("G", "2024-02"), "n_bank_products"] == 0


def test_personalised_only_columns_follow_the_policy(settings):
    cols = personalised_only_columns(settings.policy, settings.catalogue)
    assert "salary_inflow_3m_nok" in cols and "employer_sector" in cols and "age_years" not in cols


def test_policy_moving_employer_to_basic_computes_employer_for_basic_rows(tmp_path):
    document = yaml.safe_load((ROOT / "conf" / "policy.yaml").read_text())
    document["categories"]["employer"]["tiers"] = ["personalised", "basic"]
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(document))
    history().write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path, policy_file=tmp_path / "policy.yaml")
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    assert months_of(view(settings, "employer"), "G") == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert months_of(view(settings, "transactions"), "G") == []
    assert "employer_sector" not in personalised_only_columns(settings.policy, settings.catalogue)


def test_failed_build_leaves_previous_store_intact(built, tmp_path):
    settings, _ = built
    before = sorted(p.name for p in settings.features_dir.iterdir())
    broken = settings.with_overrides(raw_dir=tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception):
        build_offline_store(broken, lambda t: f"read_parquet('{tmp_path}/empty/{t}.parquet')")
    assert sorted(p.name for p in settings.features_dir.iterdir()) == before


def test_card_payments_are_counted_over_twenty_four_months(tmp_path):
    bank = TinyBank()
    bank.customer("C", since="2021-01-01").consent("C", "2021-01-01T00:00:00Z")
    bank.employment("C", "2021-01-01").demographics("C", "2021-01-01")
    bank.transaction("C", "2022-04-20T12:00:00Z", -100.0, merchant_category="restaurants")  # 25 months back: out
    bank.transaction("C", "2022-05-03T12:00:00Z", -100.0, merchant_category="restaurants")  # first month of the window
    bank.transaction("C", "2023-01-10T12:00:00Z", -100.0, merchant_category="restaurants")
    bank.transaction("C", "2024-04-30T21:00:00Z", -100.0, merchant_category="restaurants")
    bank.transaction("C", "2024-03-01T12:00:00Z", -100.0, kind="transfer", merchant_category="restaurants")  # not a card payment
    bank.transaction("C", "2024-03-02T12:00:00Z", -100.0, merchant_category=None)  # counted as "other"
    bank.customer("D", since="2021-01-01").consent("D", "2021-01-01T00:00:00Z")
    bank.employment("D", "2021-01-01").demographics("D", "2021-01-01")
    bank.transaction("D", "2024-04-02T12:00:00Z", -100.0, kind="transfer")
    bank.write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    frame = view(settings, "transactions")
    tx = frame[frame["customer_id"] == "C"].set_index("month")
    assert tx.loc["2024-04", "card_payments_restaurants_24m"] == 3
    assert tx.loc["2024-04", "card_payments_other_24m"] == 1
    assert tx.loc["2024-04", "spend_restaurants_3m_nok"] == 200.0  # amounts count transfers too; payments only cards
    assert tx.loc["2023-04", "card_payments_restaurants_24m"] == 3  # April 2022 to January 2023
    # The mix: each category's share of the card payments in the window.
    assert tx.loc["2024-04", "card_payments_24m"] == 4
    assert tx.loc["2024-04", "card_payment_share_restaurants_24m"] == pytest.approx(0.75)
    assert tx.loc["2024-04", "card_payment_share_other_24m"] == pytest.approx(0.25)
    assert tx.loc["2024-04", "card_payment_share_travel_24m"] == 0.0
    only_transfers = frame[frame["customer_id"] == "D"].set_index("month")
    assert only_transfers.loc["2024-04", "card_payments_24m"] == 0
    assert pd.isna(only_transfers.loc["2024-04", "card_payment_share_restaurants_24m"])  # no card payment: no mix


def test_a_window_longer_than_its_lookback_is_refused():
    from propensity.features import _monthly_windowed, _sum

    with pytest.raises(ValueError, match="24-month window over a 12-month lookback"):
        _monthly_windowed("SELECT 1", 12, "SELECT 1", ["COUNT(*) AS n"], [f"{_sum('n', 'w24', 'BIGINT')} AS n_24m"])
