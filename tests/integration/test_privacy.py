"""Privacy operations end to end on a hand-made bank: features in Feast (offline and
online), score partitions, a campaign with a response, a customer-matching export, an
MLflow store, reports and logs; then the inventory, the access export, erasure, the
retention purge, rectification and objection (real DuckDB, Feast, SQLite and files)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from propensity import contract, labels, matching, privacy, registry, target, warehouse
from propensity.cli import app, pipeline
from propensity.config import Settings, load_settings
from propensity.consent import interval_at
from propensity.duck import connect
from propensity.errors import MissingInputError
from propensity.features import build_offline_store, retention_mark, views_for_tier
from propensity.score import SCORE_COLUMNS, partition_dir, rank_within_product
from propensity.snapshots import snapshot_instant
from propensity.store import FeatureStore
from tests.bank import TinyBank
from tests.conftest import ROOT, ts

X = "CUST-ERASE-0007"
PERSONALISED = "CUST-KEEP-0001"
OTHERS = [PERSONALISED, "CUST-KEEP-0002", "CUST-KEEP-0003", "CUST-KEEP-0004"]
MONTHS = ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]
SCORE_DAYS = ["2024-01-31", "2024-04-30"]
PRODUCTS = ["mortgage", "car_loan"]
NOOP = lambda _: None  # noqa: E731


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bank_of(customers: list[str], birth: dict[str, str] | None = None) -> TinyBank:
    bank = TinyBank()
    for i, cid in enumerate(customers):
        bank.customer(cid, since="2023-01-01", birth=(birth or {}).get(cid, f"19{70 + i}-03-0{1 + i}"),
                      email=f"{cid.lower()}@example.no", phone=f"+47 9{i + 1:07d}")
        bank.consent(cid, "2023-06-01T00:00:00Z", purpose="email_sms_marketing")
        bank.employment(cid, "2022-01-01").demographics(cid, "2022-01-01")
        for month in MONTHS:
            bank.balance(cid, month, "current", 1000.0 + 100 * i)
            bank.transaction(cid, month[:8] + "10T12:00:00Z", -200.0 - i, merchant_category="travel")
            bank.transaction(cid, month[:8] + "25T12:00:00Z", 30000.0, kind="salary", merchant_category=None)
            bank.digital(cid, month[:8] + "12T08:00:00Z")
        bank.contact(cid, "2024-03-05T10:00:00Z", topic="mortgage")
    if X in customers:
        bank.consent(X, "2023-07-01T00:00:00Z").consent(X, "2023-07-01T00:00:00Z", purpose="group_data_sharing")
        bank.agreement(X, "home_insurance", "2023-08-01", company="insurance")
        bank.reservation(X, "2024-02-01T00:00:00Z", scope="letter")
        bank.campaign("bank-autumn", X, "credit_card", "email", "2023-10-01T09:00:00Z", response="opened",
                      responded_at="2023-10-02T09:00:00Z")
    if PERSONALISED in customers:
        bank.consent(PERSONALISED, "2023-07-01T00:00:00Z")
    return bank


def tiers_at(settings: Settings, customers: list[str], day: str) -> pd.DataFrame:
    """Each customer's tier at the snapshot, from the tier intervals the build wrote (every
    customer of these banks is a customer since 2023)."""
    intervals = pd.read_parquet(settings.features_dir / "tier_intervals.parquet")
    points = pd.DataFrame({"customer_id": customers, "at": pd.Timestamp(snapshot_instant(date.fromisoformat(day)))})
    return interval_at(intervals, points, settings.policy)[["customer_id", "tier"]]


def write_scores(settings: Settings, day: str, customers: list[str]) -> None:
    """A score partition as the scoring job writes it, with each customer's real tier."""
    tiers = tiers_at(settings, customers, day)
    tiers = tiers[tiers["tier"] != "excluded"]
    rows = [(c, p, round(0.9 - 0.07 * i - 0.01 * j, 4), t)
            for i, (c, t) in enumerate(zip(tiers["customer_id"], tiers["tier"])) for j, p in enumerate(PRODUCTS)]
    frame = rank_within_product(pd.DataFrame(rows, columns=["customer_id", "product", "probability", "tier"]))
    frame = frame.assign(
        score_date=date.fromisoformat(day), legal_basis=frame["tier"].map(settings.policy.legal_basis),
        model_name=[f"propensity-{p}-{t}" for p, t in zip(frame["product"], frame["tier"])], model_version="3",
        mlflow_run_id="run-abc", policy_version=settings.policy.version, scored_at=ts("2024-05-03T06:00:00"), run_id="r1",
    )
    folder = partition_dir(settings, date.fromisoformat(day))
    folder.mkdir(parents=True, exist_ok=True)
    frame[SCORE_COLUMNS].to_parquet(folder / "part-0.parquet", index=False)


