"""Campaign lists: who of a product's best-scored customers is contacted in a channel at
send time, who is held out as a control group, and the append-only campaign log.

The flow of ``propensity campaign build SPEC`` (``pipelines/campaign.py``):

1. **Audience.** The latest score partition at or before the spec's send date; the rows of
   the spec's product; the spec's selection rule (``top_n`` ranks, ``min_probability``, or
   ``top_deciles``). Selection comes first: ``top_n: 1000`` names the 1000 best-scored
   customers, and those who may not be contacted are explained, not replaced.
2. **Decisions.** Every audience customer gets exactly one reason, the first of
   :data:`REASONS` that applies, in this order:

   ``not_a_customer``          not a customer on the send date (POLICY rule 4)
   ``excluded``                tier ``excluded`` at the send instant (profiling objection)
   ``consent_withdrawn``       scored by the personalised model (transactions, employer) but
                               no longer personalised at the send instant, or scored with
                               group data sharing active and without it at the send
                               instant: a score may not be used once a consent behind it
                               is withdrawn
   ``reserved_channel``        the channel's reservation or ``all_channels`` placed at send
   ``no_email_sms_consent``    e-mail/SMS about a product not held, without the consent
   ``contact_policy``          over the contact cap, in the product's cool-down, or a
                               recent complaint (the spec's ``contact_policy``)
   ``missing_contact_details`` the channel needs an address the customer has not given
   ``control_group``           held out: selected but not contacted
   ``selected``                on the list

   ``excluded`` comes before the channel rules on purpose: an objection to profiling
   overrides everything, and an excluded customer's contact history is then never read
   for the campaign (POLICY rules 2 and 4). The state at send time is the latest consent
   or reservation event at or before the send instant (``policy.tiers_as_of``); a send
   instant already past is checked at the time of the build as well (:func:`check_instants`).
3. **Control group.** Among the customers who may be contacted, a seeded random share of
   each score decile, selected but not contacted: ``round(share x N)`` in all, each decile
   within one customer of ``share x n`` (:func:`control_group`).
4. **Output.** ``<data>/campaigns/<campaign_id>/`` written atomically (staged, renamed) and
   one ``sent`` row per contacted customer appended to the campaign log.

Files under ``<data>/campaigns/`` (each holds customer ids; the privacy code erases from all):

``<campaign_id>/list.parquet``, ``list.csv``  the send file: customer_id and only the
                                              fields the channel needs (:data:`CHANNEL_FIELDS`),
                                              in customer_id order (nothing of the scores)
``<campaign_id>/members.parquet``             customer_id, arm (treated|control), decile,
                                              rank, probability, tier and group_data_sharing (of the
                                              score): who is on the list and who is held out
                                              (evaluation joins it)
``<campaign_id>/reasons.csv``, ``reasons.json`` counts per stage and reason (no ids)
``<campaign_id>/manifest.json``               spec, score partition, counts, status (no ids)
``campaign_log.parquet/part-NNNNNNNN.parquet`` the project's campaign log (below)

Customers dropped for a reason are counted, not listed: an excluded customer has no
place on any list, not even a list of who was left out.

**The campaign log** is append-only: a folder of Parquet parts, each written once under a
temporary name and renamed in; no campaign command rewrites an existing part (only the
privacy erasure and the retention purge may, because the law asks rows to be deleted).
A row is an *entry*:

``sent``       a contacted customer, written at build (``sent_at`` = the planned send instant)
``withdrawn``  a correction: the customer was taken off the list before the send
               (``reason``: the finalise reason, or ``superseded`` by a ``--replace`` build)
``response``   a response (treated or control customer), written by ``campaign responses``

A customer is a live contact of a campaign when their latest ``sent``/``withdrawn`` entry
is ``sent``. The contact policy counts live contacts of the project's log plus every row
of the raw ``campaign_log`` extract (deduplicated on campaign_id, customer_id).

**Building a campaign twice** is refused; ``--replace`` rebuilds a campaign that is built
but not finalised: its live log rows get ``withdrawn``/``superseded`` entries, then the new
``sent`` rows follow in the same part. A finalised campaign (its list has gone out) cannot be
replaced; give the new one a new campaign_id.

**Finalise** (``campaign finalise``) re-reads the raw consent and reservation events as of
now (or ``--as-of``) and applies the send-time rules again (``not_a_customer``,
``excluded``, ``consent_withdrawn``, ``reserved_channel``, ``no_email_sms_consent``) to
both arms. A past ``--as-of`` is checked at now as well (``check_instants``): what a
customer said after that instant still removes them. Removed treated
customers leave the list files and get a ``withdrawn`` log entry; removed control customers
leave ``members.parquet``. The manifest's status becomes ``finalised``.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from statistics import NormalDist

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from propensity.atomic import clear_stale_staging, staged_dir
from propensity.config import Policy, Settings
from propensity.errors import ConfigError, ContractError, JobLockedError, MissingInputError, PropensityError, Violation
from propensity.policy import (
    consent_column,
    consent_withdrawn_since_scoring,
    customer_on,
    SCORED,
    first_reason,
    group_sharing_column,
    reservation_column,
    scored_columns,
    tiers_as_of,
)
from propensity.schema import RESPONSES
from propensity.score import score_dates
from propensity.snapshots import snapshot_instant

REASONS = (
    "not_a_customer",
    "excluded",
    "consent_withdrawn",
    "reserved_channel",
    "no_email_sms_consent",
    "contact_policy",
    "missing_contact_details",
    "control_group",
    "selected",
)
# The rules that finalise applies again at send time, in the same order as at build.
SEND_TIME_REASONS = REASONS[:5]
CONTACT_RULES = ("contact_cap", "cooldown", "recent_complaint")

# The contact fields a send file carries per channel; a channel not listed needs none
# (the app, the website, the online bank and advisers reach the customer by customer_id).
CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "sms": ("phone",),
    "phone": ("phone",),
    "letter": ("postal_code",),
}

TREATED, CONTROL = "treated", "control"
SENT, WITHDRAWN, RESPONSE = "sent", "withdrawn", "response"
SUPERSEDED = "superseded"
BUILT, FINALISED = "built", "finalised"

LOG_FOLDER = "campaign_log.parquet"
_UTC_US = pa.timestamp("us", tz="UTC")
LOG_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.string()),
        ("customer_id", pa.string()),
        ("product", pa.string()),
        ("channel", pa.string()),
        ("arm", pa.string()),
        ("entry", pa.string()),
        ("sent_at", _UTC_US),
        ("response", pa.string()),
        ("responded_at", _UTC_US),
        ("reason", pa.string()),
        ("logged_at", _UTC_US),
    ]
)
LOG_COLUMNS = LOG_SCHEMA.names
MEMBER_COLUMNS = ["customer_id", "arm", "decile", "rank", "probability", *SCORED]
RESPONSE_COLUMNS = ("campaign_id", "customer_id", "response", "responded_at")
EXAMPLE_ROWS = 5
Raw = Callable[[str], str]  # a table name -> its DuckDB FROM-expression (RawTables.relation)
# A campaign id names a folder: letters, digits, '_' and '-' only (no dot, so it can never
# be the log folder's name nor climb out of the campaigns folder).
CAMPAIGN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"


class CampaignStateError(PropensityError):
    """A campaign is not in the state a command needs (built twice, finalised, unknown)."""


# --------------------------------------------------------------------------- the spec
class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selection(_Spec):
    """Exactly one rule picks the audience from the product's scores."""

    top_n: int | None = Field(default=None, gt=0)
    min_probability: float | None = Field(default=None, gt=0, le=1)
    top_deciles: int | None = Field(default=None, ge=1, le=10)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Selection":
        given = [name for name in ("top_n", "min_probability", "top_deciles") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of top_n, min_probability, top_deciles (got {given or 'none'})")
        return self


class ContactPolicy(_Spec):
    """How often a customer may be contacted across campaigns."""

    max_contacts: int = Field(ge=1, description="contacts allowed in any window of `per_days`, this one included")
    per_days: int = Field(default=30, ge=1)
    cooldown_days: int = Field(ge=0, description="no two contacts about the same product closer than this (0: off)")
    days_since_complaint: int = Field(ge=0, description="no contact within this many days after a complaint (0: off)")
    complaint_topic: str = Field(default="complaint", min_length=1)


class MatchingTarget(_Spec):
    """A customer-matching audience for social or news media instead of a channel."""

    destination: str = Field(min_length=1)
    delete_after_days: int = Field(ge=1, description="the export is deleted this many days after the send date")


class CampaignSpec(_Spec):
    """A campaign, as written in ``conf/campaigns/<name>.yaml``.

    A channel campaign names a ``channel`` of the policy and a ``contact_policy``; a
    customer-matching campaign names ``customer_matching`` instead (no channel, no contact
    policy, no control group). ``send_time`` is UTC (quote it in YAML: ``"09:00"``).
    """

    campaign_id: str = Field(pattern=CAMPAIGN_ID_PATTERN)
    product: str
    channel: str | None = None
    selection: Selection
    send_date: date
    send_time: time = time(9, 0)
    control_share: float = Field(default=0.0, ge=0, lt=1)
    seed: int
    contact_policy: ContactPolicy | None = None
    customer_matching: MatchingTarget | None = None
    description: str = ""

    @field_validator("send_time", mode="before")
    @classmethod
    def _time_as_text(cls, value: object) -> object:
        if isinstance(value, (int, float)):
            raise ValueError(f"got the number {value}: YAML reads an unquoted 9:00 as minutes; write it quoted, e.g. \"09:00\"")
        return value

    @field_validator("product")
    @classmethod
    def _known_product(cls, value: str, info: ValidationInfo) -> str:
        products = (info.context or {}).get("products")
        if products is not None and value not in products:
            raise ValueError(f"unknown product {value!r}; the catalogue (models/products.yaml) has {list(products)}")
        return value

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str | None, info: ValidationInfo) -> str | None:
        channels = (info.context or {}).get("channels")
        if value is not None and channels is not None and value not in channels:
            raise ValueError(f"unknown channel {value!r}; the policy (conf/policy.yaml channels) has {list(channels)}")
        return value

    @model_validator(mode="after")
    def _channel_or_matching(self) -> "CampaignSpec":
        if (self.channel is None) == (self.customer_matching is None):
            raise ValueError("give exactly one of `channel` (a list campaign) or `customer_matching` (a media audience)")
        if self.channel is not None and self.contact_policy is None:
            raise ValueError("contact_policy: required for a channel campaign (max_contacts, cooldown_days, days_since_complaint)")
        if self.customer_matching is not None:
            if self.contact_policy is not None:
                raise ValueError("contact_policy: a customer-matching audience contacts no one; leave it out")
            if self.control_share:
                raise ValueError("control_share: a customer-matching export holds out no control group; set it to 0")
        return self

    @property
    def send_at(self) -> pd.Timestamp:
        """The send instant, UTC with microsecond precision."""
        moment = datetime.combine(self.send_date, self.send_time.replace(tzinfo=None))
        if self.send_time.tzinfo is not None:
            moment = moment.replace(tzinfo=self.send_time.tzinfo).astimezone(timezone.utc)
        return pd.Timestamp(moment.replace(tzinfo=None), tz="UTC").as_unit("us")


