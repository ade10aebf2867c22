"""Per-category feature tables at month-end snapshots, gated by consent at the source.

One DuckDB query per feature view turns the raw tables into one row per permitted
customer-snapshot. The gate is applied *before* any aggregation:

* the **spine** holds every customer-snapshot of a customer (``customer_since`` on or
  before the snapshot date, not closed on or before it) with its tier and group data
  sharing as of the snapshot instant; ``excluded`` customer-snapshots are not on it;
* a view reads the spine rows whose tier its category allows (POLICY.md), and for
  group-company views only those with group data sharing active;
* raw event rows are pre-aggregated per month only for the (customer, month) pairs that a
  permitted snapshot looks back on (a semi-join), so raw rows of a customer-snapshot
  outside the tier are never read into an aggregate, and the offline store never holds a
  forbidden value.

Every feature uses only data at or before the snapshot instant (month-end, 23:59:59.999999
UTC). Windows are calendar months: ``_1m`` is the snapshot's month, ``_3m`` it and the two
before, ``_12m`` the last twelve, ``_24m`` the last twenty-four.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Callable, Literal

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd

from propensity.atomic import staged_dir
from propensity.config import Catalogue, Policy, Settings
from propensity.consent import tier_intervals
from propensity.duck import connect, sql_literal
from propensity.errors import MissingInputError
from propensity.policy import customer_on_sql, fingerprint
from propensity.schema import ACCOUNT_TYPES, CONTACT_TOPICS, DIGITAL_CHANNELS, MERCHANT_CATEGORIES, TOPICS
from propensity.snapshots import month_end, month_ends, month_index, snapshot_instant

FeatureType = Literal["int", "float", "str"]
ENTITY = "customer_id"
TIMESTAMP = "event_timestamp"
# An outgoing transfer of at least this much counts as large (money moved to investments,
# another bank or a purchase).
LARGE_TRANSFER_NOK = 5_000


@dataclass(frozen=True)
class ViewSpec:
    """A feature view: one data category, optionally group-company data, its features."""

    name: str
    category: str
    group_company: bool
    features: tuple[tuple[str, FeatureType], ...]
    description: str = ""

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.features)

    def tiers(self, policy: Policy) -> tuple[str, ...]:
        return tuple(policy.categories[self.category].tiers)


def _f(names: list[str], kind: FeatureType) -> tuple[tuple[str, FeatureType], ...]:
    return tuple((n, kind) for n in names)


def view_specs(policy: Policy, catalogue: Catalogue) -> tuple[ViewSpec, ...]:
    """Every feature view, in a fixed order. Views of categories the policy does not know
    are left out, so the views follow the policy file."""
    bank_products = [p for p, spec in catalogue.products.items() if spec.company == "bank"]
    group_products = [p for p, spec in catalogue.products.items() if spec.company != "bank"]
    specs = (
        ViewSpec("personal", "personal", False, _f(["age_years"], "int") + _f(["gender"], "str"), "age and gender"),
        ViewSpec(
            "contact_details",
            "contact_details",
            False,
            _f(["postal_area", "has_email", "has_phone"], "int"),
            "postal area (first two digits) and which contact points are known",
        ),
        ViewSpec(
            "demographics",
            "demographics",
            False,
            _f(["marital_status"], "str") + _f(["household_size"], "int") + _f(["region"], "str"),
            "household, marital status and region in force at the snapshot",
        ),
        ViewSpec(
            "agreements",
            "agreements",
            False,
            _f(["brand_sbanken", "customer_tenure_months", "n_bank_products", "days_since_last_bank_product"], "int")
            + _f([f"holds_{p}" for p in bank_products], "int"),
            "bank products held at the snapshot and the relationship's age",
        ),
        ViewSpec(
            "group_agreements",
            "agreements",
            True,
            _f(["n_group_products", "days_since_last_group_product"], "int")
            + _f([f"holds_{p}" for p in group_products], "int"),
            "insurance and asset-management products held (group-company data)",
        ),
        ViewSpec(
            "account_balance",
            "account_balance",
            False,
            _f([f"balance_{a}_nok" for a in ACCOUNT_TYPES]
               + ["balance_current_change_3m_nok", "balance_savings_change_3m_nok", "balance_current_avg_12m_nok"], "float"),
            "bank balances by account type at the month end, their 3-month change and the average current balance over"
            " the month ends of the last 12 months that have one (empty when the snapshot's own month end has none)",
        ),
        ViewSpec(
            "group_account_balance",
            "account_balance",
            True,
            _f(["balance_group_funds_nok", "balance_group_pension_nok", "balance_group_total_nok"], "float"),
            "balances held with group companies (group-company data)",
        ),
        ViewSpec(
            "transactions",
            "transactions",
            False,
            _f(["salary_inflow_1m_nok", "salary_inflow_3m_nok", "salary_inflow_12m_nok", "spend_total_1m_nok",
                "spend_total_3m_nok", "transfers_out_1m_nok", "transfers_out_3m_nok"], "float")
            + _f(["large_transfers_out_3m"], "int")
            + _f([f"spend_{m}_{w}_nok" for m in MERCHANT_CATEGORIES for w in ("1m", "3m")], "float")
            + _f(["spend_trend_1m_vs_3m", "card_share_3m", "atm_withdrawals_3m_nok"], "float")
            + _f(["n_transactions_1m"], "int")
            + _f([f"card_payments_{m}_24m" for m in MERCHANT_CATEGORIES] + ["card_payments_24m"], "int")
            + _f([f"card_payment_share_{m}_24m" for m in MERCHANT_CATEGORIES], "float"),
            "salary inflow, spending, card payments and their mix by merchant category, card share "
            "(personalised tier only)",
        ),
        ViewSpec(
            "employer",
            "employer",
            False,
            _f(["employer_sector"], "str") + _f(["employer_tenure_months", "job_changes_24m"], "int"),
            "employer sector and tenure (personalised tier only)",
        ),
        ViewSpec(
            "digital_behaviour",
            "digital_behaviour",
            False,
            _f(["logins_1m", "logins_3m", "days_since_last_login", "banner_impressions_3m"], "int")
            + _f([f"logins_{c}_3m" for c in DIGITAL_CHANNELS], "int")
            + _f([f"page_views_{t}_{w}" for t in TOPICS for w in ("1m", "3m")], "int")
            + _f([f"banner_clicks_{t}_3m" for t in TOPICS], "int"),
            "logins, topic page views and banner clicks in the bank's apps and web",
        ),
        ViewSpec(
            "contact_history",
            "contact_history",
            False,
            _f([f"contacts_{t}_3m" for t in CONTACT_TOPICS] + ["contacts_12m", "days_since_last_contact"], "int"),
            "calls, chats and visits by topic",
        ),
    )
    return tuple(s for s in specs if s.category in policy.categories)


def views_for_tier(tier: str, policy: Policy, catalogue: Catalogue) -> tuple[ViewSpec, ...]:
    """The views a tier's FeatureService is built from."""
    return tuple(v for v in view_specs(policy, catalogue) if tier in v.tiers(policy))