def campaign_spec(folder: Path, **changes) -> Path:
    spec = {"campaign_id": "mortgage-email", "product": "mortgage", "channel": "email", "selection": {"top_n": 100},
            "send_date": "2024-05-10", "send_time": "09:00", "control_share": 0.0, "seed": 7,
            "contact_policy": {"max_contacts": 3, "per_days": 30, "cooldown_days": 0, "days_since_complaint": 0}}
    spec.update(changes)
    spec = {k: v for k, v in spec.items() if v is not None}
    path = folder / f"{spec['campaign_id']}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def matching_spec(folder: Path) -> Path:
    return campaign_spec(folder, campaign_id="car-social", product="car_loan", channel=None, contact_policy=None,
                         send_date="2024-05-15", customer_matching={"destination": "meta", "delete_after_days": 14})


def needles_of(settings: Settings, cid: str) -> set[str]:
    """The customer's id and the hashes a matching export would carry for them."""
    raw = contract.locate(settings.raw_dir)
    customers = pd.read_parquet(raw.files["customers"][0])
    hashed = matching.hashed_identifiers(customers[customers["customer_id"] == cid], settings.policy)
    return {cid} | {v for v in hashed.drop(columns="customer_id").to_numpy().ravel() if v}


def files_holding(settings: Settings, needles: set[str]) -> list[str]:
    """Independent of the library: raw bytes of every file, and every cell of Parquet files."""
    skip = (settings.raw_dir.resolve(), settings.truth_dir.resolve())
    found = []
    for path in sorted(p for p in settings.data_dir.rglob("*") if p.is_file()):
        if any(path.resolve().is_relative_to(s) for s in skip):
            continue
        data = path.read_bytes()
        hit = any(n.encode() in data for n in needles)
        if not hit and data[:4] == b"PAR1":
            cells = pq.read_table(path).to_pylist()
            hit = any(n in str(v) for row in cells for v in row.values() for n in needles)
        if hit:
            found.append(str(path.relative_to(settings.data_dir)))
    return found


def feature_frames(settings: Settings, without: str | None = None) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted(settings.features_dir.glob("*.parquet")):
        # Nullable dtypes: an integer column keeps its type whether or not the erased
        # customer held its only nulls.
        frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
        if without is not None:
            frame = frame[frame["customer_id"] != without]
        out[path.name] = frame.reset_index(drop=True)
    return out


# --------------------------------------------------------------------------- the world
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = tmp_path_factory.mktemp("privacy")
    specs = tmp_path_factory.mktemp("specs")
    bank_of([X, *OTHERS]).write(data / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=data)
    store = FeatureStore(settings)
    pipeline(settings, "build_features").run(settings, NOOP, store)
    for day in SCORE_DAYS:
        write_scores(settings, day, [X, *OTHERS])
    warehouse.refresh(settings)
    campaign = pipeline(settings, "campaign")
    campaign.build(settings, campaign_spec(specs), progress=NOOP)
    responses = specs / "responses.csv"
    pd.DataFrame([("mortgage-email", X, "clicked", "2024-05-11T10:00:00Z")],
                 columns=["campaign_id", "customer_id", "response", "responded_at"]).to_csv(responses, index=False)
    campaign.responses(settings, responses, progress=NOOP)
    campaign.export_matching(settings, matching_spec(specs), ts("2024-05-12T12:00:00"), progress=NOOP)
    mlflow_client = registry.client(settings)
    registry._experiment_id(mlflow_client, settings)
    (settings.mlflow_artifacts / "1" / "run-abc" / "artifacts").mkdir(parents=True)
    (settings.mlflow_artifacts / "1" / "run-abc" / "artifacts" / "summary.csv").write_text("product,auc\nmortgage,0.71\n")
    (settings.reports_dir / "models").mkdir(parents=True)
    (settings.reports_dir / "models" / "propensity-mortgage-basic.html").write_text("<p>AUC 0.71</p>")
    (settings.reports_dir / "debug").mkdir()
    (settings.reports_dir / "debug" / "top.html").write_text(f"<td>{X}</td><td>{OTHERS[1]}</td>")
    (data / "logs").mkdir()
    (data / "logs" / "score.log").write_text("06:00:01 score date 2024-04-30; 10 rows\n")
    export = pipeline(settings, "privacy").export(settings, X, progress=NOOP)
    return settings, store, export, specs