def load_spec(path: Path | str, settings: Settings) -> CampaignSpec:
    """Read and check a campaign spec; a bad one raises ``ConfigError`` naming each field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"campaign spec not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"campaign spec {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"campaign spec {path} must hold a mapping (campaign_id: ..., product: ..., ...)")
    context = {"products": settings.catalogue.ids, "channels": tuple(settings.policy.channels)}
    try:
        return CampaignSpec.model_validate(raw, context=context)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(spec)"
            problems.append(f"  {where}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError(f"campaign spec {path} refused:\n" + "\n".join(problems)) from None


def require_channel(spec: CampaignSpec) -> str:
    if spec.channel is None:
        raise ConfigError(
            f"campaign {spec.campaign_id} is a customer-matching audience: use `propensity matching export`, "
            "or give the spec a `channel`"
        )
    return spec.channel


def matching_deadline(spec: CampaignSpec) -> date:
    """The day a customer-matching export is deleted: send date + ``delete_after_days``."""
    if spec.customer_matching is None:
        raise ConfigError(
            f"campaign {spec.campaign_id} is a {spec.channel} campaign: use `propensity campaign build`, "
            "or give the spec a `customer_matching` section instead of a channel"
        )
    return spec.send_date + timedelta(days=spec.customer_matching.delete_after_days)


# ------------------------------------------------------------------------- places
def campaigns_dir(settings: Settings) -> Path:
    return settings.data_dir / "campaigns"


def list_dir(settings: Settings, campaign_id: str) -> Path:
    return campaigns_dir(settings) / campaign_id


def log_dir(settings: Settings) -> Path:
    return campaigns_dir(settings) / LOG_FOLDER


@contextmanager
def campaign_lock(settings: Settings) -> Iterator[None]:
    """One writer of lists and the campaign log per data folder."""
    folder = campaigns_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".campaign.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise JobLockedError(
            f"another campaign command holds {lock.lock_file}; wait for it to finish"
        ) from None
    try:
        clear_stale_staging(folder)
        clear_stale_staging(log_dir(settings))
        yield
    finally:
        lock.release()


# --------------------------------------------------------------------- the audience
def score_partition_for(settings: Settings, send_date: date) -> date:
    """The newest score date at or before the send date."""
    days = [d for d in score_dates(settings) if d <= send_date]
    if not days:
        raise MissingInputError(
            f"no score partition at or before the send date {send_date} under {settings.scores_dir}; "
            "run `propensity score` first"
        )
    return days[-1]


def campaign_audience(scores: pd.DataFrame, spec: CampaignSpec) -> pd.DataFrame:
    """The product's score rows that the selection rule picks, best rank first.

    Returns customer_id, probability, rank, decile. Refuses a partition without the product.
    """
    rows = scores[scores["product"] == spec.product]
    if rows.empty:
        raise MissingInputError(f"the score partition has no rows for product {spec.product!r}; score it first")
    rule = spec.selection
    if rule.top_n is not None:
        keep = rows["rank"] <= rule.top_n
    elif rule.min_probability is not None:
        keep = rows["probability"] >= rule.min_probability
    else:
        keep = rows["decile"] <= rule.top_deciles
    out = rows.loc[keep, ["customer_id", "probability", "rank", "decile", "tier"]]
    out = out.astype({"customer_id": str, "probability": "float64", "rank": "int64", "decile": "int64", "tier": str})
    return out.sort_values("rank", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------- send-time rules
def channel_reserved(states: pd.DataFrame, channel: str, policy: Policy) -> pd.Series:
    """True where the channel's own reservation or the all-channels reservation is placed."""
    blocked = states[reservation_column(policy.all_channels_reservation)].astype(bool)
    own = policy.channels[channel].reservable_as
    if own:
        blocked = blocked | states[reservation_column(own)].astype(bool)
    return blocked


