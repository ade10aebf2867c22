"""The Feast store with consent gating (real Feast, DuckDB offline store, SQLite online)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from propensity import contract
from propensity.config import load_settings
from propensity.errors import PrivacyGuardError
from propensity.features import build_offline_store
from propensity.snapshots import snapshot_instant
from propensity.store import FeatureStore, check_forbidden_values, feature_report
from tests.conftest import ROOT
from tests.integration.test_features import history


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = tmp_path_factory.mktemp("store")
    history().write(data / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    fs = FeatureStore(settings)
    fs.apply()
    return fs


def entities(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": [c for c, _ in rows], "event_timestamp": [snapshot_instant(date.fromisoformat(d)) for _, d in rows]}
    )


def test_rows_are_split_by_tier_at_their_own_timestamp(store):
    rows = entities([("P", "2024-01-31"), ("P", "2024-02-29"), ("P", "2024-03-31"), ("O", "2024-02-29"), ("G", "2024-03-31")])
    out = store.historical_features(rows)
    assert out["personalised"][["customer_id", "tier"]].values.tolist() == [["P", "personalised"]]
    assert out["basic"]["customer_id"].tolist() == ["P", "P", "G"]  # O objected: dropped before any read
    assert out["personalised"]["spend_travel_3m_nok"].tolist() == [400.0]
    assert "spend_travel_3m_nok" not in out["basic"].columns


def test_basic_service_serves_personalised_rows_with_basic_features_only(store):
    rows = entities([("P", "2024-02-29"), ("G", "2024-02-29"), ("O", "2024-03-31")])
    out = store.historical_features(rows, service="basic")
    assert list(out) == ["basic"]
    assert out["basic"]["customer_id"].tolist() == ["P", "G"]
    assert out["basic"]["tier"].tolist() == ["personalised", "basic"]
    assert not set(store.service_columns("personalised")) - set(store.service_columns("basic")) & set(out["basic"].columns)


def test_personalised_service_never_returns_a_basic_row(store):
    rows = entities([(c, d) for c in "POGN" for d in ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]])
    out = store.historical_features(rows, service="personalised")["personalised"]
    assert set(out["tier"]) == {"personalised"}
    assert sorted(zip(out["customer_id"], out["event_timestamp"].dt.strftime("%m"))) == [
        ("N", "03"), ("O", "01"), ("P", "02"), ("P", "04")
    ]


def test_group_company_features_are_null_without_sharing_and_set_with_it(store):
    out = store.historical_features(entities([("G", "2024-02-29"), ("G", "2024-03-31")]))["basic"]
    assert out["holds_home_insurance"].isna().tolist() == [True, False]


def test_extra_entity_columns_are_carried_through_in_input_order(store):
    rows = entities([("G", "2024-04-30"), ("G", "2024-01-31")]).assign(label=[1, 0])
    out = store.historical_features(rows)["basic"]
    assert out["label"].tolist() == [1, 0]


def test_guard_refuses_a_personalised_value_in_a_basic_row(store):
    frame = pd.DataFrame(
        {"customer_id": ["G"], "event_timestamp": [snapshot_instant(date(2024, 2, 29))], "tier": ["basic"],
         "group_data_sharing": [False], "salary_inflow_3m_nok": [1.0]}
    )
    with pytest.raises(PrivacyGuardError, match="personalised-only"):
        check_forbidden_values(frame, store.settings)


def test_guard_refuses_a_group_value_without_sharing(store):
    frame = pd.DataFrame(
        {"customer_id": ["G"], "event_timestamp": [snapshot_instant(date(2024, 2, 29))], "tier": ["basic"],
         "group_data_sharing": [False], "holds_home_insurance": [1]}
    )
    with pytest.raises(PrivacyGuardError, match="group-company"):
        check_forbidden_values(frame, store.settings)


def test_guard_refuses_lost_rows(store):
    rows_in = pd.DataFrame({"_row": [0, 1, 2]})
    rows_out = pd.DataFrame({"_row": [0, 2], "tier": ["basic", "basic"]})
    with pytest.raises(PrivacyGuardError, match="returned 2 rows for 3"):
        store.guard(rows_in, rows_out, "basic")


def test_online_equals_offline_at_the_materialised_instant(store, capsys):
    at = date(2024, 4, 30)
    store.materialize(at)
    said = capsys.readouterr().out
    assert "Materializing" in said and "\x1b[" not in said  # Feast's lines, without colour codes in a log
    online = store.online_features(["P", "O", "G", "N"], at)
    offline = store.historical_features(entities([("P", at.isoformat()), ("O", at.isoformat()), ("G", at.isoformat()), ("N", at.isoformat())]))
    assert sorted(online) == sorted(offline)
    for service, frame in online.items():
        columns = store.service_columns(service)
        left = frame.set_index("customer_id")[columns].sort_index()
        right = offline[service].set_index("customer_id")[columns].sort_index()
        pd.testing.assert_frame_equal(left.astype(object).where(left.notna(), None), right.astype(object).where(right.notna(), None), check_dtype=False)


def test_online_store_drops_rows_of_an_earlier_snapshot(store):
    store.materialize(date(2024, 2, 29))  # P personalised then
    store.materialize(date(2024, 3, 31))  # P withdrew on 15 March
    online = store.online_features(["P"], date(2024, 3, 31))
    assert list(online) == ["basic"]
    import sqlite3

    with sqlite3.connect(store.settings.feast_online) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%transactions%'")]
        # Only N was personalised on 31 March: P's February row is gone.
        assert [con.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{t}"').fetchone()[0] for t in tables] == [1]


def test_feature_report_explains_each_category(store):
    report = feature_report(store, "G", date(2024, 2, 29))
    verdicts = {s.view: s for s in report.sections}
    assert report.tier == "basic"
    assert verdicts["transactions"].permitted is False and "personalised" in verdicts["transactions"].verdict
    assert verdicts["group_agreements"].permitted is False and "group_data_sharing" in verdicts["group_agreements"].verdict
    assert verdicts["personal"].values.set_index("feature").loc["age_years", "value"] == 38


def test_policy_moving_employer_to_basic_changes_the_basic_feature_service(tmp_path):
    import yaml

    from propensity.store import load_definitions

    document = yaml.safe_load((ROOT / "conf" / "policy.yaml").read_text())
    document["categories"]["employer"]["tiers"] = ["personalised", "basic"]
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(document))
    definitions = load_definitions(ROOT / "features")

    def basic_views(settings):
        service = next(o for o in definitions.build(settings) if type(o).__name__ == "FeatureService" and o.name == "basic")
        return sorted(p.name for p in service.feature_view_projections)

    default = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    moved = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path, policy_file=tmp_path / "policy.yaml")
    assert "employer" not in basic_views(default)
    assert basic_views(moved) == sorted([*basic_views(default), "employer"])
    assert "transactions" not in basic_views(moved)


def test_a_store_built_under_another_policy_version_is_refused(store, tmp_path):
    import yaml

    from propensity.errors import MissingInputError

    document = yaml.safe_load((ROOT / "conf" / "policy.yaml").read_text())
    document["version"] = "2099.1"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(document))
    newer = store.settings.with_overrides(policy_file=tmp_path / "policy.yaml")
    rows = entities([("P", "2024-02-29")])
    with pytest.raises(MissingInputError, match=r"built under policy version 2026\.1.*is version 2099\.1.*features build"):
        FeatureStore(newer).historical_features(rows)
    with pytest.raises(MissingInputError, match="policy version"):
        FeatureStore(newer).snapshots()
    assert store.historical_features(rows)["personalised"]["customer_id"].tolist() == ["P"]  # the store itself is unchanged


def copied(store, tmp_path, **overrides):
    """Settings over a copy of the module's data folder (a test may then break the copy)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(store.settings.data_dir, data)
    return store.settings.with_overrides(data_dir=data, **overrides)


