"""Labels: who starts which product in the window after a snapshot, among those who could.

For product ``p`` with label window ``gap_months``/``horizon_months`` (models/products.yaml)
and a month-end snapshot ``t``, a customer-snapshot is *labelled* when, at ``t``,

* the person is a customer (``customer_since`` on or before ``t``, not closed on or before it);
* they are eligible for ``p``: age at ``t`` within ``min_age``..``max_age`` (age in whole
  years from ``birth_date``, the formula of ``features.personal_sql``) and brand in the
  product's ``brands`` list when it has one;
* they do not hold ``p`` (no agreement of ``p`` with ``start_date <= t`` and no
  ``end_date`` or ``end_date > t``, the rule of the agreements features);
* for a group-company product (``company`` other than ``bank``): ``group_data_sharing`` is
  active at the snapshot instant and is not withdrawn before the end of the label window.
  Holding and starting an insurance or asset-management product are group-company data,
  which the policy lets us read only with that consent, so customer-snapshots without it
  at any time from ``t`` to the window's end get no label (neither positive nor negative);
* the whole window lies within the data: ``t + gap + horizon`` (month ends) is on or
  before ``data_end``. Later snapshots are unlabelled, never negative.

The label is 1 when the customer starts an agreement of ``p`` with a start date in
``(t + gap, t + gap + horizon]`` (month ends; the left end excluded, the right included),
else 0.

:func:`eligible_not_holding` is the same rule without a window, for scoring: which
customer × product pairs may get a score at a date. For a group-company product, holding
is known only with group data sharing: a customer without sharing is scored for it.

Policy tiers are not applied here: the feature store drops ``excluded`` customer-snapshots
when features are read (POLICY.md rule 4). Everything is one DuckDB query per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from propensity.config import Catalogue, Policy
from propensity.duck import sql_literal
from propensity.policy import customer_on_sql, group_sharing_column, normalised_events
from propensity.snapshots import add_months, snapshot_instant

Raw = Callable[[str], str]

LABEL_COLUMNS = ["customer_id", "snapshot_date", "product", "label"]
# The raw tables labels and scoring candidates read (the scoring job validates these).
SCORING_TABLES = ("customers", "agreements", "consent_events")
CANDIDATE_COLUMNS = ["customer_id", "product", "group_data_sharing"]


def labelled_snapshots(snapshots: Iterable[date], gap_months: int, horizon_months: int, data_end: date) -> list[date]:
    """The snapshots whose whole label window ends on or before ``data_end``, in order."""
    months = gap_months + horizon_months
    return sorted(t for t in snapshots if add_months(t, months) <= data_end)


def label_frame(
    con: duckdb.DuckDBPyConnection,
    raw: Raw,
    catalogue: Catalogue,
    policy: Policy,
    snapshots: Sequence[date],
    data_end: date,
    products: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Labelled customer-snapshots: customer_id, snapshot_date, product, label (0/1 int8).

    ``raw`` maps a table name to a DuckDB FROM-expression (``RawTables.relation``);
    ``snapshots`` are month ends; ``data_end`` is the last date the extracts cover (the
    newest snapshot of the feature store). Rows are sorted by product, snapshot_date,
    customer_id. Snapshots whose window reaches past ``data_end`` give no row.
    """
    products = list(products) if products is not None else list(catalogue.ids)
    _check_products(products, catalogue)
    windows = []
    for p in products:
        label = catalogue.products[p].label
        for t in labelled_snapshots(snapshots, label.gap_months, label.horizon_months, data_end):
            windows.append(
                {
                    "product": p,
                    "snapshot_date": t,
                    "window_start": add_months(t, label.gap_months),
                    "window_end": add_months(t, label.gap_months + label.horizon_months),
                }
            )
    if not windows:
        return _empty_labels()
    query = """
        SELECT c.customer_id, c.snapshot_date, c.product,
               CAST(EXISTS (
                   SELECT 1 FROM agreements_ a
                   WHERE a.customer_id = c.customer_id AND a.product = c.product
                     AND a.start_date > c.window_start AND a.start_date <= c.window_end
               ) AS TINYINT) AS label
        FROM candidates_ c
        JOIN windows_ w ON w.product = c.product AND w.snapshot_date = c.snapshot_date
        WHERE c.company = 'bank' OR (
            c.group_data_sharing AND NOT EXISTS (
                SELECT 1 FROM sharing_ g
                WHERE g.customer_id = c.customer_id AND NOT g.active
                  AND g.event_time > w.instant AND g.event_time <= w.window_end_instant
            )
        )
        ORDER BY c.product, c.snapshot_date, c.customer_id
    """
    frame = _run(con, raw, catalogue, policy, pd.DataFrame(windows), query, holding_known_only_with_sharing=False)
    frame["label"] = frame["label"].astype("int8")
    return frame[LABEL_COLUMNS]