def personalised_only_columns(policy: Policy, catalogue: Catalogue) -> tuple[str, ...]:
    """Feature columns a basic-tier row must never carry."""
    basic = {n for v in views_for_tier("basic", policy, catalogue) for n in v.feature_names}
    return tuple(
        n for v in views_for_tier("personalised", policy, catalogue) for n in v.feature_names if n not in basic
    )


# ---------------------------------------------------------------------------- the spine
def snapshot_frame(days: list[date]) -> pd.DataFrame:
    """snapshot_date, event_timestamp (the instant) and month index of each snapshot."""
    return pd.DataFrame(
        {
            "snapshot_date": pd.to_datetime(pd.Series(days)).dt.date,
            TIMESTAMP: pd.Series([snapshot_instant(d) for d in days], dtype="datetime64[us, UTC]"),
            "t_idx": [month_index(d) for d in days],
        }
    )


def create_spine(
    con: duckdb.DuckDBPyConnection,
    customers: str,
    intervals: pd.DataFrame,
    days: list[date],
    policy: Policy,
    suppressed: frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Create the temp table ``spine``: permitted customer-snapshots with tier and sharing.

    Returns the number of customers per tier (``excluded`` included) at the last snapshot.

    ``customers`` is a FROM-expression over the raw customers table; ``intervals`` comes
    from :func:`propensity.consent.tier_intervals`. ``suppressed`` holds the sha256 hex
    digests of erased customers (the privacy suppression register): they are not on the
    spine at all, not even counted.
    """
    con.register("_snapshots_df", snapshot_frame(days))
    con.register("_intervals_df", intervals[["customer_id", "valid_from", "tier", "group_data_sharing"]])
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE spine AS
        WITH members AS (
            SELECT c.customer_id, s.snapshot_date, s.{TIMESTAMP}, s.t_idx
            FROM {customers} c
            JOIN _snapshots_df s
              ON {customer_on_sql("c", "s.snapshot_date")}
            WHERE {not_suppressed_sql("c.customer_id", suppressed)}
        )
        SELECT m.customer_id, m.snapshot_date, m.{TIMESTAMP}, m.t_idx,
               COALESCE(i.tier, '{policy.default_tier}') AS tier,
               COALESCE(i.group_data_sharing, false) AS group_data_sharing
        FROM members m
        ASOF LEFT JOIN _intervals_df i
          ON i.customer_id = m.customer_id AND m.{TIMESTAMP} >= i.valid_from
        """
    )
    counts = dict(con.execute("SELECT tier, COUNT(*) FROM spine WHERE snapshot_date = ? GROUP BY tier", [days[-1]]).fetchall())
    con.execute("DELETE FROM spine WHERE tier = 'excluded'")
    con.unregister("_snapshots_df")
    con.unregister("_intervals_df")
    return {tier: int(counts.get(tier, 0)) for tier in ("personalised", "basic", "excluded")}


