"""The scoring job end to end: real Feast, MLflow, LightGBM and DuckDB on a small bank
with a few hand-made customers whose rows the rules decide."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest

from propensity import score, synth, warehouse
from propensity.cli import pipeline
from propensity.config import load_settings
from propensity.errors import JobLockedError, MissingInputError, PropensityError
from propensity.registry import load_champion, tracking_uri
from propensity.snapshots import snapshot_instant
from propensity.store import FeatureStore
from tests.bank import TinyBank
from tests.conftest import ROOT

PRODUCTS = ["mortgage", "bsu"]
SCORE_DATE = date(2025, 8, 31)


def hand_made() -> TinyBank:
    bank = TinyBank()
    bank.customer("ZHOLD", birth="1996-03-01", since="2019-01-01").agreement("ZHOLD", "mortgage", "2020-05-01")
    bank.consent("ZHOLD", "2023-01-01T00:00:00Z")
    bank.customer("ZOLD", birth="1970-03-01", since="2019-01-01").consent("ZOLD", "2023-01-01T00:00:00Z")
    bank.customer("ZOBJ", birth="1990-03-01", since="2019-01-01").consent("ZOBJ", "2023-01-01T00:00:00Z")
    bank.reservation("ZOBJ", "2025-03-10T12:00:00Z", "profiling")
    bank.customer("ZWDR", birth="1995-03-01", since="2019-01-01").consent("ZWDR", "2023-01-01T00:00:00Z")
    bank.consent("ZWDR", "2025-06-12T08:00:00Z", granted=False)
    bank.customer("ZPER", birth="1995-03-01", since="2019-01-01").consent("ZPER", "2023-01-01T00:00:00Z")
    return bank


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    data = tmp_path_factory.mktemp("scoring")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)
    bank = synth.generate_bank(2500, 20, date(2024, 1, 1), 11, 4.0, settings.policy, settings.catalogue)
    synth.write_bank(bank, settings.raw_dir, settings.truth_dir)
    hand_made().append_to(settings.raw_dir)
    store = FeatureStore(settings)
    pipeline(settings, "build_features").run(settings, progress=lambda _: None, store=store)
    pipeline(settings, "train").run(settings, PRODUCTS, None, progress=lambda _: None, store=store)
    run = pipeline(settings, "score").run(settings, SCORE_DATE, PRODUCTS, progress=lambda _: None, store=store)
    return settings, store, run


def rows_of(settings, customer: str) -> pd.DataFrame:
    frame = score.read_partition(settings, SCORE_DATE)
    return frame[frame["customer_id"] == customer].sort_values("product").reset_index(drop=True)


def test_partition_has_the_documented_columns_and_one_row_per_customer_product(scored):
    settings, _, run = scored
    frame = score.read_partition(settings, SCORE_DATE)
    assert list(frame.columns) == score.SCORE_COLUMNS
    assert not frame.duplicated(["customer_id", "product"]).any()
    assert run.rows == len(frame) > 1000
    assert frame["probability"].between(0, 1).all()
    assert set(frame["decile"]) == set(range(1, 11))


def test_holder_gets_no_row_for_the_product_held(scored):
    assert rows_of(scored[0], "ZHOLD")["product"].tolist() == ["bsu"]


def test_ineligible_age_gets_no_row(scored):
    assert rows_of(scored[0], "ZOLD")["product"].tolist() == ["mortgage"]  # 55: too old for BSU


def test_objecting_customer_gets_nothing(scored):
    assert rows_of(scored[0], "ZOBJ").empty


def test_withdrawn_consent_is_scored_by_the_basic_model_under_legitimate_interest(scored):
    rows = rows_of(scored[0], "ZWDR")
    assert rows["tier"].unique().tolist() == ["basic"]
    assert rows["legal_basis"].unique().tolist() == ["legitimate_interest"]
    assert rows["model_name"].tolist() == ["propensity-bsu-basic", "propensity-mortgage-basic"]


def test_personalised_customer_is_scored_under_consent(scored):
    rows = rows_of(scored[0], "ZPER")
    assert rows["legal_basis"].unique().tolist() == ["consent"]
    assert rows["model_name"].tolist() == ["propensity-bsu-personalised", "propensity-mortgage-personalised"]


def test_probabilities_equal_the_champion_loaded_from_mlflow(scored):
    settings, store, _ = scored
    frame = score.read_partition(settings, SCORE_DATE)
    mlflow.set_tracking_uri(tracking_uri(settings))
    mlflow.set_registry_uri(tracking_uri(settings))
    for tier in ("personalised", "basic"):
        rows = frame[(frame["product"] == "mortgage") & (frame["tier"] == tier)].head(50)
        entity = pd.DataFrame({"customer_id": rows["customer_id"].to_numpy(), "event_timestamp": snapshot_instant(SCORE_DATE)})
        features = store.historical_features(entity, service=tier)[tier]
        model = mlflow.pyfunc.load_model(f"models:/propensity-mortgage-{tier}@champion")
        champion = load_champion(settings, "mortgage", tier)
        expected = np.asarray(model.predict(features[champion.features])).reshape(-1)
        np.testing.assert_allclose(rows["probability"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_rerun_gives_identical_probabilities_and_replaces_the_partition(scored):
    settings, store, first = scored
    before = score.read_partition(settings, SCORE_DATE)
    again = pipeline(settings, "score").run(settings, SCORE_DATE, PRODUCTS, progress=lambda _: None, store=store)
    after = score.read_partition(settings, SCORE_DATE)
    assert again.run_id != first.run_id
    assert sorted(p.name for p in score.partition_dir(settings, SCORE_DATE).iterdir()) == ["part-0.parquet"]
    cols = ["customer_id", "product", "probability", "rank", "decile", "tier", "model_version"]
    pd.testing.assert_frame_equal(before[cols], after[cols])


def test_a_run_for_some_products_replaces_only_their_rows(scored):
    settings, store, _ = scored
    before = score.read_partition(settings, SCORE_DATE)
    run = pipeline(settings, "score").run(settings, SCORE_DATE, ["mortgage"], progress=lambda _: None, store=store)
    after = score.read_partition(settings, SCORE_DATE)
    assert sorted(after["product"].unique()) == sorted(PRODUCTS)
    cols = ["customer_id", "product", "probability", "rank", "decile", "tier", "run_id", "scored_at"]
    kept = lambda frame: frame.loc[frame["product"] == "bsu", cols].astype({c: str for c in ("product", "tier", "run_id")}).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(kept(before), kept(after))  # untouched, with the run that wrote them
    mortgage = after[after["product"] == "mortgage"]
    assert set(mortgage["run_id"]) == {run.run_id} and run.rows == len(mortgage)
    assert mortgage["rank"].tolist() == list(range(1, len(mortgage) + 1))
    pd.testing.assert_series_equal(before.loc[before["product"] == "mortgage", "probability"].reset_index(drop=True),
                                   mortgage["probability"].reset_index(drop=True))


def test_views_return_the_same_numbers_as_the_parquet_files(scored):
    settings, _, _ = scored
    frame = score.read_partition(settings, SCORE_DATE)
    counts = warehouse.query(settings, "SELECT product, COUNT(*) AS n, SUM(probability) AS s FROM scores "
                                       "WHERE score_date = DATE '2025-08-31' GROUP BY product ORDER BY product")
    expected = frame.groupby("product").agg(n=("customer_id", "size"), s=("probability", "sum")).reset_index()
    assert counts["n"].tolist() == expected["n"].tolist()
    np.testing.assert_allclose(counts["s"], expected["s"])
    wide = warehouse.query(settings, "SELECT * FROM scores_wide WHERE customer_id = 'ZPER'")
    per = rows_of(settings, "ZPER").set_index("product")["probability"]
    assert wide.loc[0, "mortgage"] == pytest.approx(per["mortgage"]) and wide.loc[0, "bsu"] == pytest.approx(per["bsu"])
    runs = warehouse.query(settings, "SELECT * FROM score_runs")
    assert len(runs) >= 1 and runs["rows"].max() == len(frame)
    typed = warehouse.query(settings, "SELECT score_date, SUM(rank) AS ranks FROM latest_scores GROUP BY score_date")
    assert typed["score_date"].tolist() == [SCORE_DATE]  # a date, as SQL typed it
    assert typed["ranks"].tolist() == [int(frame["rank"].sum())] and str(typed["ranks"].dtype) == "Int64"


def test_queries_and_runs_go_on_while_an_analyst_holds_the_database_file(scored):
    settings, store, _ = scored
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
         "print('open', flush=True); time.sleep(60)", str(settings.warehouse_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        # Queries run in memory beside the file; a run publishes and says the file was busy.
        assert warehouse.query(settings, "SELECT COUNT(*) AS n FROM latest_scores")["n"].item() > 0
        said = []
        pipeline(settings, "score").run(settings, SCORE_DATE, PRODUCTS, progress=said.append, store=store)
        assert any(line.startswith("warning: analyst views") for line in said)
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(PropensityError, match="empty query"):
        warehouse.query(settings, "  ")
    with pytest.raises(PropensityError, match="query failed"):
        warehouse.query(settings, "SELECT * FROM no_such_view")


def test_second_concurrent_run_is_refused_by_the_lock(scored):
    settings, store, _ = scored
    lock = score.run_lock(settings)
    lock.acquire()
    try:
        with pytest.raises(JobLockedError, match="another scoring run holds"):
            score.run_scoring(settings, store, load_champion, lambda d: pd.DataFrame(), SCORE_DATE, PRODUCTS)
    finally:
        lock.release()


def test_missing_champion_fails_before_anything_is_written(scored):
    settings, store, _ = scored
    before = sorted(p.name for p in settings.scores_dir.iterdir())
    with pytest.raises(MissingInputError, match="no champion model for propensity-car_loan-personalised"):
        pipeline(settings, "score").run(settings, SCORE_DATE, ["car_loan"], progress=lambda _: None, store=store)
    assert sorted(p.name for p in settings.scores_dir.iterdir()) == before


def test_killed_run_leaves_the_previous_partition_intact(scored):
    settings, _, _ = scored
    before = score.read_partition(settings, SCORE_DATE)
    script = textwrap.dedent(
        f"""
        import os, signal
        import pyarrow.parquet as pq
        from datetime import date
        from propensity.cli import pipeline
        from propensity.config import load_settings

        def die_midway(table, path, *args, **kwargs):
            with open(path, "wb") as fh:
                fh.write(b"PAR1 half a file")
            os.kill(os.getpid(), signal.SIGKILL)
        pq.write_table = die_midway
        settings = load_settings({str(ROOT / "conf" / "pipeline.yaml")!r}, data_dir={str(settings.data_dir)!r})
        pipeline(settings, "score").run(settings, date(2025, 8, 31), {PRODUCTS!r}, progress=lambda _: None)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL
    after = score.read_partition(settings, SCORE_DATE)
    pd.testing.assert_frame_equal(before, after)
    leftovers = [p.name for p in settings.scores_dir.iterdir() if ".staging-" in p.name]
    assert leftovers, "the killed run should have left its staging folder behind"
    assert warehouse.query(settings, "SELECT COUNT(*) AS n FROM scores WHERE score_date = DATE '2025-08-31'")["n"][0] == len(before)