def test_a_policy_edited_without_a_version_bump_is_refused(store, tmp_path):
    import yaml

    from propensity.errors import MissingInputError

    document = yaml.safe_load((ROOT / "conf" / "policy.yaml").read_text())
    document["categories"]["employer"]["tiers"] = ["personalised", "basic"]  # same version, other rules
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(document))
    edited = store.settings.with_overrides(policy_file=tmp_path / "policy.yaml")
    assert edited.policy.version == store.settings.policy.version
    with pytest.raises(MissingInputError, match="edited without a version bump.*features build"):
        FeatureStore(edited).historical_features(entities([("P", "2024-02-29")]))


def test_a_refused_store_leaves_the_online_store_as_it_was(store, tmp_path):
    import json
    import sqlite3

    from propensity.errors import MissingInputError

    settings = copied(store, tmp_path)
    FeatureStore(settings).materialize(date(2024, 4, 30))

    def online_rows():
        with sqlite3.connect(settings.feast_online) as con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}

    before = online_rows()
    assert sum(before.values()) > 0
    manifest = settings.features_dir / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "policy_version": "2020.1"}))
    with pytest.raises(MissingInputError, match="policy version 2020.1"):
        FeatureStore(settings).materialize(date(2024, 4, 30))
    assert online_rows() == before


def test_a_store_without_snapshots_says_what_to_run(store, tmp_path):
    import json

    from propensity.errors import MissingInputError

    settings = copied(store, tmp_path)
    manifest = settings.features_dir / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "snapshots": []}))
    with pytest.raises(MissingInputError, match="holds no snapshot.*features build"):
        feature_report(FeatureStore(settings), "P", date(2024, 2, 29))


