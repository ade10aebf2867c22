"""Check a raw folder against DATA_CONTRACT.md before anything reads it.

``locate`` finds each table of a raw folder and describes it as a DuckDB FROM-expression
that yields the contract's columns with the contract's types, whatever the file format.
``validate`` runs every check of the contract as SQL aggregates (the raw data can hold
tens of millions of rows; only up to five example rows per violation leave DuckDB) and
raises one ``ContractError`` listing all violations. ``summary`` describes a located
folder in one row per table. Nothing here writes a file.

A table is found, in this order of precedence, as ``<name>.parquet`` (a file, or a folder
of Parquet parts as Spark writes it), a folder ``<name>/`` of Parquet parts (searched
recursively; names starting with ``.`` or ``_`` are skipped), or ``<name>.csv``.

CSV is read with every column as text and cast to the contract's type in the relation,
so downstream SQL sees the same types as for Parquet. A CSV value is accepted when it
casts: dates as ISO ``YYYY-MM-DD``; timestamps as ISO 8601 with a UTC offset (``Z``,
``+00:00``, ...); integers as whole numbers (``2`` or ``2.0``, not ``2.5``); booleans as
DuckDB reads them (``true``/``false``, ``t``/``f``, ``1``/``0``, ``yes``/``no``); an empty
field is null.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd

from propensity.config import Catalogue, Policy
from propensity.duck import connect, sql_literal
from propensity.errors import ContractError, MissingInputError, Violation
from propensity.schema import TABLES, Column, LogicalType, Table

EXAMPLE_ROWS = 5

# The type each logical type has in a relation, and the stored DuckDB types accepted for it.
SQL_TYPES: dict[LogicalType, str] = {
    "str": "VARCHAR",
    "date": "DATE",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "bool": "BOOLEAN",
    "int": "BIGINT",
    "float": "DOUBLE",
}
_INTEGERS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
)
# A Parquet column of Arrow's null type holds no value at all; it casts to anything.
_ALL_NULL = '"NULL"'
_ACCEPTED: dict[LogicalType, frozenset[str]] = {
    "str": frozenset({"VARCHAR"}),
    "date": frozenset({"DATE"}),
    "timestamp": frozenset({"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS"}),
    "bool": frozenset({"BOOLEAN"}),
    "int": _INTEGERS,
    "float": frozenset({"DOUBLE", "FLOAT"}) | _INTEGERS,
}
_TYPE_FIX: dict[LogicalType, str] = {
    "str": "a string column (Arrow string; pandas object or string)",
    "date": "a date column (Arrow date32; pandas: .dt.date), not a string or timestamp",
    "timestamp": "a UTC timestamp (Arrow timestamp('us', tz='UTC'); pandas datetime64[ns, UTC])",
    "bool": "a boolean column (true/false), not a number or string",
    "int": "an integer column (pandas 'Int64' keeps nulls), not float or string",
    "float": "float64, not a string or decimal",
}
_CSV_FORMAT: dict[LogicalType, str] = {
    "date": "an ISO date YYYY-MM-DD",
    "timestamp": "an ISO 8601 timestamp with a UTC offset, e.g. 2024-01-31T12:00:00+00:00",
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number with a decimal point, e.g. -349.90",
}
# A timestamp text carries its zone when a time of day is followed by Z, UTC or an offset.
_OFFSET_PATTERN = r"\d:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|UTC|[+-]\d{2}(:?\d{2})?)$"

# Violations after which a table's rows cannot be checked: its relation would not bind
# or not cast. Other tables are still checked.
STRUCTURAL = frozenset({"missing_table", "unreadable_table", "missing_column", "wrong_type"})


@dataclass(frozen=True)
class RawTables:
    """Where each table of a raw folder lives, as DuckDB FROM-expressions that yield the contract's columns and types.

    ``sources[table]`` is ``(SELECT CAST(col AS type) AS col, ... FROM <scan>)`` over the
    contract's columns only (extra columns are dropped); ``scans[table]`` is the bare
    ``read_parquet(...)`` / ``read_csv(...)`` with the columns as stored (all VARCHAR for
    CSV); ``formats[table]`` is ``"parquet"`` or ``"csv"``. The expressions hold absolute
    paths and need no view or table in the connection.
    """

    folder: Path
    sources: dict[str, str]
    files: dict[str, list[Path]]
    scans: dict[str, str] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)

    def relation(self, table: str) -> str:
        """The FROM-expression of one table, e.g. ``(SELECT ... FROM read_csv(...))``."""
        try:
            return self.sources[table]
        except KeyError:
            raise MissingInputError(
                f"raw table {table!r} is not in {self.folder} (found: {', '.join(self.sources) or 'none'}); "
                "export it as DATA_CONTRACT.md describes"
            ) from None


# ---------------------------------------------------------------- finding the tables
def locate(raw_dir: Path) -> RawTables:
    """Find every contract table in ``raw_dir``.

    Returns the tables found (optional tables may be absent). Raises ``ContractError``
    with one ``missing_table`` violation per required table that is absent. Only file
    names are looked at; the files are not opened.
    """
    raw, missing = _find_tables(Path(raw_dir))
    if missing:
        raise ContractError(missing)
    return raw


def _find_tables(raw_dir: Path) -> tuple[RawTables, list[Violation]]:
    folder = raw_dir.resolve()
    if not folder.is_dir():
        raise ContractError([Violation(
            "(raw folder)", None, "missing_folder", f"{folder} does not exist or is not a folder",
            fix="point raw_dir (conf/pipeline.yaml or PROPENSITY_RAW_DIR) at the folder of extracts, "
            "or run `propensity synth` to write a synthetic one",
        )])
    sources: dict[str, str] = {}
    files: dict[str, list[Path]] = {}
    scans: dict[str, str] = {}
    formats: dict[str, str] = {}
    missing: list[Violation] = []
    for name, table in TABLES.items():
        found = _table_files(folder, name)
        if found is None:
            if table.required:
                missing.append(_missing_table(folder, name))
            continue
        fmt, paths = found
        files[name] = paths
        formats[name] = fmt
        scans[name] = _scan(fmt, paths)
        sources[name] = _typed_relation(table, scans[name])
    return RawTables(folder=folder, sources=sources, files=files, scans=scans, formats=formats), missing


def _table_files(folder: Path, name: str) -> tuple[str, list[Path]] | None:
    single = folder / f"{name}.parquet"
    if single.is_file():
        return "parquet", [single]
    for parts_dir in (single, folder / name):
        if parts_dir.is_dir():
            parts = sorted(
                p for p in parts_dir.rglob("*.parquet")
                if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(parts_dir).parts)
            )
            if parts:
                return "parquet", parts
    csv = folder / f"{name}.csv"
    if csv.is_file():
        return "csv", [csv]
    return None


def _scan(fmt: str, paths: list[Path]) -> str:
    listed = "[" + ", ".join(sql_literal(p) for p in paths) + "]"
    if fmt == "csv":
        # All text: each column is cast (and checked) against its contract type.
        return f"read_csv({listed}, header = true, all_varchar = true, union_by_name = true)"
    return f"read_parquet({listed}, union_by_name = true)"


def _typed_relation(table: Table, scan: str) -> str:
    # A cast to the type a column already has is dropped by DuckDB, so Parquet columns
    # are read as stored and filters still reach the Parquet reader.
    columns = ", ".join(f"CAST({_q(c.name)} AS {SQL_TYPES[c.type]}) AS {_q(c.name)}" for c in table.columns)
    return f"(SELECT {columns} FROM {scan})"


# ---------------------------------------------------------------- validation
def validate(
    raw_dir: Path,
    policy: Policy,
    catalogue: Catalogue,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    tables: Sequence[str] | None = None,
) -> RawTables:
    """Check a raw folder against the contract; return its tables when it is clean.

    Refuses (one ``ContractError`` listing every violation, each with up to five example
    rows and the fix): a missing required table or column, a stored type other than the
    contract's, a timestamp without a time zone, a null in a required column, a duplicate
    key, a value outside its closed set (``unknown_enum``; ``unknown_product`` for the
    catalogue), a value below a column's minimum, an agreement whose company is not its
    product's company, a row of an unknown customer or dated before the customer's
    ``customer_since``. A table with a structural violation (missing column, wrong type)
    gets no deeper checks; the other tables still do. Nothing is written, not even a view
    in ``con``. ``tables`` limits the row checks to the tables a job reads (``customers``
    is always checked: the other tables are checked against it); every table must exist.
    """
    raw, violations = _find_tables(Path(raw_dir))
    checked = set(raw.sources) if tables is None else {*tables, "customers"} & set(raw.sources)
    enums = _enum_values(policy, catalogue)
    company_of: dict[str, str] = {pid: product.company for pid, product in catalogue.products.items()}
    with _connection(con) as db:
        sound: list[str] = []
        for name in raw.sources:
            if name not in checked:
                continue
            table = TABLES[name]
            structure = _structure_violations(db, raw, table)
            violations += structure
            if any(v.kind in STRUCTURAL for v in structure):
                continue
            sound.append(name)
            violations += _guarded(table, lambda: _row_violations(db, raw.relation(table.name), table, enums, company_of))
        if "customers" in sound:
            for name in sound:
                table = TABLES[name]
                if name != "customers" and "customer_id" in table.column_names:
                    violations += _guarded(table, lambda: _customer_violations(db, raw, table))
    if violations:
        raise ContractError(violations)
    return raw


def _enum_values(policy: Policy, catalogue: Catalogue) -> dict[str, tuple[str, ...]]:
    return {"consents": policy.consents, "reservations": policy.reservations, "products": catalogue.ids}


@dataclass(frozen=True)
class _Check:
    """One row-level rule: rows matching ``where`` break it."""

    kind: str
    column: str
    where: str
    shown: tuple[str, ...]  # SQL select-list items for the example rows
    message: str  # "{n}" in it becomes the number of offending rows
    fix: str
    values_of: str | None = None  # a column whose offending values the message lists


def _structure_violations(con: duckdb.DuckDBPyConnection, raw: RawTables, table: Table) -> list[Violation]:
    scan = raw.scans[table.name]
    try:
        stored = {name: found for name, found, *_ in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    except duckdb.Error as exc:
        return [_unreadable(raw, table, exc)]
    violations = [
        Violation(
            table.name, col.name, "missing_column",
            f"{table.name}.{col.name} is missing; the file has columns {sorted(stored)}",
            fix=f"add column {col.name!r} ({col.type}) to {table.name}; column names are fixed and case-sensitive",
        )
        for col in table.columns
        if col.name not in stored
    ]
    present = [c for c in table.columns if c.name in stored]
    if raw.formats[table.name] == "csv":
        return violations + _guarded(table, lambda: _csv_value_violations(con, scan, table, present))
    for col in present:
        found = stored[col.name]
        if found in _ACCEPTED[col.type] or found == _ALL_NULL:
            continue
        if col.type == "timestamp" and found.startswith("TIMESTAMP"):
            violations.append(Violation(
                table.name, col.name, "timestamp_without_timezone",
                f"{table.name}.{col.name} is stored as {found} without a time zone; timestamps must be UTC with the zone stored",
                _stored_examples(con, scan, table, col, stored),
                fix=f"store {col.name} as a UTC timestamp (Arrow timestamp('us', tz='UTC'); pandas: .dt.tz_localize('UTC') "
                "or .dt.tz_convert('UTC'))",
            ))
            continue
        violations.append(Violation(
            table.name, col.name, "wrong_type",
            f"{table.name}.{col.name} is stored as {found}; the contract wants {col.type} ({SQL_TYPES[col.type]})",
            _stored_examples(con, scan, table, col, stored),
            fix=f"write {table.name}.{col.name} as {_TYPE_FIX[col.type]}",
        ))
    return violations


def _stored_examples(con: duckdb.DuckDBPyConnection, scan: str, table: Table, col: Column, stored: dict[str, str]) -> list[dict]:
    """A few stored values of a column of the wrong type, to show what was found."""
    shown = [c for c in _id_columns(table) if c in stored and c != col.name] + [col.name]
    try:
        return _fetch_rows(con, f"SELECT {', '.join(map(_q, shown))} FROM {scan} WHERE {_q(col.name)} IS NOT NULL LIMIT {EXAMPLE_ROWS}")
    except duckdb.Error:
        return []  # the examples only illustrate; the violation stands without them


def _csv_value_violations(con: duckdb.DuckDBPyConnection, scan: str, table: Table, present: list[Column]) -> list[Violation]:
    checks: list[_Check] = []
    ids = [c for c in _id_columns(table) if c in {p.name for p in present}]
    for col in present:
        if col.type == "str":
            continue
        c = _q(col.name)
        shown = tuple(_q(i) for i in ids if i != col.name) + (c,)
        checks.append(_Check(
            "wrong_type", col.name,
            f"{c} IS NOT NULL AND NOT coalesce({_csv_readable(col)}, false)",
            shown,
            f"{table.name}.{col.name}: {{n}} value(s) cannot be read as {col.type}",
            f"write every {table.name}.{col.name} value as {_CSV_FORMAT[col.type]} (leave the field empty for null)",
        ))
        if col.type == "timestamp":
            checks.append(_Check(
                "timestamp_without_timezone", col.name,
                f"{c} IS NOT NULL AND TRY_CAST({c} AS TIMESTAMPTZ) IS NOT NULL "
                f"AND NOT regexp_matches(trim({c}), {sql_literal(_OFFSET_PATTERN)}, 'i')",
                shown,
                f"{table.name}.{col.name}: {{n}} value(s) have no UTC offset, so their instant is ambiguous",
                f"write {table.name}.{col.name} as ISO 8601 in UTC with the offset, e.g. 2024-01-31T12:00:00+00:00",
            ))
    return _run_checks(con, scan, table, checks, order_by=[_q(i) for i in ids])


def _csv_readable(col: Column) -> str:
    c = _q(col.name)
    if col.type == "date":
        # DuckDB would read '2024-01-31 12:00' as a date and drop the time: ISO dates only.
        return f"(TRY_CAST({c} AS DATE) IS NOT NULL AND regexp_full_match(trim({c}), '\\d{{4}}-\\d{{2}}-\\d{{2}}'))"
    if col.type == "int":
        # DuckDB rounds '2.5' to 2 when casting to an integer: only whole numbers pass.
        return f"(TRY_CAST({c} AS BIGINT) IS NOT NULL AND TRY_CAST({c} AS DOUBLE) = TRY_CAST({c} AS BIGINT))"
    return f"(TRY_CAST({c} AS {SQL_TYPES[col.type]}) IS NOT NULL)"


def _row_violations(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    table: Table,
    enums: dict[str, tuple[str, ...]],
    company_of: dict[str, str],
) -> list[Violation]:
    ids = _id_columns(table)
    checks: list[_Check] = []
    for col in table.columns:
        c = _q(col.name)
        shown = tuple(_q(i) for i in ids if i != col.name) + (c,)
        if not col.nullable:
            checks.append(_Check(
                "null_in_required", col.name, f"{c} IS NULL", shown,
                f"{table.name}.{col.name}: {{n}} row(s) are null; the column is required",
                f"fill {table.name}.{col.name} in every row, or leave those rows out of the extract",
            ))
        allowed = col.values if col.values is not None else enums.get(col.values_from) if col.values_from else None
        if allowed is not None:
            product = col.values_from == "products"
            checks.append(_Check(
                "unknown_product" if product else "unknown_enum", col.name,
                f"{c} IS NOT NULL AND {c} NOT IN ({_in_list(allowed)})", shown,
                f"{table.name}.{col.name}: {{n}} row(s) hold values outside {list(allowed)}",
                _enum_fix(table, col),
                values_of=col.name,
            ))
        if col.min_value is not None:
            checks.append(_Check(
                # The contract names this kind after the column, e.g. negative_household_size.
                f"negative_{col.name}", col.name, f"{c} < {col.min_value!r}", shown,
                f"{table.name}.{col.name}: {{n}} row(s) are below {col.min_value:g}",
                f"{table.name}.{col.name} must be at least {col.min_value:g}; use null when it is unknown",
            ))
    checks += _company_checks(table, company_of)
    violations = _run_checks(con, relation, table, checks, order_by=[_q(i) for i in ids])
    if table.key:
        violations += _duplicate_keys(con, relation, table)
    return violations


def _company_checks(table: Table, company_of: dict[str, str]) -> list[_Check]:
    """A row naming a catalogue product and a company must name the product's company."""
    products = [c for c in table.columns if c.values_from == "products"]
    if not products or "company" not in table.column_names or not company_of:
        return []
    p = _q(products[0].name)
    expected = "CASE " + " ".join(f"WHEN {p} = {sql_literal(k)} THEN {sql_literal(v)}" for k, v in company_of.items()) + " END"
    shown = tuple(_q(i) for i in table.key) + (p, '"company"', f"{expected} AS catalogue_company")
    return [_Check(
        "company_mismatch", "company",
        f"{p} IN ({_in_list(tuple(company_of))}) AND \"company\" IS NOT NULL AND \"company\" <> {expected}",
        shown,
        f"{table.name}.company: {{n}} row(s) name another company than the catalogue gives for their {products[0].name}",
        f"set {table.name}.company to the product's company in models/products.yaml, or correct the "
        f"{products[0].name} id",
    )]