def not_suppressed_sql(column: str, suppressed: frozenset[str]) -> str:
    """A SQL condition true for ids whose sha256 is not in ``suppressed`` (hex digests)."""
    if not suppressed:
        return "true"
    bad = [h for h in suppressed if len(h) != 64 or not set(h) <= set("0123456789abcdef")]
    if bad:
        raise ValueError(f"the suppression register holds values that are not sha256 hex digests: {bad[:3]}")
    listed = ", ".join("'" + h + "'" for h in sorted(suppressed))
    return f"sha256({column}) NOT IN ({listed})"


def allowed_rows_sql(view: ViewSpec, policy: Policy) -> str:
    """The spine rows a view may hold: tier allowed by its category, sharing if group data."""
    tiers = ", ".join(f"'{t}'" for t in view.tiers(policy))
    if not tiers:
        return "SELECT * FROM spine WHERE false"
    sharing = " AND group_data_sharing" if view.group_company else ""
    return f"SELECT * FROM spine WHERE tier IN ({tiers}){sharing}"


# ------------------------------------------------------------------ per-view SQL builders
def _month_idx(column: str) -> str:
    return f"(year({column}) * 12 + month({column}) - 1)"


def _monthly_windowed(allowed: str, lookback: int, source: str, aggregates: list[str], windows: list[str]) -> str:
    """Month-level aggregates of ``source`` (which must expose customer_id and m_idx),
    restricted to the months permitted snapshots look back on (``lookback`` months, the
    longest window the view reads: ``w1``, ``w3``, ``w12`` or ``w24``), then windowed to
    each snapshot month. Returns a query over (customer_id, event_timestamp, <windows>)."""
    read = " ".join(windows)
    longest = max((m for m in (12, 24) if f"OVER w{m}" in read), default=3)
    if longest > lookback:
        raise ValueError(f"a {longest}-month window over a {lookback}-month lookback would sum a truncated window")
    return f"""
        WITH allowed AS ({allowed}),
        lookbacks AS (
            SELECT customer_id, t_idx,
                   LAG(t_idx) OVER (PARTITION BY customer_id ORDER BY t_idx) AS previous_t_idx
            FROM allowed
        ),
        -- The months some permitted snapshot looks back on, each once: a snapshot adds the
        -- months of its window that the customer's previous permitted snapshot did not cover.
        needed AS (
            SELECT customer_id,
                   unnest(range(GREATEST(t_idx - {lookback - 1}, COALESCE(previous_t_idx + 1, t_idx - {lookback - 1})),
                                t_idx + 1)) AS m_idx
            FROM lookbacks
        ),
        src AS ({source}),
        monthly AS (
            SELECT src.customer_id, src.m_idx, {", ".join(aggregates)}
            FROM src SEMI JOIN needed ON src.customer_id = needed.customer_id AND src.m_idx = needed.m_idx
            GROUP BY src.customer_id, src.m_idx
        ),
        -- The months with data, and every snapshot month (its row carries the windows even
        -- when the month itself is empty). RANGE frames read by month number, so an empty
        -- month inside a window needs no row.
        grid AS (
            SELECT COALESCE(m.customer_id, a.customer_id) AS customer_id, COALESCE(m.m_idx, a.t_idx) AS m_idx,
                   m.* EXCLUDE (customer_id, m_idx)
            FROM monthly m FULL JOIN (SELECT DISTINCT customer_id, t_idx FROM allowed) a
                 ON m.customer_id = a.customer_id AND m.m_idx = a.t_idx
        ),
        windowed AS (
            SELECT customer_id, m_idx, {", ".join(windows)}
            FROM grid
            WINDOW wr AS (PARTITION BY customer_id ORDER BY m_idx),
                   w12 AS (PARTITION BY customer_id ORDER BY m_idx RANGE BETWEEN 11 PRECEDING AND CURRENT ROW),
                   w24 AS (PARTITION BY customer_id ORDER BY m_idx RANGE BETWEEN 23 PRECEDING AND CURRENT ROW)
        )
        SELECT a.customer_id, a.{TIMESTAMP}, a.snapshot_date, w.* EXCLUDE (customer_id, m_idx)
        FROM allowed a JOIN windowed w ON w.customer_id = a.customer_id AND w.m_idx = a.t_idx
    """


def _sum(expr: str, window: str, kind: str = "DOUBLE") -> str:
    """The sum of a monthly aggregate over a window ending at the snapshot month (0 when the
    window holds no data). The grid holds one row per customer and month with data or a
    snapshot, so the one-month window is the row itself, and the three-month window adds
    the one or two rows before it when they fall within the window: two LAGs, cheaper than
    a framed SUM. Longer windows use a RANGE frame."""
    if window == "w1":
        return f"CAST(COALESCE({expr}, 0) AS {kind})"
    if window == "w3":
        earlier = " + ".join(
            f"CASE WHEN LAG(m_idx, {k}) OVER wr >= m_idx - 2 THEN COALESCE(LAG({expr}, {k}) OVER wr, 0) ELSE 0 END"
            for k in (1, 2)
        )
        return f"CAST(COALESCE({expr}, 0) + {earlier} AS {kind})"
    return f"CAST(COALESCE(SUM({expr}) OVER {window}, 0) AS {kind})"


