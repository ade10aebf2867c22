"""Scheduled job: raw extracts → validated → consent-gated feature tables → Feast.

Run monthly after the extracts land: ``propensity features build`` (or this file).

The build holds the privacy jobs' locks (and those of scoring and campaigns): an erasure or
purge never runs while the offline and online stores are rewritten, so a build cannot put
back rows an erasure removed meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from propensity import contract, privacy
from propensity.config import Settings, load_settings
from propensity.features import BuildSummary, build_offline_store
from propensity.store import FeatureStore


def run(settings: Settings, progress: Callable[[str], None] = print, store: FeatureStore | None = None) -> BuildSummary:
    progress(f"validating extracts in {settings.raw_dir}")
    raw = contract.validate(settings.raw_dir, settings.policy, settings.catalogue)
    with privacy.exclusive(settings):
        progress("building consent-gated feature tables")
        summary = build_offline_store(settings, raw.relation, progress=progress)
        store = store or FeatureStore(settings)
        progress("applying the Feast repo")
        store.apply()
        progress(f"materialising {summary.snapshots[-1]} into the online store")
        store.materialize(summary.snapshots[-1])
    return summary


if __name__ == "__main__":
    run(load_settings())