def lacks_marketing_consent(states: pd.DataFrame, channel: str, policy: Policy, holds_product: pd.Series) -> pd.Series:
    """True where the channel needs a consent for a product the customer does not hold,
    and that consent is not active."""
    needed = policy.channels[channel].needs_consent_for_unheld_product
    if not needed:
        return pd.Series(False, index=states.index)
    return (~holds_product.astype(bool)) & ~states[consent_column(needed)].astype(bool)


def missing_contact_details(customers: pd.DataFrame, channel: str) -> pd.Series:
    """True where a field the channel's send file needs is null or blank."""
    missing = pd.Series(False, index=customers.index)
    for column in CHANNEL_FIELDS.get(channel, ()):
        values = customers[column]
        missing = missing | values.isna() | (values.astype(str).str.strip() == "")
    return missing


def send_time_reasons(
    customer_ids: pd.Series,
    scored: pd.DataFrame,
    customers: pd.DataFrame,
    states: pd.DataFrame,
    channel: str,
    policy: Policy,
    day: date,
) -> pd.Series:
    """The first of :data:`SEND_TIME_REASONS` that applies to each customer ("" for none).

    ``scored``: what each customer's score relied on (:data:`propensity.policy.SCORED` columns, row-aligned
    with ``customer_ids``); ``customers``: the raw customers rows; ``states``:
    ``tiers_as_of`` at the send instant.
    Every scored product is a product the customer does not hold: the score table holds
    only non-holders (DESIGN, Scoring), so the consent rule applies to every row.
    """
    ids = pd.Index(customer_ids.astype(str), name="customer_id")
    cust = customers.drop_duplicates("customer_id").set_index("customer_id").reindex(ids)
    st = states.drop_duplicates("customer_id").set_index("customer_id").reindex(ids)
    holds_product = pd.Series(False, index=ids)
    masks = [
        pd.Series(~customer_on(cust["customer_since"], cust["closed_at"], day), index=ids),
        st["tier"].eq("excluded"),
        consent_withdrawn_since_scoring(scored, st, policy),
        channel_reserved(st, channel, policy),
        lacks_marketing_consent(st, channel, policy, holds_product),
    ]
    reason = np.select([m.to_numpy(dtype=bool) for m in masks], list(SEND_TIME_REASONS), default="")
    return pd.Series(reason, index=customer_ids.index, dtype=object)


def contact_rule_breaches(
    customer_ids: pd.Series,
    contacts: pd.DataFrame,
    complaints: pd.DataFrame,
    product: str,
    send_at: pd.Timestamp,
    rules: ContactPolicy,
) -> pd.Series:
    """The first of :data:`CONTACT_RULES` each customer breaks ("" for none).

    ``contacts``: customer_id, product, sent_at (every contact of other campaigns, planned
    ones included). ``complaints``: customer_id, contact_time, topic (contact history).

    * ``contact_cap``: some window of ``per_days`` days holding the send instant would hold
      more than ``max_contacts`` contacts with this one (windows are half-open [s, s+days)).
    * ``cooldown``: a contact about the same product less than ``cooldown_days`` before or
      after the send (either order, so the gap holds whichever campaign was built first).
    * ``recent_complaint``: a contact-history entry with the complaint topic in the
      ``days_since_complaint`` days up to the send instant.
    """
    ids = customer_ids.astype(str)
    rows = contacts[contacts["customer_id"].isin(set(ids))]
    sent = pd.to_datetime(rows["sent_at"], utc=True)
    flagged: dict[str, set] = {}
    flagged["contact_cap"] = _over_cap(rows.assign(sent_at=sent), send_at, rules)
    if rules.cooldown_days:
        near = (rows["product"] == product) & ((sent - send_at).abs() < pd.Timedelta(days=rules.cooldown_days))
        flagged["cooldown"] = set(rows.loc[near, "customer_id"])
    if rules.days_since_complaint:
        at = pd.to_datetime(complaints["contact_time"], utc=True)
        recent = (
            (complaints["topic"] == rules.complaint_topic)
            & (at > send_at - pd.Timedelta(days=rules.days_since_complaint))
            & (at <= send_at)
        )
        flagged["recent_complaint"] = set(complaints.loc[recent, "customer_id"])
    conditions = [ids.isin(flagged.get(rule, set())).to_numpy() for rule in CONTACT_RULES]
    return pd.Series(np.select(conditions, list(CONTACT_RULES), default=""), index=customer_ids.index, dtype=object)


def _over_cap(contacts: pd.DataFrame, send_at: pd.Timestamp, rules: ContactPolicy) -> set:
    # The busiest window holding the send starts at the send itself or at a contact in the
    # window before it: sliding a window right until its start meets a contact only adds
    # contacts, so these starts are the only ones to try.
    window = pd.Timedelta(days=rules.per_days)
    near = contacts.loc[
        (contacts["sent_at"] > send_at - window) & (contacts["sent_at"] < send_at + window), ["customer_id", "sent_at"]
    ]
    if near.empty:
        return set()
    starts = pd.concat(
        [
            near.loc[near["sent_at"] <= send_at].rename(columns={"sent_at": "start"}),
            pd.DataFrame({"customer_id": near["customer_id"].unique(), "start": send_at}),
        ],
        ignore_index=True,
    ).drop_duplicates()
    pairs = starts.merge(near, on="customer_id")
    inside = pairs[(pairs["sent_at"] >= pairs["start"]) & (pairs["sent_at"] < pairs["start"] + window)]
    busiest = inside.groupby(["customer_id", "start"]).size().groupby(level="customer_id").max()
    # This contact would be one more in that window.
    return set(busiest[busiest + 1 > rules.max_contacts].index)