def _duplicate_keys(con: duckdb.DuckDBPyConnection, relation: str, table: Table) -> list[Violation]:
    keys = ", ".join(map(_q, table.key))
    not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in table.key)
    rows = _fetch_rows(con, f"""
        SELECT *, count(*) OVER () AS _keys FROM (
            SELECT {keys}, count(*) AS rows_with_key FROM {relation}
            WHERE {not_null} GROUP BY {keys} HAVING count(*) > 1
        ) ORDER BY {keys} LIMIT {EXAMPLE_ROWS}""")
    if not rows:
        return []
    n = rows[0]["_keys"]
    for row in rows:
        del row["_keys"]
    return [Violation(
        table.name, ", ".join(table.key), "duplicate_key",
        f"{table.name}: {n} value(s) of the key ({', '.join(table.key)}) occur in more than one row",
        rows,
        fix=f"keep one row per ({', '.join(table.key)}) in {table.name}: drop exact duplicates; two different "
        "events at the same instant must be told apart (or resolved) at the source",
    )]


def _customer_violations(con: duckdb.DuckDBPyConnection, raw: RawTables, table: Table) -> list[Violation]:
    """Rows of customers that ``customers`` does not hold, or dated before they became customers."""
    ids = _id_columns(table)
    since = f"(SELECT customer_id, min(customer_since) AS customer_since FROM {raw.relation('customers')} GROUP BY customer_id)"
    # Flattened so that the checks read plain column names: _known and customer_since come from customers.
    joined = (
        f"(SELECT r.*, s.customer_id IS NOT NULL AS _known, s.customer_since AS _customer_since "
        f"FROM {raw.relation(table.name)} r LEFT JOIN {since} s ON r.customer_id = s.customer_id)"
    )
    shown_cid = tuple(_q(i) for i in ids if i != "customer_id") + ('"customer_id"',)
    checks = [_Check(
        "unknown_customer", "customer_id", '"customer_id" IS NOT NULL AND NOT _known', shown_cid,
        f"{table.name}.customer_id: {{n}} row(s) have a customer_id that is not in customers.customer_id",
        f"export these customers in customers, or leave their rows out of {table.name}",
    )]
    if table.time_column and table.starts_with_customer:
        t = _q(table.time_column)
        day = f"CAST(timezone('UTC', {t}) AS DATE)" if table.column(table.time_column).type == "timestamp" else t
        shown = tuple(dict.fromkeys((*map(_q, ids), '"customer_id"', t))) + ("_customer_since AS customer_since",)
        checks.append(_Check(
            "event_before_customer", table.time_column, f"_known AND {day} < _customer_since", shown,
            f"{table.name}.{table.time_column}: {{n}} row(s) are dated before the customer's customers.customer_since",
            f"check customers.customer_since (the first day of the relationship) for these customers, or leave rows "
            f"dated before it out of {table.name}",
        ))
    return _run_checks(con, joined, table, checks, order_by=[_q(i) for i in ids])


