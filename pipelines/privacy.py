"""Privacy jobs: the scheduled retention purge, and the erasure and access export that
`propensity privacy erase|export` run on request.

Schedule the purge daily (it also deletes customer-matching exports whose deletion date
has come):
    45 5 * * *  cd /srv/propensity && .venv/bin/propensity privacy purge >> data/logs/privacy.log 2>&1
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timezone

from propensity import matching, privacy
from propensity.config import Settings, load_settings


def purge(settings: Settings, as_of: date | None = None, dry_run: bool = False,
          progress: Callable[[str], None] = print, today: date | None = None) -> list[privacy.PurgeItem]:
    """Delete what the retention rules say is due as of ``as_of`` (today, UTC); a dry run
    only returns the plan. Deleting as of a day after ``today`` is refused
    (``FutureDeletionError``); a dry run may look ahead."""
    # A dry run may look ahead; a deletion may not go past today.
    day = as_of if dry_run and as_of is not None else privacy.deletion_day(as_of, today)
    cutoffs = privacy.retention_cutoffs(settings, day)
    progress(f"retention as of {day}: marketing data before {cutoffs['marketing']:%Y-%m-%d}, "
             f"campaign log before {cutoffs['contact_log']:%Y-%m-%d}")
    items = privacy.purge_plan(settings, day)
    if not dry_run:
        privacy.apply_purge(settings, items, cutoffs["marketing"])
    return items


def run(settings: Settings, as_of: date | None = None, dry_run: bool = False,
        progress: Callable[[str], None] = print) -> tuple[list[privacy.PurgeItem], list[matching.PurgedExport]]:
    """The scheduled job: the retention purge, then the customer-matching purge."""
    day = as_of or datetime.now(timezone.utc).date()
    items = purge(settings, day, dry_run, progress)  # refuses a later day unless dry
    exports = [] if dry_run else matching.purge_exports(settings, day)
    return items, exports


def erase(settings: Settings, customer_ids: list[str], progress: Callable[[str], None] = print) -> list[privacy.ErasureReceipt]:
    """Erase customers from every store; raise when a file still holds one afterwards."""
    receipts = privacy.erase_customers(settings, customer_ids, progress=progress)
    residual = {r.customer_sha256[:12]: r.residual_files for r in receipts if r.residual_files}
    if residual:
        raise privacy.ErasureNotVerifiedError(
            f"files still hold erased customers after erasure: {residual}; each receipt lists them. Add the "
            "store to propensity.privacy.inventory (how its rows are found) and run the erasure again"
        )
    return receipts


def export(settings: Settings, customer_id: str, progress: Callable[[str], None] = print) -> privacy.AccessExport:
    raw, why = privacy.raw_relation(settings)
    document = privacy.access_document(settings, raw, customer_id, datetime.now(timezone.utc), why)
    for section, reason in document["not_read"].items():
        progress(f"warning: section {section} is left out of the export: {reason}")
    return privacy.write_access_export(settings, document)


if __name__ == "__main__":
    run(load_settings())