def control_group(eligible: pd.DataFrame, share: float, seed: int) -> pd.Series:
    """A seeded random ``share`` of each decile: True for the held-out customers.

    ``eligible``: customer_id, decile. The group has ``round(share x N)`` customers (halves
    up); each decile gives ``floor(share x n)`` or one more, the extra ones going to the
    deciles with the largest remainders (the better decile on a tie), so every decile's
    control share is within one customer of the target. The same customers and seed give
    the same group, whatever the input order.
    """
    if eligible.empty or share == 0:
        return pd.Series(False, index=eligible.index)
    ordered = eligible[["customer_id", "decile"]].sort_values(["decile", "customer_id"], kind="stable")
    sizes = ordered.groupby("decile").size()
    quota = share * sizes
    wanted = np.floor(quota)
    extra = int(math.floor(share * len(ordered) + 0.5) - wanted.sum())
    remainders = (quota - wanted).sort_values(ascending=False, kind="stable")
    wanted.loc[remainders.index[:extra]] += 1
    key = pd.Series(np.random.default_rng(seed).random(len(ordered)), index=ordered.index)
    position = key.groupby(ordered["decile"]).rank(method="first")
    return (position <= ordered["decile"].map(wanted)).reindex(eligible.index)


def campaign_decisions(
    audience: pd.DataFrame,
    customers: pd.DataFrame,
    checks: Sequence[tuple[pd.DataFrame, date]],
    contacts: pd.DataFrame,
    complaints: pd.DataFrame,
    spec: CampaignSpec,
    policy: Policy,
) -> pd.DataFrame:
    """One row per audience customer with its ``reason`` (see :data:`REASONS`).

    ``checks``: per instant of :func:`check_instants` (the send time, and now when the send
    time has passed), the ``tiers_as_of`` states and the day; the first instant's reason
    wins. Returns audience's columns plus ``reason`` and ``contact_rule`` (the
    contact-policy rule broken, "" otherwise).
    """
    channel = require_channel(spec)
    assert spec.contact_policy is not None  # the spec's own validation guarantees it
    out = audience.reset_index(drop=True).copy()
    ids = out["customer_id"]
    reason = send_time_reasons_at(ids, scored_columns(out), customers, checks, channel, policy)
    contact_rule = contact_rule_breaches(ids, contacts, complaints, spec.product, spec.send_at, spec.contact_policy)
    cust = customers.drop_duplicates("customer_id").set_index("customer_id").reindex(ids.astype(str))
    missing = pd.Series(missing_contact_details(cust, channel).to_numpy(), index=out.index)
    open_ = reason.eq("")
    reason = reason.mask(open_ & contact_rule.ne(""), "contact_policy")
    reason = reason.mask(reason.eq("") & missing, "missing_contact_details")
    eligible = reason.eq("")
    held_out = control_group(out.loc[eligible, ["customer_id", "decile"]], spec.control_share, spec.seed)
    reason.loc[held_out.index[held_out.to_numpy(dtype=bool)]] = "control_group"
    reason = reason.mask(reason.eq(""), "selected")
    out["reason"] = reason
    out["contact_rule"] = contact_rule.where(reason.eq("contact_policy"), "")
    return out


def reason_counts(decisions: pd.DataFrame, stage: str, reasons: tuple[str, ...] = REASONS) -> pd.DataFrame:
    """stage, reason, customers: one row per reason in order, zeros included."""
    counts = decisions["reason"].value_counts()
    return pd.DataFrame(
        {"stage": stage, "reason": list(reasons), "customers": [int(counts.get(r, 0)) for r in reasons]}
    )


def members_frame(decisions: pd.DataFrame) -> pd.DataFrame:
    """Who is on the list (``treated``) and who is held out (``control``)."""
    kept = decisions[decisions["reason"].isin(["selected", "control_group"])]
    arm = np.where(kept["reason"].eq("selected"), TREATED, CONTROL)
    return kept.assign(arm=arm)[MEMBER_COLUMNS].reset_index(drop=True)


def contact_list(members: pd.DataFrame, customers: pd.DataFrame, channel: str) -> pd.DataFrame:
    """The send file: treated customers with only the fields the channel needs, in
    customer_id order. The file leaves the bank (a mailing house, an SMS gateway), so its
    order carries nothing of the scores: no rank, no decile, no sort by propensity."""
    treated = members.loc[members["arm"] == TREATED, ["customer_id"]].sort_values("customer_id", kind="stable")
    fields = list(CHANNEL_FIELDS.get(channel, ()))
    details = customers.drop_duplicates("customer_id")[["customer_id", *fields]]
    out = treated.merge(details, on="customer_id", how="left")
    return out[["customer_id", *fields]].astype({c: object for c in ["customer_id", *fields]}).reset_index(drop=True)


# ------------------------------------------------------------------ reading raw inputs
@contextmanager
def _ids_view(con: duckdb.DuckDBPyConnection, ids: pd.Series) -> Iterator[str]:
    name = f"_ids_{uuid.uuid4().hex[:8]}"
    con.register(name, pd.DataFrame({"customer_id": pd.Series(ids, dtype=object).astype(str).unique()}))
    try:
        yield f"(SELECT customer_id FROM {name})"
    finally:
        con.unregister(name)


def read_customers(con: duckdb.DuckDBPyConnection, relation: Raw, ids: pd.Series) -> pd.DataFrame:
    """customer_id, email, phone, postal_code, customer_since, closed_at of the given customers."""
    with _ids_view(con, ids) as wanted:
        return con.execute(
            "SELECT customer_id, email, phone, postal_code, customer_since, closed_at "
            f"FROM {relation('customers')} WHERE customer_id IN {wanted}"
        ).df()