@pytest.fixture(scope="module")
def erased(world):
    settings, store, _, _ = world
    needles = needles_of(settings, X)
    before = {"features": feature_frames(settings, without=X),
              "log": target.read_log(settings).query("customer_id != @X").reset_index(drop=True),
              "holding": files_holding(settings, needles)}
    receipts = pipeline(settings, "privacy").erase(settings, [X], progress=NOOP)
    return settings, store, needles, before, receipts


# ------------------------------------------------------------------------ the inventory
def test_every_file_the_pipelines_wrote_is_covered_by_the_inventory(world):
    settings = world[0]
    assert privacy.uncovered_files(settings) == []
    assert len(privacy.data_files(settings)) >= 35


def test_a_file_of_an_unregistered_store_is_reported_uncovered(tmp_path):
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "personal.parquet").write_bytes(b"")
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "high_value.parquet").write_bytes(b"")
    assert privacy.uncovered_files(settings) == ["segments/high_value.parquet"]


def test_every_retained_store_has_a_purge_and_every_finder_is_declared(world):
    for st in privacy.inventory(world[0]):
        assert st.finder in privacy.FINDERS and st.retention in privacy.RETENTION_CLASSES and st.kind in privacy.KINDS
        if st.retention != "none":
            assert st.purge_unit in privacy.PURGE_UNITS, st.name


# ------------------------------------------------------------------------ access export
def test_access_export_holds_consents_scores_campaigns_and_matching(world):
    settings, _, export, _ = world
    doc = json.loads((export.path / "export.json").read_text())
    assert export.path.name == sha(X) and (export.path / "export.html").is_file()
    assert doc["customer_id"] == X and doc["customer"]["email"] == f"{X.lower()}@example.no"
    assert [(e["purpose"], e["granted"]) for e in doc["consents"]["events"]] == [
        ("email_sms_marketing", True), ("group_data_sharing", True), ("personalised_marketing", True)]
    assert doc["reservations"]["state_now"]["reserved_letter"] is True and doc["tier_now"] == "personalised"
    assert [i["tier"] for i in doc["tier_intervals"]] == ["basic", "basic", "personalised", "personalised"]
    assert {(s["score_date"], s["product"]) for s in doc["scores"]} == {(d, p) for d in SCORE_DAYS for p in PRODUCTS}
    [campaign] = doc["campaigns"]
    assert (campaign["campaign_id"], campaign["membership"][0]["arm"], campaign["send_file_rows"][0]["email"]) == (
        "mortgage-email", "treated", f"{X.lower()}@example.no")
    assert [(r["entry"], r["response"]) for r in doc["campaign_log"]] == [("sent", "none"), ("response", "clicked")]
    assert doc["bank_campaign_history"][0]["response"] == "opened"
    [exported] = doc["matching_exports"]
    assert (exported["destination"], exported["rows"][0]["email_sha256"]) == ("meta", sha(f"{X.lower()}@example.no"))
    assert doc["stores"]["feature_views"] == sum(len(f["rows"]) for f in doc["features"]) > 0


def test_access_export_names_every_category_actually_used_with_its_legal_basis(world):
    settings, _, export, _ = world
    doc = export.document
    for day in SCORE_DAYS:
        scorings = [p for p in doc["processing"] if p["score_date"] == day]
        assert sorted(p["model_name"] for p in scorings) == ["propensity-car_loan-personalised", "propensity-mortgage-personalised"]
        instant = pd.Timestamp(snapshot_instant(date.fromisoformat(day)))
        used = {f["category"] for f in doc["features"] for r in f["rows"] if pd.Timestamp(r["event_timestamp"]) == instant}
        for scoring in scorings:
            assert used and used <= set(scoring["categories"])
            personalised = views_for_tier("personalised", settings.policy, settings.catalogue)
            assert scoring["categories"] == sorted({v.category for v in personalised})
            assert (scoring["tier"], scoring["legal_basis"]) == ("personalised", "consent")
            assert scoring["products"] == [scoring["model_name"].split("-")[1]] and scoring["group_company_data"] is True
            assert "transactions" in scoring["categories"] and "group_account_balance" in scoring["views"]


