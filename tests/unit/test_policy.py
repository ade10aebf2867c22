from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings as hsettings, strategies as st

from propensity.config import Policy, load_settings
from propensity.errors import ConfigError
from propensity.policy import customer_on, customer_on_sql, states_as_of, tiers_as_of
from tests.conftest import ROOT, consent_frame, reservation_frame

HISTORY_CONSENTS = consent_frame(
    [
        ("A", "2024-01-10T12:00:00Z", "personalised_marketing", True),
        ("A", "2024-03-05T08:00:00Z", "personalised_marketing", False),
        ("A", "2024-03-20T08:00:00Z", "personalised_marketing", True),
        ("B", "2024-01-01T00:00:00Z", "personalised_marketing", True),
        ("C", "2024-02-01T00:00:00Z", "group_data_sharing", True),
    ]
)
HISTORY_RESERVATIONS = reservation_frame(
    [
        ("B", "2024-02-15T00:00:00Z", "profiling", True),
        ("B", "2024-04-15T00:00:00Z", "profiling", False),
    ]
)


def tier_at(customer: str, at: str, policy, consents=HISTORY_CONSENTS, reservations=HISTORY_RESERVATIONS) -> str:
    points = pd.DataFrame({"customer_id": [customer], "at": [pd.Timestamp(at)]})
    return tiers_as_of(consents, reservations, points, policy)["tier"].iloc[0]


@pytest.mark.parametrize(
    "customer, at, expected",
    [
        ("A", "2024-01-10T11:59:59Z", "basic"),  # before the grant
        ("A", "2024-01-10T12:00:00Z", "personalised"),  # an event at t counts
        ("A", "2024-03-05T07:59:59.999999Z", "personalised"),
        ("A", "2024-03-05T08:00:00Z", "basic"),  # withdrawn
        ("A", "2024-03-31T00:00:00Z", "personalised"),  # re-granted
        ("B", "2024-02-01T00:00:00Z", "personalised"),
        ("B", "2024-02-15T00:00:00Z", "excluded"),  # objection overrides consent
        ("B", "2024-04-15T00:00:00Z", "personalised"),  # objection lifted, consent still active
        ("C", "2024-06-01T00:00:00Z", "basic"),  # group sharing alone is not personalised
        ("D", "2024-06-01T00:00:00Z", "basic"),  # no events at all: default tier
    ],
)
def test_tier_as_of_follows_latest_event_at_or_before_t(policy, customer, at, expected):
    assert tier_at(customer, at, policy) == expected


def test_tie_between_grant_and_withdrawal_at_same_instant_resolves_to_withdrawal(policy):
    consents = consent_frame(
        [
            ("E", "2024-05-01T10:00:00Z", "personalised_marketing", False),
            ("E", "2024-05-01T10:00:00Z", "personalised_marketing", True),
        ]
    )
    assert tier_at("E", "2024-05-01T10:00:00Z", policy, consents, HISTORY_RESERVATIONS) == "basic"


def test_tie_between_placed_and_lifted_reservation_resolves_to_placed(policy):
    consents = consent_frame([("F", "2024-01-01T00:00:00Z", "personalised_marketing", True)])
    reservations = reservation_frame(
        [
            ("F", "2024-05-01T10:00:00Z", "profiling", True),
            ("F", "2024-05-01T10:00:00Z", "profiling", False),
        ]
    )
    assert tier_at("F", "2024-06-01T00:00:00Z", policy, consents, reservations) == "excluded"


def test_states_as_of_reports_each_consent_and_reservation(policy):
    points = pd.DataFrame(
        {"customer_id": ["C", "B", "C"], "at": pd.to_datetime(["2024-01-15", "2024-03-01", "2024-02-15"], utc=True)}
    )
    states = states_as_of(HISTORY_CONSENTS, HISTORY_RESERVATIONS, points, policy)
    assert states["consent_group_data_sharing"].tolist() == [False, False, True]
    assert states["reserved_profiling"].tolist() == [False, True, False]
    assert states["customer_id"].tolist() == ["C", "B", "C"]  # input order kept


def test_precedence_is_a_setting_of_the_policy_file(policy):
    swapped = policy.model_copy(update={"tier_rules": tuple(reversed(policy.tier_rules))})
    assert tier_at("B", "2024-03-01T00:00:00Z", policy) == "excluded"
    assert tier_at("B", "2024-03-01T00:00:00Z", swapped) == "personalised"


def test_second_policy_file_moving_employer_to_basic_changes_categories_without_code(tmp_path):
    document = yaml.safe_load((ROOT / "conf" / "policy.yaml").read_text())
    document["categories"]["employer"]["tiers"] = ["personalised", "basic"]
    document["version"] = "test-employer-basic"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(document))
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", policy_file=tmp_path / "policy.yaml")
    assert "employer" in settings.policy.categories_for("basic")
    assert settings.policy.personalised_only == ("transactions",)
    assert settings.policy.version == "test-employer-basic"


def test_policy_with_unknown_consent_in_a_tier_rule_is_refused(tmp_path):
    document = yaml.safe_load((ROOT / "conf" / "policy.yaml").read_text())
    document["tier_rules"][1]["when"] = {"consent": "telepathy"}
    with pytest.raises(ValueError, match="unknown consent 'telepathy'"):
        Policy.model_validate(document)


def test_missing_policy_file_is_a_config_error(tmp_path):
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", policy_file=tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not found"):
        settings.policy  # noqa: B018


DAY = st.integers(0, 40).map(lambda n: date(2024, 1, 1) + timedelta(days=n))
DAYS = st.one_of(st.none(), DAY, st.just(date(9999, 12, 31)))


@hsettings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(DAYS, DAYS, DAY), min_size=1, max_size=30), one_day=DAY)
def test_customer_rule_is_the_same_in_sql_and_in_arrays(rows, one_day):
    frame = pd.DataFrame(rows, columns=["customer_since", "closed_at", "day"])
    con = duckdb.connect()
    con.register("people", frame)
    in_sql = con.execute(f"SELECT {customer_on_sql('c', 'c.day')} AS member FROM people c").df()["member"]
    # dates as objects (as Parquet date columns read), and as datetime64 arrays
    in_arrays = customer_on(frame["customer_since"], frame["closed_at"], frame["day"].to_numpy(dtype="datetime64[D]"))
    assert in_sql.fillna(False).astype(bool).tolist() == in_arrays.tolist()
    # by hand: since on or before the day, not closed on or before it; an unknown start never counts
    expected = [s is not None and s <= d and (c is None or c > d) for s, c, d in rows]
    assert in_arrays.tolist() == expected
    # one day for every row
    expected = [s is not None and s <= one_day and (c is None or c > one_day) for s, c, _ in rows]
    assert customer_on(frame["customer_since"], frame["closed_at"], one_day).tolist() == expected