def read_governance_events(
    con: duckdb.DuckDBPyConnection, relation: Raw, ids: pd.Series, at: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The consent and reservation events of the given customers up to ``at``."""
    with _ids_view(con, ids) as wanted:
        consents = con.execute(
            f"SELECT customer_id, event_time, purpose, granted FROM {relation('consent_events')} "
            f"WHERE customer_id IN {wanted} AND event_time <= CAST(? AS TIMESTAMPTZ)",
            [at.isoformat()],
        ).df()
        reservations = con.execute(
            f"SELECT customer_id, event_time, scope, placed FROM {relation('reservation_events')} "
            f"WHERE customer_id IN {wanted} AND event_time <= CAST(? AS TIMESTAMPTZ)",
            [at.isoformat()],
        ).df()
    return consents, reservations


def states_at_instants(
    con: duckdb.DuckDBPyConnection, relation: Raw, ids: pd.Series, instants: Sequence[pd.Timestamp], policy: Policy
) -> list[tuple[pd.DataFrame, date]]:
    """Per instant (of :func:`check_instants`), the customers' states and that instant's
    day: the events are read once, up to the last instant."""
    consents, reservations = read_governance_events(con, relation, ids, instants[-1])
    return [(states_at(consents, reservations, ids, at, policy), at.date()) for at in instants]


def states_at(consents: pd.DataFrame, reservations: pd.DataFrame, ids: pd.Series, at: pd.Timestamp, policy: Policy) -> pd.DataFrame:
    """Every consent/reservation state and the tier of each customer at the instant ``at``."""
    points = pd.DataFrame({"customer_id": pd.Series(ids, dtype=object).astype(str).unique()})
    points["at"] = at
    return tiers_as_of(consents, reservations, points, policy)


def read_complaints(con: duckdb.DuckDBPyConnection, relation: Raw, ids: pd.Series, spec: CampaignSpec) -> pd.DataFrame:
    """Contact-history rows with the complaint topic in the spec's window before the send."""
    rules = spec.contact_policy
    empty = pd.DataFrame({"customer_id": pd.Series(dtype=object), "contact_time": pd.Series(dtype="datetime64[us, UTC]"),
                          "topic": pd.Series(dtype=object)})
    if rules is None or not rules.days_since_complaint or len(ids) == 0:
        return empty
    start = spec.send_at - pd.Timedelta(days=rules.days_since_complaint)
    with _ids_view(con, ids) as wanted:
        return con.execute(
            f"SELECT customer_id, contact_time, topic FROM {relation('contact_history')} "
            f"WHERE customer_id IN {wanted} AND topic = ? "
            "AND contact_time > CAST(? AS TIMESTAMPTZ) AND contact_time <= CAST(? AS TIMESTAMPTZ)",
            [rules.complaint_topic, start.isoformat(), spec.send_at.isoformat()],
        ).df()


def read_contacts(con: duckdb.DuckDBPyConnection, relation: Raw, settings: Settings, ids: pd.Series, spec: CampaignSpec) -> pd.DataFrame:
    """Contacts of other campaigns near the send: the raw ``campaign_log`` extract and the
    live contacts of the project's log, once per (campaign_id, customer_id)."""
    rules = spec.contact_policy
    columns = ["campaign_id", "customer_id", "product", "sent_at"]
    if rules is None or len(ids) == 0:
        return pd.DataFrame({c: pd.Series(dtype="datetime64[us, UTC]" if c == "sent_at" else object) for c in columns})
    reach = pd.Timedelta(days=max(rules.per_days, rules.cooldown_days))
    lo, hi = (spec.send_at - reach).isoformat(), (spec.send_at + reach).isoformat()
    with _ids_view(con, ids) as wanted:
        raw = con.execute(
            f"SELECT campaign_id, customer_id, product, sent_at FROM {relation('campaign_log')} "
            f"WHERE customer_id IN {wanted} AND sent_at > CAST(? AS TIMESTAMPTZ) AND sent_at < CAST(? AS TIMESTAMPTZ)",
            [lo, hi],
        ).df()
    own = live_contacts(read_log(settings))
    own = own[own["customer_id"].isin(set(ids.astype(str)))][columns]
    both = pd.concat([raw.astype({"sent_at": "datetime64[us, UTC]"}), own], ignore_index=True)
    both = both[both["campaign_id"] != spec.campaign_id]
    return both.drop_duplicates(["campaign_id", "customer_id"]).reset_index(drop=True)


# --------------------------------------------------------------------- the campaign log
def read_log(settings: Settings) -> pd.DataFrame:
    """Every entry of the project's campaign log, in the order written."""
    parts = sorted(log_dir(settings).glob("part-*.parquet"))
    if not parts:
        return LOG_SCHEMA.empty_table().to_pandas()
    tables = [pq.read_table(p).select(LOG_COLUMNS).cast(LOG_SCHEMA) for p in parts]
    return pa.concat_tables(tables).to_pandas().reset_index(drop=True)


def append_log(settings: Settings, entries: pd.DataFrame) -> Path | None:
    """Add a new part to the log (staged under a hidden name, then renamed in).

    Existing parts are never opened for writing. Returns the new part (None for no rows).
    """
    if entries.empty:
        return None
    folder = log_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.stem.split("-", 1)[1]) for p in folder.glob("part-*.parquet") if p.stem.split("-", 1)[1].isdigit()]
    final = folder / f"part-{max(numbers, default=0) + 1:08d}.parquet"
    staging = folder / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
    table = pa.Table.from_pandas(entries[LOG_COLUMNS].reset_index(drop=True), schema=LOG_SCHEMA, preserve_index=False)
    try:
        pq.write_table(table, staging)
        os.replace(staging, final)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return final


def log_entries(
    frame: pd.DataFrame, spec: CampaignSpec, entry: str, arm: str, logged_at: pd.Timestamp, reason: str | None = None
) -> pd.DataFrame:
    """Log rows for the customers of ``frame``: customer_id, and optionally arm, response,
    responded_at, product, channel, sent_at (the spec's values otherwise)."""
    n = len(frame)
    rows = frame.reset_index(drop=True)

    def column(name: str, default: object) -> object:
        return rows[name] if name in rows else default

    responded_at = (
        pd.to_datetime(rows["responded_at"], utc=True).astype("datetime64[us, UTC]")
        if "responded_at" in rows else pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    )
    out = pd.DataFrame(
        {
            "campaign_id": spec.campaign_id,
            "customer_id": rows["customer_id"].astype(str),
            # A correction of an earlier entry keeps that entry's product, channel and send.
            "product": column("product", spec.product),
            "channel": column("channel", spec.channel),
            "arm": column("arm", arm),
            "entry": entry,
            "sent_at": column("sent_at", spec.send_at),
            "response": column("response", "none"),
            "responded_at": responded_at,
            "reason": reason,
            "logged_at": logged_at,
        },
        index=range(n),
    )
    return out[LOG_COLUMNS]


def live_contacts(log: pd.DataFrame) -> pd.DataFrame:
    """Log rows of customers whose latest sent/withdrawn entry of a campaign is ``sent``."""
    moves = log[log["entry"].isin([SENT, WITHDRAWN])]
    latest = moves.drop_duplicates(["campaign_id", "customer_id"], keep="last")
    return latest[latest["entry"] == SENT].reset_index(drop=True)


def furthest_responses(log: pd.DataFrame, campaign_id: str) -> pd.DataFrame:
    """customer_id, response: the furthest step of the funnel (RESPONSES order) each customer
    reached in the campaign, from its response entries."""
    rows = log[(log["entry"] == RESPONSE) & (log["campaign_id"] == campaign_id)]
    step = rows["response"].map({r: i for i, r in enumerate(RESPONSES)})
    furthest = step.groupby(rows["customer_id"]).max()
    return pd.DataFrame({"customer_id": furthest.index.astype(str), "response": [RESPONSES[int(i)] for i in furthest]})


# ------------------------------------------------------------------- writing a campaign
@dataclass(frozen=True)
class CampaignBuild:
    campaign_id: str
    path: Path
    score_date: date
    send_at: pd.Timestamp
    reasons: pd.DataFrame
    contact_rules: dict[str, int]
    treated: int
    control: int
    superseded: int


