"""The data policy's rules, applied to consent and reservation event streams.

State as of an instant t is the latest event at or before t (an event *at* t counts).
Two events of one stream at the same instant are refused by the input contract; if they
reach this module anyway, the protective event wins (withdrawn over granted, placed over
lifted). The tier as of t follows the policy's ordered ``tier_rules``.

Beside the tiers: who is a customer on a day (:func:`customer_on`, and the same rule in
SQL, :func:`customer_on_sql`), and the rules campaign lists and customer-matching exports
apply at send time (:func:`consent_withdrawn_since_scoring`, :func:`first_reason`).

Everything here is vectorised over whole tables: no Python loop per customer or row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from propensity.config import Policy

CONSENT_PREFIX = "consent_"
RESERVATION_PREFIX = "reserved_"


def fingerprint(policy: Policy) -> str:
    """sha256 of the policy's content (every rule, not only its version): what a feature
    store was built under, so that a policy edited without a version bump is noticed."""
    return hashlib.sha256(policy.model_dump_json().encode("utf-8")).hexdigest()


def consent_column(name: str) -> str:
    return CONSENT_PREFIX + name


def reservation_column(name: str) -> str:
    return RESERVATION_PREFIX + name


def state_columns(policy: Policy) -> list[str]:
    """Names of the boolean state columns, one per consent and reservation."""
    return [consent_column(c) for c in policy.consents] + [reservation_column(r) for r in policy.reservations]


def normalised_events(consent_events: pd.DataFrame, reservation_events: pd.DataFrame) -> pd.DataFrame:
    """Both event streams as one frame: customer_id, event_time, state (column name), active.

    Rows are ordered so that, within one stream and one instant, the protective event
    comes last; ``drop_duplicates(keep="last")`` then applies the tie rule.
    """
    consents = pd.DataFrame(
        {
            "customer_id": consent_events["customer_id"].astype(str),
            "event_time": utc_us(consent_events["event_time"]),
            "state": CONSENT_PREFIX + consent_events["purpose"].astype(str),
            "active": consent_events["granted"].astype(bool),
        }
    )
    consents["protective"] = ~consents["active"]
    reservations = pd.DataFrame(
        {
            "customer_id": reservation_events["customer_id"].astype(str),
            "event_time": utc_us(reservation_events["event_time"]),
            "state": RESERVATION_PREFIX + reservation_events["scope"].astype(str),
            "active": reservation_events["placed"].astype(bool),
        }
    )
    reservations["protective"] = reservations["active"]
    events = pd.concat([consents, reservations], ignore_index=True)
    events = events.sort_values(["customer_id", "state", "event_time", "protective"], kind="stable")
    events = events.drop_duplicates(["customer_id", "state", "event_time"], keep="last")
    return events.drop(columns="protective").reset_index(drop=True)


def states_as_of(
    consent_events: pd.DataFrame,
    reservation_events: pd.DataFrame,
    points: pd.DataFrame,
    policy: Policy,
) -> pd.DataFrame:
    """The state of every consent and reservation at each point.

    ``points`` has ``customer_id`` and ``at`` (tz-aware timestamps). Returns ``points``
    with one boolean column per consent (``consent_<purpose>``) and reservation
    (``reserved_<scope>``), in the input's row order. No event at or before ``at``
    means the default: consent not given, no reservation.
    """
    events = normalised_events(consent_events, reservation_events)
    left = points[["customer_id", "at"]].copy()
    left["customer_id"] = left["customer_id"].astype(str)
    left["at"] = utc_us(left["at"])
    left["_row"] = np.arange(len(left))
    left = left.sort_values("at", kind="stable")
    out = points.copy()
    for column in state_columns(policy):
        stream = events.loc[events["state"] == column, ["customer_id", "event_time", "active"]]
        if stream.empty:
            out[column] = False
            continue
        stream = stream.sort_values("event_time", kind="stable")
        joined = pd.merge_asof(
            left,
            stream,
            left_on="at",
            right_on="event_time",
            by="customer_id",
            direction="backward",
            allow_exact_matches=True,
        )
        values = np.zeros(len(left), dtype=bool)
        values[joined["_row"].to_numpy()] = joined["active"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        out[column] = values
    return out


def tier_from_states(states: pd.DataFrame, policy: Policy) -> pd.Series:
    """The tier of each row of a state frame, by the policy's ordered rules."""
    conditions = []
    choices = []
    for rule in policy.tier_rules:
        if rule.when.consent:
            conditions.append(states[consent_column(rule.when.consent)].to_numpy(dtype=bool))
        else:
            conditions.append(states[reservation_column(rule.when.reservation)].to_numpy(dtype=bool))
        choices.append(rule.tier)
    tiers = np.select(conditions, choices, default=policy.default_tier)
    return pd.Series(tiers, index=states.index, name="tier", dtype=object)


