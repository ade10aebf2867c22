"""Customer matching: normalisation and hash vectors, who may be exported, and the purge."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import pandas as pd
import pytest

from propensity.config import load_settings
from propensity.matching import (
    hashed,
    hashed_identifiers,
    matching_decisions,
    normalise_email,
    normalise_phone,
    purge_exports,
    upload_frame,
)
from propensity.target import check_instants, states_at
from tests.conftest import ROOT, consent_frame, reservation_frame, ts


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("ola.nordmann@example.no", "ola.nordmann@example.no"),
        ("  Ola.Nordmann@Example.NO \t", "ola.nordmann@example.no"),
        ("KARI@DNB.NO", "kari@dnb.no"),
        ("not an address", None),
        ("two@@example.no", None),
        ("", None),
        (None, None),
    ],
)
def test_email_is_trimmed_and_lower_cased(raw, normalised):
    assert normalise_email(pd.Series([raw], dtype=object)).iloc[0] == normalised


@pytest.mark.parametrize(
    "raw, e164",
    [
        ("91234567", "+4791234567"),
        ("912 34 567", "+4791234567"),
        ("91-23-45-67", "+4791234567"),
        ("912.34.567", "+4791234567"),
        ("0047 912 34 567", "+4791234567"),
        ("+47 91 23 45 67", "+4791234567"),
        ("(+47) 912-34-567", "+4791234567"),
        ("+46 70 123 45 67", "+46701234567"),  # an existing country code is kept
        ("0046-70-123 45 67", "+46701234567"),
        ("1234567", None),  # seven digits: not a Norwegian number, no country code
        ("+47 12", None),
        ("phone me", None),
        (None, None),
    ],
)
def test_phone_becomes_e164_with_the_policy_default_country_code(policy, raw, e164):
    assert normalise_phone(pd.Series([raw], dtype=object), policy.customer_matching.default_country_code).iloc[0] == e164


def test_hashes_are_sha256_hex_of_the_normalised_text(policy):
    customers = pd.DataFrame({"customer_id": ["A", "B"], "email": [" Ola.Nordmann@Example.no", None],
                              "phone": ["912 34 567", "+46 70-123 45 67"]})
    out = hashed_identifiers(customers, policy)
    assert out["email_sha256"].tolist() == [hashlib.sha256(b"ola.nordmann@example.no").hexdigest(), None]
    assert out["phone_sha256"].tolist() == [hashlib.sha256(b"+4791234567").hexdigest(), hashlib.sha256(b"+46701234567").hexdigest()]
    assert hashed(pd.Series(["abc"])).iloc[0] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 vector


def test_only_customers_without_matching_reservation_and_not_excluded_are_exported(policy):
    ids = ["OK", "CM", "X", "ALL", "NONE", "CLOSED", "LIFTED", "WDR"]
    reservations = reservation_frame([
        ("CM", "2026-03-01T00:00:00Z", "customer_matching", True),
        ("X", "2026-03-01T00:00:00Z", "profiling", True),
        ("ALL", "2026-03-01T00:00:00Z", "all_channels", True),  # channels only: matching is not a channel
        ("LIFTED", "2026-02-01T00:00:00Z", "customer_matching", True),
        ("LIFTED", "2026-03-01T00:00:00Z", "customer_matching", False),
    ])
    consents = consent_frame([
        ("OK", "2025-01-01T00:00:00Z", "personalised_marketing", True),
        ("WDR", "2025-01-01T00:00:00Z", "personalised_marketing", True),  # scored personalised,
        ("WDR", "2026-03-01T00:00:00Z", "personalised_marketing", False),  # withdrawn before the export
    ])
    at = ts("2026-03-15T12:00:00")
    states = states_at(consents, reservations, pd.Series(ids), at, policy)
    customers = pd.DataFrame({
        "customer_id": ids,
        "email": [f"{c.lower()}@example.no" for c in ids[:4]] + [None, "closed@example.no", "lifted@example.no", "w@example.no"],
        "phone": ["91234567", None, "91234567", None, "12", None, None, None],
        "customer_since": pd.Timestamp("2020-01-01"),
        "closed_at": [pd.NaT] * 5 + [pd.Timestamp("2026-03-01"), pd.NaT, pd.NaT],
    })
    audience = pd.DataFrame({"customer_id": ids, "tier": ["personalised" if c in ("OK", "WDR") else "basic" for c in ids]})
    out = matching_decisions(audience, customers, [(states, at.date())], policy).set_index("customer_id")
    assert out["reason"].to_dict() == {
        "OK": "exported", "CM": "customer_matching_reserved", "X": "excluded", "ALL": "exported",
        "NONE": "no_contact_details", "CLOSED": "not_a_customer", "LIFTED": "exported", "WDR": "consent_withdrawn",
    }
    assert out.loc["OK", "email_sha256"] == sha("ok@example.no") and out.loc["OK", "phone_sha256"] == sha("+4791234567")
    assert out.loc["ALL", "phone_sha256"] is None
    assert out.loc[["CM", "X", "NONE", "CLOSED"], ["email_sha256", "phone_sha256"]].isna().all().all()  # never hashed
    upload = upload_frame(out.reset_index(), policy)
    assert list(upload.columns) == ["email_sha256", "phone_sha256"]
    assert upload["email_sha256"].tolist() == sorted(sha(f"{c}@example.no") for c in ("ok", "all", "lifted"))


def test_a_past_export_instant_is_checked_at_now_too():
    policy = load_settings(ROOT / "conf" / "pipeline.yaml").policy
    ids = ["KEEP", "LATE", "GRANTED"]
    reservations = reservation_frame([
        ("LATE", "2026-03-20T00:00:00Z", "customer_matching", True),  # after the export instant
        ("GRANTED", "2026-03-01T00:00:00Z", "customer_matching", True),
        ("GRANTED", "2026-03-20T00:00:00Z", "customer_matching", False),  # lifted later: still out
    ])
    consents = consent_frame([("KEEP", "2025-01-01T00:00:00Z", "personalised_marketing", True)])
    at, now = ts("2026-03-15T12:00:00"), ts("2026-04-01T00:00:00")
    instants = check_instants(at, now)
    assert instants == (at, now) and check_instants(now, at) == (now,)
    checks = [(states_at(consents, reservations, pd.Series(ids), i, policy), i.date()) for i in instants]
    customers = pd.DataFrame({"customer_id": ids, "email": [f"{c.lower()}@example.no" for c in ids], "phone": None,
                              "customer_since": pd.Timestamp("2020-01-01"), "closed_at": pd.NaT})
    audience = pd.DataFrame({"customer_id": ids, "tier": ["personalised", "basic", "basic"]})
    out = matching_decisions(audience, customers, checks, policy).set_index("customer_id")["reason"].to_dict()
    assert out == {"KEEP": "exported", "LATE": "customer_matching_reserved", "GRANTED": "customer_matching_reserved"}
    only_then = matching_decisions(audience, customers, checks[:1], policy).set_index("customer_id")["reason"].to_dict()
    assert only_then["LATE"] == "exported"  # the instant alone would have let it through


def test_purge_deletes_only_exports_due_on_or_before_the_date(tmp_path):
    settings = load_settings(ROOT / "conf" / "pipeline.yaml", data_dir=tmp_path)
    folder = tmp_path / "matching"
    for campaign_id, delete_on in (("past", "2026-03-01"), ("today", "2026-03-24"), ("future", "2026-03-25")):
        (folder / campaign_id).mkdir(parents=True)
        (folder / campaign_id / "upload.csv").write_text("email_sha256\n")
        (folder / campaign_id / "manifest.json").write_text(json.dumps({"campaign_id": campaign_id, "delete_on": delete_on}))
    (folder / "broken").mkdir()
    (folder / "broken" / "upload.csv").write_text("email_sha256\n")
    purged = purge_exports(settings, date(2026, 3, 24))
    assert {p.campaign_id: p.deleted for p in purged} == {"broken": True, "future": False, "past": True, "today": True}
    assert sorted(p.name for p in folder.iterdir()) == ["future"]
    assert purge_exports(settings, date(2026, 3, 24))[0].deleted is False
