"""Customer matching: hashed contact lists for social and news media (POLICY rule 6).

An export holds only customers who, at the export instant (and at now too when that instant
is in the past: ``target.check_instants``), are customers, are not
``excluded``, have not withdrawn a consent their score relied on (``consent_withdrawn``:
scored by the personalised model and no longer personalised, or scored with group data
sharing and no longer sharing) and have no ``customer_matching`` reservation (the reservation named by
``policy.customer_matching.blocked_by_reservation``; a channel or ``all_channels``
reservation does not block matching, the policy names only that one). Only the policy's
``customer_matching.fields`` (e-mail and phone) leave the bank, each normalised and hashed
(``customer_matching.hash``, SHA-256), never in clear text:

* e-mail: surrounding white space removed, lower-cased; a value without one ``@`` and a
  dot in the domain is dropped;
* phone: spaces, dashes, dots and brackets removed; a ``00`` prefix becomes ``+``; an
  8-digit national number (Norway's numbering plan, :data:`NATIONAL_DIGITS`) gets the
  policy's ``default_country_code``; ``+CC...`` is kept; the result must be E.164
  (``+`` and 7-15 digits, the first not 0), otherwise it is dropped. The hash is of the
  E.164 text with its ``+`` (``sha256("+4791234567")``).

Files, under ``<data>/matching/<campaign_id>/`` (the whole folder is deleted by
``purge_exports`` on its deletion date, ``send_date + delete_after_days`` of the spec):

``upload.csv``       the file for the platform: ``email_sha256``, ``phone_sha256`` per
                     customer, rows ordered by hash so the order reveals no ranking
``members.parquet``  customer_id with the same hashes, kept inside the bank so that an
                     erasure or objection can find a customer's row (never uploaded)
``reasons.csv``      how many customers each rule left out (no ids)
``manifest.json``    spec, score partition, export instant, ``delete_on``, counts (no ids)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.atomic import clear_stale_staging, staged_dir
from propensity.config import Policy, Settings
from propensity.errors import PropensityError
from propensity.policy import consent_withdrawn_since_scoring, customer_on, first_reason, reservation_column, scored_columns

MATCHING_REASONS = ("not_a_customer", "excluded", "consent_withdrawn", "customer_matching_reserved", "no_contact_details", "exported")
# Norwegian national numbers have eight digits; a bank in another numbering plan changes this.
NATIONAL_DIGITS = 8
E164 = r"\+[1-9]\d{6,14}"
EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"
EXPORTED = "exported"


class MatchingStateError(PropensityError):
    """An export exists already, or its deletion date would already be past."""


# ----------------------------------------------------------------- normalise and hash
def normalise_email(values: pd.Series) -> pd.Series:
    """Trimmed, lower-cased e-mail addresses; None where a value is missing or not an address."""
    text = values.astype(object).where(values.notna(), None)
    cleaned = text.where(text.isna(), text.astype(str).str.strip().str.lower())
    valid = cleaned.notna() & cleaned.astype(str).str.fullmatch(EMAIL)
    return cleaned.where(valid, None).astype(object)


def normalise_phone(values: pd.Series, default_country_code: str) -> pd.Series:
    """Phone numbers in E.164 (``+4791234567``); None where a value cannot be read as one."""
    text = values.astype(object).where(values.notna(), None)
    compact = text.where(text.isna(), text.astype(str).str.replace(r"[\s\-.()/]", "", regex=True))
    compact = compact.where(~compact.astype(str).str.startswith("00"), "+" + compact.astype(str).str[2:])
    national = compact.notna() & compact.astype(str).str.fullmatch(rf"\d{{{NATIONAL_DIGITS}}}")
    e164 = compact.where(~national, default_country_code + compact.astype(str))
    valid = e164.notna() & e164.astype(str).str.fullmatch(E164)
    return e164.where(valid, None).astype(object)


def hashed(values: pd.Series, algorithm: str = "sha256") -> pd.Series:
    """The hex digest of each UTF-8 value; None stays None."""
    out = [None if v is None else hashlib.new(algorithm, str(v).encode("utf-8")).hexdigest() for v in values]
    return pd.Series(out, index=values.index, dtype=object)


def hashed_identifiers(customers: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """customer_id and one ``<field>_<hash>`` column per field of the policy (None where the
    field is missing or cannot be normalised)."""
    rules = policy.customer_matching
    normalisers = {
        "email": normalise_email,
        "phone": lambda s: normalise_phone(s, rules.default_country_code),
    }
    out = pd.DataFrame({"customer_id": customers["customer_id"].astype(str).to_numpy()}, index=customers.index)
    for field in rules.fields:
        out[hash_column(field, policy)] = hashed(normalisers[field](customers[field]), rules.hash)
    return out


def hash_column(field: str, policy: Policy) -> str:
    return f"{field}_{policy.customer_matching.hash}"


# ------------------------------------------------------------------------ decisions
def matching_decisions(audience: pd.DataFrame, customers: pd.DataFrame, checks: Sequence[tuple[pd.DataFrame, date]],
                       policy: Policy) -> pd.DataFrame:
    """One row per audience customer: customer_id, reason (the first of
    :data:`MATCHING_REASONS` that applies) and the hash columns (filled only for
    ``exported`` rows: nothing is hashed for a customer who is left out).

    ``customers``: raw customers rows; ``checks``: per instant of
    :func:`propensity.target.check_instants`, the ``tiers_as_of`` states and the day.
    """
    ids = pd.Index(audience["customer_id"].astype(str), name="customer_id")
    cust = customers.drop_duplicates("customer_id").set_index("customer_id").reindex(ids)

    def reasons_at(states: pd.DataFrame, day: date) -> pd.Series:
        st = states.drop_duplicates("customer_id").set_index("customer_id").reindex(ids)
        masks = [
            ~customer_on(cust["customer_since"], cust["closed_at"], day),
            st["tier"].eq("excluded").to_numpy(dtype=bool),
            consent_withdrawn_since_scoring(scored_columns(audience), st, policy).to_numpy(dtype=bool),
            st[reservation_column(policy.customer_matching.blocked_by_reservation)].astype(bool).to_numpy(),
        ]
        return pd.Series(np.select(masks, list(MATCHING_REASONS[:4]), default=""), index=ids, dtype=object)

    reason = first_reason([reasons_at(states, day) for states, day in checks])
    open_ = reason.eq("")
    identifiers = hashed_identifiers(cust.loc[open_.to_numpy()].reset_index(), policy).set_index("customer_id")
    columns = [hash_column(f, policy) for f in policy.customer_matching.fields]
    none_usable = identifiers[columns].isna().all(axis=1)
    reason.loc[none_usable[none_usable].index] = "no_contact_details"
    reason = reason.mask(reason.eq(""), EXPORTED)
    out = pd.DataFrame({"customer_id": ids.to_numpy(), "reason": reason.to_numpy()})
    kept = identifiers.reindex(ids)
    for column in columns:
        out[column] = kept[column].where(reason.eq(EXPORTED)).astype(object).to_numpy()
    return out


def reason_counts(decisions: pd.DataFrame) -> pd.DataFrame:
    counts = decisions["reason"].value_counts()
    return pd.DataFrame({"reason": list(MATCHING_REASONS), "customers": [int(counts.get(r, 0)) for r in MATCHING_REASONS]})


def upload_frame(decisions: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """The platform's file: only hash columns, only exported customers, ordered by hash."""
    columns = [hash_column(f, policy) for f in policy.customer_matching.fields]
    rows = decisions.loc[decisions["reason"] == EXPORTED, columns]
    return rows.sort_values(columns, kind="stable", na_position="last").reset_index(drop=True)


