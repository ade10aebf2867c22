"""Consent and reservation timelines as tier intervals.

``tier_intervals`` turns the two event streams into one row per customer and period in
which nothing changed: ``valid_from`` (inclusive), ``valid_to`` (exclusive; null = still
in force), the tier, group data sharing, and every consent and reservation state (the
campaign step reads the channel states from the same table). Customers with no events
have no interval and are in the policy's default state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.config import Policy
from propensity.duck import connect
from propensity.policy import group_sharing_column, normalised_events, state_columns, tiers_as_of, utc_us

BEGINNING = pd.Timestamp("1900-01-01", tz="UTC")


def tier_intervals(consent_events: pd.DataFrame, reservation_events: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """Contiguous intervals per customer with the tier and every state in force.

    Each customer with at least one event gets a first interval from 1900-01-01 (the
    default state) to their first event, then one interval per change of any state.
    Consecutive intervals with identical states are merged.
    """
    events = normalised_events(consent_events, reservation_events)
    columns = ["customer_id", "valid_from", "valid_to", "tier", "group_data_sharing", *state_columns(policy)]
    if events.empty:
        empty = {c: pd.Series(dtype=bool) for c in columns}
        empty.update(
            customer_id=pd.Series(dtype=object),
            valid_from=pd.Series(dtype="datetime64[us, UTC]"),
            valid_to=pd.Series(dtype="datetime64[us, UTC]"),
            tier=pd.Series(dtype=object),
        )
        return pd.DataFrame(empty)[columns]
    points = events[["customer_id", "event_time"]].drop_duplicates().rename(columns={"event_time": "at"})
    firsts = points.groupby("customer_id", as_index=False)["at"].min()
    firsts["at"] = BEGINNING
    points = pd.concat([firsts, points], ignore_index=True)
    states = tiers_as_of(consent_events, reservation_events, points, policy)
    states = states.sort_values(["customer_id", "at"], kind="stable").reset_index(drop=True)
    value_columns = ["tier", *state_columns(policy)]
    same_customer = states["customer_id"].eq(states["customer_id"].shift())
    same_values = states[value_columns].eq(states[value_columns].shift()).all(axis=1)
    states = states.loc[~(same_customer & same_values)].reset_index(drop=True)
    next_from = states.groupby("customer_id")["at"].shift(-1)
    out = pd.DataFrame(
        {
            "customer_id": states["customer_id"],
            "valid_from": states["at"],
            "valid_to": next_from,
            "tier": states["tier"],
            "group_data_sharing": states[group_sharing_column(policy)].astype(bool),
        }
    )
    for column in state_columns(policy):
        out[column] = states[column].astype(bool)
    return out[columns]


def default_interval_row(policy: Policy) -> dict:
    """The state of a customer who has never given a consent nor placed a reservation."""
    row: dict = {c: False for c in state_columns(policy)}
    row["tier"] = policy.default_tier
    row["group_data_sharing"] = False
    return row


def interval_at(intervals: pd.DataFrame, points: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """The interval row in force at each point (``customer_id``, ``at``), in point order.

    Customers without intervals get the default state. One DuckDB ASOF join (the interval
    with the latest ``valid_from`` at or before the point) on the keys only, then the
    interval columns are taken by row number: about 8x a pandas ``merge_asof`` by
    customer at a million points.
    """
    at = utc_us(points["at"])
    left = pd.DataFrame(
        {"customer_id": points["customer_id"].to_numpy(), "at": _naive_utc(at), "_row": np.arange(len(points))}
    )
    right = pd.DataFrame(
        {
            "customer_id": intervals["customer_id"].to_numpy(),
            "valid_from": _naive_utc(utc_us(intervals["valid_from"])),
            "_interval": np.arange(len(intervals)),
        }
    )
    con = connect(threads=2)
    try:
        con.register("points", left)
        con.register("intervals", right)
        found = con.execute(
            """SELECT COALESCE(i._interval, -1) AS i
               FROM points p ASOF LEFT JOIN intervals i ON p.customer_id = i.customer_id AND p."at" >= i.valid_from
               ORDER BY p._row"""
        ).fetchnumpy()["i"]
    finally:
        con.close()
    found = np.asarray(found, dtype=np.int64)
    missing = found < 0
    source = intervals.drop(columns="customer_id").reset_index(drop=True)
    state = (source.take(np.where(missing, 0, found)) if len(source) else source.reindex(range(len(found))))
    state = state.reset_index(drop=True)
    # A point without an interval: the default state, and no validity period.
    defaults = default_interval_row(policy)
    for column in state.columns:
        if column in defaults:
            filled = state[column].where(~missing, defaults[column])
            state[column] = filled.astype(bool) if isinstance(defaults[column], bool) else filled
        else:
            state[column] = state[column].where(~missing)
    for column, default in defaults.items():
        if column not in state.columns:
            state[column] = np.full(len(state), default, dtype=bool if isinstance(default, bool) else object)
    state.insert(0, "at", at.array)
    state.insert(0, "customer_id", left["customer_id"].to_numpy())
    return state


def _naive_utc(values: pd.Series) -> np.ndarray:
    """UTC timestamps as naive datetime64[us] (DuckDB scans these without per-value work)."""
    return values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