def _run_checks(
    con: duckdb.DuckDBPyConnection, source: str, table: Table, checks: list[_Check], *, order_by: list[str]
) -> list[Violation]:
    """Count every check's offending rows in one scan; fetch examples only for the broken ones."""
    if not checks:
        return []
    counts = _one_row(con, "SELECT " + ", ".join(f"count(*) FILTER (WHERE {ch.where})" for ch in checks) + f" FROM {source}")
    violations = []
    order = f" ORDER BY {', '.join(order_by)}" if order_by else ""
    for check, n in zip(checks, counts):
        if not n:
            continue
        rows = _fetch_rows(con, f"SELECT {', '.join(check.shown)} FROM {source} WHERE {check.where}{order} LIMIT {EXAMPLE_ROWS}")
        message = check.message.replace("{n}", str(n))
        if check.values_of:
            col = _q(check.values_of)
            found = con.execute(
                f"SELECT {col} FROM {source} WHERE {check.where} GROUP BY {col} ORDER BY count(*) DESC, {col} LIMIT {EXAMPLE_ROWS}"
            ).fetchall()
            message += f"; found {[v for (v,) in found]}"
        violations.append(Violation(table.name, check.column, check.kind, message, rows, check.fix))
    return violations


def _guarded(table: Table, checks: Callable[[], list[Violation]]) -> list[Violation]:
    """Run checks of one table; a file DuckDB cannot read becomes a violation of that table."""
    try:
        return checks()
    except duckdb.Error as exc:
        return [Violation(
            table.name, None, "unreadable_table", f"{table.name} could not be read: {_first_line(exc)}",
            fix=f"re-export {table.name} as Parquet, or as CSV with a header row and one record per line",
        )]