def eligible_not_holding(
    con: duckdb.DuckDBPyConnection,
    raw: Raw,
    catalogue: Catalogue,
    policy: Policy,
    at: date,
    products: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The customer × product pairs that may get a score at date ``at``.

    Returns customer_id and product (categoricals with sorted categories) and
    group_data_sharing (as of the end of day ``at``), sorted by product and customer:
    customers at ``at``, eligible for the product at ``at``, and not holding it — for a
    group-company product, "not holding" is checked only where group data sharing is
    active (without it the holding is unknown to us and the customer is scored). The tier
    is not applied: the feature store drops ``excluded``.
    """
    products = list(products) if products is not None else list(catalogue.ids)
    _check_products(products, catalogue)
    windows = pd.DataFrame({"product": products, "snapshot_date": [at] * len(products)})
    windows["window_start"] = at
    windows["window_end"] = at
    return _run(con, raw, catalogue, policy, windows, _coded_candidates, holding_known_only_with_sharing=True)


def _coded_candidates(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """``candidates_`` with customer_id and product as categoricals (sorted categories), so
    that millions of pairs are codes over one list of customers, not millions of strings."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE codes_ AS
        SELECT customer_id, CAST(row_number() OVER (ORDER BY customer_id) - 1 AS INTEGER) AS customer_code
        FROM (SELECT DISTINCT customer_id FROM candidates_)
        """
    )
    try:
        customers = con.execute("SELECT CAST(customer_id AS VARCHAR) AS customer_id FROM codes_ ORDER BY customer_code").fetchnumpy()
        products = sorted(con.execute("SELECT DISTINCT product FROM candidates_").fetchnumpy()["product"].tolist())
        con.register("product_codes_", pd.DataFrame({"product": products, "product_code": np.arange(len(products), dtype=np.int16)}))
        try:
            rows = con.execute(
                """
                SELECT k.customer_code, p.product_code, c.group_data_sharing
                FROM candidates_ c JOIN codes_ k USING (customer_id) JOIN product_codes_ p USING (product)
                ORDER BY p.product_code, k.customer_code
                """
            ).fetchnumpy()
        finally:
            con.unregister("product_codes_")
    finally:
        con.execute("DROP TABLE IF EXISTS codes_")
    return pd.DataFrame(
        {
            "customer_id": pd.Categorical.from_codes(np.asarray(rows["customer_code"]), categories=pd.Index(customers["customer_id"], dtype=object)),
            "product": pd.Categorical.from_codes(np.asarray(rows["product_code"]), categories=pd.Index(products, dtype=object)),
            "group_data_sharing": np.asarray(rows["group_data_sharing"], dtype=bool),
        }
    )


# ----------------------------------------------------------------------------- the SQL
def _check_products(products: Sequence[str], catalogue: Catalogue) -> None:
    unknown = [p for p in products if p not in catalogue.products]
    if unknown:
        raise ValueError(f"unknown product(s) {unknown}; the catalogue (models/products.yaml) has {list(catalogue.ids)}")


def _empty_labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "snapshot_date": pd.Series(dtype=object),
            "product": pd.Series(dtype=object),
            "label": pd.Series(dtype="int8"),
        }
    )


def _eligibility_frame(products: Sequence[str], catalogue: Catalogue) -> pd.DataFrame:
    rows = []
    for p in products:
        spec = catalogue.products[p]
        rows.append(
            {
                "product": p,
                "company": spec.company,
                "min_age": spec.eligibility.min_age,
                "max_age": spec.eligibility.max_age,
                # A comma-joined list keeps the frame flat; brands are plain identifiers.
                "brands": ",".join(spec.eligibility.brands) if spec.eligibility.brands is not None else None,
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("min_age", "max_age"):
        frame[column] = frame[column].astype("Int64")
    frame["brands"] = frame["brands"].astype(object)
    return frame


def _sharing_events(con: duckdb.DuckDBPyConnection, raw: Raw, policy: Policy) -> pd.DataFrame:
    """The group data sharing consent stream (customer_id, event_time, active), with the
    policy's tie rule applied."""
    purpose = policy.group_company.requires_consent
    consents = con.execute(
        f"SELECT customer_id, event_time, purpose, granted FROM {raw('consent_events')} WHERE purpose = {sql_literal(purpose)}"
    ).df()
    empty_reservations = pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "event_time": pd.Series(dtype="datetime64[us, UTC]"),
            "scope": pd.Series(dtype=object),
            "placed": pd.Series(dtype=bool),
        }
    )
    if consents.empty:
        consents["event_time"] = consents["event_time"].astype("datetime64[us, UTC]")
    events = normalised_events(consents, empty_reservations)
    events = events.loc[events["state"] == group_sharing_column(policy), ["customer_id", "event_time", "active"]]
    return events.reset_index(drop=True)