def test_access_export_matches_the_documented_json_schema(world):
    import jsonschema
    schema = json.loads((ROOT / "docs" / "access-export.schema.json").read_text())
    jsonschema.validate(world[2].document, schema)
    assert world[2].document["not_read"] == {}


def test_access_export_names_the_raw_sections_it_could_not_read(world, tmp_path):
    settings = world[0]
    raw_copy = tmp_path / "raw"
    shutil.copytree(settings.raw_dir, raw_copy)
    [log_file] = raw_copy.glob("campaign_log.*")
    log_file.write_bytes(b"not a table")
    now = datetime.now(timezone.utc)
    doc = privacy.access_document(settings, contract.locate(raw_copy).relation, X, now)
    assert list(doc["not_read"]) == ["bank_campaign_history"] and "could not be read" in doc["not_read"]["bank_campaign_history"]
    assert doc["bank_campaign_history"] == [] and doc["consents"]["events"] and doc["tier_now"] == "personalised"
    blind = privacy.access_document(settings, None, X, now, "input refused: 1 contract violation(s)")
    assert sorted(blind["not_read"]) == ["bank_campaign_history", "consents", "customer", "reservations"]
    assert "input refused" in blind["not_read"]["consents"] and blind["tier_now"] is None
    assert "Not read:" in privacy.export_html(blind)


# ----------------------------------------------------------------------------- erasure
def test_before_erasure_the_customer_is_in_every_customer_store(erased):
    _, _, _, before, _ = erased
    held = before["holding"]
    for expected in ["features/personal.parquet", "features/transactions.parquet", "features/tier_intervals.parquet",
                     "features/membership.parquet", "online.db", "scores/score_date=2024-04-30/part-0.parquet",
                     "campaigns/mortgage-email/list.csv", "campaigns/mortgage-email/members.parquet",
                     "campaigns/campaign_log.parquet/part-00000002.parquet", "matching/car-social/upload.csv",
                     "matching/car-social/members.parquet", f"privacy/exports/{sha(X)}/export.json", "reports/debug/top.html"]:
        assert expected in held


def test_after_erasure_no_file_under_the_data_folder_holds_the_id_or_its_hashes(erased):
    settings, _, needles, _, receipts = erased
    assert len(needles) == 3  # the id, the hashed e-mail and the hashed phone
    assert files_holding(settings, needles) == []
    assert receipts[0].verified and receipts[0].residual_files == []


def test_erasure_keeps_every_other_customer_and_the_analysts_views_work(erased):
    settings, _, _, before, _ = erased
    after = feature_frames(settings)
    assert after.keys() == before["features"].keys()
    for name, frame in before["features"].items():
        pd.testing.assert_frame_equal(after[name], frame, check_dtype=True)
    pd.testing.assert_frame_equal(target.read_log(settings), before["log"])
    assert (settings.reports_dir / "models" / "propensity-mortgage-basic.html").is_file()
    scores = warehouse.query(settings, "SELECT customer_id, product, rank FROM scores "
                                       "WHERE score_date = DATE '2024-04-30' ORDER BY product, rank")
    assert X not in set(scores["customer_id"])
    assert scores.groupby("product")["rank"].apply(list).tolist() == [[1, 2, 3, 4], [1, 2, 3, 4]]  # re-ranked, no gap


def test_online_store_serves_the_others_and_nothing_of_the_erased_customer(erased):
    settings, store, _, _, _ = erased
    with sqlite3.connect(settings.feast_online) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'propensity_%'")]
        keys = {bytes(r[0]) for t in tables for r in con.execute(f'SELECT DISTINCT entity_key FROM "{t}"')}
    assert not any(X.encode() in k for k in keys) and any(PERSONALISED.encode() in k for k in keys)
    online = store.online_features([PERSONALISED], date(2024, 4, 30))
    assert online["personalised"]["spend_travel_1m_nok"].tolist() == [201.0]


