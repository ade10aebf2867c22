"""Online equals offline at the materialised instant, over generated consent histories
(real Feast: DuckDB offline store, SQLite online store)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings as hsettings

from propensity import contract
from propensity.config import load_settings
from propensity.features import build_offline_store
from propensity.snapshots import snapshot_instant
from propensity.store import FeatureStore
from tests.conftest import ROOT
from tests.properties.test_feature_privacy import CUSTOMERS, MONTHS, bank_with, histories


def normalised(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame.set_index("customer_id")[columns].sort_index()
    return out.astype(object).where(out.notna(), None)


@hsettings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories)
def test_online_features_equal_offline_features_at_the_materialised_instant(history):
    at = MONTHS[-1]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        bank_with(history).write(data / "raw")
        settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)
        build_offline_store(settings, contract.locate(settings.raw_dir).relation, snapshots=MONTHS)
        store = FeatureStore(settings)
        store.apply()
        store.materialize(at)
        online = store.online_features(list(CUSTOMERS), at)
        entity = pd.DataFrame({"customer_id": list(CUSTOMERS), "event_timestamp": snapshot_instant(at)})
        offline = store.historical_features(entity)
        assert sorted(online) == sorted(offline)
        for service, frame in online.items():
            columns = store.service_columns(service)
            pd.testing.assert_frame_equal(normalised(frame, columns), normalised(offline[service], columns), check_dtype=False)
