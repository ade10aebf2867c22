"""Training end to end: synthetic bank → Feast → LightGBM → MLflow registry and aliases.

One small synthetic bank (10000 customers x 20 months, the canary product and mortgage)
is built once for the module and trained three times on the same data folder:

1. a deliberately weak configuration (two-leaf stumps, two rounds): every model is the
   first of its name and becomes champion;
2. the configured training: clearly better for mortgage, so it is promoted;
3. the configured training again with the same seed: identical metrics, so it does not
   beat the champion by the margin and stays challenger.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from propensity import synth
from propensity.config import load_settings
from propensity.contract import validate
from propensity.duck import connect
from propensity.errors import MissingInputError
from propensity.features import build_offline_store, read_manifest
from propensity.labels import label_frame, labelled_snapshots
from propensity.registry import client, git_changes, list_champions, load_champion, log_training, model_name
from propensity.snapshots import snapshot_instant
from propensity.store import FeatureStore
from propensity.train import dataset_fingerprint, plan_training, time_split, train_models
from tests.bank import TinyBank

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS, MONTHS = 10000, 20
OTHER = "mortgage"


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("training")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data_dir)
    canary = settings.catalogue.canary_product
    generated = synth.generate_bank(
        CUSTOMERS, MONTHS, settings.synth.start, settings.seed, settings.synth.transactions_per_month,
        settings.policy, settings.catalogue,
    )
    synth.write_bank(generated, settings.raw_dir, settings.truth_dir)
    raw = validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    store = FeatureStore(settings)
    store.apply()

    weak_spec = yaml.safe_load(settings.training_file.read_text())
    weak_spec["lightgbm"].update({"n_estimators": 2, "num_leaves": 2, "early_stopping_rounds": 1})
    weak_file = data_dir / "training_weak.yaml"
    weak_file.write_text(yaml.safe_dump(weak_spec))
    weak = settings.with_overrides(training_file=weak_file)

    products = [canary, OTHER]
    first = train_job(weak, store, raw, products=products)
    second = train_job(settings, store, raw, products=products)
    third = train_job(settings, store, raw, products=products)
    return {
        "settings": settings, "store": store, "raw": raw, "canary": canary,
        "first": first.table.set_index(["product", "tier"]),
        "second": second.table.set_index(["product", "tier"]),
        "third": third.table.set_index(["product", "tier"]),
    }


def train_job(settings, store, raw, products=None, tiers=None):
    """The training job as the ``train`` pipeline composes it, on validated raw tables."""
    quiet = lambda _: None  # noqa: E731
    plan = plan_training(settings, store, raw.relation, products, tiers, quiet)
    return log_training(settings, plan, train_models(settings, store, plan, quiet), quiet)


def _run(settings, run_id):
    return client(settings).get_run(run_id)


def test_first_model_of_each_name_becomes_champion(bank):
    first = bank["first"]
    assert first["promoted"].all()
    assert (first["version"] == "1").all()
    assert (first["champion_version"] == "1").all()


def test_better_challenger_is_promoted(bank):
    row = bank["second"].loc[(OTHER, "personalised")]
    assert row["auc"] > bank["first"].loc[(OTHER, "personalised"), "auc"] + 0.02
    assert row["promoted"]
    assert row["version"] == "2" and row["champion_version"] == "2"
    assert load_champion(bank["settings"], OTHER, "personalised").version == "2"


def test_challenger_no_better_than_champion_stays_challenger(bank):
    settings = bank["settings"]
    third = bank["third"]
    row = third.loc[(OTHER, "personalised")]
    assert not row["promoted"]
    assert row["version"] == "3" and row["champion_version"] == "2"
    mlc = client(settings)
    name = model_name(OTHER, "personalised")
    assert str(mlc.get_model_version_by_alias(name, "challenger").version) == "3"
    assert str(mlc.get_model_version_by_alias(name, "champion").version) == "2"
    run = _run(settings, row["run_id"])
    assert run.data.tags["promoted"] == "false"
    assert run.data.metrics["champion_roc_auc_same_test"] == pytest.approx(row["auc"])


def test_same_seed_gives_the_same_metrics(bank):
    columns = ["auc", "pr_auc", "lift", "brier", "ece", "logistic_auc", "oracle_auc", "best_iteration", "rows_train"]
    pd.testing.assert_frame_equal(bank["second"][columns], bank["third"][columns])


def test_canary_basic_model_is_blind_and_personalised_is_not(bank):
    second, canary = bank["second"], bank["canary"]
    basic = second.loc[(canary, "basic"), "auc"]
    personalised = second.loc[(canary, "personalised"), "auc"]
    assert basic < 0.6
    assert personalised > basic + 0.05
    assert second.loc[(canary, "basic"), "oracle_auc"] > 0.65  # the signal exists, the basic tier cannot see it


def test_personalised_model_never_sees_a_basic_row(bank):
    settings = bank["settings"]
    for product in (bank["canary"], OTHER):
        personalised = _run(settings, bank["second"].loc[(product, "personalised"), "run_id"]).data.metrics
        basic = _run(settings, bank["second"].loc[(product, "basic"), "run_id"]).data.metrics
        for split in ("train", "valid", "test"):
            assert personalised[f"rows_{split}_basic"] == 0
            assert personalised[f"rows_{split}_personalised"] == personalised[f"rows_{split}"] > 0
            assert basic[f"rows_{split}_basic"] > 0
            # The basic model reads the personalised rows too (with basic features only).
            assert basic[f"rows_{split}_personalised"] == personalised[f"rows_{split}"]


def test_training_fingerprint_is_the_personalised_rows_at_their_snapshot(bank):
    settings, store, raw = bank["settings"], bank["store"], bank["raw"]
    snapshots = [date.fromisoformat(d) for d in read_manifest(settings)["snapshots"]]
    label = settings.catalogue.products[OTHER].label
    labelled = labelled_snapshots(snapshots, label.gap_months, label.horizon_months, snapshots[-1])
    split = time_split(labelled, label.gap_months + label.horizon_months, settings.training.validation)
    con = connect()
    try:
        labels = label_frame(con, raw.relation, settings.catalogue, settings.policy, split.train, snapshots[-1], [OTHER])
    finally:
        con.close()
    entity = labels.assign(event_timestamp=[snapshot_instant(d) for d in labels["snapshot_date"]])
    tiers = store.tiers(entity)
    expected = labels[(tiers["tier"] == "personalised").to_numpy()]
    run = _run(settings, bank["second"].loc[(OTHER, "personalised"), "run_id"])
    assert run.data.tags["dataset_fingerprint"] == dataset_fingerprint(expected)
    assert run.data.metrics["rows_train"] == len(expected)


def test_runs_record_governance_tags_and_log_no_training_data(bank):
    settings = bank["settings"]
    run = _run(settings, bank["second"].loc[(OTHER, "basic"), "run_id"])
    tags = run.data.tags
    assert tags["feature_service"] == "basic"
    assert "transactions" not in tags["categories"].split(",")
    assert tags["policy_version"] == settings.policy.version
    assert tags["data_window_test"] == bank["second"].loc[(OTHER, "basic"), "test_window"]
    assert tags["git_commit"]
    changes = git_changes(settings.root)
    assert tags["git_dirty"] == ("unknown" if changes is None else str(bool(changes)).lower())
    assert tags["mlflow.parentRunId"]
    artifacts = {a.path for a in client(settings).list_artifacts(run.info.run_id)}
    assert artifacts == {"report.html"}
    report = (settings.reports_dir / "models" / f"{model_name(OTHER, 'basic')}.html").read_text()
    assert report.count("data:image/png;base64,") == 4


def test_every_run_and_model_is_stored_under_the_data_folder(bank):
    settings = bank["settings"]
    mlc = client(settings)
    home = settings.mlflow_artifacts.resolve().as_uri()
    runs = mlc.search_runs([e.experiment_id for e in mlc.search_experiments()], max_results=1000)
    assert len(runs) == 3 * (1 + 4)  # three jobs: a parent run and four product x tier runs each
    assert {r.info.experiment_id for r in runs} == {_run(settings, bank["second"].iloc[0]["run_id"]).info.experiment_id}
    assert all(r.info.artifact_uri.startswith(home) for r in runs)
    models = mlc.search_logged_models([e.experiment_id for e in mlc.search_experiments()])
    assert len(models) == 3 * 4 and all(m.artifact_location.startswith(home) for m in models)


def test_champion_predicts_probabilities_on_service_columns(bank):
    import mlflow

    settings, store = bank["settings"], bank["store"]
    last = date.fromisoformat(read_manifest(settings)["snapshots"][-1])
    customers = pd.read_parquet(settings.raw_dir / "customers.parquet", columns=["customer_id"])["customer_id"][:500]
    entity = pd.DataFrame({"customer_id": customers, "event_timestamp": snapshot_instant(last)})
    frame = store.historical_features(entity, service="personalised")["personalised"]
    champion = load_champion(settings, OTHER, "personalised")
    assert champion.features == store.service_columns("personalised")
    p = champion.predict(frame)
    assert p.shape == (len(frame),) and len(frame) > 100
    assert np.all((p >= 0) & (p <= 1))
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_name(OTHER, 'personalised')}@champion")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(frame[champion.features])), p)


def test_list_champions_has_one_row_per_model(bank):
    table = list_champions(bank["settings"])
    assert len(table) == 4
    row = table.set_index("name").loc[model_name(OTHER, "personalised")]
    assert row["version"] == "2" and row["product"] == OTHER and row["tier"] == "personalised"
    assert 0.5 < row["auc"] <= 1 and 0 <= row["ece"] < 0.05


def test_missing_champion_is_refused_with_its_name(bank):
    with pytest.raises(MissingInputError, match="propensity-car_loan-basic"):
        load_champion(bank["settings"], "car_loan", "basic")


def test_a_job_that_can_train_no_model_fails_naming_every_skip(tmp_path):
    bank = TinyBank()
    for cid in ("A", "B", "C"):
        bank.customer(cid)
        for month in pd.date_range("2023-01-31", "2024-09-30", freq="ME"):
            bank.balance(cid, month.date().isoformat(), "current", 1000.0)
    bank.write(tmp_path / "raw")  # no customer ever starts a product: no window has a positive
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    raw = validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    store = FeatureStore(settings)
    store.apply()
    with pytest.raises(MissingInputError, match="no model could be trained: propensity-mortgage-basic: mortgage / basic"):
        train_job(settings, store, raw, products=["mortgage"], tiers=["basic"])
    failed = client(settings).search_runs([r.experiment_id for r in client(settings).search_experiments()])
    assert [r.info.status for r in failed] == ["FAILED"]


def test_uncommitted_changes_are_read_from_git(tmp_path):
    import subprocess

    assert git_changes(tmp_path) is None  # not a repository: git cannot tell
    run = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "src" / "features.py").write_text("a = 1\n")
    (tmp_path / "notebooks" / "n.ipynb").write_text("{}\n")
    run("add", "src/features.py", "notebooks/n.ipynb")
    run("-c", "user.name=t", "-c", "user.email=t@example.no", "commit", "-q", "-m", "first")
    assert git_changes(tmp_path) == ""
    (tmp_path / "notebooks" / "n.ipynb").write_text('{"outputs": "CUST-0001"}\n')  # notebooks are not read
    assert git_changes(tmp_path) == ""
    (tmp_path / "src" / "features.py").write_text("a = 2\n")
    (tmp_path / "src" / "new.py").write_text("b = 1\n")
    changes = git_changes(tmp_path)
    assert "+a = 2" in changes and "# untracked: src/new.py" in changes and "CUST-0001" not in changes
