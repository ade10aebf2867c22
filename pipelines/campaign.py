"""Campaign jobs: build a list, finalise it at send time, ingest responses, evaluate
uplift, and export or purge customer-matching audiences.

Run on demand (`propensity campaign build conf/campaigns/mortgage_email.yaml`), then
`propensity campaign finalise <id>` just before the send, and schedule the purge daily:
    30 5 * * *  cd /srv/propensity && .venv/bin/propensity matching purge >> data/logs/matching.log 2>&1
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd

from propensity import contract, matching, privacy, target
from propensity.config import Settings, load_settings
from propensity.duck import connect
from propensity.policy import scored_columns
from propensity.score import read_partition


def build(settings: Settings, spec_path: Path, replace: bool = False,
          progress: Callable[[str], None] = print) -> target.CampaignBuild:
    spec = target.load_spec(spec_path, settings)
    channel = target.require_channel(spec)
    score_day = target.score_partition_for(settings, spec.send_date)  # missing scores fail before any work
    with target.campaign_lock(settings):
        target.refuse_rebuild(settings, spec, replace)
        progress(f"validating extracts in {settings.raw_dir}")
        raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
        audience = target.campaign_audience(read_partition(settings, score_day), spec)
        # A send time already past is checked now as well: an objection, reservation or
        # withdrawal made since then keeps the customer off the list.
        instants = target.check_instants(spec.send_at, target.utc_now())
        progress(f"{len(audience):,} customers selected from scores of {score_day}; checking {channel} at "
                 + " and ".join(str(at) for at in instants))
        con = connect(threads=settings.n_jobs)
        try:
            ids = audience["customer_id"]
            audience["group_data_sharing"] = target.sharing_at_scoring(con, raw.relation, ids, score_day, settings.policy)
            customers = target.read_customers(con, raw.relation, ids)
            checks = target.states_at_instants(con, raw.relation, ids, instants, settings.policy)
            checks[0] = (checks[0][0], spec.send_date)  # the send instant counts on the spec's send date
            # Contact history and the log are read only for customers the send-time rules keep.
            reasons = target.send_time_reasons_at(ids, scored_columns(audience), customers, checks, channel,
                                                  settings.policy)
            in_play = ids[reasons.eq("")]
            complaints = target.read_complaints(con, raw.relation, in_play, spec)
            contacts = target.read_contacts(con, raw.relation, settings, in_play, spec)
        finally:
            con.close()
        decisions = target.campaign_decisions(audience, customers, checks, contacts, complaints, spec, settings.policy)
        return target.write_campaign(settings, spec, decisions, customers, score_day, target.utc_now())


def _send_time_inputs(settings: Settings, raw: contract.RawTables, ids: pd.Series, at: pd.Timestamp, now: pd.Timestamp):
    """The customers' raw rows, the instants checked and the states at each (a past ``at``
    is checked at ``now`` too)."""
    instants = target.check_instants(at, now)
    con = connect(threads=settings.n_jobs)
    try:
        customers = target.read_customers(con, raw.relation, ids)
        checks = target.states_at_instants(con, raw.relation, ids, instants, settings.policy)
    finally:
        con.close()
    return customers, instants, checks


def _sharing_at_scoring(settings: Settings, raw: contract.RawTables, ids: pd.Series, score_day: date):
    con = connect(threads=settings.n_jobs)
    try:
        return target.sharing_at_scoring(con, raw.relation, ids, score_day, settings.policy)
    finally:
        con.close()


def finalise(settings: Settings, campaign_id: str, as_of: pd.Timestamp | None = None,
             progress: Callable[[str], None] = print) -> target.Finalised:
    now = target.utc_now()
    at = as_of if as_of is not None else now
    with target.campaign_lock(settings):
        built = target.read_built(settings, campaign_id)
        progress(f"re-checking {len(built.members):,} members of {campaign_id} as of {at}")
        raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
        if "group_data_sharing" not in built.members.columns and built.manifest.get("score_date"):
            # A list built before members recorded it: read it from the consents at the score date.
            built.members["group_data_sharing"] = _sharing_at_scoring(
                settings, raw, built.members["customer_id"], date.fromisoformat(built.manifest["score_date"]))
        customers, instants, checks = _send_time_inputs(settings, raw, built.members["customer_id"], at, now)
        removed = target.finalise_removals(built, customers, checks, settings.policy)
        return target.write_finalised(settings, built, removed, at, target.utc_now(), instants)


def responses(settings: Settings, path: Path, progress: Callable[[str], None] = print) -> tuple[int, int]:
    """Returns (entries appended, rows already logged)."""
    frame = target.read_response_file(path)
    with target.campaign_lock(settings):
        campaign_ids = frame["campaign_id"].unique() if "campaign_id" in frame else []
        members, sends, specs = target.members_of(settings, campaign_ids)
        clean = target.validated_responses(frame, str(path), members, sends)
        entries, seen = target.response_entries(clean, specs, target.read_log(settings), target.utc_now())
        target.append_log(settings, entries)
    progress(f"{len(entries):,} response(s) logged, {seen:,} already in the log")
    return len(entries), seen


def evaluate(settings: Settings, campaign_id: str, confidence: float = 0.95) -> pd.DataFrame:
    return target.evaluation(settings, campaign_id, confidence)


def export_matching(settings: Settings, spec_path: Path, as_of: pd.Timestamp | None = None,
                    progress: Callable[[str], None] = print) -> matching.MatchingExport:
    spec = target.load_spec(spec_path, settings)
    delete_on = target.matching_deadline(spec)
    now = target.utc_now()
    at = as_of if as_of is not None else now
    # Under the campaign lock, which erasure also takes: an export never publishes a
    # customer erased while it ran, and two exports of one campaign cannot interleave.
    with target.campaign_lock(settings):
        matching.refuse_export(settings, spec.campaign_id, delete_on, at)
        progress(f"validating extracts in {settings.raw_dir}")
        raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
        score_day = target.score_partition_for(settings, spec.send_date)
        audience = target.campaign_audience(read_partition(settings, score_day), spec)
        audience["group_data_sharing"] = _sharing_at_scoring(settings, raw, audience["customer_id"], score_day)
        customers, instants, checks = _send_time_inputs(settings, raw, audience["customer_id"], at, now)
        decisions = matching.matching_decisions(audience, customers, checks, settings.policy)
        manifest = {
            "campaign_id": spec.campaign_id,
            "destination": spec.customer_matching.destination if spec.customer_matching else None,
            "product": spec.product,
            "spec": spec.model_dump(mode="json"),
            "score_date": score_day.isoformat(),
            "as_of": at.isoformat(),
            "checked_at": [i.isoformat() for i in instants],
            "send_date": spec.send_date.isoformat(),
            "delete_on": delete_on.isoformat(),
        }
        return matching.write_export(settings, decisions, manifest, target.utc_now())


def purge_matching(settings: Settings, as_of: date | None = None, today: date | None = None) -> list[matching.PurgedExport]:
    """Delete the exports due on or before ``as_of`` (default today); a later day is refused."""
    day = privacy.deletion_day(as_of, today)
    with target.campaign_lock(settings):
        return matching.purge_exports(settings, day)


if __name__ == "__main__":
    import sys

    build(load_settings(), Path(sys.argv[1]))
