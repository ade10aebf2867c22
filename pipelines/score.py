"""Scheduled job: score the newest month end (or --date) with the champion models and
publish the partition and the analysts' views.

Schedule it after `build_features` (e.g. monthly, on the 3rd, 06:00):
    0 6 3 * *  cd /srv/propensity && .venv/bin/propensity score >> data/logs/score.log 2>&1
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import duckdb

from propensity import contract, labels, registry, score, warehouse
from propensity.config import Settings, load_settings
from propensity.duck import connect
from propensity.features import newest_data_snapshot
from propensity.store import FeatureStore


def run(settings: Settings, score_date: date | None = None, products: list[str] | None = None,
        progress: Callable[[str], None] = print, store: FeatureStore | None = None) -> score.ScoreRun:
    store = store or FeatureStore(settings)
    store.snapshots()  # a store of another policy or feature definition fails before any work
    score.resolve_score_date(settings, score_date)  # so does a stale or missing snapshot
    progress(f"validating extracts in {settings.raw_dir}")
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue, tables=labels.SCORING_TABLES)
    con = connect(threads=settings.n_jobs)
    try:
        if score_date is None:  # the default date must not lag the extracts
            score.resolve_score_date(settings, None, newest_data_snapshot(con, raw.relation))

        def candidates_at(day: date):
            return labels.eligible_not_holding(con, raw.relation, settings.catalogue, settings.policy, day, products)

        result = score.run_scoring(settings, store, registry.load_champion, candidates_at, score_date, products, progress)
    finally:
        con.close()
    try:
        warehouse.refresh(settings)
        progress(f"analyst views refreshed in {settings.warehouse_path}")
    except duckdb.IOException as exc:
        # The partition is published; the views read the partitions through a file pattern,
        # so they already show it. Only a session holding the file kept them from a refresh.
        progress(f"warning: analyst views in {settings.warehouse_path} not refreshed (the file is in use: {exc}); "
                 "`propensity sql` reads the new partition all the same")
    return result


if __name__ == "__main__":
    run(load_settings())