def test_erasure_receipt_is_pseudonymous_and_counts_rows_per_store(erased):
    settings, _, _, _, [receipt] = erased
    document = json.loads(receipt.path.read_text())
    assert receipt.path.parent == settings.data_dir / "privacy" / "erasures"
    assert X not in receipt.path.read_text() and document["customer_sha256"] == sha(X)
    removed = {s["store"]: s["rows_removed"] for s in document["stores"]}
    assert removed["score_partitions"] == 4 and removed["campaign_log"] == 2 and removed["campaign_lists"] == 2
    assert removed["campaign_send_files"] == 1 and removed["matching_members"] == 1 and removed["matching_uploads"] == 1
    assert removed["membership"] == 1 and removed["tier_intervals"] == 4 and removed["online_store"] > 0
    assert removed["access_exports"] == 2 and removed["reports"] == 1 and removed["mlflow_tracking"] == 0
    assert set(document["stores_touched"]) >= {"feature_views", "online_store", "score_partitions", "warehouse"}
    assert document["rows_removed_total"] == sum(removed.values()) and document["nothing_found"] is False
    raw = {r["path"]: r["rows"] for r in document["raw_files_holding_customer"]}
    assert raw["raw/customers.parquet"] == 1 and raw["raw/transactions.parquet"] == 8 and raw["raw/campaign_log.parquet"] == 1
    assert pd.read_parquet(settings.data_dir / "privacy" / "suppressed.parquet")["customer_sha256"].tolist() == [sha(X)]


def test_feature_rows_removed_equal_what_the_store_held(erased):
    settings, _, _, _, [receipt] = erased
    manifest = json.loads((settings.features_dir / "manifest.json").read_text())
    held = sum(v["rows"] for v in manifest["views"].values())
    governance = ("tier_intervals.parquet", "membership.parquet")
    assert held == sum(len(f) for n, f in feature_frames(settings).items() if n not in governance)
    removed = next(s for s in receipt.stores if s.store == "feature_views")
    assert removed.rows_removed > 0 and removed.files_changed == 11


def test_a_second_erasure_removes_nothing_and_its_receipt_says_so(erased):
    settings = erased[0]
    [again] = privacy.erase_customers(settings, [X])
    document = json.loads(again.path.read_text())
    assert document["rows_removed_total"] == 0 and document["nothing_found"] is True
    assert document["previously_suppressed"] is True and document["verified"] is True
    assert len(list((settings.data_dir / "privacy" / "erasures").glob("*.json"))) == 2


def test_the_next_build_from_unchanged_extracts_does_not_bring_the_customer_back(erased):
    settings, store, needles, before, _ = erased
    summary = pipeline(settings, "build_features").run(settings, NOOP, store)
    assert summary.customers_by_tier["excluded"] == 0  # the erased customer is not even counted
    for name, frame in before["features"].items():
        pd.testing.assert_frame_equal(feature_frames(settings)[name], frame)
    assert files_holding(settings, needles) == []
    tiers = FeatureStore(settings).tiers(pd.DataFrame({"customer_id": [X], "event_timestamp": [snapshot_instant(date(2024, 4, 30))]}))
    assert tiers["tier"].tolist() == ["excluded"]  # scoring and training drop the customer before any read


def test_a_hash_shared_with_another_customer_is_blanked_in_their_rows_too(tmp_path):
    shared = "family@example.no"
    bank = TinyBank()
    bank.customer(X, email=shared, phone="+47 91111111").customer(OTHERS[0], email=shared, phone="+47 92222222")
    bank.write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    frame = rank_within_product(pd.DataFrame({"customer_id": [X, OTHERS[0]], "product": "car_loan", "probability": [0.9, 0.8]}))
    frame = frame.assign(score_date=date(2024, 4, 30), tier="basic", legal_basis="legitimate_interest", model_name="m",
                         model_version="1", mlflow_run_id="r", policy_version="p", scored_at=ts("2024-05-01T06:00:00"), run_id="x")
    partition_dir(settings, date(2024, 4, 30)).mkdir(parents=True)
    frame[SCORE_COLUMNS].to_parquet(partition_dir(settings, date(2024, 4, 30)) / "part-0.parquet", index=False)
    pipeline(settings, "campaign").export_matching(settings, matching_spec(tmp_path), ts("2024-05-12T12:00:00"), progress=NOOP)
    [receipt] = pipeline(settings, "privacy").erase(settings, [X], progress=NOOP)
    folder = settings.data_dir / "matching" / "car-social"
    upload = pd.read_csv(folder / "upload.csv", dtype=str, keep_default_na=False)
    assert upload.values.tolist() == [["", sha("+4792222222")]]  # the platform cannot match X by the shared e-mail
    members = pd.read_parquet(folder / "members.parquet")
    assert members.values.tolist() == [[OTHERS[0], None, sha("+4792222222")]]
    assert receipt.verified and {s.store: s.rows_removed for s in receipt.stores}["matching_members"] == 2