def _run(
    con: duckdb.DuckDBPyConnection,
    raw: Raw,
    catalogue: Catalogue,
    policy: Policy,
    windows: pd.DataFrame,
    query: str | Callable[[duckdb.DuckDBPyConnection], pd.DataFrame],
    *,
    holding_known_only_with_sharing: bool,
) -> pd.DataFrame:
    """Create ``candidates_`` (members, eligible, not holding) for each window row, run
    ``query`` (SQL, or a function of the connection returning the frame).

    ``windows`` has product, snapshot_date, window_start, window_end. With
    ``holding_known_only_with_sharing`` a group-company product's holding is looked up
    only for rows with group data sharing (scoring); otherwise for every row (labels
    then keep the rows with sharing only).
    """
    windows = windows.copy()
    for column, day in (("instant", "snapshot_date"), ("window_end_instant", "window_end")):
        windows[column] = pd.Series([snapshot_instant(d) for d in windows[day]], dtype="datetime64[us, UTC]")
    eligibility = _eligibility_frame(sorted(set(windows["product"])), catalogue)
    sharing = _sharing_events(con, raw, policy)
    names = {"windows_": windows, "eligibility_": eligibility, "sharing_": sharing}
    for name, frame in names.items():
        con.register(name, frame)
    sharing_only = "AND (e.company = 'bank' OR m.group_data_sharing)" if holding_known_only_with_sharing else ""
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE agreements_ AS
            SELECT customer_id, product, start_date, end_date FROM {raw('agreements')}
            WHERE product IN (SELECT product FROM eligibility_)
            """
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE candidates_ AS
            WITH snaps AS (SELECT DISTINCT snapshot_date, instant FROM windows_),
            members AS (
                SELECT c.customer_id, c.brand, s.snapshot_date, s.instant,
                       year(s.snapshot_date) - year(c.birth_date)
                         - CASE WHEN month(s.snapshot_date) * 100 + day(s.snapshot_date)
                                     < month(c.birth_date) * 100 + day(c.birth_date) THEN 1 ELSE 0 END AS age_years
                FROM {raw('customers')} c JOIN snaps s
                  ON {customer_on_sql("c", "s.snapshot_date")}
            ),
            shared AS (
                SELECT m.*, COALESCE(g.active, false) AS group_data_sharing
                FROM members m
                ASOF LEFT JOIN sharing_ g ON g.customer_id = m.customer_id AND m.instant >= g.event_time
            )
            SELECT m.customer_id, m.snapshot_date, w.product, e.company, w.window_start, w.window_end,
                   m.group_data_sharing
            FROM shared m
            JOIN windows_ w ON w.snapshot_date = m.snapshot_date
            JOIN eligibility_ e ON e.product = w.product
            WHERE (e.min_age IS NULL OR m.age_years >= e.min_age)
              AND (e.max_age IS NULL OR m.age_years <= e.max_age)
              AND (e.brands IS NULL OR list_contains(string_split(e.brands, ','), m.brand))
              AND NOT EXISTS (
                  SELECT 1 FROM agreements_ a
                  WHERE a.customer_id = m.customer_id AND a.product = w.product
                    AND a.start_date <= m.snapshot_date
                    AND (a.end_date IS NULL OR a.end_date > m.snapshot_date)
                    {sharing_only}
              )
            """
        )
        frame = query(con) if callable(query) else con.execute(query).df()
    finally:
        for name in names:
            con.unregister(name)
        con.execute("DROP TABLE IF EXISTS candidates_")
        con.execute("DROP TABLE IF EXISTS agreements_")
    if not isinstance(frame["customer_id"].dtype, pd.CategoricalDtype):
        frame["customer_id"] = frame["customer_id"].astype(str)
    if "snapshot_date" in frame.columns:
        frame["snapshot_date"] = pd.to_datetime(frame["snapshot_date"]).dt.date
    if "group_data_sharing" in frame.columns:
        frame["group_data_sharing"] = frame["group_data_sharing"].astype(bool)
    return frame.reset_index(drop=True)