def manifest_path(settings: Settings, campaign_id: str) -> Path:
    return list_dir(settings, campaign_id) / "manifest.json"


def read_manifest(settings: Settings, campaign_id: str) -> dict:
    path = manifest_path(settings, campaign_id)
    if not path.is_file():
        raise CampaignStateError(
            f"campaign {campaign_id!r} is not built (no {path}); run `propensity campaign build SPEC` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def refuse_rebuild(settings: Settings, spec: CampaignSpec, replace: bool) -> None:
    """A campaign is built once; ``replace`` rebuilds one that is not finalised."""
    path = manifest_path(settings, spec.campaign_id)
    if not path.is_file():
        return
    status = json.loads(path.read_text(encoding="utf-8")).get("status")
    if not replace:
        raise CampaignStateError(
            f"campaign {spec.campaign_id!r} is already built ({path.parent}, status {status}); "
            "use --replace to rebuild it, or give the spec a new campaign_id"
        )
    if status == FINALISED:
        raise CampaignStateError(
            f"campaign {spec.campaign_id!r} is finalised: its list has gone out and cannot be replaced; "
            "give the spec a new campaign_id"
        )


def write_campaign(
    settings: Settings,
    spec: CampaignSpec,
    decisions: pd.DataFrame,
    customers: pd.DataFrame,
    score_day: date,
    built_at: pd.Timestamp,
) -> CampaignBuild:
    """Append the ``sent`` entries to the log, then publish the campaign folder atomically.

    Live entries of an earlier build of the same campaign_id (``--replace``, or a build
    killed between the two steps) get ``withdrawn``/``superseded`` entries first, in the
    same log part. The log comes first: a failure after it leaves contacts counted by the
    contact policy but no list to send, never a list whose contacts are not counted.
    """
    channel = require_channel(spec)
    members = members_frame(decisions)
    send_file = contact_list(members, customers, channel)
    earlier = live_contacts(read_log(settings))
    earlier = earlier[earlier["campaign_id"] == spec.campaign_id]
    entries = pd.concat(
        [
            log_entries(earlier, spec, WITHDRAWN, TREATED, built_at, reason=SUPERSEDED),
            log_entries(members[members["arm"] == TREATED], spec, SENT, TREATED, built_at),
        ],
        ignore_index=True,
    )
    append_log(settings, entries)
    reasons = reason_counts(decisions, "build")
    rules = decisions.loc[decisions["reason"] == "contact_policy", "contact_rule"].value_counts()
    contact_rules = {rule: int(rules.get(rule, 0)) for rule in CONTACT_RULES}
    treated = int((members["arm"] == TREATED).sum())
    control = int((members["arm"] == CONTROL).sum())
    manifest = {
        "campaign_id": spec.campaign_id,
        "status": BUILT,
        "spec": spec.model_dump(mode="json"),
        "send_at": spec.send_at.isoformat(),
        "score_date": score_day.isoformat(),
        "score_partition": f"scores/score_date={score_day.isoformat()}",
        "built_at": built_at.isoformat(),
        "reason_order": list(REASONS),
        "counts": {row.reason: int(row.customers) for row in reasons.itertuples()},
        "contact_rules": contact_rules,
        "treated": treated,
        "control": control,
        "superseded_log_entries": len(earlier),
        "finalise_checks": [],
    }
    path = list_dir(settings, spec.campaign_id)
    _publish(path, send_file, members, reasons, manifest)
    return CampaignBuild(
        campaign_id=spec.campaign_id, path=path, score_date=score_day, send_at=spec.send_at, reasons=reasons,
        contact_rules=contact_rules, treated=treated, control=control, superseded=len(earlier),
    )


def _publish(path: Path, send_file: pd.DataFrame, members: pd.DataFrame, reasons: pd.DataFrame, manifest: dict) -> None:
    with staged_dir(path) as staging:
        send_file.to_parquet(staging / "list.parquet", index=False)
        send_file.to_csv(staging / "list.csv", index=False)
        members.to_parquet(staging / "members.parquet", index=False)
        reasons.to_csv(staging / "reasons.csv", index=False)
        (staging / "reasons.json").write_text(json.dumps(reasons.to_dict(orient="records"), indent=2), encoding="utf-8")
        manifest = {**manifest, "files": ["list.parquet", "list.csv", "members.parquet", "reasons.csv", "reasons.json", "manifest.json"]}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


# ------------------------------------------------------------------------- finalise
@dataclass(frozen=True)
class BuiltCampaign:
    spec: CampaignSpec
    manifest: dict
    members: pd.DataFrame
    send_file: pd.DataFrame
    reasons: pd.DataFrame


def read_built(settings: Settings, campaign_id: str) -> BuiltCampaign:
    manifest = read_manifest(settings, campaign_id)
    folder = list_dir(settings, campaign_id)
    return BuiltCampaign(
        spec=CampaignSpec.model_validate(manifest["spec"]),
        manifest=manifest,
        members=pd.read_parquet(folder / "members.parquet"),
        send_file=pd.read_parquet(folder / "list.parquet"),
        reasons=pd.read_csv(folder / "reasons.csv"),
    )


@dataclass(frozen=True)
class Finalised:
    campaign_id: str
    as_of: pd.Timestamp
    removed: pd.DataFrame  # customer_id, arm, reason
    counts: pd.DataFrame  # reason, treated, control
    treated: int
    control: int


def check_instants(as_of: pd.Timestamp, now: pd.Timestamp) -> tuple[pd.Timestamp, ...]:
    """The instants a send-time check reads: the requested one and, when it lies in the past,
    now as well. A withdrawal, reservation or objection made after the requested instant
    still removes the customer; a later grant never restores one (the protective reading)."""
    return (as_of,) if as_of >= now else (as_of, now)


def send_time_reasons_at(ids: pd.Series, scored: pd.DataFrame, customers: pd.DataFrame,
                         checks: Sequence[tuple[pd.DataFrame, date]], channel: str, policy: Policy) -> pd.Series:
    """:func:`send_time_reasons` at every instant checked; per customer, the first reason."""
    return first_reason([send_time_reasons(ids, scored, customers, states, channel, policy, day) for states, day in checks])


def sharing_at_scoring(con: duckdb.DuckDBPyConnection, relation: Raw, ids: pd.Series, score_day: date,
                       policy: Policy) -> np.ndarray:
    """Per customer (by position), whether group data sharing was active at the score
    date's snapshot instant, i.e. whether the store read group-company data for the score."""
    at = pd.Timestamp(snapshot_instant(score_day))
    consents, reservations = read_governance_events(con, relation, ids, at)
    states = states_at(consents, reservations, ids, at, policy).drop_duplicates("customer_id").set_index("customer_id")
    column = states[group_sharing_column(policy)].astype(bool)
    return column.reindex(pd.Index(ids.astype(str))).fillna(False).to_numpy(dtype=bool)


def finalise_removals(built: BuiltCampaign, customers: pd.DataFrame, checks: Sequence[tuple[pd.DataFrame, date]],
                      policy: Policy) -> pd.DataFrame:
    """Members who may no longer be on the list or in the control group: customer_id, arm, reason.

    ``checks``: per instant of :func:`check_instants`, the ``tiers_as_of`` states and the day."""
    members = built.members
    # A list built before members recorded what the score relied on: assume the personalised
    # tier and group data, so a customer without that consent now is removed rather than
    # kept on a stale score.
    scored = pd.DataFrame({"tier": members.get("tier", "personalised"),
                           "group_data_sharing": members.get("group_data_sharing", True)}, index=members.index)
    reason = send_time_reasons_at(members["customer_id"], scored, customers, checks, require_channel(built.spec), policy)
    removed = members.loc[reason.ne(""), ["customer_id", "arm"]].assign(reason=reason[reason.ne("")])
    return removed.reset_index(drop=True)


def write_finalised(settings: Settings, built: BuiltCampaign, removed: pd.DataFrame, as_of: pd.Timestamp,
                    finalised_at: pd.Timestamp, checked_at: Sequence[pd.Timestamp] = ()) -> Finalised:
    """Rewrite the campaign folder without the removed customers, then log ``withdrawn``
    entries for the removed treated ones. The folder comes first: a failure after it
    leaves a contact counted that will not happen, never a send to a withdrawn customer."""
    spec = built.spec
    gone = set(removed["customer_id"])
    members = built.members[~built.members["customer_id"].isin(gone)].reset_index(drop=True)
    send_file = built.send_file[~built.send_file["customer_id"].isin(gone)].reset_index(drop=True)
    counts = pd.DataFrame({"reason": list(SEND_TIME_REASONS)})
    for arm in (TREATED, CONTROL):
        per = removed.loc[removed["arm"] == arm, "reason"].value_counts()
        counts[arm] = [int(per.get(r, 0)) for r in SEND_TIME_REASONS]
    stage = f"finalise {as_of.isoformat()}"
    reasons = pd.concat(
        [built.reasons, pd.DataFrame({"stage": stage, "reason": counts["reason"], "customers": counts[TREATED] + counts[CONTROL]})],
        ignore_index=True,
    )
    treated, control = int((members["arm"] == TREATED).sum()), int((members["arm"] == CONTROL).sum())
    check = {
        "as_of": as_of.isoformat(),
        "checked_at": [t.isoformat() for t in (checked_at or (as_of,))],
        "finalised_at": finalised_at.isoformat(),
        "removed": {row.reason: {TREATED: int(row.treated), CONTROL: int(row.control)} for row in counts.itertuples()},
        "treated": treated,
        "control": control,
    }
    manifest = {**built.manifest, "status": FINALISED, "finalised_at": finalised_at.isoformat(), "treated": treated,
                "control": control, "finalise_checks": [*built.manifest.get("finalise_checks", []), check]}
    _publish(list_dir(settings, spec.campaign_id), send_file, members, reasons, manifest)
    withdrawn = removed[removed["arm"] == TREATED]
    parts = [log_entries(rows, spec, WITHDRAWN, TREATED, finalised_at, reason=reason)
             for reason, rows in withdrawn.groupby("reason", sort=False)]
    if parts:
        append_log(settings, pd.concat(parts, ignore_index=True))
    return Finalised(campaign_id=spec.campaign_id, as_of=as_of, removed=removed, counts=counts, treated=treated, control=control)


# ------------------------------------------------------------------------ responses
def read_response_file(path: Path) -> pd.DataFrame:
    """A response file as given: CSV (every column as text) or Parquet."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"response file not found: {path}")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise ContractError([Violation(str(path), None, "unreadable_file", f"could not be read: {exc}",
                                       fix="export the responses as CSV with a header row, or as Parquet")]) from None
    raise ContractError([Violation(str(path), None, "unknown_format", f"{path.suffix or 'no suffix'} is not .csv or .parquet",
                                   fix="save the responses as .csv or .parquet")])


def validated_responses(frame: pd.DataFrame, source: str, members: pd.DataFrame, send_at: dict[str, pd.Timestamp]) -> pd.DataFrame:
    """The clean response rows: campaign_id, customer_id, response, responded_at (UTC), arm.

    ``members``: campaign_id, customer_id, arm of every built campaign the file names;
    ``send_at``: each built campaign's send instant. Refuses (one ``ContractError`` naming
    the file, the column and up to five rows, with ``row`` = data row number from 1) a
    missing column, a null where one is needed, a response outside ``none, opened,
    clicked, converted``, a time that is not a UTC timestamp, an unknown campaign, a
    customer neither on the campaign's list nor in its control group, and a response
    before the campaign's send instant. Nothing is written.
    """
    missing = [c for c in RESPONSE_COLUMNS if c not in frame.columns]
    if missing:
        raise ContractError([Violation(source, c, "missing_column", f"column {c!r} is missing; the file has {list(frame.columns)}",
                                       fix=f"add {c!r}; a response file has columns {list(RESPONSE_COLUMNS)}") for c in missing])
    rows = frame[list(RESPONSE_COLUMNS)].copy()
    rows.index = pd.RangeIndex(1, len(rows) + 1, name="row")
    for column in ("campaign_id", "customer_id", "response"):
        rows[column] = rows[column].astype(object).where(rows[column].notna(), None)
    responded_at, bad_time, no_zone = _utc_times(rows["responded_at"])
    rows["responded_at"] = responded_at
    checks: list[tuple[str, str, pd.Series, str, str]] = []
    for column in ("campaign_id", "customer_id", "response"):
        checks.append(("null_in_required", column, rows[column].isna(), "{n} row(s) are empty", f"fill {column} in every row"))
    checks += [
        ("unknown_enum", "response", rows["response"].notna() & ~rows["response"].isin(RESPONSES),
         "{n} row(s) hold values outside " + str(list(RESPONSES)), f"use one of {list(RESPONSES)}"),
        ("wrong_type", "responded_at", bad_time, "{n} value(s) cannot be read as a timestamp",
         "write an ISO 8601 timestamp with its UTC offset, e.g. 2026-03-12T10:30:00+00:00"),
        ("timestamp_without_timezone", "responded_at", no_zone, "{n} value(s) have no UTC offset",
         "write the time with its offset, e.g. 2026-03-12T10:30:00Z"),
        ("null_in_required", "responded_at", rows["responded_at"].isna() & ~bad_time & ~no_zone
         & rows["response"].isin(RESPONSES[1:]), "{n} response(s) other than 'none' have no time",
         "give responded_at for every opened, clicked or converted row"),
    ]
    known_campaigns = set(send_at)
    unknown_campaign = rows["campaign_id"].notna() & ~rows["campaign_id"].isin(known_campaigns)
    checks.append(("unknown_campaign", "campaign_id", unknown_campaign, "{n} row(s) name a campaign that is not built",
                   "fix the campaign_id, or build the campaign first (`propensity campaign build`)"))
    pairs = rows.reset_index().merge(members, on=["campaign_id", "customer_id"], how="left").set_index("row")
    unknown_pair = rows["customer_id"].notna() & ~unknown_campaign & rows["campaign_id"].notna() & pairs["arm"].isna()
    checks.append(("unknown_customer", "customer_id", unknown_pair,
                   "{n} row(s) name a customer who is neither on the campaign's list nor in its control group",
                   "fix the customer_id, or leave responses of customers outside the campaign out of the file"))
    send = rows["campaign_id"].map(send_at)
    early = rows["responded_at"].notna() & send.notna() & (rows["responded_at"] < pd.to_datetime(send, utc=True))
    checks.append(("response_before_send", "responded_at", early, "{n} response(s) are dated before the campaign's send instant",
                   "check responded_at; a response cannot precede the send"))
    violations = []
    for kind, column, mask, message, fix in checks:
        mask = mask.fillna(False).astype(bool)
        if not mask.any():
            continue
        positions = np.flatnonzero(mask.to_numpy())[:EXAMPLE_ROWS]
        shown = frame[list(RESPONSE_COLUMNS)].astype(object).iloc[positions].to_dict("records")
        examples = [{"row": int(i) + 1, **{k: _plain(v) for k, v in r.items()}} for i, r in zip(positions, shown)]
        found = f"; found {sorted(set(rows.loc[mask, column].astype(str)))[:EXAMPLE_ROWS]}" if kind == "unknown_enum" else ""
        violations.append(Violation(source, column, kind, message.replace("{n}", str(int(mask.sum()))) + found, examples, fix))
    if violations:
        raise ContractError(violations)
    rows["arm"] = pairs["arm"]
    return rows.reset_index(drop=True)


def _plain(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    return value


def _utc_times(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(UTC times, unreadable mask, zone-less mask) of a column of times or ISO texts."""
    if pd.api.types.is_datetime64_any_dtype(values):
        if getattr(values.dt, "tz", None) is None:
            return pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]"), pd.Series(False, index=values.index), values.notna()
        return values.dt.tz_convert("UTC").astype("datetime64[us, UTC]"), pd.Series(False, index=values.index), pd.Series(False, index=values.index)
    text = values.astype(object).where(values.notna(), None)
    present = text.notna()
    stripped = text.where(~present, text.astype(str).str.strip())
    parsed = pd.to_datetime(stripped, utc=True, errors="coerce", format="ISO8601")
    bad = present & parsed.isna()
    zoned = stripped.astype(str).str.contains(r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)$", case=False, regex=True)
    no_zone = present & ~bad & ~zoned
    good = parsed.where(~(bad | no_zone)).astype("datetime64[us, UTC]")
    return good, bad, no_zone