def transactions_sql(raw: Callable[[str], str], allowed: str) -> str:
    cats = ", ".join(f"'{m}'" for m in MERCHANT_CATEGORIES)
    source = f"""
        SELECT customer_id, {_month_idx('booked_at')} AS m_idx, amount, kind,
               CASE WHEN merchant_category IN ({cats}) THEN merchant_category ELSE 'other' END AS mcat
        FROM {raw('transactions')}
    """
    aggregates = [
        "SUM(amount) FILTER (WHERE kind = 'salary') AS salary",
        "SUM(-amount) FILTER (WHERE amount < 0 AND kind <> 'atm') AS spend",
        "SUM(-amount) FILTER (WHERE amount < 0 AND kind = 'card') AS card_spend",
        "SUM(-amount) FILTER (WHERE kind = 'atm') AS atm",
        "SUM(-amount) FILTER (WHERE kind = 'transfer' AND amount < 0) AS transfers_out",
        f"COUNT(*) FILTER (WHERE kind = 'transfer' AND amount <= -{LARGE_TRANSFER_NOK}) AS large_transfers_out",
        "COUNT(*) AS n",
    ] + [f"SUM(-amount) FILTER (WHERE amount < 0 AND kind <> 'atm' AND mcat = '{m}') AS s_{m}" for m in MERCHANT_CATEGORIES]
    aggregates += [f"COUNT(*) FILTER (WHERE kind = 'card' AND mcat = '{m}') AS c_{m}" for m in MERCHANT_CATEGORIES]
    windows = [
        f"{_sum('salary', 'w1')} AS salary_inflow_1m_nok",
        f"{_sum('salary', 'w3')} AS salary_inflow_3m_nok",
        f"{_sum('transfers_out', 'w1')} AS transfers_out_1m_nok",
        f"{_sum('transfers_out', 'w3')} AS transfers_out_3m_nok",
        f"{_sum('large_transfers_out', 'w3', 'BIGINT')} AS large_transfers_out_3m",
        f"{_sum('salary', 'w12')} AS salary_inflow_12m_nok",
        f"{_sum('spend', 'w1')} AS spend_total_1m_nok",
        f"{_sum('spend', 'w3')} AS spend_total_3m_nok",
        f"{_sum('card_spend', 'w3')} AS card_spend_3m_nok",
    ]
    for m in MERCHANT_CATEGORIES:
        for w in ("1m", "3m"):
            windows.append(f"{_sum(f's_{m}', 'w' + w[:-1])} AS spend_{m}_{w}_nok")
    windows += [
        f"{_sum('atm', 'w3')} AS atm_withdrawals_3m_nok",
        f"{_sum('n', 'w1', 'BIGINT')} AS n_transactions_1m",
    ]
    # Card payments are counted over two years: a spending style (how often, not how much)
    # is a trait, and a count over a long window reads it with less noise than amounts.
    windows += [f"{_sum(f'c_{m}', 'w24', 'BIGINT')} AS card_payments_{m}_24m" for m in MERCHANT_CATEGORIES]
    # Ratios read the windowed sums (each window is computed once). The mix of card payments
    # (each category's share of them) is what a spending style is; a linear model reads it
    # from log counts, trees need it as a column.
    payments = " + ".join(f"card_payments_{m}_24m" for m in MERCHANT_CATEGORIES)
    shares = ",\n".join(
        f"CAST(card_payments_{m}_24m / NULLIF(card_payments_24m, 0) AS DOUBLE) AS card_payment_share_{m}_24m"
        for m in MERCHANT_CATEGORIES
    )
    return f"""
        SELECT *, {shares}
        FROM (
            SELECT *,
                   CAST(spend_total_1m_nok / NULLIF(spend_total_3m_nok / 3.0, 0) AS DOUBLE) AS spend_trend_1m_vs_3m,
                   CAST(card_spend_3m_nok / NULLIF(spend_total_3m_nok, 0) AS DOUBLE) AS card_share_3m,
                   CAST({payments} AS BIGINT) AS card_payments_24m
            FROM ({_monthly_windowed(allowed, 24, source, aggregates, windows)})
        )
    """


