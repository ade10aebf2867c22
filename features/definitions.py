"""Feast definitions of the propensity feature store, built from the data policy.

One FeatureView per feature view of ``propensity.features`` (one data category each,
group-company data in views of their own), tagged with its category, the tiers that may
use it and whether it is group-company data; one FeatureService per tier, made of the
views the policy lets that tier use. A policy change changes the services.

``build(settings)`` returns the objects; ``repo.py`` exposes them to the ``feast`` CLI.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

from propensity.config import Settings
from propensity.features import ENTITY, TIMESTAMP, view_specs, views_for_tier

FEAST_TYPES = {"int": Int64, "float": Float64, "str": String}

# A feature row is valid at its own snapshot instant only. Snapshots are a month apart, so
# a customer-snapshot without a row (its tier did not permit the category then) can
# never pick up an older row of the same customer.
SNAPSHOT_TTL = timedelta(days=1)

SERVED_TIERS = ("personalised", "basic")


def build(settings: Settings) -> list:
    """The entity, feature views and feature services for these settings."""
    policy, catalogue = settings.policy, settings.catalogue
    customer = Entity(
        name="customer",
        join_keys=[ENTITY],
        value_type=ValueType.STRING,
        description="A customer of the bank, by customer_id.",
    )
    views: dict[str, FeatureView] = {}
    for spec in view_specs(policy, catalogue):
        source = FileSource(
            name=f"{spec.name}_source",
            path=str(settings.features_dir / f"{spec.name}.parquet"),
            timestamp_field=TIMESTAMP,
        )
        views[spec.name] = FeatureView(
            name=spec.name,
            entities=[customer],
            ttl=SNAPSHOT_TTL,
            schema=[Field(name=name, dtype=FEAST_TYPES[kind]) for name, kind in spec.features],
            source=source,
            online=True,
            description=spec.description,
            tags={
                "category": spec.category,
                "tiers": ",".join(spec.tiers(policy)),
                "group_company": str(spec.group_company).lower(),
                "policy_version": policy.version,
            },
        )
    services = [
        FeatureService(
            name=tier,
            features=[views[v.name] for v in views_for_tier(tier, policy, catalogue)],
            description=f"Every feature the {tier} tier may use under policy {policy.version}.",
            tags={"tier": tier, "policy_version": policy.version},
        )
        for tier in SERVED_TIERS
    ]
    return [customer, *views.values(), *services]
