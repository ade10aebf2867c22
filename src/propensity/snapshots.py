"""Snapshot dates and instants.

A snapshot is a month end. Its *instant* is the last microsecond of that day in UTC:
everything that happened on or before the month-end date is known at the snapshot, nothing
after it. Feature rows carry the instant as ``event_timestamp``; consent and reservation
states are read as of the same instant.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pandas as pd

_LAST_MICROSECOND = time(23, 59, 59, 999999)


def snapshot_instant(day: date) -> datetime:
    """The instant (UTC, microsecond precision) at which a month-end snapshot is taken."""
    return datetime.combine(day, _LAST_MICROSECOND, tzinfo=timezone.utc)


def month_end(day: date) -> date:
    """The last day of the month holding ``day``."""
    first_next = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
    return first_next - timedelta(days=1)


def is_month_end(day: date) -> bool:
    return month_end(day) == day


def add_months(day: date, months: int) -> date:
    """The month end ``months`` months after the month end of ``day`` (negative: before)."""
    index = month_index(day) + months
    year, month0 = divmod(index, 12)
    return month_end(date(year, month0 + 1, 1))


def month_index(day: date) -> int:
    """Months since year 0: consecutive months differ by one."""
    return day.year * 12 + (day.month - 1)


def month_ends(first: date, last: date) -> list[date]:
    """Every month end from the month of ``first`` to the month of ``last``, inclusive."""
    out: list[date] = []
    current = month_end(first)
    while current <= month_end(last):
        out.append(current)
        current = add_months(current, 1)
    return out


def instants(days: pd.Series) -> pd.Series:
    """Vectorised :func:`snapshot_instant` for a Series of dates."""
    ts = pd.to_datetime(days).dt.tz_localize(None).dt.normalize()
    return (ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