def digital_sql(raw: Callable[[str], str], allowed: str) -> str:
    source = f"""
        SELECT customer_id, {_month_idx('event_time')} AS m_idx, event_time, event_type, topic, channel
        FROM {raw('digital_events')}
    """
    aggregates = [
        "COUNT(*) FILTER (WHERE event_type = 'login') AS logins",
        "MAX(event_time) FILTER (WHERE event_type = 'login') AS last_login",
        "COUNT(*) FILTER (WHERE event_type = 'banner_impression') AS impressions",
    ]
    aggregates += [f"COUNT(*) FILTER (WHERE event_type = 'login' AND channel = '{c}') AS login_{c}" for c in DIGITAL_CHANNELS]
    aggregates += [f"COUNT(*) FILTER (WHERE event_type = 'page_view' AND topic = '{t}') AS pv_{t}" for t in TOPICS]
    aggregates += [f"COUNT(*) FILTER (WHERE event_type = 'banner_click' AND topic = '{t}') AS bc_{t}" for t in TOPICS]
    windows = [
        f"{_sum('logins', 'w1', 'BIGINT')} AS logins_1m",
        f"{_sum('logins', 'w3', 'BIGINT')} AS logins_3m",
        "CAST(MAX(last_login) OVER w12 AS TIMESTAMPTZ) AS last_login",
        f"{_sum('impressions', 'w3', 'BIGINT')} AS banner_impressions_3m",
    ]
    windows += [f"{_sum(f'login_{c}', 'w3', 'BIGINT')} AS logins_{c}_3m" for c in DIGITAL_CHANNELS]
    for t in TOPICS:
        windows += [f"{_sum(f'pv_{t}', 'w1', 'BIGINT')} AS page_views_{t}_1m", f"{_sum(f'pv_{t}', 'w3', 'BIGINT')} AS page_views_{t}_3m"]
    windows += [f"{_sum(f'bc_{t}', 'w3', 'BIGINT')} AS banner_clicks_{t}_3m" for t in TOPICS]
    inner = _monthly_windowed(allowed, 12, source, aggregates, windows)
    return f"""
        SELECT * EXCLUDE (last_login),
               CAST(date_diff('day', CAST(last_login AS DATE), snapshot_date) AS BIGINT) AS days_since_last_login
        FROM ({inner})
    """


def contact_history_sql(raw: Callable[[str], str], allowed: str) -> str:
    topics = ", ".join(f"'{t}'" for t in CONTACT_TOPICS)
    source = f"""
        SELECT customer_id, {_month_idx('contact_time')} AS m_idx, contact_time,
               CASE WHEN topic IN ({topics}) THEN topic ELSE 'other' END AS topic
        FROM {raw('contact_history')}
    """
    aggregates = ["COUNT(*) AS n", "MAX(contact_time) AS last_contact"]
    aggregates += [f"COUNT(*) FILTER (WHERE topic = '{t}') AS c_{t}" for t in CONTACT_TOPICS]
    windows = [f"{_sum(f'c_{t}', 'w3', 'BIGINT')} AS contacts_{t}_3m" for t in CONTACT_TOPICS]
    windows += [f"{_sum('n', 'w12', 'BIGINT')} AS contacts_12m", "CAST(MAX(last_contact) OVER w12 AS TIMESTAMPTZ) AS last_contact"]
    inner = _monthly_windowed(allowed, 12, source, aggregates, windows)
    return f"""
        SELECT * EXCLUDE (last_contact),
               CAST(date_diff('day', CAST(last_contact AS DATE), snapshot_date) AS BIGINT) AS days_since_last_contact
        FROM ({inner})
    """


def personal_sql(raw: Callable[[str], str], allowed: str) -> str:
    return f"""
        SELECT a.customer_id, a.{TIMESTAMP},
               CAST(year(a.snapshot_date) - year(c.birth_date)
                    - CASE WHEN month(a.snapshot_date) * 100 + day(a.snapshot_date)
                               < month(c.birth_date) * 100 + day(c.birth_date) THEN 1 ELSE 0 END AS BIGINT) AS age_years,
               CAST(c.gender AS VARCHAR) AS gender
        FROM ({allowed}) a JOIN {raw('customers')} c ON c.customer_id = a.customer_id
    """


def contact_details_sql(raw: Callable[[str], str], allowed: str) -> str:
    return f"""
        SELECT a.customer_id, a.{TIMESTAMP},
               CAST(TRY_CAST(substr(c.postal_code, 1, 2) AS INTEGER) AS BIGINT) AS postal_area,
               CAST(c.email IS NOT NULL AS BIGINT) AS has_email,
               CAST(c.phone IS NOT NULL AS BIGINT) AS has_phone
        FROM ({allowed}) a JOIN {raw('customers')} c ON c.customer_id = a.customer_id
    """


def demographics_sql(raw: Callable[[str], str], allowed: str) -> str:
    return f"""
        SELECT a.customer_id, a.{TIMESTAMP},
               CAST(d.marital_status AS VARCHAR) AS marital_status,
               CAST(d.household_size AS BIGINT) AS household_size,
               CAST(d.region AS VARCHAR) AS region
        FROM ({allowed}) a
        ASOF LEFT JOIN (SELECT customer_id, valid_from, marital_status, household_size, region FROM {raw('demographics')}) d
          ON d.customer_id = a.customer_id AND a.snapshot_date >= d.valid_from
    """