def tiers_as_of(
    consent_events: pd.DataFrame,
    reservation_events: pd.DataFrame,
    points: pd.DataFrame,
    policy: Policy,
) -> pd.DataFrame:
    """``points`` with every state column and the ``tier`` as of each row's ``at``."""
    states = states_as_of(consent_events, reservation_events, points, policy)
    states["tier"] = tier_from_states(states, policy)
    return states


def group_sharing_column(policy: Policy) -> str:
    """The state column that gates group-company data."""
    return consent_column(policy.group_company.requires_consent)


def legal_basis(tiers: pd.Series, policy: Policy) -> pd.Series:
    """The legal basis of processing for each tier (none for `excluded`)."""
    return tiers.map(policy.legal_basis)


def utc_us(values: pd.Series) -> pd.Series:
    """Timestamps as timezone-aware UTC with microsecond precision (refuses naive ones)."""
    ts = pd.to_datetime(values)
    if ts.dt.tz is None:
        raise ValueError("event times must be timezone-aware (UTC)")
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


# ------------------------------------------------------------------------ who is a customer
def customer_on_sql(row: str, day: str) -> str:
    """SQL condition: the customers row ``row`` (an alias) is a customer on ``day`` (a SQL
    date expression): customer since that day or earlier and not closed by it (POLICY.md
    rule 4). :func:`customer_on` is the same rule over arrays."""
    return f"{row}.customer_since <= {day} AND ({row}.closed_at IS NULL OR {row}.closed_at > {day})"


def customer_on(customer_since, closed_at, day) -> np.ndarray:
    """True where a person is a customer on ``day`` (one date, or one per row): customer
    since that day or earlier and not closed by it. A missing ``customer_since`` (an
    unknown person) or a missing day is never a customer. Timestamps count by their UTC
    day. The same rule as :func:`customer_on_sql`."""
    since, closed, on = _days(customer_since), _days(closed_at), _days(day)
    return (since <= on) & (np.isnat(closed) | (closed > on))


def _days(values) -> np.ndarray:
    """Calendar days as ``datetime64[D]`` (missing = NaT), from dates, timestamps (with a
    zone: their UTC day) or datetime64 values; any date up to 9999-12-31."""
    series = pd.Series([values] if np.ndim(values) == 0 else values)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if series.dtype.kind != "M":
        series = series.astype("datetime64[s]")  # second resolution reaches year 9999
    return series.to_numpy().astype("datetime64[D]")


# ------------------------------------------------------------------ send-time rules
# What a score relied on: its tier and whether group data sharing was active at scoring.
SCORED = ("tier", "group_data_sharing")


def scored_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The :data:`SCORED` columns a frame of score rows, an audience or members holds."""
    return frame[[c for c in SCORED if c in frame.columns]]


def consent_withdrawn_since_scoring(scored: pd.DataFrame, states_now: pd.DataFrame, policy: Policy) -> pd.Series:
    """True where a consent the score relied on is no longer active, so the score may not be
    used any more: it came from the personalised model (consent-only data) and the customer
    is no longer personalised, or group-company data went into it (group data sharing
    active at scoring) and sharing is no longer active.

    ``scored``: ``tier`` and, where known, ``group_data_sharing`` at scoring, aligned by
    position; ``states_now``: ``tiers_as_of`` states. Returned on ``states_now``'s index."""
    index = states_now.index
    tier = pd.Series(np.asarray(scored["tier"], dtype=object), index=index)
    withdrawn = tier.eq("personalised") & states_now["tier"].ne("personalised")
    if "group_data_sharing" in scored.columns:
        shared = pd.Series(np.asarray(scored["group_data_sharing"], dtype=bool), index=index)
        withdrawn |= shared & ~states_now[group_sharing_column(policy)].astype(bool)
    return withdrawn


def first_reason(reasons: Sequence[pd.Series]) -> pd.Series:
    """Per row, the first non-empty reason over the instants checked, in their order."""
    if not reasons:
        raise ValueError("first_reason needs the reasons of at least one instant")
    out = reasons[0]
    for later in reasons[1:]:
        out = out.mask(out.eq(""), later)
    return out
