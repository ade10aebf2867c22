"""Tests of ``propensity.synth``: contract shape, time order, truth coverage, canary, writing."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from propensity import synth
from propensity.schema import ARROW_TYPES, CONTACT_TOPICS, MERCHANT_CATEGORIES, TABLES, TOPICS

START = date(2024, 1, 1)
TIME_COLUMNS = {name: t.time_column for name, t in TABLES.items() if t.time_column and "customer_id" in t.column_names}


def _generate(settings, customers: int, months: int, seed: int) -> synth.SyntheticBank:
    return synth.generate_bank(customers, months, START, seed, 8.0, settings.policy, settings.catalogue)


@pytest.fixture(scope="module")
def bank(settings) -> synth.SyntheticBank:
    return _generate(settings, 300, 8, seed=7)


@pytest.fixture(scope="module")
def mid_bank(settings) -> synth.SyntheticBank:
    """Large enough for shares and correlations (2000 customers x 6 months)."""
    return _generate(settings, 2000, 6, seed=11)


@pytest.fixture(scope="module")
def frames(bank) -> dict[str, pd.DataFrame]:
    return {name: t.to_pandas() for name, t in {**bank.tables, **bank.truth}.items()}


@pytest.fixture(scope="module")
def mid_frames(mid_bank) -> dict[str, pd.DataFrame]:
    return {name: t.to_pandas() for name, t in {**mid_bank.tables, **mid_bank.truth}.items()}


def _day(series: pd.Series) -> pd.Series:
    """Dates and UTC timestamps as calendar days (datetime64[ns], midnight)."""
    s = pd.to_datetime(series, utc=True)
    return s.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()


def _month_ends(months: int) -> list[pd.Timestamp]:
    return [pd.Timestamp(START) + pd.offsets.MonthEnd(k + 1) for k in range(months)]


# ---------------------------------------------------------------- determinism
def test_same_seed_gives_identical_tables(settings, bank):
    again = _generate(settings, 300, 8, seed=7)
    for name in (*TABLES, *synth.TRUTH_TABLES):
        first = bank.tables.get(name, bank.truth.get(name))
        second = again.tables.get(name, again.truth.get(name))
        assert first.equals(second), name


def test_different_seed_gives_different_tables(settings, bank):
    other = _generate(settings, 300, 8, seed=8)
    assert not other.tables["transactions"].equals(bank.tables["transactions"])
    assert not other.tables["customers"].equals(bank.tables["customers"])
    assert not other.truth["product_hazard"].equals(bank.truth["product_hazard"])


# ---------------------------------------------------------------- the contract
def test_bank_has_exactly_the_eleven_contract_tables(bank):
    assert list(bank.tables) == list(TABLES)
    assert set(bank.truth) == {"product_hazard", "latent_events"}


@pytest.mark.parametrize("name", list(TABLES))
def test_table_has_contract_columns_in_order_with_arrow_types(bank, name):
    spec = TABLES[name]
    schema = bank.tables[name].schema
    assert schema.names == list(spec.column_names)
    assert [f.type for f in schema] == [ARROW_TYPES[c.type] for c in spec.columns]


@pytest.mark.parametrize("name", list(TABLES))
def test_required_columns_hold_no_nulls(bank, name):
    table = bank.tables[name]
    assert table.num_rows > 0
    for col in TABLES[name].columns:
        if not col.nullable:
            assert table.column(col.name).null_count == 0, f"{name}.{col.name}"


@pytest.mark.parametrize("name", list(TABLES))
def test_enum_columns_hold_only_declared_values(settings, frames, name):
    sources = {"consents": settings.policy.consents, "reservations": settings.policy.reservations,
               "products": settings.catalogue.ids}
    for col in TABLES[name].columns:
        allowed = col.values if col.values is not None else sources.get(col.values_from)
        if allowed is not None:
            found = set(frames[name][col.name].dropna())
            assert found <= set(allowed), f"{name}.{col.name}: {found - set(allowed)}"


def test_topics_and_merchant_categories_come_from_the_schema_lists(frames):
    assert set(frames["digital_events"]["topic"].dropna()) <= set(TOPICS)
    assert set(frames["transactions"]["merchant_category"].dropna()) <= set(MERCHANT_CATEGORIES)
    assert set(frames["contact_history"]["topic"]) <= set(CONTACT_TOPICS)


@pytest.mark.parametrize("name", [n for n, t in TABLES.items() if t.key])
def test_keys_are_unique(frames, name):
    key = list(TABLES[name].key)
    assert not frames[name].duplicated(key).any()


def test_customer_ids_are_c_and_seven_digits(frames):
    ids = frames["customers"]["customer_id"]
    assert ids.iloc[0] == "C0000001"
    assert ids.iloc[-1] == "C0000300"
    assert ids.str.fullmatch(r"C\d{7}").all()


def test_agreement_company_is_the_catalogue_company(settings, frames):
    a = frames["agreements"]
    expected = a["product"].map({p: settings.catalogue.products[p].company for p in settings.catalogue.ids})
    assert (a["company"] == expected).all()


# ---------------------------------------------------------------- time order
@pytest.mark.parametrize("name", sorted(TIME_COLUMNS))
def test_no_row_before_customer_since_or_after_closed_at(frames, name):
    customers = frames["customers"].set_index("customer_id")
    rows = frames[name]
    day = _day(rows[TIME_COLUMNS[name]])
    since = _day(rows["customer_id"].map(customers["customer_since"]))
    closed = _day(rows["customer_id"].map(customers["closed_at"]))
    assert (day >= since).all()
    assert not (day >= closed).any()  # NaT compares False: open customers pass


def test_agreements_of_leaving_customers_end_by_closed_at(frames):
    customers = frames["customers"].set_index("customer_id")
    a = frames["agreements"]
    closed = _day(a["customer_id"].map(customers["closed_at"]))
    leaving = closed.notna()
    assert leaving.any()
    assert a.loc[leaving, "end_date"].notna().all()
    assert (_day(a.loc[leaving, "end_date"]) <= closed[leaving]).all()
    assert (_day(a["end_date"].dropna()) > _day(a.loc[a["end_date"].notna(), "start_date"])).all()


def test_some_customers_join_during_the_period_and_some_leave(mid_frames):
    c = mid_frames["customers"]
    joined = (_day(c["customer_since"]) >= pd.Timestamp(START)).mean()
    left = c["closed_at"].notna().mean()
    assert 0.05 < joined < 0.2
    assert 0.005 < left < 0.05


def _age(birth: pd.Series, at: pd.Timestamp) -> pd.Series:
    before_birthday = (birth.dt.month > at.month) | ((birth.dt.month == at.month) & (birth.dt.day > at.day))
    return at.year - birth.dt.year - before_birthday.astype(int)


def test_ages_stay_between_18_and_90_over_the_period(frames):
    birth = _day(frames["customers"]["birth_date"])
    assert _age(birth, pd.Timestamp(START)).min() >= 18
    assert _age(birth, _month_ends(8)[-1]).max() <= 90


def test_balances_are_dated_at_month_ends(frames):
    as_of = _day(frames["balances"]["as_of_date"])
    assert set(as_of.unique()) == set(_month_ends(8))


def test_household_size_is_at_least_one(frames):
    assert frames["demographics"]["household_size"].dropna().min() >= 1


def test_salary_rows_are_positive_without_merchant_category(frames):
    salary = frames["transactions"][frames["transactions"]["kind"] == "salary"]
    assert len(salary) > 0
    assert (salary["amount"] > 0).all()
    assert salary["merchant_category"].isna().all()


def test_card_rows_are_negative(frames):
    card = frames["transactions"][frames["transactions"]["kind"] == "card"]
    assert (card["amount"] < 0).all()


def test_campaign_responded_at_is_null_exactly_when_response_is_none(frames):
    log = frames["campaign_log"]
    assert len(log) > 0
    assert ((log["response"] == "none") == log["responded_at"].isna()).all()
    answered = log["responded_at"].notna()
    assert (log.loc[answered, "responded_at"] >= log.loc[answered, "sent_at"]).all()


def test_group_company_balances_and_both_brands_exist(mid_frames):
    bal = mid_frames["balances"]
    assert {"insurance", "asset_management"} <= set(bal["company"])
    assert {"funds", "pension"} <= set(bal.loc[bal["company"] != "bank", "account_type"])
    sbanken = (mid_frames["customers"]["brand"] == "sbanken").mean()
    assert 0.15 < sbanken < 0.25


def test_data_quality_nulls_are_present_at_a_few_percent(mid_frames):
    c = mid_frames["customers"]
    assert 0.01 < c["gender"].isna().mean() < 0.04
    assert 0.03 < c["email"].isna().mean() < 0.08
    assert 0.03 < c["phone"].isna().mean() < 0.08
    card = mid_frames["transactions"].query("kind == 'card'")
    assert 0.02 < card["merchant_category"].isna().mean() < 0.045


def test_transaction_volume_is_about_transactions_per_month(mid_frames):
    tx = mid_frames["transactions"]
    active_months = mid_frames["product_hazard"].groupby(["customer_id", "snapshot_date"]).ngroups
    per_month = (tx["kind"] != "salary").sum() / active_months
    assert 7.0 < per_month < 11.0


# ---------------------------------------------------------------- truth
def test_truth_covers_every_active_customer_month_and_product(settings, frames):
    c = frames["customers"]
    since, closed = _day(c["customer_since"]), _day(c["closed_at"])
    expected = set()
    for t in _month_ends(8):
        active = c.loc[(since <= t) & ~(closed <= t), "customer_id"]
        expected |= {(cid, t, p) for cid in active for p in settings.catalogue.ids}
    h = frames["product_hazard"]
    got = set(zip(h["customer_id"], _day(h["snapshot_date"]), h["product"]))
    assert len(h) == len(got) == len(expected)
    assert got == expected


def test_truth_hazard_is_a_probability_and_zero_where_ineligible(frames):
    h = frames["product_hazard"].merge(frames["customers"][["customer_id", "birth_date", "brand"]], on="customer_id")
    assert h["p_start"].between(0.0, 0.6).all()
    age = (_day(h["snapshot_date"]) - _day(h["birth_date"])).dt.days / 365.25
    assert (h.loc[(h["product"] == "bsu") & (age > 34), "p_start"] == 0.0).all()
    assert (h.loc[(h["product"] == "life_insurance") & (h["brand"] == "sbanken"), "p_start"] == 0.0).all()
    assert (h.loc[h["product"] == "savings_account", "p_start"] > 0.0).all()


def test_starts_match_the_sum_of_hazards_of_non_holders(mid_frames):
    """Starts in month m+1 are drawn from hazards at the end of month m (non-holders)."""
    h, a = mid_frames["product_hazard"], mid_frames["agreements"]
    ends = _month_ends(6)
    start, end = _day(a["start_date"]), _day(a["end_date"])
    since = _day(a["customer_id"].map(mid_frames["customers"].set_index("customer_id")["customer_since"]))
    expected = observed = 0.0
    for t, nxt in zip(ends[:-1], ends[1:]):
        holding = a.loc[(start <= t) & ~(end <= t), ["customer_id", "product"]].drop_duplicates()
        at_t = h[_day(h["snapshot_date"]) == t].merge(holding, how="left", indicator=True)
        expected += at_t.loc[at_t["_merge"] == "left_only", "p_start"].sum()
        observed += ((start > t) & (start <= nxt) & (since <= t)).sum()  # joiners' first products excluded
    assert 0.85 < observed / expected < 1.15
    assert observed > 300


def test_latent_event_names_are_the_documented_ones(frames):
    assert set(frames["latent_events"]["event"]) <= {
        "home_buying", "car_buying", "investing", "cash_squeeze", "expecting_child", "new_parent", "job_change",
        "travel_planning"}


def test_home_buyers_view_mortgage_pages_more(mid_frames):
    ev = mid_frames["latent_events"]
    buyers = set(ev.loc[ev["event"] == "home_buying", "customer_id"])
    views = mid_frames["digital_events"].query("event_type == 'page_view' and topic == 'mortgage'")
    per_customer = views.groupby("customer_id").size()
    ids = mid_frames["customers"]["customer_id"]
    rate_buyers = per_customer.reindex([i for i in ids if i in buyers], fill_value=0).mean()
    rate_others = per_customer.reindex([i for i in ids if i not in buyers], fill_value=0).mean()
    assert rate_buyers > 3 * rate_others


# ---------------------------------------------------------------- consents
def _state_at(events: pd.DataFrame, t: pd.Timestamp, purpose_col: str, purpose: str, flag: str) -> pd.Series:
    e = events[(events[purpose_col] == purpose) & (events["event_time"] <= t)]
    return e.sort_values("event_time").groupby("customer_id")[flag].last()


def test_about_half_of_active_customers_hold_personalised_consent(mid_frames):
    t = _month_ends(6)[-1]
    end_of_day = pd.Timestamp(t, tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    state = _state_at(mid_frames["consent_events"], end_of_day, "purpose", "personalised_marketing", "granted")
    h = mid_frames["product_hazard"]
    active = h.loc[_day(h["snapshot_date"]) == t, "customer_id"].unique()
    share = state.reindex(active, fill_value=False).mean()
    assert 0.3 < share < 0.7


def test_profiling_objections_are_a_few_percent(mid_frames):
    t = pd.Timestamp(_month_ends(6)[-1], tz="UTC") + pd.Timedelta(days=1)
    state = _state_at(mid_frames["reservation_events"], t, "scope", "profiling", "placed")
    share = state.reindex(mid_frames["customers"]["customer_id"], fill_value=False).mean()
    assert 0.01 < share < 0.06


def test_some_customers_grant_and_withdraw_within_one_month(mid_frames):
    e = mid_frames["consent_events"].query("purpose == 'personalised_marketing'").copy()
    e = e[e["event_time"] >= pd.Timestamp(START, tz="UTC")]
    e["month"] = e["event_time"].dt.strftime("%Y-%m")
    both = e.groupby(["customer_id", "month"])["granted"].agg(["min", "max"])
    assert ((both["min"] == False) & (both["max"] == True)).sum() >= 3  # noqa: E712


# ---------------------------------------------------------------- the canary
@pytest.fixture(scope="module")
def canary_rows(settings, mid_frames) -> pd.DataFrame:
    """Canary hazard per customer-month with age, savings balance and the month's travel spend."""
    h = mid_frames["product_hazard"]
    rows = h[h["product"] == settings.catalogue.canary_product].copy()
    rows["snapshot_date"] = _day(rows["snapshot_date"])
    c = mid_frames["customers"].set_index("customer_id")
    rows["age"] = (rows["snapshot_date"] - _day(rows["customer_id"].map(c["birth_date"]))).dt.days / 365.25
    bal = mid_frames["balances"]
    savings = bal[bal["account_type"] == "savings"].assign(snapshot_date=lambda f: _day(f["as_of_date"]))
    rows = rows.merge(savings[["customer_id", "snapshot_date", "balance"]], how="left")
    tx = mid_frames["transactions"]
    travel = tx[tx["merchant_category"] == "travel"].assign(
        snapshot_date=lambda f: _day(f["booked_at"]) + pd.offsets.MonthEnd(0))
    spend = travel.groupby(["customer_id", "snapshot_date"])["amount"].sum().rename("travel_spend").reset_index()
    rows = rows.merge(spend, how="left").fillna({"travel_spend": 0.0, "balance": 0.0})
    return rows