def members_of(settings: Settings, campaign_ids) -> tuple[pd.DataFrame, dict[str, pd.Timestamp], dict[str, CampaignSpec]]:
    """campaign_id, customer_id, arm of the built campaigns among ``campaign_ids``, their
    send instants and specs (campaigns that are not built are left out)."""
    frames, sends, specs = [], {}, {}
    for cid in sorted({str(c) for c in campaign_ids if isinstance(c, str)}):
        if not re.fullmatch(CAMPAIGN_ID_PATTERN, cid) or not manifest_path(settings, cid).is_file():
            continue
        built = read_built(settings, cid)
        frames.append(built.members[["customer_id", "arm"]].assign(campaign_id=cid))
        sends[cid] = built.spec.send_at
        specs[cid] = built.spec
    members = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["customer_id", "arm", "campaign_id"])
    return members[["campaign_id", "customer_id", "arm"]], sends, specs


def response_entries(responses: pd.DataFrame, specs: dict[str, CampaignSpec], log: pd.DataFrame,
                     logged_at: pd.Timestamp) -> tuple[pd.DataFrame, int]:
    """Log entries for the responses not logged before (same campaign, customer, response
    and time), and how many rows were already logged."""
    key = ["campaign_id", "customer_id", "response", "responded_at"]
    fresh = responses.drop_duplicates(key)
    old = log.loc[log["entry"] == RESPONSE, key]
    if len(old):
        marked = fresh.merge(old.drop_duplicates().assign(_seen=True), on=key, how="left")
        fresh = marked[marked["_seen"].isna()].drop(columns="_seen")
    parts = [log_entries(rows, specs[cid], RESPONSE, TREATED, logged_at) for cid, rows in fresh.groupby("campaign_id", sort=True)]
    entries = pd.concat(parts, ignore_index=True) if parts else LOG_SCHEMA.empty_table().to_pandas()
    return entries, len(responses) - len(fresh)


