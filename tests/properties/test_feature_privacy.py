"""Privacy invariants of the feature tables, over generated consent histories.

Each example writes a small bank whose customers have random consent and reservation
histories, builds the offline store with the real SQL, and checks an invariant:
the offline store's rows at t depend on nothing after t; a withdrawal removes every
personalised-only value from its instant on and changes nothing before; the rows of
personalised-only views are exactly the personalised customer-snapshots (as the policy
module computes them independently), and excluded customer-snapshots have no row at all.
"""

from __future__ import annotations

import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from propensity import contract
from propensity.config import load_settings
from propensity.features import build_offline_store, view_specs
from propensity.policy import tiers_as_of
from propensity.snapshots import snapshot_instant
from tests.bank import TinyBank
from tests.conftest import ROOT

CUSTOMERS = ("A", "B", "C")
MONTHS = [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]
ORIGIN = datetime(2023, 12, 1, tzinfo=timezone.utc)
SPAN_SECONDS = int((datetime(2024, 5, 1, tzinfo=timezone.utc) - ORIGIN).total_seconds())
STREAMS = [("consent", "personalised_marketing"), ("consent", "group_data_sharing"), ("reservation", "profiling"),
           ("reservation", "email")]

event = st.tuples(
    st.sampled_from(CUSTOMERS),
    st.integers(0, SPAN_SECONDS),
    st.sampled_from(STREAMS),
    st.booleans(),
)
histories = st.lists(event, min_size=0, max_size=14, unique_by=lambda e: (e[0], e[1], e[2]))
PROFILE = dict(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def bank_with(events) -> TinyBank:
    bank = TinyBank()
    for cid in CUSTOMERS:
        bank.customer(cid, since="2023-01-01").employment(cid, "2022-01-01").demographics(cid, "2022-01-01")
        bank.agreement(cid, "car_insurance", "2023-06-01", company="insurance")
        for month in MONTHS:
            bank.balance(cid, month.isoformat(), "current", 500.0)
            bank.balance(cid, month.isoformat(), "pension", 900.0, company="asset_management")
            bank.transaction(cid, f"{month:%Y-%m}-05T10:00:00Z", -120.0, merchant_category="travel")
            bank.transaction(cid, f"{month:%Y-%m}-25T10:00:00Z", 25000.0, kind="salary", merchant_category=None)
    for cid, seconds, (kind, name), flag in events:
        at = (ORIGIN + timedelta(seconds=seconds)).isoformat()
        if kind == "consent":
            bank.consent(cid, at, purpose=name, granted=flag)
        else:
            bank.reservation(cid, at, scope=name, placed=flag)
    return bank


def build(events) -> dict[str, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        bank_with(events).write(data / "raw")
        s = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)
        raw = contract.locate(s.raw_dir)
        build_offline_store(s, raw.relation, snapshots=MONTHS)
        # Nullable dtypes: an integer column's type does not depend on whether the rows
        # read hold a null (an empty slice of a column that is null elsewhere included).
        return {
            v.name: pd.read_parquet(s.features_dir / f"{v.name}.parquet", dtype_backend="numpy_nullable")
            for v in view_specs(s.policy, s.catalogue)
        }


def rows_at_or_before(frame: pd.DataFrame, instant) -> pd.DataFrame:
    return frame[frame["event_timestamp"] <= instant].sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)


@hsettings(**PROFILE)
@given(past=histories, future=histories, cut=st.integers(0, len(MONTHS) - 1))
# group data sharing granted only after t: no group row at t either way (an empty slice)
@example(past=[], future=[("A", 5356801, ("consent", "group_data_sharing"), True)], cut=0)
def test_events_after_t_never_change_features_at_t(past, future, cut):
    instant = snapshot_instant(MONTHS[cut])
    cut_seconds = (instant - ORIGIN).total_seconds()
    before = [e for e in past if e[1] <= cut_seconds]
    later = [e for e in future if e[1] > cut_seconds + 1]
    keys = {(e[0], e[1], e[2]) for e in before}
    combined = before + [e for e in later if (e[0], e[1], e[2]) not in keys]
    a, b = build(before), build(combined)
    for name in a:
        pd.testing.assert_frame_equal(rows_at_or_before(a[name], instant), rows_at_or_before(b[name], instant))


@hsettings(**PROFILE)
@given(history=histories, customer=st.sampled_from(CUSTOMERS), at=st.integers(0, SPAN_SECONDS - 1))
def test_withdrawal_removes_personalised_values_from_its_instant_and_nothing_before(history, customer, at):
    consent = ("consent", "personalised_marketing")
    # The withdrawal is the customer's last personalised-marketing event.
    kept = [e for e in history if not (e[0] == customer and e[2] == consent and e[1] >= at)]
    withdrawn = kept + [(customer, at, consent, False)]
    a, b = build(kept), build(withdrawn)
    withdrawal = ORIGIN + timedelta(seconds=at)
    for name in ("transactions", "employer"):
        after = b[name][(b[name]["customer_id"] == customer) & (b[name]["event_timestamp"] >= withdrawal)]
        assert after.empty, f"{name} kept {len(after)} row(s) after the withdrawal"
    for name in a:
        earlier = pd.Timestamp(withdrawal) - pd.Timedelta(microseconds=1)
        pd.testing.assert_frame_equal(rows_at_or_before(a[name], earlier), rows_at_or_before(b[name], earlier))


@hsettings(**PROFILE)
@given(history=histories)
def test_rows_match_the_tiers_the_policy_computes(history):
    views = build(history)
    s = load_settings(ROOT / "conf" / "pipeline.yaml")
    bank = bank_with(history)
    tables = {k: v.to_pandas() for k, v in bank.tables().items()}
    points = pd.DataFrame([(c, snapshot_instant(m)) for c in CUSTOMERS for m in MONTHS], columns=["customer_id", "at"])
    tiers = tiers_as_of(tables["consent_events"], tables["reservation_events"], points, s.policy)
    keyed = {(r.customer_id, r.at) for r in tiers.itertuples()}
    personalised = {(r.customer_id, r.at) for r in tiers.itertuples() if r.tier == "personalised"}
    served = {(r.customer_id, r.at) for r in tiers.itertuples() if r.tier != "excluded"}
    shared = {(r.customer_id, r.at) for r in tiers.itertuples() if r.tier != "excluded" and r.consent_group_data_sharing}

    def rows(name):
        return set(zip(views[name]["customer_id"], views[name]["event_timestamp"]))

    assert rows("transactions") == personalised
    assert rows("employer") == personalised
    assert rows("personal") == served  # excluded customer-snapshots have no row at all
    assert rows("group_agreements") == shared
    assert rows("group_account_balance") == shared
    assert all(r in keyed for name in views for r in rows(name))
