from __future__ import annotations

import pandas as pd

from propensity.consent import interval_at, tier_intervals
from tests.conftest import consent_frame, reservation_frame

CONSENTS = consent_frame(
    [
        ("A", "2024-01-10T12:00:00Z", "personalised_marketing", True),
        ("A", "2024-01-20T12:00:00Z", "group_data_sharing", True),
        ("A", "2024-03-05T08:00:00Z", "personalised_marketing", False),
        ("A", "2024-03-05T09:00:00Z", "personalised_marketing", False),  # repeated withdrawal: no new interval
    ]
)
RESERVATIONS = reservation_frame([("B", "2024-02-01T00:00:00Z", "profiling", True)])


def test_tier_intervals_are_contiguous_and_merge_unchanged_states(policy):
    intervals = tier_intervals(CONSENTS, RESERVATIONS, policy)
    a = intervals[intervals["customer_id"] == "A"].reset_index(drop=True)
    assert a["tier"].tolist() == ["basic", "personalised", "personalised", "basic"]
    assert a["group_data_sharing"].tolist() == [False, False, True, True]
    assert a["valid_from"].iloc[1] == pd.Timestamp("2024-01-10T12:00:00Z")
    assert a["valid_to"].iloc[:-1].tolist() == a["valid_from"].iloc[1:].tolist()
    assert pd.isna(a["valid_to"].iloc[-1])
    b = intervals[intervals["customer_id"] == "B"]
    assert b["tier"].tolist() == ["basic", "excluded"]
    assert b["reserved_profiling"].tolist() == [False, True]


def test_interval_at_gives_default_state_to_customers_without_events(policy):
    intervals = tier_intervals(CONSENTS, RESERVATIONS, policy)
    points = pd.DataFrame(
        {"customer_id": ["Z", "A", "B"], "at": pd.to_datetime(["2024-02-01", "2024-02-01", "2024-02-01"], utc=True)}
    )
    found = interval_at(intervals, points, policy)
    assert found["tier"].tolist() == ["basic", "personalised", "excluded"]
    assert found["group_data_sharing"].tolist() == [False, True, False]


def test_no_events_at_all_gives_typed_empty_intervals_and_default_tiers(policy):
    intervals = tier_intervals(consent_frame([]), reservation_frame([]), policy)
    assert intervals.empty and str(intervals["valid_from"].dtype) == "datetime64[us, UTC]"
    points = pd.DataFrame({"customer_id": ["A"], "at": pd.to_datetime(["2024-02-01"], utc=True)})
    assert interval_at(intervals, points, policy)["tier"].tolist() == ["basic"]