def employer_sql(raw: Callable[[str], str], allowed: str) -> str:
    return f"""
        WITH allowed AS ({allowed}),
        emp AS (SELECT customer_id, valid_from, employer_sector FROM {raw('employment')}
                WHERE customer_id IN (SELECT customer_id FROM allowed)),
        current_job AS (
            SELECT a.customer_id, a.{TIMESTAMP}, a.snapshot_date, e.employer_sector, e.valid_from
            FROM allowed a ASOF LEFT JOIN emp e
              ON e.customer_id = a.customer_id AND a.snapshot_date >= e.valid_from
        ),
        changes AS (
            SELECT a.customer_id, a.snapshot_date, COUNT(e.valid_from) AS job_changes_24m
            FROM allowed a LEFT JOIN emp e
              ON e.customer_id = a.customer_id
             AND e.valid_from <= a.snapshot_date
             AND e.valid_from > a.snapshot_date - INTERVAL 24 MONTH
            GROUP BY ALL
        )
        SELECT j.customer_id, j.{TIMESTAMP},
               CAST(j.employer_sector AS VARCHAR) AS employer_sector,
               CAST(date_diff('month', j.valid_from, j.snapshot_date) AS BIGINT) AS employer_tenure_months,
               CAST(c.job_changes_24m AS BIGINT) AS job_changes_24m
        FROM current_job j JOIN changes c ON c.customer_id = j.customer_id AND c.snapshot_date = j.snapshot_date
    """


def _agreements_sql(raw: Callable[[str], str], allowed: str, products: list[str], group: bool) -> str:
    company = "<> 'bank'" if group else "= 'bank'"
    label = "group" if group else "bank"
    holds = ",\n".join(
        f"CAST(MAX(CASE WHEN j.product = '{p}' AND j.held THEN 1 ELSE 0 END) AS BIGINT) AS holds_{p}"
        for p in products
    )
    relationship = (
        ""
        if group
        else """,
               CAST(ANY_VALUE(c.brand) = 'sbanken' AS BIGINT) AS brand_sbanken,
               CAST(date_diff('month', ANY_VALUE(c.customer_since), j.snapshot_date) AS BIGINT) AS customer_tenure_months"""
    )
    join_customers = "" if group else f"JOIN {raw('customers')} c ON c.customer_id = j.customer_id"
    return f"""
        WITH allowed AS ({allowed}),
        joined AS (
            SELECT a.customer_id, a.{TIMESTAMP}, a.snapshot_date, g.product, g.start_date,
                   (g.product IS NOT NULL AND (g.end_date IS NULL OR g.end_date > a.snapshot_date)) AS held
            FROM allowed a
            LEFT JOIN (SELECT customer_id, product, start_date, end_date FROM {raw('agreements')}
                       WHERE company {company}) g
              ON g.customer_id = a.customer_id AND g.start_date <= a.snapshot_date
        )
        SELECT j.customer_id, j.{TIMESTAMP},
               CAST(COUNT(DISTINCT j.product) FILTER (WHERE j.held) AS BIGINT) AS n_{label}_products,
               CAST(date_diff('day', MAX(j.start_date), j.snapshot_date) AS BIGINT) AS days_since_last_{label}_product,
               {holds}{relationship}
        FROM joined j
        {join_customers}
        GROUP BY j.customer_id, j.{TIMESTAMP}, j.snapshot_date
    """


def _balances_sql(raw: Callable[[str], str], allowed: str, group: bool) -> str:
    if group:
        pivot = """
            SUM(balance) FILTER (WHERE account_type = 'funds') AS balance_group_funds_nok,
            SUM(balance) FILTER (WHERE account_type = 'pension') AS balance_group_pension_nok,
            SUM(balance) AS balance_group_total_nok"""
        return f"""
            WITH allowed AS ({allowed}),
            pivoted AS (
                SELECT b.customer_id, b.as_of_date,{pivot}
                FROM {raw('balances')} b
                SEMI JOIN allowed n ON n.customer_id = b.customer_id AND n.snapshot_date = b.as_of_date
                WHERE b.company <> 'bank'
                GROUP BY b.customer_id, b.as_of_date
            )
            SELECT a.customer_id, a.{TIMESTAMP}, p.balance_group_funds_nok, p.balance_group_pension_nok,
                   p.balance_group_total_nok
            FROM allowed a
            LEFT JOIN pivoted p ON p.customer_id = a.customer_id AND p.as_of_date = a.snapshot_date
        """
    pivot = ",".join(
        f"\n            SUM(balance) FILTER (WHERE account_type = '{t}') AS balance_{t}_nok" for t in ACCOUNT_TYPES
    )
    select = ", ".join(f"p.balance_{t}_nok" for t in ACCOUNT_TYPES)
    # A permitted snapshot reads the month ends of its last twelve months (the 3-month
    # change and the 12-month average); a month end no permitted snapshot looks back on
    # is never read.
    return f"""
        WITH allowed AS ({allowed}),
        needed AS (
            SELECT DISTINCT customer_id, last_day(snapshot_date - to_months(k)) AS as_of_date
            FROM allowed, range(12) AS months(k)
        ),
        pivoted AS (
            SELECT b.customer_id, b.as_of_date,{pivot}
            FROM {raw('balances')} b
            SEMI JOIN needed n ON n.customer_id = b.customer_id AND n.as_of_date = b.as_of_date
            WHERE b.company = 'bank'
            GROUP BY b.customer_id, b.as_of_date
        ),
        averaged AS (
            SELECT *, AVG(balance_current_nok) OVER (
                PARTITION BY customer_id ORDER BY as_of_date
                RANGE BETWEEN INTERVAL 11 MONTH PRECEDING AND CURRENT ROW) AS balance_current_avg_12m_nok
            FROM pivoted
        )
        SELECT a.customer_id, a.{TIMESTAMP}, {select},
               p.balance_current_nok - q.balance_current_nok AS balance_current_change_3m_nok,
               p.balance_savings_nok - q.balance_savings_nok AS balance_savings_change_3m_nok,
               p.balance_current_avg_12m_nok
        FROM allowed a
        LEFT JOIN averaged p ON p.customer_id = a.customer_id AND p.as_of_date = a.snapshot_date
        LEFT JOIN pivoted q ON q.customer_id = a.customer_id AND q.as_of_date = last_day(a.snapshot_date - INTERVAL 3 MONTH)
    """