def test_a_view_file_without_a_column_of_its_definition_is_refused(store, tmp_path):
    import pyarrow.parquet as pq

    from propensity.errors import MissingInputError

    settings = copied(store, tmp_path)
    view = settings.features_dir / "account_balance.parquet"
    table = pq.read_table(view)
    pq.write_table(table.drop_columns(["balance_savings_nok"]), view)
    with pytest.raises(MissingInputError, match=r"view account_balance .* lacks 1 column\(s\) .*\(balance_savings_nok\).*features build"):
        FeatureStore(settings).historical_features(entities([("P", "2024-02-29")]))
    assert pq.read_schema(view).names == [n for n in table.column_names if n != "balance_savings_nok"]  # nothing rewritten


def test_an_unreadable_view_file_is_refused_with_its_name(store, tmp_path):
    from propensity.errors import MissingInputError

    settings = copied(store, tmp_path)
    view = settings.features_dir / "employer.parquet"
    view.write_bytes(view.read_bytes()[:500])  # cut short, as by a full disk
    with pytest.raises(MissingInputError, match=r"unreadable file for view employer \(employer.parquet: .*features build"):
        FeatureStore(settings).historical_features(entities([("P", "2024-02-29")]))


def test_feature_report_refuses_a_date_that_is_not_a_snapshot(store):
    from propensity.errors import MissingInputError

    with pytest.raises(MissingInputError, match="no feature snapshot for 2024-02-15"):
        feature_report(store, "G", date(2024, 2, 15))


OFFSETS = [timedelta(days=-2), timedelta(days=-1), timedelta(microseconds=-1), timedelta(0), timedelta(hours=1),
           timedelta(days=1) - timedelta(microseconds=1), timedelta(days=1), timedelta(days=3)]
MONTH_ENDS = [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]
entity_rows = st.lists(
    st.tuples(st.sampled_from("POGN"), st.sampled_from(MONTH_ENDS), st.sampled_from(OFFSETS)), min_size=1, max_size=12
)


@hsettings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=entity_rows, service=st.sampled_from(["personalised", "basic"]))
def test_range_narrowed_join_equals_feasts_own_retrieval(store, rows, service):
    # Entity instants on, just before, inside and past each snapshot's TTL window.
    keys = pd.DataFrame(
        {
            "customer_id": [c for c, _, _ in rows],
            "event_timestamp": [snapshot_instant(d) + off for _, d, off in rows],
            "_row": range(len(rows)),
        }
    )
    ours = store._point_in_time_job(keys.copy(), service).to_df().sort_values("_row").reset_index(drop=True)
    feast = store._fs.get_historical_features(entity_df=keys.copy(), features=store.service(service)).to_df()
    feast = feast.sort_values("_row").reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, feast[ours.columns])


def test_a_materialisation_failing_part_way_puts_the_online_store_back(store, tmp_path, monkeypatch):
    import sqlite3

    settings = copied(store, tmp_path)
    fs = FeatureStore(settings)
    fs.materialize(date(2024, 4, 30))

    def online_rows():
        with sqlite3.connect(settings.feast_online) as con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            rows = {t: sorted(con.execute(f'SELECT entity_key, feature_name, value FROM "{t}"').fetchall()) for t in tables}
        con.close()
        return rows

    before = online_rows()
    assert sum(len(r) for r in before.values()) > 0
    real = fs._fs.materialize

    def fail_after_the_first_view(start_date, end_date):
        # Feast loads one view, then fails (e.g. a full disk or a killed connection).
        real(start_date=start_date, end_date=end_date, feature_views=["personal"])
        raise OSError("disk full")

    monkeypatch.setattr(fs._fs, "materialize", fail_after_the_first_view)
    with pytest.raises(OSError, match="disk full"):
        fs.materialize(date(2024, 3, 31))
    assert online_rows() == before
    assert not list(settings.feast_online.parent.glob(".*.tmp-*"))
    monkeypatch.undo()
    assert fs.online_features(["G"], date(2024, 4, 30))  # the store object still reads the restored file


def test_a_failed_restore_keeps_the_copy_and_names_it(store, tmp_path, monkeypatch):
    from propensity import store as store_module
    from propensity.errors import PropensityError

    settings = copied(store, tmp_path)
    fs = FeatureStore(settings)
    fs.materialize(date(2024, 4, 30))
    real_copy = store_module._sqlite_copy
    calls = []

    def copy_once(source, target):
        calls.append(target)
        if len(calls) > 1:
            raise OSError("disk full")  # the restore fails as well
        real_copy(source, target)

    def fail(start_date, end_date):
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "_sqlite_copy", copy_once)
    monkeypatch.setattr(fs._fs, "materialize", fail)
    with pytest.raises(PropensityError, match="copy taken before is kept at .*features build") as raised:
        fs.materialize(date(2024, 3, 31))
    kept = calls[0]
    assert kept.is_file() and str(kept) in str(raised.value)
    assert kept.name.startswith(".online.db.tmp-materialize-")