def test_canary_hazard_is_uncorrelated_with_age_and_savings_balance(canary_rows):
    assert abs(np.corrcoef(canary_rows["p_start"], canary_rows["age"])[0, 1]) < 0.05
    assert abs(np.corrcoef(canary_rows["p_start"], np.log1p(canary_rows["balance"]))[0, 1]) < 0.05


def test_canary_hazard_follows_travel_spending(canary_rows):
    assert np.corrcoef(canary_rows["p_start"], -canary_rows["travel_spend"])[0, 1] > 0.3


def test_canary_hazard_is_the_same_for_travel_topic_viewers(settings, mid_frames, canary_rows):
    views = mid_frames["digital_events"].query("topic == 'travel'")
    viewers = views.assign(snapshot_date=lambda f: _day(f["event_time"]) + pd.offsets.MonthEnd(0))[
        ["customer_id", "snapshot_date"]].drop_duplicates().assign(viewed=True)
    rows = canary_rows.merge(viewers, how="left").fillna({"viewed": False})
    gap = rows.loc[rows["viewed"], "p_start"].mean() - rows.loc[~rows["viewed"], "p_start"].mean()
    assert abs(gap) < 0.004


# ---------------------------------------------------------------- writing
def test_write_bank_writes_one_parquet_file_per_table(bank, tmp_path):
    raw, truth = tmp_path / "raw", tmp_path / "truth"
    synth.write_bank(bank, raw, truth)
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{n}.parquet" for n in TABLES)
    assert sorted(p.name for p in truth.iterdir()) == ["latent_events.parquet", "product_hazard.parquet"]
    assert pq.read_table(raw / "transactions.parquet").equals(bank.tables["transactions"])
    assert pq.read_table(truth / "product_hazard.parquet").equals(bank.truth["product_hazard"])


def test_write_bank_failure_leaves_previous_folders_intact(bank, tmp_path, monkeypatch):
    raw, truth = tmp_path / "raw", tmp_path / "truth"
    raw.mkdir()
    (raw / "previous.txt").write_text("old run")
    calls = {"n": 0}
    real = pq.write_table

    def failing(table, where, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return real(table, where, **kwargs)

    monkeypatch.setattr(synth.pq, "write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        synth.write_bank(bank, raw, truth)
    assert [p.name for p in raw.iterdir()] == ["previous.txt"]
    assert not truth.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.mark.parametrize(
    "kwargs",
    [dict(customers=0), dict(months=1), dict(start=date(2024, 1, 2)), dict(transactions_per_month=0.0), dict(seed=-1)],
)
def test_generate_bank_refuses_bad_arguments(settings, kwargs):
    args = dict(customers=10, months=3, start=START, seed=1, transactions_per_month=8.0,
                policy=settings.policy, catalogue=settings.catalogue) | kwargs
    with pytest.raises(ValueError):
        synth.generate_bank(**args)