def view_sql(view: ViewSpec, raw: Callable[[str], str], policy: Policy, catalogue: Catalogue) -> str:
    """The query producing a view's rows: customer_id, event_timestamp, then its features
    in declared order (each cast to its declared type)."""
    allowed = allowed_rows_sql(view, policy)
    bank = [p for p, s in catalogue.products.items() if s.company == "bank"]
    group = [p for p, s in catalogue.products.items() if s.company != "bank"]
    builders: dict[str, Callable[[], str]] = {
        "personal": lambda: personal_sql(raw, allowed),
        "contact_details": lambda: contact_details_sql(raw, allowed),
        "demographics": lambda: demographics_sql(raw, allowed),
        "agreements": lambda: _agreements_sql(raw, allowed, bank, group=False),
        "group_agreements": lambda: _agreements_sql(raw, allowed, group, group=True),
        "account_balance": lambda: _balances_sql(raw, allowed, group=False),
        "group_account_balance": lambda: _balances_sql(raw, allowed, group=True),
        "transactions": lambda: transactions_sql(raw, allowed),
        "employer": lambda: employer_sql(raw, allowed),
        "digital_behaviour": lambda: digital_sql(raw, allowed),
        "contact_history": lambda: contact_history_sql(raw, allowed),
    }
    sql_types = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR"}
    columns = ", ".join(f"CAST({name} AS {sql_types[kind]}) AS {name}" for name, kind in view.features)
    return f"SELECT customer_id, CAST({TIMESTAMP} AS TIMESTAMPTZ) AS {TIMESTAMP}, {columns} FROM ({builders[view.name]()})"


# ------------------------------------------------------------------------- the build (I/O)
MANIFEST = "manifest.json"
TIER_INTERVALS = "tier_intervals.parquet"
MEMBERSHIP = "membership.parquet"


def suppression_register(settings: Settings) -> Path:
    """The privacy suppression register: sha256 of every erased customer_id (written by
    ``propensity.privacy``; read here so a build from unchanged extracts leaves them out)."""
    return settings.data_dir / "privacy" / "suppressed.parquet"


def suppressed_hashes(settings: Settings) -> frozenset[str]:
    """The hex digests in the suppression register (empty when there is none)."""
    path = suppression_register(settings)
    if not path.is_file():
        return frozenset()
    return frozenset(pd.read_parquet(path, columns=["customer_sha256"])["customer_sha256"].astype(str))


def retention_mark(settings: Settings) -> Path:
    """The newest marketing-data retention cutoff a purge applied (written by
    ``propensity.privacy``; read here so a build from extracts reaching further back does
    not put purged snapshots back)."""
    return settings.data_dir / "privacy" / "retention.json"


def retained_from(settings: Settings) -> datetime | None:
    """The instant before which no feature row may exist (None: no purge has run)."""
    path = retention_mark(settings)
    if not path.is_file():
        return None
    return datetime.fromisoformat(json.loads(path.read_text())["marketing_cutoff"])


def data_snapshots(con: duckdb.DuckDBPyConnection, raw: Callable[[str], str]) -> list[date]:
    """Month ends the extracts cover: from the month of the first balance or transaction to
    the last month end on or before the newest one (a month still running is left out)."""
    first, last = con.execute(
        f"""
        SELECT LEAST((SELECT MIN(as_of_date) FROM {raw('balances')}),
                     (SELECT MIN(CAST(booked_at AS DATE)) FROM {raw('transactions')})),
               {_newest_data_day(raw)}
        """
    ).fetchone()
    if first is None or last is None:
        return []
    return month_ends(first, _last_whole_month_end(last))


def newest_data_snapshot(con: duckdb.DuckDBPyConnection, raw: Callable[[str], str]) -> date | None:
    """The newest month end the extracts cover (the last of :func:`data_snapshots`). Reads
    only the date columns of balances and transactions; a table DuckDB cannot read is
    reported by name."""
    try:
        last = con.execute(f"SELECT {_newest_data_day(raw)}").fetchone()[0]
    except duckdb.Error as exc:
        raise MissingInputError(f"cannot read the newest date of the balances and transactions extracts: {exc}; "
                                "`propensity validate` names what to fix") from None
    return None if last is None else _last_whole_month_end(last)


