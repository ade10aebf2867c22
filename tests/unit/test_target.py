"""Campaign targeting steps on hand-made frames: spec checks, selection, send-time rules,
contact policy, control groups, the log's state, responses and uplift."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest
import yaml

from propensity.errors import ConfigError, ContractError
from propensity.target import (
    CampaignSpec,
    ContactPolicy,
    campaign_audience,
    campaign_decisions,
    channel_reserved,
    contact_rule_breaches,
    control_group,
    lacks_marketing_consent,
    live_contacts,
    load_spec,
    matching_deadline,
    parse_instant,
    states_at,
    uplift_table,
    validated_responses,
)
from tests.conftest import ROOT, consent_frame, reservation_frame, ts

SEND = ts("2026-03-10T09:00:00")


def spec_dict(**changes) -> dict:
    base = {
        "campaign_id": "mortgage-test",
        "product": "mortgage",
        "channel": "email",
        "selection": {"top_n": 100},
        "send_date": "2026-03-10",
        "send_time": "09:00",
        "control_share": 0.0,
        "seed": 7,
        "contact_policy": {"max_contacts": 2, "per_days": 30, "cooldown_days": 60, "days_since_complaint": 30},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def spec_of(**changes) -> CampaignSpec:
    return CampaignSpec.model_validate(spec_dict(**changes))


# --------------------------------------------------------------------------- the spec
def write(tmp_path, raw: dict):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"selection": {"top_n": 10, "top_deciles": 2}}, "selection: give exactly one of top_n, min_probability, top_deciles"),
        ({"selection": {}}, "selection: give exactly one of top_n, min_probability, top_deciles (got none)"),
        ({"channel": "fax"}, "channel: unknown channel 'fax'"),
        ({"product": "yacht"}, "product: unknown product 'yacht'"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"send_time": 540}, "send_time: got the number 540"),
        ({"control_share": 1.5}, "control_share: Input should be less than 1"),
        ({"seed": None}, "seed: Field required"),
        ({"campaign_id": "../escape"}, "campaign_id: String should match pattern"),
        ({"contact_policy": None}, "contact_policy: required for a channel campaign"),
        ({"contact_policy": {"max_contacts": 0, "cooldown_days": 1, "days_since_complaint": 1}},
         "contact_policy.max_contacts: Input should be greater than or equal to 1"),
        ({"channel": None, "contact_policy": None, "control_share": 0.1,
          "customer_matching": {"destination": "meta", "delete_after_days": 14}},
         "control_share: a customer-matching export holds out no control group"),
    ],
)
def test_bad_spec_is_refused_naming_the_field(tmp_path, settings, changes, message):
    path = write(tmp_path, spec_dict(**changes))
    with pytest.raises(ConfigError) as refused:
        load_spec(path, settings)
    assert str(path) in str(refused.value)
    assert message in str(refused.value)


def test_example_specs_load(settings):
    email = load_spec(ROOT / "conf" / "campaigns" / "mortgage_email.yaml", settings)
    social = load_spec(ROOT / "conf" / "campaigns" / "car_loan_social.yaml", settings)
    assert (email.channel, email.selection.top_deciles, email.control_share) == ("email", 2, 0.1)
    assert email.send_at == ts("2026-03-10T09:00:00")
    assert (social.channel, social.customer_matching.destination, matching_deadline(social)) == (None, "meta", date(2026, 4, 15))


def test_send_time_with_an_offset_becomes_utc():
    assert spec_of(send_time="10:30:00+01:00").send_at == ts("2026-03-10T09:30:00")


# ------------------------------------------------------------------------ selection
def scores_frame(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [f"C{i:02d}" for i in range(n)] + ["Z"],
        "product": ["mortgage"] * n + ["bsu"],
        "probability": [round(0.95 - i * 0.04, 2) for i in range(n)] + [0.99],
        "rank": list(range(1, n + 1)) + [1],
        "decile": [(i // 2) + 1 for i in range(n)] + [1],
        "tier": "basic",
    })


@pytest.mark.parametrize(
    "selection, expected",
    [
        ({"top_n": 3}, ["C00", "C01", "C02"]),
        ({"min_probability": 0.83}, ["C00", "C01", "C02", "C03"]),  # 0.95, 0.91, 0.87, 0.83
        ({"top_deciles": 2}, ["C00", "C01", "C02", "C03"]),
    ],
)
def test_selection_rule_picks_the_audience_of_the_product_only(selection, expected):
    audience = campaign_audience(scores_frame(), spec_of(selection=selection))
    assert audience["customer_id"].tolist() == expected


# ------------------------------------------------------------------ send-time rules
def states(consents: list[tuple], reservations: list[tuple], ids: list[str], policy) -> pd.DataFrame:
    c = consent_frame(consents) if consents else consent_frame([("none", "2000-01-01T00:00:00Z", "email_sms_marketing", False)])
    r = reservation_frame(reservations) if reservations else reservation_frame([("none", "2000-01-01T00:00:00Z", "sms", False)])
    return states_at(c, r, pd.Series(ids), SEND, policy).set_index("customer_id")


@pytest.mark.parametrize(
    "scope, channel, blocked",
    [
        ("email", "email", True),
        ("email", "sms", False),
        ("all_channels", "letter", True),
        ("all_channels", "app", True),  # app, web and advisers close only with all_channels or profiling
        ("email", "app", False),
        ("phone", "phone", True),
    ],
)
def test_channel_is_blocked_by_its_own_or_the_all_channels_reservation(policy, scope, channel, blocked):
    st = states([], [("A", "2026-03-01T00:00:00Z", scope, True)], ["A"], policy)
    assert bool(channel_reserved(st, channel, policy).loc["A"]) is blocked


@pytest.mark.parametrize(
    "channel, consented, holds, lacks",
    [
        ("email", False, False, True),  # e-mail about a product not held needs the consent
        ("email", True, False, False),
        ("sms", False, False, True),
        ("email", False, True, False),  # about a product the customer holds: no consent needed
        ("letter", False, False, False),  # the policy asks the consent for e-mail and SMS only
    ],
)
def test_email_and_sms_about_an_unheld_product_need_consent(policy, channel, consented, holds, lacks):
    consents = [("A", "2026-01-01T00:00:00Z", "email_sms_marketing", True)] if consented else []
    st = states(consents, [], ["A"], policy)
    assert bool(lacks_marketing_consent(st, channel, policy, pd.Series(holds, index=st.index)).loc["A"]) is lacks


def customers_frame(ids: list[str], **overrides) -> pd.DataFrame:
    frame = pd.DataFrame({
        "customer_id": ids,
        "email": [f"{c.lower()}@example.no" for c in ids],
        "phone": "+4790000000",
        "postal_code": "0150",
        "customer_since": pd.Timestamp("2020-01-01"),
        "closed_at": pd.NaT,
    })
    for cid, values in overrides.items():
        for column, value in values.items():
            frame.loc[frame["customer_id"] == cid, column] = value
    return frame


NO_CONTACTS = pd.DataFrame({"campaign_id": pd.Series(dtype=object), "customer_id": pd.Series(dtype=object),
                            "product": pd.Series(dtype=object), "sent_at": pd.Series(dtype="datetime64[us, UTC]")})
NO_COMPLAINTS = pd.DataFrame({"customer_id": pd.Series(dtype=object), "contact_time": pd.Series(dtype="datetime64[us, UTC]"),
                              "topic": pd.Series(dtype=object)})


def test_each_customer_gets_the_first_reason_that_applies(policy):
    ids = ["OK", "RES", "ALL", "NOC", "X", "XR", "AT", "AFTER", "CLOSED", "CAP", "NOMAIL", "PERS", "WDR"]
    consents = [(c, "2025-01-01T00:00:00Z", "email_sms_marketing", True) for c in ids if c != "NOC"]
    # Both scored by the personalised model; WDR withdrew that consent before the send.
    consents += [(c, "2025-01-01T00:00:00Z", "personalised_marketing", True) for c in ("PERS", "WDR")]
    consents += [("WDR", "2026-03-01T00:00:00Z", "personalised_marketing", False)]
    reservations = [
        ("RES", "2026-03-01T00:00:00Z", "email", True),
        ("ALL", "2026-03-01T00:00:00Z", "all_channels", True),
        ("X", "2026-03-01T00:00:00Z", "profiling", True),
        ("XR", "2026-03-01T00:00:00Z", "profiling", True),  # excluded and reserved: counted as excluded
        ("XR", "2026-03-01T00:00:00Z", "email", True),
        ("AT", "2026-03-10T09:00:00Z", "email", True),  # an event at the send instant counts
        ("AFTER", "2026-03-10T09:00:01Z", "email", True),  # one second later does not
    ]
    st = states_at(consent_frame(consents), reservation_frame(reservations), pd.Series(ids), SEND, policy)
    scored = ["personalised" if c in ("PERS", "WDR") else "basic" for c in ids]
    audience = pd.DataFrame({"customer_id": ids, "probability": 0.5, "rank": range(1, len(ids) + 1), "decile": 1, "tier": scored})
    customers = customers_frame(ids, CLOSED={"closed_at": pd.Timestamp("2026-03-10")}, NOMAIL={"email": "  "})
    contacts = pd.DataFrame({"campaign_id": ["a", "b"], "customer_id": ["CAP", "CAP"], "product": ["bsu", "car_loan"],
                             "sent_at": [ts("2026-03-01T09:00:00"), ts("2026-03-05T09:00:00")]})
    out = campaign_decisions(audience, customers, [(st, SEND.date())], contacts, NO_COMPLAINTS, spec_of(), policy)
    assert dict(zip(out["customer_id"], out["reason"])) == {
        "OK": "selected", "RES": "reserved_channel", "ALL": "reserved_channel", "NOC": "no_email_sms_consent",
        "X": "excluded", "XR": "excluded", "AT": "reserved_channel", "AFTER": "selected", "CLOSED": "not_a_customer",
        "CAP": "contact_policy", "NOMAIL": "missing_contact_details", "PERS": "selected", "WDR": "consent_withdrawn",
    }
    assert out.loc[out["customer_id"] == "CAP", "contact_rule"].item() == "contact_cap"


# -------------------------------------------------------------------- contact policy
def breaches(contacts: list[tuple], complaints: list[tuple] = (), **rules) -> dict[str, str]:
    policy = ContactPolicy(**{"max_contacts": 2, "per_days": 30, "cooldown_days": 60, "days_since_complaint": 30, **rules})
    c = pd.DataFrame(contacts, columns=["customer_id", "product", "sent_at"]) if contacts else NO_CONTACTS
    if contacts:
        c["sent_at"] = pd.to_datetime(c["sent_at"], utc=True)
    h = pd.DataFrame(list(complaints), columns=["customer_id", "contact_time", "topic"]) if complaints else NO_COMPLAINTS
    if complaints:
        h["contact_time"] = pd.to_datetime(h["contact_time"], utc=True)
    ids = pd.Series(sorted({r[0] for r in contacts} | {r[0] for r in complaints}))
    out = contact_rule_breaches(ids, c, h, "mortgage", SEND, policy)
    return dict(zip(ids, out))


def test_contact_cap_counts_the_busiest_30_day_window_holding_the_send():
    out = breaches([
        # 10 days before and 10 after: one window holds both and the send -> 3 > 2
        ("TIGHT", "bsu", "2026-02-28T09:00:00Z"), ("TIGHT", "bsu", "2026-03-20T09:00:00Z"),
        # 29 days before and 29 after: no 30-day window holds both -> at most 2
        ("SPREAD", "bsu", "2026-02-09T09:00:00Z"), ("SPREAD", "bsu", "2026-04-08T09:00:00Z"),
        # one contact exactly 30 days before falls out of every window holding the send
        ("EDGE", "bsu", "2026-02-08T09:00:00Z"), ("EDGE", "bsu", "2026-03-09T09:00:00Z"),
    ], cooldown_days=0)
    assert out == {"EDGE": "", "SPREAD": "", "TIGHT": "contact_cap"}


def test_cooldown_applies_to_the_same_product_before_or_after_the_send():
    out = breaches([
        ("BEFORE", "mortgage", "2026-01-10T09:00:01Z"),  # 59 days 23:59:59 before
        ("LONG_AGO", "mortgage", "2026-01-09T09:00:00Z"),  # 60 days before: the cool-down is over
        ("OTHER", "car_loan", "2026-03-01T09:00:00Z"),
        ("PLANNED", "mortgage", "2026-04-20T09:00:00Z"),  # an already built later campaign
    ])
    assert out == {"BEFORE": "cooldown", "LONG_AGO": "", "OTHER": "", "PLANNED": "cooldown"}


def test_recent_complaint_blocks_contact_for_the_configured_days():
    out = breaches([], complaints=[
        ("RECENT", "2026-02-10T09:00:01Z", "complaint"),
        ("OLD", "2026-02-08T09:00:00Z", "complaint"),
        ("TOPIC", "2026-03-09T09:00:00Z", "mortgage"),
        ("LATER", "2026-03-10T09:00:01Z", "complaint"),
    ])
    assert out == {"LATER": "", "OLD": "", "RECENT": "recent_complaint", "TOPIC": ""}


def test_zero_days_switch_the_cooldown_and_complaint_rules_off():
    out = breaches([("A", "mortgage", "2026-03-09T09:00:00Z")], [("A", "2026-03-09T09:00:00Z", "complaint")],
                   cooldown_days=0, days_since_complaint=0)
    assert out == {"A": ""}


# --------------------------------------------------------------------- control group
def eligible_frame(sizes: list[int]) -> pd.DataFrame:
    rows = [(f"D{d}-{i:03d}", d) for d, size in enumerate(sizes, start=1) for i in range(size)]
    return pd.DataFrame(rows, columns=["customer_id", "decile"])


def test_control_group_takes_the_share_of_every_decile_within_one_customer():
    frame = eligible_frame([21, 20, 19, 7, 3, 1, 30, 20, 20, 13])
    held = control_group(frame, 0.15, seed=3)
    per_decile = held.groupby(frame["decile"]).sum()
    sizes = frame.groupby("decile").size()
    # 0.15 x 154 = 23.1 -> 23: the floors (20) plus one for the three largest remainders (d10, d3, d7)
    assert per_decile.tolist() == [3, 3, 3, 1, 0, 0, 5, 3, 3, 2]
    assert ((per_decile - 0.15 * sizes).abs() <= 1).all()


def test_control_group_of_a_small_audience_still_holds_out_its_share():
    held = control_group(eligible_frame([4, 4]), 0.1, seed=1)  # 0.4 per decile, 0.8 in all -> 1
    assert held.groupby(eligible_frame([4, 4])["decile"]).sum().tolist() == [1, 0]


def test_control_group_is_the_same_for_a_seed_whatever_the_row_order():
    frame = eligible_frame([20] * 10)
    first = set(frame.loc[control_group(frame, 0.2, seed=11), "customer_id"])
    shuffled = frame.sample(frac=1.0, random_state=5)
    again = set(shuffled.loc[control_group(shuffled, 0.2, seed=11), "customer_id"])
    other = set(frame.loc[control_group(frame, 0.2, seed=12), "customer_id"])
    assert len(first) == 40 and first == again and other != first


# ------------------------------------------------------------------------ the log
def test_live_contacts_follow_the_latest_sent_or_withdrawn_entry():
    log = pd.DataFrame({
        "campaign_id": ["c1", "c1", "c1", "c1", "c1", "c2"],
        "customer_id": ["A", "B", "A", "B", "B", "A"],
        "entry": ["sent", "sent", "withdrawn", "withdrawn", "sent", "response"],
    })
    assert live_contacts(log)[["campaign_id", "customer_id"]].values.tolist() == [["c1", "B"]]


# ------------------------------------------------------------------------ responses
MEMBERS = pd.DataFrame({"campaign_id": ["c1", "c1"], "customer_id": ["A", "B"], "arm": ["treated", "control"]})
SENDS = {"c1": ts("2026-03-10T09:00:00")}


def response_rows(**changes) -> pd.DataFrame:
    frame = pd.DataFrame({"campaign_id": ["c1", "c1"], "customer_id": ["A", "B"], "response": ["converted", "none"],
                          "responded_at": ["2026-03-12T10:00:00Z", ""]})
    for column, values in changes.items():
        frame[column] = values
    return frame.replace({"": None})


def test_valid_responses_get_their_arm_and_utc_times():
    clean = validated_responses(response_rows(), "r.csv", MEMBERS, SENDS)
    assert clean["arm"].tolist() == ["treated", "control"]
    assert clean["responded_at"].iloc[0] == ts("2026-03-12T10:00:00") and pd.isna(clean["responded_at"].iloc[1])


@pytest.mark.parametrize(
    "changes, kind, column, row",
    [
        ({"response": ["converted", "bought"]}, "unknown_enum", "response", 2),
        ({"customer_id": ["A", "Q"]}, "unknown_customer", "customer_id", 2),
        ({"campaign_id": ["c9", "c1"]}, "unknown_campaign", "campaign_id", 1),
        ({"responded_at": ["2026-03-12T10:00:00", None]}, "timestamp_without_timezone", "responded_at", 1),
        ({"responded_at": ["soon", None]}, "wrong_type", "responded_at", 1),
        ({"responded_at": ["2026-03-09T10:00:00Z", None]}, "response_before_send", "responded_at", 1),
        ({"responded_at": [None, None]}, "null_in_required", "responded_at", 1),
    ],
)
def test_bad_response_rows_are_refused_naming_file_column_and_row(changes, kind, column, row):
    with pytest.raises(ContractError) as refused:
        validated_responses(response_rows(**changes), "responses.csv", MEMBERS, SENDS)
    [violation] = refused.value.violations
    assert (violation.table, violation.kind, violation.column) == ("responses.csv", kind, column)
    assert violation.rows[0]["row"] == row


def test_response_file_without_a_column_is_refused():
    with pytest.raises(ContractError) as refused:
        validated_responses(response_rows().drop(columns="response"), "r.csv", MEMBERS, SENDS)
    assert [(v.kind, v.column) for v in refused.value.violations] == [("missing_column", "response")]


# -------------------------------------------------------------------------- uplift
def test_uplift_is_the_difference_of_conversion_rates_with_a_wald_interval():
    members = pd.DataFrame({
        "customer_id": [f"T{i}" for i in range(10)] + [f"C{i}" for i in range(5)],
        "arm": ["treated"] * 10 + ["control"] * 5,
        "decile": [1] * 5 + [2] * 5 + [1, 1, 2, 2, 2],
    })
    outcomes = pd.DataFrame({"customer_id": ["T0", "T1", "T5", "C0", "T9"],
                             "response": ["converted", "converted", "converted", "converted", "opened"]})
    table = uplift_table(members, outcomes).set_index("segment")
    overall = table.loc["all"]
    assert (overall["treated"], overall["treated_conversions"], overall["control"], overall["control_conversions"]) == (10, 3, 5, 1)
    half = 1.959963984540054 * math.sqrt(0.3 * 0.7 / 10 + 0.2 * 0.8 / 5)
    assert overall["uplift"] == pytest.approx(0.1)
    assert (overall["ci_low"], overall["ci_high"]) == (pytest.approx(0.1 - half), pytest.approx(0.1 + half))
    assert table.loc["decile 1", "uplift"] == pytest.approx(2 / 5 - 1 / 2)
    assert table.loc["decile 2", "uplift"] == pytest.approx(1 / 5 - 0.0)


def test_as_of_reads_dates_as_utc_midnight_and_refuses_a_time_without_offset():
    assert parse_instant("2026-03-10") == ts("2026-03-10T00:00:00")
    assert parse_instant("2026-03-10T08:00:00+01:00") == ts("2026-03-10T07:00:00")
    with pytest.raises(ConfigError, match="no UTC offset"):
        parse_instant("2026-03-10T08:00:00")