def test_a_view_file_no_longer_defined_is_exported_and_erased_too(tmp_path):
    # A store not rebuilt since the catalogue or the policy changed still holds the file of
    # a view the definitions no longer have: the customer's rows in it are theirs all the same.
    bank_of([X, OTHERS[0]]).write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    pipeline(settings, "build_features").run(settings, NOOP)
    leftover = settings.features_dir / "retired_view.parquet"
    shutil.copy(settings.features_dir / "personal.parquet", leftover)
    assert privacy.uncovered_files(settings) == []
    export = pipeline(settings, "privacy").export(settings, X, progress=NOOP)
    doc = json.loads((export.path / "export.json").read_text())
    [retired] = [f for f in doc["features"] if f["view"] == "retired_view"]
    assert retired["category"] is None and len(retired["rows"]) == len(MONTHS)
    [receipt] = pipeline(settings, "privacy").erase(settings, [X], progress=NOOP)
    assert receipt.verified
    assert set(pd.read_parquet(leftover)["customer_id"]) == {OTHERS[0]}


def test_a_feature_build_is_refused_while_a_privacy_job_holds_the_stores(tmp_path):
    from propensity.errors import JobLockedError

    bank_of([X, OTHERS[0]]).write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    with privacy.exclusive(settings):  # what an erasure or a purge holds
        with pytest.raises(JobLockedError, match="another job holds"):
            pipeline(settings, "build_features").run(settings, NOOP)
    assert not settings.features_dir.exists()  # refused before anything was written
    pipeline(settings, "build_features").run(settings, NOOP)
    assert (settings.features_dir / "personal.parquet").is_file()

# ------------------------------------------------------------------------------ retention
def log_row(cid: str, sent_at: str, entry: str = "sent", responded_at: str | None = None) -> dict:
    return {"campaign_id": "old", "customer_id": cid, "product": "mortgage", "channel": "email", "arm": "treated",
            "entry": entry, "sent_at": ts(sent_at), "response": "clicked" if responded_at else "none",
            "responded_at": ts(responded_at) if responded_at else pd.NaT, "reason": None, "logged_at": ts(sent_at)}


@pytest.fixture()
def aged(tmp_path):
    """Features at 2024-01-31..2024-04-30, score partitions and campaign folders dated at
    the month ends, matching exports, and log rows around the 5-year cutoff of 2027-02-01."""
    specs = tmp_path / "specs"
    specs.mkdir()
    bank_of(OTHERS).write(tmp_path / "data" / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path / "data")
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    for day in SCORE_DAYS:
        write_scores(settings, day, OTHERS)
    job = pipeline(settings, "campaign")
    job.build(settings, campaign_spec(specs, campaign_id="jan", send_date="2024-01-31", contact_policy={
        "max_contacts": 5, "cooldown_days": 0, "days_since_complaint": 0}), progress=NOOP)
    job.build(settings, campaign_spec(specs, campaign_id="feb", send_date="2024-02-01"), progress=NOOP)
    job.export_matching(settings, campaign_spec(specs, campaign_id="jan-social", product="car_loan", channel=None,
                                                contact_policy=None, send_date="2024-01-31",
                                                customer_matching={"destination": "meta", "delete_after_days": 1500}),
                        ts("2024-01-20T00:00:00"), progress=NOOP)
    target.append_log(settings, pd.DataFrame([
        log_row(OTHERS[0], "2022-01-31T23:59:59.999999Z"),  # one microsecond before the 5-year cutoff
        log_row(OTHERS[1], "2022-02-01T00:00:00Z"),  # exactly on it
        log_row(OTHERS[2], "2021-12-01T09:00:00Z", "response", "2022-02-03T10:00:00Z"),  # dated by its response
    ]))
    return settings


def test_purge_keeps_data_dated_exactly_n_years_before_and_deletes_one_unit_older(aged):
    settings = aged
    job = pipeline(settings, "privacy")
    before = {p: p.read_bytes() for p in privacy.data_files(settings)}
    # As of 2027-01-31 the 2024-01-31 features, scores, list and export are exactly 3 years
    # old and the log row of 2022-01-31T23:59:59.999999 exactly 5 (same day): all kept.
    assert job.purge(settings, date(2027, 1, 31), dry_run=True, progress=NOOP) == []
    plan = job.purge(settings, date(2027, 2, 1), dry_run=True, progress=NOOP)
    assert {p: p.read_bytes() for p in privacy.data_files(settings)} == before  # a dry run changes nothing
    assert sorted((i.store, i.path, i.action) for i in plan) == sorted([
        *[("feature_views", f"features/{v}.parquet", "delete_rows") for v in
          ["personal", "contact_details", "demographics", "agreements", "account_balance", "digital_behaviour", "contact_history",
           "transactions", "employer"]],
        ("score_partitions", "scores/score_date=2024-01-31", "delete_folder"),
        ("campaign_lists", "campaigns/jan", "delete_folder"),
        ("matching_members", "matching/jan-social", "delete_folder"),
        ("campaign_log", "campaigns/campaign_log.parquet/part-00000003.parquet", "delete_rows"),
    ])
    assert next(i for i in plan if i.store == "campaign_log").rows == 1
    assert next(i for i in plan if i.path == "features/personal.parquet").rows == len(OTHERS)
    with pytest.raises(privacy.FutureDeletionError, match="is after today"):
        job.purge(settings, date(2027, 2, 1), progress=NOOP, today=date(2027, 1, 31))
    assert {p: p.read_bytes() for p in privacy.data_files(settings)} == before  # the refused purge changed nothing
    with pytest.raises(privacy.FutureDeletionError):
        pipeline(settings, "campaign").purge_matching(settings, date(2027, 2, 1), today=date(2027, 1, 31))
    job.purge(settings, date(2027, 2, 1), progress=NOOP, today=date(2027, 2, 1))
    personal = pd.read_parquet(settings.features_dir / "personal.parquet")
    assert sorted(personal["event_timestamp"].dt.strftime("%Y-%m-%d").unique()) == MONTHS[1:]
    assert json.loads((settings.features_dir / "manifest.json").read_text())["snapshots"] == MONTHS[1:]
    assert [p.name for p in sorted(settings.scores_dir.glob("score_date=*"))] == ["score_date=2024-04-30"]
    assert sorted(p.name for p in (settings.data_dir / "campaigns").iterdir() if not p.name.startswith(".")) == [
        "campaign_log.parquet", "feb"]  # sent on 2024-02-01: exactly 3 years old, kept
    assert not (settings.data_dir / "matching" / "jan-social").exists()
    log = target.read_log(settings)
    assert OTHERS[0] not in set(log.loc[log["campaign_id"] == "old", "customer_id"])
    assert {OTHERS[1], OTHERS[2]} <= set(log.loc[log["campaign_id"] == "old", "customer_id"])  # the response dates its row
    assert job.purge(settings, date(2027, 2, 1), dry_run=True, progress=NOOP) == []  # nothing left to purge
    # The next feature build, from the same extracts, does not put the purged snapshot back.
    build_offline_store(settings, contract.validate(settings.raw_dir, settings.policy, settings.catalogue).relation)
    assert json.loads((settings.features_dir / "manifest.json").read_text())["snapshots"] == MONTHS[1:]
    rebuilt = pd.read_parquet(settings.features_dir / "personal.parquet")
    assert sorted(rebuilt["event_timestamp"].dt.strftime("%Y-%m-%d").unique()) == MONTHS[1:]
    # An earlier purge day keeps the later cutoff; a build with nothing after it is refused.
    job.purge(settings, date(2027, 1, 15), progress=NOOP, today=date(2027, 2, 1))
    assert json.loads(retention_mark(settings).read_text())["marketing_cutoff"].startswith("2024-02-01")
    job.purge(settings, date(2027, 5, 1), progress=NOOP, today=date(2027, 5, 1))
    with pytest.raises(MissingInputError, match="before the retention cutoff 2024-05-01"):
        build_offline_store(settings, contract.validate(settings.raw_dir, settings.policy, settings.catalogue).relation)


def test_online_store_rows_follow_the_marketing_retention_to_the_day(world):
    settings = world[0]
    online = settings.feast_online.read_bytes()
    assert [i for i in privacy.purge_plan(settings, date(2027, 4, 30)) if i.store == "online_store"] == []
    [due] = [i for i in privacy.purge_plan(settings, date(2027, 5, 1)) if i.store == "online_store"]
    assert due.rows > 0 and due.action == "delete_rows" and settings.feast_online.read_bytes() == online


def test_years_before_maps_a_leap_day_to_the_28th():
    assert privacy.years_before(date(2028, 2, 29), 3) == date(2025, 2, 28)
    assert privacy.retention_cutoffs(load_settings(ROOT / "conf" / "pipeline.yaml"), date(2027, 2, 1))["contact_log"] == datetime(
        2022, 2, 1, tzinfo=timezone.utc)


# ----------------------------------------------------------- rectification and objection
def test_a_corrected_birth_date_flows_into_age_and_eligibility_on_the_next_run(tmp_path):
    cid = OTHERS[0]
    bank_of(OTHERS, birth={cid: "1989-01-15"}).write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)

    def age_and_bsu() -> tuple[int, bool]:
        raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
        build_offline_store(settings, raw.relation)
        personal = pd.read_parquet(settings.features_dir / "personal.parquet")
        age = personal.loc[(personal["customer_id"] == cid) & (personal["event_timestamp"].dt.month == 4), "age_years"].item()
        con = connect()
        try:
            pairs = labels.eligible_not_holding(con, raw.relation, settings.catalogue, settings.policy, date(2024, 4, 30), ["bsu"])
        finally:
            con.close()
        return age, cid in set(pairs["customer_id"])

    assert age_and_bsu() == (35, False)  # BSU is for ages up to 33
    bank_of(OTHERS, birth={cid: "1998-01-15"}).write(tmp_path / "raw")  # the bank corrects the source
    assert age_and_bsu() == (26, True)


def test_an_objection_removes_the_customer_from_features_and_from_a_pending_list(tmp_path):
    cid = OTHERS[1]
    specs = tmp_path / "specs"
    specs.mkdir()
    bank_of(OTHERS).write(tmp_path / "data" / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path / "data")
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    write_scores(settings, "2024-04-30", OTHERS)
    job = pipeline(settings, "campaign")
    job.build(settings, campaign_spec(specs), progress=NOOP)
    assert cid in set(pd.read_csv(settings.data_dir / "campaigns/mortgage-email/list.csv")["customer_id"])
    bank = bank_of(OTHERS)
    bank.reservation(cid, "2024-04-15T12:00:00Z", scope="profiling")  # the objection, after the scores, before the send
    bank.write(settings.raw_dir)
    job.finalise(settings, "mortgage-email", ts("2024-05-10T08:00:00"), progress=NOOP)
    assert cid not in set(pd.read_csv(settings.data_dir / "campaigns/mortgage-email/list.csv")["customer_id"])
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    personal = pd.read_parquet(settings.features_dir / "personal.parquet")
    months = personal.loc[personal["customer_id"] == cid, "event_timestamp"].dt.strftime("%Y-%m-%d").tolist()
    assert months == MONTHS[:3]  # no row from the objection on: the next scoring drops the customer


# -------------------------------------------------------------------------------- the CLI
def test_cli_erases_exports_and_purges(tmp_path, monkeypatch):
    bank_of([X, *OTHERS]).write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    build_offline_store(settings, raw.relation)
    monkeypatch.setenv("PROPENSITY_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    conf = ["--conf", str(ROOT / "conf" / "pipeline.yaml")]
    exported = runner.invoke(app, ["privacy", "export", "--customer", X, *conf])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "privacy" / "exports" / sha(X) / "export.json").is_file()
    dry = runner.invoke(app, ["privacy", "purge", "--as-of", "2027-02-01", "--dry-run", *conf])
    assert dry.exit_code == 0 and "would delete" in dry.output
    future = runner.invoke(app, ["privacy", "purge", "--as-of", "2999-01-01", *conf])
    assert future.exit_code == 2 and "is after today" in future.output and "--dry-run" in future.output
    assert files_holding(settings, {X}) != []  # the refused purge deleted nothing
    refused = runner.invoke(app, ["matching", "purge", "--as-of", "2999-01-01", *conf])
    assert refused.exit_code == 2 and "is after today" in refused.output
    gone = runner.invoke(app, ["privacy", "erase", "--customer", X, "--customer", OTHERS[3], *conf])
    assert gone.exit_code == 0, gone.output
    assert "raw/customers.parquet still holds 1 row(s)" in " ".join(gone.output.split())
    assert len(list((tmp_path / "privacy" / "erasures").glob("*.json"))) == 2
    assert files_holding(settings, {X, OTHERS[3]}) == []
    blank = runner.invoke(app, ["privacy", "erase", "--customer", " ", *conf])
    assert blank.exit_code == 1 and "blank ids are refused" in blank.output
    unknown = runner.invoke(app, ["privacy", "export", "--customer", "NOBODY-1", *conf])
    assert unknown.exit_code == 1 and "NOBODY-1" in unknown.output
    listed = runner.invoke(app, ["privacy", "inventory", *conf])
    assert listed.exit_code == 0 and "campaign_log" in listed.output