def _newest_data_day(raw: Callable[[str], str]) -> str:
    return (f"GREATEST((SELECT MAX(as_of_date) FROM {raw('balances')}), "
            f"(SELECT MAX(CAST(booked_at AS DATE)) FROM {raw('transactions')}))")


def _last_whole_month_end(day: date) -> date:
    return day if month_end(day) == day else day.replace(day=1) - timedelta(days=1)


@dataclass(frozen=True)
class BuildSummary:
    snapshots: list[date]
    rows: dict[str, int]
    customers_by_tier: dict[str, int]
    seconds: float


def load_events(
    con: duckdb.DuckDBPyConnection, raw: Callable[[str], str], suppressed: frozenset[str] = frozenset()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The consent and reservation event streams as frames, without the customers of the
    suppression register (``suppressed``: sha256 hex digests)."""
    keep = not_suppressed_sql("customer_id", suppressed)
    consents = con.execute(f"SELECT customer_id, event_time, purpose, granted FROM {raw('consent_events')} WHERE {keep}").df()
    reservations = con.execute(f"SELECT customer_id, event_time, scope, placed FROM {raw('reservation_events')} WHERE {keep}").df()
    return consents, reservations


def build_offline_store(
    settings: Settings,
    raw: Callable[[str], str],
    snapshots: list[date] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BuildSummary:
    """Compute every view at every snapshot and publish them as the offline store.

    ``raw`` maps a table name to a DuckDB FROM-expression (``contract.RawTables.relation``).
    Writes ``<data>/features/<view>.parquet``, the governance tables the store needs to
    tier entity rows (``tier_intervals.parquet``, ``membership.parquet``) and a manifest.
    The folder is staged and swapped in whole: a failed build leaves the previous one.
    """
    started = time.perf_counter()
    policy, catalogue = settings.policy, settings.catalogue
    con = connect(threads=settings.n_jobs)
    try:
        days = snapshots or data_snapshots(con, raw)
        if not days:
            raise MissingInputError("no month end is covered by the balances and transactions extracts")
        # Snapshots a retention purge deleted are not built again from the extracts.
        cutoff = retained_from(settings)
        if cutoff is not None and any(snapshot_instant(d) < cutoff for d in days):
            days = [d for d in days if snapshot_instant(d) >= cutoff]
            if not days:
                raise MissingInputError(
                    f"every month end the extracts cover is before the retention cutoff {cutoff:%Y-%m-%d} of the "
                    f"last purge ({retention_mark(settings)}): no snapshot may be built"
                )
            progress(f"month ends before the retention cutoff {cutoff:%Y-%m-%d} left out")
        progress(f"{len(days)} snapshots {days[0]} .. {days[-1]}")
        suppressed = suppressed_hashes(settings)
        consents, reservations = load_events(con, raw, suppressed)
        intervals = tier_intervals(consents, reservations, policy)
        tiers = create_spine(con, raw("customers"), intervals, days, policy, suppressed)
        rows: dict[str, int] = {}
        with staged_dir(settings.features_dir) as out:
            for view in view_specs(policy, catalogue):
                t0 = time.perf_counter()
                target = out / f"{view.name}.parquet"
                con.execute(
                    f"COPY ({view_sql(view, raw, policy, catalogue)} ORDER BY {TIMESTAMP}, customer_id) "
                    f"TO {sql_literal(target)} (FORMAT parquet, COMPRESSION zstd)"
                )
                rows[view.name] = con.execute(f"SELECT COUNT(*) FROM read_parquet({sql_literal(target)})").fetchone()[0]
                progress(f"  {view.name:<22} {rows[view.name]:>10,} rows  {time.perf_counter() - t0:6.1f} s")
            intervals.to_parquet(out / TIER_INTERVALS, index=False)
            con.execute(
                f"COPY (SELECT customer_id, customer_since, closed_at FROM {raw('customers')} "
                f"WHERE {not_suppressed_sql('customer_id', suppressed)} ORDER BY customer_id) "
                f"TO {sql_literal(out / MEMBERSHIP)} (FORMAT parquet)"
            )
            manifest = {
                "snapshots": [d.isoformat() for d in days],
                "policy_version": policy.version,
                "policy_fingerprint": fingerprint(policy),
                "views": {v.name: {"category": v.category, "group_company": v.group_company, "rows": rows[v.name]} for v in view_specs(policy, catalogue)},
                "built_at": datetime.now(timezone.utc).isoformat(),
            }
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    finally:
        con.close()
    return BuildSummary(days, rows, tiers, time.perf_counter() - started)


def read_manifest(settings: Settings) -> dict:
    """The manifest of the published offline store (raises if none was built)."""
    path = settings.features_dir / MANIFEST
    if not path.is_file():
        raise MissingInputError(f"no feature store built under {settings.features_dir}: run `propensity features build`")
    return json.loads(path.read_text())