# ------------------------------------------------------------------------ evaluation
def uplift_table(members: pd.DataFrame, outcomes: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Conversion of treated vs control, overall and per decile, with the uplift's interval.

    ``members``: customer_id, arm, decile; ``outcomes``: customer_id, response (the
    furthest response; a member without one did not convert). The interval is the normal
    approximation for a difference of two proportions (Wald); it is NaN for an empty arm.
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    frame = members.merge(outcomes, on="customer_id", how="left")
    frame["converted"] = frame["response"].eq("converted").astype("int64")
    segments = [("all", frame)] + [(f"decile {int(d)}", g) for d, g in frame.groupby("decile", sort=True)]
    rows = []
    for name, group in segments:
        t = group.loc[group["arm"] == TREATED, "converted"]
        c = group.loc[group["arm"] == CONTROL, "converted"]
        pt = t.mean() if len(t) else float("nan")
        pc = c.mean() if len(c) else float("nan")
        half = z * math.sqrt(pt * (1 - pt) / len(t) + pc * (1 - pc) / len(c)) if len(t) and len(c) else float("nan")
        rows.append({
            "segment": name, "treated": len(t), "treated_conversions": int(t.sum()), "treated_rate": float(pt),
            "control": len(c), "control_conversions": int(c.sum()), "control_rate": float(pc),
            "uplift": float(pt - pc), "ci_low": float(pt - pc - half), "ci_high": float(pt - pc + half),
        })
    return pd.DataFrame(rows)


def evaluation(settings: Settings, campaign_id: str, confidence: float = 0.95) -> pd.DataFrame:
    """The uplift table of a built campaign (members from its folder, responses from the log)."""
    built = read_built(settings, campaign_id)
    return uplift_table(built.members, furthest_responses(read_log(settings), campaign_id), confidence)


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").as_unit("us")


def parse_instant(text: str | None) -> pd.Timestamp:
    """``--as-of`` as a UTC instant: an ISO timestamp with offset, or a date (its start, UTC); None is now."""
    if text is None:
        return utc_now()
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise ConfigError(f"--as-of {text!r} is not an ISO date or timestamp, e.g. 2026-03-10T08:00:00Z") from None
    if ts.tzinfo is None:
        if len(text.strip()) > 10:
            raise ConfigError(f"--as-of {text!r} has no UTC offset; write e.g. {text.strip()}Z")
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").as_unit("us")