# --------------------------------------------------------------------------- exports
def matching_dir(settings: Settings) -> Path:
    return settings.data_dir / "matching"


def export_dir(settings: Settings, campaign_id: str) -> Path:
    return matching_dir(settings) / campaign_id


@dataclass(frozen=True)
class MatchingExport:
    campaign_id: str
    path: Path
    delete_on: date
    reasons: pd.DataFrame
    exported: int


def refuse_export(settings: Settings, campaign_id: str, delete_on: date, as_of: pd.Timestamp) -> None:
    """An export is written once, and only while its deletion date lies ahead."""
    path = export_dir(settings, campaign_id)
    if path.exists():
        raise MatchingStateError(
            f"customer-matching export {campaign_id!r} exists already ({path}); give the spec a new campaign_id, "
            "or delete the old export with `propensity matching purge` once it is due"
        )
    if delete_on <= as_of.date():
        raise MatchingStateError(
            f"export {campaign_id!r} would be due for deletion on {delete_on}, not after the export date "
            f"{as_of.date()}; raise customer_matching.delete_after_days or move send_date"
        )


def write_export(settings: Settings, decisions: pd.DataFrame, manifest: dict, exported_at: pd.Timestamp) -> MatchingExport:
    """Publish ``<data>/matching/<campaign_id>/`` atomically. ``manifest`` carries at least
    ``campaign_id`` and ``delete_on`` (ISO date); counts and files are added here."""
    policy = settings.policy
    campaign_id = manifest["campaign_id"]
    reasons = reason_counts(decisions)
    upload = upload_frame(decisions, policy)
    columns = [hash_column(f, policy) for f in policy.customer_matching.fields]
    members = decisions.loc[decisions["reason"] == EXPORTED, ["customer_id", *columns]].reset_index(drop=True)
    path = export_dir(settings, campaign_id)
    clear_stale_staging(matching_dir(settings))
    full = {
        **manifest,
        "status": EXPORTED,
        "exported_at": exported_at.isoformat(),
        "fields": list(policy.customer_matching.fields),
        "hash": policy.customer_matching.hash,
        "counts": {row.reason: int(row.customers) for row in reasons.itertuples()},
        "upload_file": "upload.csv",
        "files": ["upload.csv", "members.parquet", "reasons.csv", "manifest.json"],
    }
    with staged_dir(path) as staging:
        upload.to_csv(staging / "upload.csv", index=False)
        members.to_parquet(staging / "members.parquet", index=False)
        reasons.to_csv(staging / "reasons.csv", index=False)
        (staging / "manifest.json").write_text(json.dumps(full, indent=2), encoding="utf-8")
    return MatchingExport(campaign_id=campaign_id, path=path, delete_on=date.fromisoformat(full["delete_on"]),
                          reasons=reasons, exported=int(len(members)))


@dataclass(frozen=True)
class PurgedExport:
    campaign_id: str
    delete_on: date | None  # None: the folder had no readable manifest
    deleted: bool


def purge_exports(settings: Settings, as_of: date) -> list[PurgedExport]:
    """Delete every export whose ``delete_on`` is on or before ``as_of``; keep the others.

    An export folder without a readable manifest has no known deadline and is deleted:
    matching data may not outlive its purpose. Returns one entry per export folder.
    """
    folder = matching_dir(settings)
    clear_stale_staging(folder)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            delete_on: date | None = date.fromisoformat(json.loads((path / "manifest.json").read_text(encoding="utf-8"))["delete_on"])
        except (OSError, ValueError, KeyError, TypeError):
            delete_on = None
        due = delete_on is None or delete_on <= as_of
        if due:
            # Renamed first, so a half-deleted export is never mistaken for a live one.
            retired = folder / f".{path.name}.retired-{uuid.uuid4().hex[:8]}"
            os.replace(path, retired)
            shutil.rmtree(retired)
        out.append(PurgedExport(campaign_id=path.name, delete_on=delete_on, deleted=due))
    return out
