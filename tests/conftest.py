"""Shared fixtures: settings on a temporary data folder, hand-made event frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from propensity.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings(ROOT / "conf" / "pipeline.yaml")


@pytest.fixture(scope="session")
def policy(settings):
    return settings.policy


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def consent_frame(rows: list[tuple]) -> pd.DataFrame:
    """(customer_id, event_time, purpose, granted) tuples as a consent_events frame."""
    frame = pd.DataFrame(rows, columns=["customer_id", "event_time", "purpose", "granted"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["source"] = "online_bank"
    return frame


def reservation_frame(rows: list[tuple]) -> pd.DataFrame:
    """(customer_id, event_time, scope, placed) tuples as a reservation_events frame."""
    frame = pd.DataFrame(rows, columns=["customer_id", "event_time", "scope", "placed"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame
