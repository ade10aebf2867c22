"""Campaign lists, the campaign log, finalise, responses, uplift and customer-matching
exports on hand-made banks (TinyBank raw folders, hand-written score partitions, real
DuckDB and files)."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from propensity import target
from propensity.cli import app, pipeline
from propensity.config import Settings, load_settings
from propensity.errors import ConfigError, ContractError, JobLockedError
from propensity.score import SCORE_COLUMNS, partition_dir, rank_within_product
from tests.bank import TinyBank
from tests.conftest import ROOT, ts

SEND = "2026-03-10T09:00:00Z"
EMAIL_CONSENT = "2025-01-01T00:00:00Z"


# ------------------------------------------------------------------------------ helpers
def settings_for(tmp_path: Path, bank: TinyBank, scores: dict[str, dict[str, float]], day: str = "2026-02-28") -> Settings:
    bank.write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    write_scores(settings, scores, day)
    return settings


def write_scores(settings: Settings, scores: dict[str, dict[str, float]], day: str, personalised: tuple[str, ...] = ()) -> None:
    """A score partition as the scoring job writes it: {product: {customer_id: probability}};
    customers in ``personalised`` were scored by the personalised model, the rest by the basic."""
    rows = [(cid, product, p) for product, by_customer in scores.items() for cid, p in by_customer.items()]
    frame = rank_within_product(pd.DataFrame(rows, columns=["customer_id", "product", "probability"]))
    frame = frame.assign(
        score_date=date.fromisoformat(day), tier=frame["customer_id"].map(lambda c: "personalised" if c in personalised else "basic"),
        legal_basis="legitimate_interest", model_name=frame["product"].map(lambda p: f"propensity-{p}-basic"), model_version="1",
        mlflow_run_id="run0",
        policy_version=settings.policy.version, scored_at=ts("2026-03-01T06:00:00"), run_id="test",
    )
    folder = partition_dir(settings, date.fromisoformat(day))
    folder.mkdir(parents=True, exist_ok=True)
    frame[SCORE_COLUMNS].to_parquet(folder / "part-0.parquet", index=False)


def spec_file(folder: Path, **changes) -> Path:
    spec = {
        "campaign_id": "mortgage-email",
        "product": "mortgage",
        "channel": "email",
        "selection": {"top_n": 1000},
        "send_date": "2026-03-10",
        "send_time": "09:00",
        "control_share": 0.0,
        "seed": 7,
        "contact_policy": {"max_contacts": 2, "per_days": 30, "cooldown_days": 60, "days_since_complaint": 30},
    }
    spec.update(changes)
    spec = {k: v for k, v in spec.items() if v is not None}
    path = folder / f"{spec['campaign_id']}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def campaign_job(settings: Settings):
    return pipeline(settings, "campaign")


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


# ----------------------------------------------------------------- a bank of the rules
RULES = ["A", "R", "ALL", "L", "NC", "X", "CAP", "COOL", "OLDCOOL", "CMP", "OLDCMP", "CLOSED"]


def rules_bank() -> TinyBank:
    bank = TinyBank()
    for cid in RULES:
        bank.customer(cid, closed="2026-03-01" if cid == "CLOSED" else None, phone=f"+47 900 00 {RULES.index(cid):03d}")
        if cid != "NC":
            bank.consent(cid, EMAIL_CONSENT, purpose="email_sms_marketing")
    bank.reservation("R", "2026-03-01T00:00:00Z", scope="email")
    bank.reservation("ALL", "2026-03-01T00:00:00Z", scope="all_channels")
    bank.reservation("L", "2026-02-01T00:00:00Z", scope="email").reservation("L", "2026-03-01T00:00:00Z", scope="email", placed=False)
    bank.reservation("X", "2026-03-01T00:00:00Z", scope="profiling")
    bank.campaign("bank-1", "CAP", "car_loan", "sms", "2026-02-20T09:00:00Z")
    bank.campaign("bank-2", "CAP", "credit_card", "email", "2026-03-05T09:00:00Z")
    bank.campaign("bank-3", "COOL", "mortgage", "letter", "2026-01-29T09:00:00Z")  # 40 days before the send
    bank.campaign("bank-4", "OLDCOOL", "mortgage", "letter", "2025-12-30T09:00:00Z")  # 70 days before
    bank.contact("CMP", "2026-02-28T10:00:00Z", topic="complaint")
    bank.contact("OLDCMP", "2026-01-29T10:00:00Z", topic="complaint")
    return bank


RULE_SCORES = {"mortgage": {cid: round(0.9 - 0.05 * i, 2) for i, cid in enumerate(RULES)},
               "car_loan": {cid: round(0.5 - 0.01 * i, 2) for i, cid in enumerate(RULES)}}


@pytest.fixture()
def rules(tmp_path) -> Settings:
    return settings_for(tmp_path, rules_bank(), RULE_SCORES)


def test_a_personalised_score_is_not_used_once_its_consent_is_withdrawn(tmp_path):
    bank = TinyBank()
    for cid in ("PK", "PW", "B"):
        bank.customer(cid).consent(cid, EMAIL_CONSENT, purpose="email_sms_marketing")
    bank.consent("PK", EMAIL_CONSENT).consent("PW", EMAIL_CONSENT)
    bank.consent("PW", "2026-03-05T00:00:00Z", granted=False)  # after scoring, before the send
    bank.write(tmp_path / "raw")
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    write_scores(settings, {"mortgage": {"PK": 0.9, "PW": 0.8, "B": 0.7}}, "2026-02-28", personalised=("PK", "PW"))
    built = campaign_job(settings).build(settings, spec_file(tmp_path), progress=lambda _: None)
    counts = dict(zip(built.reasons["reason"], built.reasons["customers"]))
    assert (counts["consent_withdrawn"], counts["selected"]) == (1, 2)
    members = pd.read_parquet(settings.data_dir / "campaigns" / "mortgage-email" / "members.parquet")
    assert dict(zip(members["customer_id"], members["tier"])) == {"PK": "personalised", "B": "basic"}


def test_a_list_built_after_its_send_time_honours_what_changed_since(tmp_path):
    # The send time (10 March 2026) has passed when the list is built: an objection or a
    # reservation made after it, before the build, still keeps the customer off the list.
    bank = TinyBank()
    for cid in ("OK", "OBJ", "RES"):
        bank.customer(cid).consent(cid, EMAIL_CONSENT, purpose="email_sms_marketing")
    bank.reservation("OBJ", "2026-03-10T10:00:00Z", scope="profiling")
    bank.reservation("RES", "2026-04-01T00:00:00Z", scope="email")
    settings = settings_for(tmp_path, bank, {"mortgage": {"OK": 0.9, "OBJ": 0.8, "RES": 0.7}})
    built = campaign_job(settings).build(settings, spec_file(tmp_path), progress=lambda _: None)
    members = pd.read_parquet(settings.data_dir / "campaigns" / "mortgage-email" / "members.parquet")
    assert members["customer_id"].tolist() == ["OK"]
    counts = dict(zip(built.reasons["reason"], built.reasons["customers"]))
    assert (counts["excluded"], counts["reserved_channel"], counts["selected"]) == (1, 1, 1)
    assert target.read_log(settings)["customer_id"].tolist() == ["OK"]


def test_a_score_built_with_group_data_is_not_used_once_sharing_is_withdrawn(tmp_path):
    # Scored on 28 February with group data sharing active (the store read group-company
    # data): a withdrawal before the send, or after the build, takes the customer off the
    # list and out of a customer-matching export, as a withdrawn marketing consent does.
    bank = TinyBank()
    for cid in ("KEEP", "WDR", "LATE", "NEVER"):
        bank.customer(cid).consent(cid, EMAIL_CONSENT, purpose="email_sms_marketing")
    for cid in ("KEEP", "WDR", "LATE"):
        bank.consent(cid, EMAIL_CONSENT, purpose="group_data_sharing")
    bank.consent("WDR", "2026-03-05T00:00:00Z", purpose="group_data_sharing", granted=False)
    bank.consent("NEVER", "2026-03-05T00:00:00Z", purpose="group_data_sharing")  # granted after scoring: no matter
    settings = settings_for(tmp_path, bank, {"mortgage": {"KEEP": 0.9, "WDR": 0.8, "LATE": 0.7, "NEVER": 0.6}})
    job = campaign_job(settings)
    built = job.build(settings, spec_file(tmp_path), progress=lambda _: None)
    assert dict(zip(built.reasons["reason"], built.reasons["customers"]))["consent_withdrawn"] == 1
    held = members(settings).set_index("customer_id")["group_data_sharing"].to_dict()
    assert held == {"KEEP": True, "LATE": True, "NEVER": False}
    bank.consent("LATE", "2026-03-09T00:00:00Z", purpose="group_data_sharing", granted=False)  # after the build
    bank.write(settings.raw_dir)
    done = job.finalise(settings, "mortgage-email", ts("2026-03-10T08:00:00"), progress=lambda _: None)
    assert done.counts.set_index("reason").loc["consent_withdrawn"].tolist() == [1, 0]
    assert sorted(members(settings)["customer_id"]) == ["KEEP", "NEVER"]
    spec = spec_file(tmp_path, campaign_id="mortgage-social", channel=None, contact_policy=None,
                     customer_matching={"destination": "meta", "delete_after_days": 30})
    exported = job.export_matching(settings, spec, ts("2026-03-10T08:00:00"), progress=lambda _: None)
    assert dict(zip(exported.reasons["reason"], exported.reasons["customers"]))["consent_withdrawn"] == 2


def test_build_counts_each_customer_once_and_lists_only_the_contactable(rules, tmp_path):
    built = campaign_job(rules).build(rules, spec_file(tmp_path), progress=lambda _: None)
    folder = rules.data_dir / "campaigns" / "mortgage-email"
    counts = dict(zip(built.reasons["reason"], built.reasons["customers"]))
    assert counts == {"not_a_customer": 1, "excluded": 1, "consent_withdrawn": 0, "reserved_channel": 2, "no_email_sms_consent": 1,
                      "contact_policy": 3, "missing_contact_details": 0, "control_group": 0, "selected": 4}
    assert built.contact_rules == {"contact_cap": 1, "cooldown": 1, "recent_complaint": 1}
    send_file = pd.read_csv(folder / "list.csv", dtype=str)
    assert list(send_file.columns) == ["customer_id", "email"]  # only what e-mail needs
    # customer_id order, not rank order (OLDCOOL ranks above OLDCMP): the file leaves the bank
    assert send_file.values.tolist() == [["A", "a@example.no"], ["L", "l@example.no"], ["OLDCMP", "oldcmp@example.no"],
                                         ["OLDCOOL", "oldcool@example.no"]]
    assert pd.read_parquet(folder / "list.parquet").equals(send_file)
    assert json.loads((folder / "reasons.json").read_text())[8] == {"stage": "build", "reason": "selected", "customers": 4}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["status"], manifest["score_date"], manifest["treated"], manifest["control"]) == ("built", "2026-02-28", 4, 0)
    log = target.read_log(rules)
    assert log[["customer_id", "entry", "arm", "product", "channel"]].values.tolist() == [
        [c, "sent", "treated", "mortgage", "email"] for c in ("A", "L", "OLDCOOL", "OLDCMP")]
    assert (log["sent_at"] == ts(SEND)).all()


@pytest.mark.parametrize(
    "channel, columns, selected",
    [
        # SMS: the e-mail reservation of R does not matter, the missing consent of NC does
        ("sms", ["customer_id", "phone"], ["A", "L", "OLDCMP", "OLDCOOL", "R"]),
        # a letter needs no e-mail/SMS consent: NC is on the list
        ("letter", ["customer_id", "postal_code"], ["A", "L", "NC", "OLDCMP", "OLDCOOL", "R"]),
        # the app is closed only by all_channels (and profiling)
        ("app", ["customer_id"], ["A", "L", "NC", "OLDCMP", "OLDCOOL", "R"]),
    ],
)
def test_each_channel_has_its_own_rules_and_fields(rules, tmp_path, channel, columns, selected):
    campaign_job(rules).build(rules, spec_file(tmp_path, channel=channel), progress=lambda _: None)
    send_file = pd.read_csv(rules.data_dir / "campaigns" / "mortgage-email" / "list.csv", dtype=str)
    assert list(send_file.columns) == columns
    assert send_file["customer_id"].tolist() == selected
    if channel == "sms":
        assert send_file.loc[0, "phone"] == "+47 900 00 000"


def test_log_is_append_only_and_a_second_campaign_counts_the_first(rules, tmp_path):
    job = campaign_job(rules)
    job.build(rules, spec_file(tmp_path), progress=lambda _: None)
    log_folder = rules.data_dir / "campaigns" / "campaign_log.parquet"
    before_files, before_rows = files_under(log_folder), target.read_log(rules)
    second = job.build(rules, spec_file(tmp_path, campaign_id="car-sms", product="car_loan", channel="sms", send_date="2026-03-12",
                                        contact_policy={"max_contacts": 1, "cooldown_days": 0, "days_since_complaint": 0}),
                       progress=lambda _: None)
    # A, L, OLDCOOL, OLDCMP got the e-mail two days earlier; CAP has contacts in the raw log
    assert second.reasons.set_index("reason")["customers"]["contact_policy"] == 5
    assert second.reasons.set_index("reason")["customers"]["selected"] == 3  # R, COOL, CMP
    after_files = files_under(log_folder)
    assert {k: after_files[k] for k in before_files} == before_files  # earlier parts byte-identical
    assert sorted(after_files) == ["part-00000001.parquet", "part-00000002.parquet"]
    assert target.read_log(rules).head(len(before_rows)).equals(before_rows)


def test_building_twice_is_refused_and_replace_supersedes_the_earlier_contacts(rules, tmp_path):
    job, spec = campaign_job(rules), spec_file(tmp_path)
    job.build(rules, spec, progress=lambda _: None)
    with pytest.raises(target.CampaignStateError, match="already built"):
        job.build(rules, spec, progress=lambda _: None)
    replaced = job.build(rules, spec, replace=True, progress=lambda _: None)
    log = target.read_log(rules)
    assert replaced.superseded == 4
    assert log["entry"].tolist() == ["sent"] * 4 + ["withdrawn"] * 4 + ["sent"] * 4
    assert set(log.loc[log["entry"] == "withdrawn", "reason"]) == {"superseded"}
    assert len(target.live_contacts(log)) == 4
    job.finalise(rules, "mortgage-email", ts("2026-03-10T08:00:00"), progress=lambda _: None)
    with pytest.raises(target.CampaignStateError, match="finalised"):
        job.build(rules, spec, replace=True, progress=lambda _: None)


def test_bad_spec_is_refused_and_nothing_is_written(rules, tmp_path):
    spec = spec_file(tmp_path, selection={"top_n": 10, "min_probability": 0.5})
    with pytest.raises(ConfigError, match="selection: give exactly one of top_n, min_probability, top_deciles"):
        campaign_job(rules).build(rules, spec, progress=lambda _: None)
    assert not (rules.data_dir / "campaigns").exists()


def test_missing_scores_are_refused_before_anything_is_written(rules, tmp_path):
    with pytest.raises(Exception, match="no score partition at or before the send date 2026-02-01"):
        campaign_job(rules).build(rules, spec_file(tmp_path, send_date="2026-02-01"), progress=lambda _: None)
    assert not (rules.data_dir / "campaigns").exists()


# ----------------------------------------------------------- a bank of forty prospects
FORTY = [f"P{i:02d}" for i in range(40)]


def forty_bank() -> TinyBank:
    bank = TinyBank()
    for cid in FORTY:
        bank.customer(cid).consent(cid, EMAIL_CONSENT, purpose="email_sms_marketing")
    return bank


@pytest.fixture()
def forty(tmp_path) -> Settings:
    return settings_for(tmp_path / "data", forty_bank(), {"mortgage": {c: round(0.99 - 0.02 * i, 2) for i, c in enumerate(FORTY)}})


def members(settings: Settings, campaign_id: str = "mortgage-email") -> pd.DataFrame:
    return pd.read_parquet(settings.data_dir / "campaigns" / campaign_id / "members.parquet")


def test_control_group_is_stratified_by_decile_and_reproducible_for_a_seed(forty, tmp_path):
    built = campaign_job(forty).build(forty, spec_file(tmp_path, control_share=0.25), progress=lambda _: None)
    held = members(forty)
    assert (built.treated, built.control) == (30, 10)
    assert held.loc[held["arm"] == "control"].groupby("decile").size().tolist() == [1] * 10  # 4 per decile x 0.25
    again = settings_for(tmp_path / "again", forty_bank(), {"mortgage": {c: round(0.99 - 0.02 * i, 2) for i, c in enumerate(FORTY)}})
    campaign_job(again).build(again, spec_file(tmp_path, control_share=0.25), progress=lambda _: None)
    assert members(again).equals(held)
    assert (again.data_dir / "campaigns/mortgage-email/list.csv").read_bytes() == (forty.data_dir / "campaigns/mortgage-email/list.csv").read_bytes()
    control_log = target.read_log(forty)
    assert set(control_log["customer_id"]).isdisjoint(held.loc[held["arm"] == "control", "customer_id"])  # never contacted


def test_finalise_removes_customers_who_reserved_or_objected_after_the_build(forty, tmp_path):
    job = campaign_job(forty)
    job.build(forty, spec_file(tmp_path, control_share=0.25), progress=lambda _: None)
    held = members(forty)
    treated = held.loc[held["arm"] == "treated", "customer_id"].tolist()
    control = held.loc[held["arm"] == "control", "customer_id"].tolist()
    bank = forty_bank()
    bank.reservation(treated[0], "2026-03-09T12:00:00Z", scope="email")  # after the build, before the send
    bank.reservation(treated[1], "2026-03-09T12:00:00Z", scope="all_channels")
    bank.reservation(control[0], "2026-03-09T13:00:00Z", scope="profiling")  # an objection: off every list
    bank.reservation(treated[2], "2026-03-10T08:30:00Z", scope="email")  # after the --as-of instant
    bank.write(forty.raw_dir)
    done = job.finalise(forty, "mortgage-email", ts("2026-03-10T08:00:00"), progress=lambda _: None)
    # treated[2] reserved after the --as-of instant but before now: removed all the same.
    assert done.counts.set_index("reason").loc[["reserved_channel", "excluded"]].values.tolist() == [[3, 0], [0, 1]]
    folder = forty.data_dir / "campaigns" / "mortgage-email"
    listed = pd.read_csv(folder / "list.csv", dtype=str)["customer_id"].tolist()
    assert len(listed) == 27 and not set(treated[:3]) & set(listed)
    assert pd.read_parquet(folder / "list.parquet")["customer_id"].tolist() == listed
    assert control[0] not in set(members(forty)["customer_id"]) and len(members(forty)) == 36
    log = target.read_log(forty)
    withdrawn = log[log["entry"] == "withdrawn"]
    assert sorted(withdrawn["customer_id"]) == sorted(treated[:3]) and set(withdrawn["reason"]) == {"reserved_channel"}
    assert len(target.live_contacts(log)) == 27
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["status"], manifest["treated"], manifest["control"]) == ("finalised", 27, 9)
    assert manifest["finalise_checks"][0]["removed"]["excluded"] == {"treated": 0, "control": 1}
    checked = manifest["finalise_checks"][0]["checked_at"]  # the --as-of instant, then the moment of the check
    assert checked[0] == manifest["finalise_checks"][0]["as_of"] and len(checked) == 2 and checked[1] > checked[0]
    reasons = pd.read_csv(folder / "reasons.csv")
    assert reasons.loc[reasons["stage"].str.startswith("finalise"), "customers"].sum() == 4


def test_responses_feed_the_uplift_of_treated_versus_control(forty, tmp_path):
    job = campaign_job(forty)
    job.build(forty, spec_file(tmp_path, control_share=0.25), progress=lambda _: None)
    held = members(forty)
    treated = held.loc[held["arm"] == "treated"].sort_values("rank")["customer_id"].tolist()
    control = held.loc[held["arm"] == "control"].sort_values("rank")["customer_id"].tolist()
    rows = [("mortgage-email", c, "converted", "2026-03-15T12:00:00Z") for c in treated[:6]]
    rows += [("mortgage-email", c, "opened", "2026-03-11T08:00:00+01:00") for c in treated[:9]]
    rows += [("mortgage-email", control[0], "converted", "2026-03-20T12:00:00Z"), ("mortgage-email", control[1], "none", "")]
    path = tmp_path / "responses.csv"
    pd.DataFrame(rows, columns=["campaign_id", "customer_id", "response", "responded_at"]).to_csv(path, index=False)
    assert job.responses(forty, path, progress=lambda _: None) == (17, 0)
    assert job.responses(forty, path, progress=lambda _: None) == (0, 17)  # ingesting twice adds nothing
    table = job.evaluate(forty, "mortgage-email").set_index("segment")
    overall = table.loc["all"]
    assert (overall["treated"], overall["treated_conversions"], overall["control"], overall["control_conversions"]) == (30, 6, 10, 1)
    half = 1.959963984540054 * math.sqrt(0.2 * 0.8 / 30 + 0.1 * 0.9 / 10)
    assert overall["uplift"] == pytest.approx(0.1)
    assert (overall["ci_low"], overall["ci_high"]) == (pytest.approx(0.1 - half), pytest.approx(0.1 + half))
    assert len(table) == 11
    log = target.read_log(forty)
    responses = log[log["entry"] == "response"]
    assert responses.loc[responses["customer_id"] == control[0], "arm"].item() == "control"
    assert responses.loc[responses["response"] == "opened", "responded_at"].iloc[0] == ts("2026-03-11T07:00:00")


@pytest.mark.parametrize(
    "rows, suffix, kind, column",
    [
        ([("mortgage-email", "P00", "converted", "2026-03-15T12:00:00Z"), ("mortgage-email", "P01", "bought", "2026-03-15T12:00:00Z")],
         ".csv", "unknown_enum", "response"),
        ([("mortgage-email", "NOBODY", "converted", "2026-03-15T12:00:00Z")], ".csv", "unknown_customer", "customer_id"),
        ([("spring-sale", "P00", "converted", "2026-03-15T12:00:00Z")], ".parquet", "unknown_campaign", "campaign_id"),
    ],
)
def test_bad_response_file_is_refused_and_nothing_is_written(forty, tmp_path, rows, suffix, kind, column):
    job = campaign_job(forty)
    job.build(forty, spec_file(tmp_path), progress=lambda _: None)
    before = files_under(forty.data_dir / "campaigns")
    path = tmp_path / f"responses{suffix}"
    frame = pd.DataFrame(rows, columns=["campaign_id", "customer_id", "response", "responded_at"])
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    with pytest.raises(ContractError) as refused:
        job.responses(forty, path, progress=lambda _: None)
    [violation] = refused.value.violations
    assert (violation.table, violation.kind, violation.column, violation.rows[0]["row"]) == (str(path), kind, column, len(rows))
    assert str(path) in str(refused.value)
    assert files_under(forty.data_dir / "campaigns") == before


def test_response_file_without_a_column_is_refused(forty, tmp_path):
    job = campaign_job(forty)
    job.build(forty, spec_file(tmp_path), progress=lambda _: None)
    before = files_under(forty.data_dir / "campaigns")
    path = tmp_path / "responses.csv"
    path.write_text("campaign_id,customer_id,responded_at\nmortgage-email,P00,2026-03-15T12:00:00Z\n")
    with pytest.raises(ContractError, match=r"\[missing_column\] .*responses.csv.response: column 'response' is missing"):
        job.responses(forty, path, progress=lambda _: None)
    assert files_under(forty.data_dir / "campaigns") == before


# ------------------------------------------------------------------ customer matching
MATCH = {"M1": (" Ola.Nordmann@Example.NO", "912 34 567"), "M2": ("kari@example.no", "0046 70-123 45 67"),
         "MCM": ("cm@example.no", "91111111"), "MX": ("x@example.no", "92222222"), "MALL": ("all@example.no", ""),
         "MLATE": ("late@example.no", "93333333")}


def matching_settings(tmp_path: Path) -> Settings:
    bank = TinyBank()
    for cid, (email, phone) in MATCH.items():
        bank.customer(cid, email=email, phone=phone)
    bank.reservation("MCM", "2026-03-15T00:00:00Z", scope="customer_matching")
    bank.reservation("MX", "2026-03-15T00:00:00Z", scope="profiling")
    bank.reservation("MALL", "2026-03-15T00:00:00Z", scope="all_channels")
    bank.reservation("MLATE", "2026-03-25T00:00:00Z", scope="customer_matching")  # after the export instant
    return settings_for(tmp_path, bank, {"car_loan": {cid: 0.9 - 0.1 * i for i, cid in enumerate(MATCH)}}, day="2026-03-31")


def test_matching_export_holds_only_hashes_of_permitted_customers_until_its_deadline(tmp_path):
    settings = matching_settings(tmp_path / "data")
    job = campaign_job(settings)
    spec = ROOT / "conf" / "campaigns" / "car_loan_social.yaml"
    done = job.export_matching(settings, spec, ts("2026-03-20T12:00:00"), progress=lambda _: None)
    assert dict(zip(done.reasons["reason"], done.reasons["customers"])) == {
        "not_a_customer": 0, "excluded": 1, "consent_withdrawn": 0, "customer_matching_reserved": 2, "no_contact_details": 0, "exported": 3}
    folder = settings.data_dir / "matching" / "car-loan-social-2026-04"
    upload = pd.read_csv(folder / "upload.csv", dtype=str, keep_default_na=False)
    sha = lambda text: hashlib.sha256(text).hexdigest()  # noqa: E731
    assert sorted(upload["email_sha256"]) == sorted([sha(b"ola.nordmann@example.no"), sha(b"kari@example.no"), sha(b"all@example.no")])
    assert set(upload["phone_sha256"]) == {sha(b"+4791234567"), sha(b"+46701234567"), ""}
    values = (folder / "upload.csv").read_text().replace("\n", ",").split(",")
    assert values[:2] == ["email_sha256", "phone_sha256"]  # no clear text: only 64-hex digests or empty cells
    assert all(v == "" or (len(v) == 64 and set(v) <= set("0123456789abcdef")) for v in values[2:])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["delete_on"], manifest["destination"], manifest["counts"]["exported"]) == ("2026-04-15", "meta", 3)
    with pytest.raises(Exception, match="exists already"):
        job.export_matching(settings, spec, ts("2026-03-20T12:00:00"), progress=lambda _: None)
    assert [p.deleted for p in job.purge_matching(settings, date(2026, 4, 14))] == [False]
    assert [p.deleted for p in job.purge_matching(settings, date(2026, 4, 15))] == [True]
    assert not folder.exists()


def test_matching_export_and_purge_wait_for_no_one_and_refuse_while_a_campaign_or_erasure_holds_the_lock(tmp_path):
    settings = matching_settings(tmp_path / "data")
    job = campaign_job(settings)
    spec = ROOT / "conf" / "campaigns" / "car_loan_social.yaml"
    with target.campaign_lock(settings):  # what `campaign build` and `privacy erase` hold
        with pytest.raises(JobLockedError, match="another campaign command"):
            job.export_matching(settings, spec, ts("2026-03-20T12:00:00"), progress=lambda _: None)
        with pytest.raises(JobLockedError, match="another campaign command"):
            job.purge_matching(settings, date(2026, 4, 15))
    assert not (settings.data_dir / "matching").exists() or not any((settings.data_dir / "matching").iterdir())


def test_a_channel_spec_is_not_exported_and_a_matching_spec_is_not_built(rules, tmp_path):
    job = campaign_job(rules)
    with pytest.raises(Exception, match="use `propensity campaign build`"):
        job.export_matching(rules, spec_file(tmp_path), progress=lambda _: None)
    with pytest.raises(ConfigError, match="use `propensity matching export`"):
        job.build(rules, ROOT / "conf" / "campaigns" / "car_loan_social.yaml", progress=lambda _: None)


# ------------------------------------------------------------------------- the CLI
def test_cli_builds_a_campaign_and_refuses_a_bad_spec(rules, tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_DATA_DIR", str(rules.data_dir))
    runner = CliRunner()
    conf = str(ROOT / "conf" / "pipeline.yaml")
    ok = runner.invoke(app, ["campaign", "build", str(spec_file(tmp_path)), "--conf", conf])
    assert ok.exit_code == 0, ok.output
    assert "4 to contact, 0 in the control group" in ok.output
    bad = runner.invoke(app, ["campaign", "build", str(spec_file(tmp_path, channel="fax")), "--conf", conf])
    assert bad.exit_code == 1 and "unknown channel 'fax'" in bad.output
    final = runner.invoke(app, ["campaign", "finalise", "mortgage-email", "--as-of", "2026-03-10T08:00:00Z", "--conf", conf])
    assert final.exit_code == 0, final.output
    assert json.loads((rules.data_dir / "campaigns/mortgage-email/manifest.json").read_text())["status"] == "finalised"