def test_features_missing_for_the_date_fail_before_anything_is_written(scored, tmp_path):
    import shutil

    settings, _, _ = scored
    data = tmp_path / "data"
    shutil.copytree(settings.data_dir, data)
    copy = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)
    # The snapshot is listed in the manifest, but every view lost its rows of that date.
    instant = snapshot_instant(SCORE_DATE)
    for view in FeatureStore(copy).service_views("personalised") + FeatureStore(copy).service_views("basic"):
        path = copy.features_dir / f"{view.name}.parquet"
        frame = pd.read_parquet(path)
        frame[frame["event_timestamp"] != instant].to_parquet(path, index=False)
    store = FeatureStore(copy)
    store.apply()
    before = score.read_partition(copy, SCORE_DATE)
    with pytest.raises(MissingInputError, match="features for 2025-08-31 are missing for every"):
        pipeline(copy, "score").run(copy, SCORE_DATE, PRODUCTS, progress=lambda _: None, store=store)
    pd.testing.assert_frame_equal(score.read_partition(copy, SCORE_DATE), before)


def test_extracts_newer_than_the_features_are_refused_as_stale(scored, tmp_path):
    import shutil

    settings, _, _ = scored
    data = tmp_path / "data"
    shutil.copytree(settings.data_dir, data)
    copy = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)
    # A new month arrived in the extracts; the feature build has not run since.
    TinyBank().transaction("ZPER", "2025-10-02T12:00:00Z", -100.0).append_to(copy.raw_dir)
    before = score.read_partition(copy, SCORE_DATE)
    store = FeatureStore(copy)
    with pytest.raises(MissingInputError, match="stale features: the extracts .* cover 2025-09-30, the newest feature snapshot is 2025-08-31"):
        pipeline(copy, "score").run(copy, None, PRODUCTS, progress=lambda _: None, store=store)
    pd.testing.assert_frame_equal(score.read_partition(copy, SCORE_DATE), before)
    # Asked for on purpose, the newest snapshot is still scored.
    pipeline(copy, "score").run(copy, SCORE_DATE, PRODUCTS, progress=lambda _: None, store=store)