def _unreadable(raw: RawTables, table: Table, exc: duckdb.Error) -> Violation:
    names = ", ".join(str(p) for p in raw.files[table.name][:3])
    return Violation(
        table.name, None, "unreadable_table", f"{table.name} could not be read from {names}: {_first_line(exc)}",
        fix=f"re-export {table.name} as Parquet, or as CSV with a header row and one record per line",
    )


def _missing_table(folder: Path, name: str) -> Violation:
    where = f"{folder} does not exist" if not folder.is_dir() else f"not found in {folder}"
    return Violation(
        name, None, "missing_table",
        f"table {name!r} {where}: expected {name}.parquet, a folder {name}/ of Parquet parts, or {name}.csv",
        fix=f"export {name} into the raw folder with the columns of DATA_CONTRACT.md",
    )


def _enum_fix(table: Table, col: Column) -> str:
    if col.values_from == "products":
        return f"map {table.name}.{col.name} to a product id of models/products.yaml, or add the product there"
    if col.values_from:
        return f"map {table.name}.{col.name} to a {col.values_from[:-1]} declared in conf/policy.yaml, or declare it there"
    return f"map {table.name}.{col.name} to one of the values DATA_CONTRACT.md lists for it"


# ---------------------------------------------------------------- summary
def summary(raw: RawTables, con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """One row per located table, indexed by table name.

    Columns: ``rows``, ``customers`` (distinct customer_id), ``first`` and ``last`` (the
    earliest and latest value of the table's time column: a date or a UTC datetime; None
    for a table without one). Reads through ``raw.relation``, so validate first.
    """
    records = []
    with _connection(con) as db:
        for name in raw.sources:
            table = TABLES[name]
            t = _q(table.time_column) if table.time_column else "NULL"
            rows, customers, first, last = _one_row(
                db, f"SELECT count(*), count(DISTINCT customer_id), min({t}), max({t}) FROM {raw.relation(name)}"
            )
            records.append({"table": name, "rows": rows, "customers": customers, "first": first, "last": last})
    frame = pd.DataFrame.from_records(records, columns=["table", "rows", "customers", "first", "last"])
    return frame.astype({"rows": "int64", "customers": "int64", "first": object, "last": object}).set_index("table")


# ---------------------------------------------------------------- small pieces
def _id_columns(table: Table) -> tuple[str, ...]:
    """The columns that identify a row in an example: the key, or customer and time."""
    if table.key:
        return table.key
    return tuple(c for c in ("customer_id", table.time_column) if c)


def _one_row(con: duckdb.DuckDBPyConnection, sql: str) -> tuple:
    row = con.execute(sql).fetchone()
    assert row is not None, "an aggregate without GROUP BY returns one row"
    return row


def _fetch_rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [{k: _plain(v) for k, v in zip(names, row)} for row in cursor.fetchall()]


def _plain(value: object) -> object:
    # Dates and times as ISO text, so a rendered violation reads like the input file.
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _first_line(exc: Exception) -> str:
    # DuckDB appends the SQL text with a caret; the first line says what is wrong.
    return str(exc).strip().splitlines()[0]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _in_list(values: tuple[str, ...]) -> str:
    return ", ".join(sql_literal(v) for v in values)


@contextmanager
def _connection(con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
    if con is not None:
        yield con
        return
    own = connect()
    try:
        yield own
    finally:
        own.close()
