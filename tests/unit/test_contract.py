"""Tests of ``propensity.contract``: a tiny valid raw folder, then one break per violation kind."""

from __future__ import annotations

import csv
from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from propensity.config import load_settings
from propensity.contract import RawTables, locate, summary, validate
from propensity.duck import connect
from propensity.errors import ContractError, Violation
from propensity.schema import ARROW_TYPES, TABLES

ROOT = Path(__file__).resolve().parents[2]



def _d(text: str) -> date:
    return date.fromisoformat(text)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# Rows in the column order of schema.TABLES. Customers c1..c3 joined in 2020, 2021, 2022.
ROWS: dict[str, list[tuple]] = {
    "customers": [
        ("c1", "dnb", _d("1980-05-17"), "female", "0150", "c1@example.no", "+4791234567", _d("2020-01-01"), None),
        ("c2", "sbanken", _d("1995-11-02"), "male", "5003", None, "+4792345678", _d("2021-06-01"), None),
        ("c3", "dnb", _d("2001-02-28"), None, "7010", "c3@example.no", None, _d("2022-03-15"), _d("2024-01-31")),
    ],
    "demographics": [
        ("c1", _d("2020-01-01"), "married", 3, "Oslo"),
        ("c2", _d("2021-06-01"), None, None, "Vestland"),
        ("c3", _d("2022-03-15"), "single", 1, "Trøndelag"),
    ],
    "consent_events": [
        ("c1", _t("2023-01-02 10:00:00"), "personalised_marketing", True, "online_bank"),
        ("c1", _t("2023-05-01 08:30:00"), "personalised_marketing", False, "app"),
        ("c2", _t("2023-02-01 12:00:00"), "group_data_sharing", True, "adviser"),
    ],
    "reservation_events": [
        ("c2", _t("2023-03-01 08:00:00"), "sms", True),
        ("c3", _t("2023-04-01 09:00:00"), "profiling", True),
    ],
    "agreements": [
        ("a1", "c1", "mortgage", "bank", _d("2020-02-01"), None),
        ("a2", "c2", "home_insurance", "insurance", _d("2022-01-10"), None),
        ("a3", "c3", "mutual_funds", "asset_management", _d("2022-04-01"), _d("2023-12-31")),
    ],
    "balances": [
        ("c1", _d("2023-12-31"), "current", "bank", 1520.5),
        ("c1", _d("2023-12-31"), "loan", "bank", -2500000.0),
        ("c2", _d("2023-12-31"), "savings", "bank", 30000.0),
    ],
    "transactions": [
        ("t1", "c1", _t("2024-01-05 10:15:00"), -349.9, "card", "groceries"),
        ("t2", "c1", _t("2024-01-25 00:01:00"), 42000.0, "salary", None),
        ("t3", "c2", _t("2024-01-02 06:00:00"), -1200.0, "direct_debit", "housing"),
        ("t4", "c3", _t("2024-01-20 18:45:30"), -500.0, "atm", None),
    ],
    "employment": [
        ("c1", _d("2020-01-01"), "Acme AS", "C"),
        ("c2", _d("2021-06-01"), "Fjord Helse", "Q"),
    ],
    "digital_events": [
        ("c1", _t("2024-01-06 08:00:00"), "mobile_bank", "login", None),
        ("c2", _t("2024-01-07 20:00:00"), "web", "banner_click", "mortgage"),
    ],
    "contact_history": [
        ("c1", _t("2024-01-10 09:00:00"), "phone", "mortgage"),
        ("c3", _t("2024-01-11 13:00:00"), "chat", "card"),
    ],
    "campaign_log": [
        ("k1", "c1", "car_loan", "email", _t("2024-01-15 07:00:00"), "opened", _t("2024-01-15 12:00:00")),
        ("k1", "c2", "car_loan", "email", _t("2024-01-15 07:00:00"), "none", None),
    ],
}


def _arrow(name: str, rows: list[tuple]) -> pa.Table:
    columns = TABLES[name].columns
    return pa.table({c.name: pa.array([r[i] for r in rows], ARROW_TYPES[c.type]) for i, c in enumerate(columns)})


def _with(table: pa.Table, column: str, values: list, type_: pa.DataType | None = None) -> pa.Table:
    """The table with one column replaced (by new values, possibly of another type)."""
    i = table.schema.get_field_index(column)
    array = pa.array(values, type_ or table.schema.field(i).type)
    return table.set_column(i, pa.field(column, array.type), array)


def _write(folder: Path, tables: dict[str, pa.Table]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, folder / f"{name}.parquet")
    return folder


def _csv_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()  # timestamps come out as 2024-01-05T10:15:00+00:00
    return str(value)


def _write_csv(folder: Path, tables: dict[str, pa.Table]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(table.column_names)
            for row in table.to_pylist():
                writer.writerow([_csv_text(v) for v in row.values()])
    return folder


def _only(err: pytest.ExceptionInfo[ContractError]) -> Violation:
    kinds = [v.kind for v in err.value.violations]
    assert len(kinds) == 1, err.value
    return err.value.violations[0]


@pytest.fixture(scope="session")
def valid_tables() -> dict[str, pa.Table]:
    return {name: _arrow(name, rows) for name, rows in ROWS.items()}


@pytest.fixture(scope="session")
def settings():
    return load_settings(ROOT / "conf" / "pipeline.yaml")


@pytest.fixture
def tables(valid_tables) -> dict[str, pa.Table]:
    return dict(valid_tables)  # Arrow tables are immutable: a shallow copy is enough to edit


@pytest.fixture
def check(settings):
    """Validate a folder with the project's policy and catalogue."""

    def run(folder: Path) -> RawTables:
        return validate(folder, settings.policy, settings.catalogue)

    return run


# ---------------------------------------------------------------- a clean folder
def test_valid_folder_validates_cleanly_with_every_table_located(tmp_path, tables, check):
    raw = check(_write(tmp_path / "raw", tables))
    assert set(raw.sources) == set(TABLES)
    assert raw.files["transactions"] == [(tmp_path / "raw" / "transactions.parquet").resolve()]
    assert raw.formats["transactions"] == "parquet"


def test_summary_gives_rows_customers_and_time_range_per_table(tmp_path, tables, check):
    frame = summary(check(_write(tmp_path / "raw", tables)))
    assert frame.loc["transactions", "rows"] == 4
    assert frame.loc["transactions", "customers"] == 3
    assert frame.loc["transactions", "first"] == _t("2024-01-02 06:00:00")
    assert frame.loc["transactions", "last"] == _t("2024-01-25 00:01:00")
    assert frame.loc["demographics", "first"] == date(2020, 1, 1)
    assert frame.loc["customers", "first"] is None
    assert frame["rows"].to_dict() == {name: len(rows) for name, rows in ROWS.items()}


def test_relation_yields_contract_columns_and_types(tmp_path, tables, check):
    raw = check(_write(tmp_path / "raw", tables))
    with connect() as con:
        described = con.execute(f"DESCRIBE SELECT * FROM {raw.relation('campaign_log')}").fetchall()
    assert [(name, typ) for name, typ, *_ in described] == [
        ("campaign_id", "VARCHAR"), ("customer_id", "VARCHAR"), ("product", "VARCHAR"), ("channel", "VARCHAR"),
        ("sent_at", "TIMESTAMP WITH TIME ZONE"), ("response", "VARCHAR"), ("responded_at", "TIMESTAMP WITH TIME ZONE"),
    ]


# ---------------------------------------------------------------- one break per kind
def test_absent_required_table_is_missing_table(tmp_path, tables, check):
    del tables["employment"]
    folder = _write(tmp_path / "raw", tables)
    with pytest.raises(ContractError) as err:
        check(folder)
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("missing_table", "employment", None)
    with pytest.raises(ContractError) as located:
        locate(folder)
    assert [v.kind for v in located.value.violations] == ["missing_table"]


def test_absent_column_is_missing_column(tmp_path, tables, check):
    tables["balances"] = tables["balances"].drop_columns(["account_type"])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("missing_column", "balances", "account_type")


def test_date_stored_as_string_is_wrong_type(tmp_path, tables, check):
    tables["agreements"] = _with(tables["agreements"], "start_date", ["2020-02-01", "2022-01-10", "2022-04-01"], pa.string())
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("wrong_type", "agreements", "start_date")
    assert v.rows[0] == {"agreement_id": "a1", "start_date": "2020-02-01"}


def test_float_where_bool_expected_is_wrong_type(tmp_path, tables, check):
    tables["consent_events"] = _with(tables["consent_events"], "granted", [1.0, 0.0, 1.0], pa.float64())
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("wrong_type", "consent_events", "granted")


def test_timestamp_without_zone_is_timestamp_without_timezone(tmp_path, tables, check):
    naive = [t.replace(tzinfo=None) for t in tables["transactions"]["booked_at"].to_pylist()]
    tables["transactions"] = _with(tables["transactions"], "booked_at", naive, pa.timestamp("us"))
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("timestamp_without_timezone", "transactions", "booked_at")


def test_null_in_non_nullable_column_is_null_in_required(tmp_path, tables, check):
    tables["transactions"] = _with(tables["transactions"], "amount", [-349.9, None, -1200.0, -500.0])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("null_in_required", "transactions", "amount")
    assert v.rows == [{"transaction_id": "t2", "amount": None}]


def test_repeated_key_is_duplicate_key_showing_the_key(tmp_path, tables, check):
    tables["transactions"] = pa.concat_tables([tables["transactions"], tables["transactions"].slice(2, 1)])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("duplicate_key", "transactions", "transaction_id")
    assert v.rows == [{"transaction_id": "t3", "rows_with_key": 2}]


def test_value_outside_closed_set_is_unknown_enum(tmp_path, tables, check):
    tables["reservation_events"] = _with(tables["reservation_events"], "scope", ["sms", "carrier_pigeon"])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("unknown_enum", "reservation_events", "scope")
    assert [(r["customer_id"], r["scope"]) for r in v.rows] == [("c3", "carrier_pigeon")]
    assert "carrier_pigeon" in v.message


def test_product_outside_catalogue_is_unknown_product(tmp_path, tables, check):
    tables["campaign_log"] = _with(tables["campaign_log"], "product", ["car_loan", "yacht_loan"])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("unknown_product", "campaign_log", "product")
    assert v.rows == [{"campaign_id": "k1", "customer_id": "c2", "product": "yacht_loan"}]


def test_row_dated_before_customer_since_is_event_before_customer(tmp_path, tables, check):
    booked = tables["transactions"]["booked_at"].to_pylist()
    booked[3] = _t("2022-03-14 23:59:00")  # c3 became a customer on 2022-03-15
    tables["transactions"] = _with(tables["transactions"], "booked_at", booked)
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("event_before_customer", "transactions", "booked_at")
    assert v.rows == [{
        "transaction_id": "t4", "customer_id": "c3", "booked_at": "2022-03-14T23:59:00+00:00",
        "customer_since": "2022-03-15",
    }]


def test_row_of_customer_not_in_customers_is_unknown_customer(tmp_path, tables, check):
    tables["digital_events"] = _with(tables["digital_events"], "customer_id", ["c1", "c9"])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("unknown_customer", "digital_events", "customer_id")
    assert [r["customer_id"] for r in v.rows] == ["c9"]


def test_household_size_below_one_is_negative_household_size(tmp_path, tables, check):
    tables["demographics"] = _with(tables["demographics"], "household_size", [3, None, 0])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("negative_household_size", "demographics", "household_size")
    assert v.rows == [{"customer_id": "c3", "valid_from": "2022-03-15", "household_size": 0}]


def test_agreement_company_other_than_catalogue_is_company_mismatch(tmp_path, tables, check):
    tables["agreements"] = _with(tables["agreements"], "company", ["bank", "bank", "asset_management"])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("company_mismatch", "agreements", "company")
    assert v.rows == [{"agreement_id": "a2", "product": "home_insurance", "company": "bank", "catalogue_company": "insurance"}]


# ---------------------------------------------------------------- all violations at once
def test_structural_break_stops_only_its_table_and_all_violations_are_raised(tmp_path, tables, check):
    tables["transactions"] = _with(tables["transactions"], "amount", ["-349.9", None, "x", "-500"], pa.string())
    tables["balances"] = _with(tables["balances"], "account_type", ["current", "loan", "crypto"])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    found = {(v.kind, v.table, v.column) for v in err.value.violations}
    # The null amount of t2 is not reported: a table of the wrong type gets no row checks.
    assert found == {("wrong_type", "transactions", "amount"), ("unknown_enum", "balances", "account_type")}
    assert "transactions.amount" in str(err.value) and "balances.account_type" in str(err.value)


def test_violation_message_names_table_column_and_fix(tmp_path, tables, check):
    tables["transactions"] = _with(tables["transactions"], "kind", ["card", "salary", "cheque", "atm"])
    with pytest.raises(ContractError) as err:
        check(_write(tmp_path / "raw", tables))
    v = _only(err)
    assert "transactions.kind" in v.message and v.fix
    assert v.rows == [{"transaction_id": "t3", "kind": "cheque"}]


# ---------------------------------------------------------------- input forms
def test_csv_folder_is_accepted_with_the_same_summary_as_parquet(tmp_path, tables, check):
    from_parquet = summary(check(_write(tmp_path / "parquet", tables)))
    raw = check(_write_csv(tmp_path / "csv", tables))
    assert set(raw.formats.values()) == {"csv"}
    pd.testing.assert_frame_equal(summary(raw), from_parquet)


def test_csv_relation_has_the_same_types_as_parquet(tmp_path, tables, check):
    from_parquet = check(_write(tmp_path / "parquet", tables))
    from_csv = check(_write_csv(tmp_path / "csv", tables))
    with connect() as con:
        for name in TABLES:
            types = [
                [row[:2] for row in con.execute(f"DESCRIBE SELECT * FROM {raw.relation(name)}").fetchall()]
                for raw in (from_parquet, from_csv)
            ]
            assert types[0] == types[1], name
        rows = [con.execute(f"SELECT * FROM {raw.relation('consent_events')} ORDER BY ALL").fetchall() for raw in (from_parquet, from_csv)]
    assert rows[0] == rows[1]


def test_csv_value_that_does_not_cast_is_wrong_type_with_its_rows(tmp_path, tables, check):
    tables["transactions"] = _with(tables["transactions"], "amount", ["-349.9", "42000", "12,50", "-500"], pa.string())
    with pytest.raises(ContractError) as err:
        check(_write_csv(tmp_path / "csv", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("wrong_type", "transactions", "amount")
    assert v.rows == [{"transaction_id": "t3", "amount": "12,50"}]


def test_csv_timestamp_without_offset_is_timestamp_without_timezone(tmp_path, tables, check):
    sent = ["2024-01-15T07:00:00+00:00", "2024-01-15 07:00:00"]
    tables["campaign_log"] = _with(tables["campaign_log"], "sent_at", sent, pa.string())
    with pytest.raises(ContractError) as err:
        check(_write_csv(tmp_path / "csv", tables))
    v = _only(err)
    assert (v.kind, v.table, v.column) == ("timestamp_without_timezone", "campaign_log", "sent_at")
    assert v.rows == [{"campaign_id": "k1", "customer_id": "c2", "sent_at": "2024-01-15 07:00:00"}]


def test_folder_of_parquet_parts_is_accepted(tmp_path, tables, check):
    transactions = tables.pop("transactions")
    folder = _write(tmp_path / "raw", tables)
    (folder / "transactions").mkdir()
    pq.write_table(transactions.slice(0, 2), folder / "transactions" / "part-0.parquet")
    pq.write_table(transactions.slice(2), folder / "transactions" / "part-1.parquet")
    raw = check(folder)
    assert len(raw.files["transactions"]) == 2
    assert summary(raw).loc["transactions", "rows"] == 4


def test_spark_style_parquet_folder_is_accepted(tmp_path, tables, check):
    transactions = tables.pop("transactions")
    folder = _write(tmp_path / "raw", tables)
    (folder / "transactions.parquet").mkdir()
    pq.write_table(transactions, folder / "transactions.parquet" / "part-00000.snappy.parquet")
    (folder / "transactions.parquet" / "_SUCCESS").touch()
    assert check(folder).files["transactions"] == [(folder / "transactions.parquet" / "part-00000.snappy.parquet").resolve()]


def test_nullable_column_written_as_arrow_null_type_is_accepted(tmp_path, tables, check):
    tables["customers"] = _with(tables["customers"], "email", [None, None, None], pa.null())
    raw = check(_write(tmp_path / "raw", tables))
    with connect() as con:
        assert con.execute(f"SELECT typeof(email) FROM {raw.relation('customers')} LIMIT 1").fetchone() == ("VARCHAR",)


def test_extra_column_is_ignored_and_not_in_the_relation(tmp_path, tables, check):
    extra = pa.array(["x"] * tables["transactions"].num_rows)
    tables["transactions"] = tables["transactions"].append_column("internal_note", extra)
    raw = check(_write(tmp_path / "raw", tables))
    with connect() as con:
        columns = [d[0] for d in con.execute(f"SELECT * FROM {raw.relation('transactions')} LIMIT 0").description]
    assert columns == list(TABLES["transactions"].column_names)


def test_validate_writes_no_file(tmp_path, tables, check):
    clean_csv = _write_csv(tmp_path / "csv", tables)
    tables["balances"] = _with(tables["balances"], "account_type", ["current", "loan", "crypto"])
    broken_parquet = _write(tmp_path / "raw", tables)
    before = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*"))
    check(clean_csv)
    with pytest.raises(ContractError):
        check(broken_parquet)
    assert sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*")) == before


def test_validate_can_limit_row_checks_to_the_tables_a_job_reads(tmp_path, tables, settings):
    frame = tables["transactions"].to_pandas()
    frame.loc[0, "kind"] = "barter"
    tables["transactions"] = pa.Table.from_pandas(frame, schema=tables["transactions"].schema, preserve_index=False)
    folder = _write(tmp_path / "raw", tables)
    with pytest.raises(ContractError, match="transactions.kind"):
        validate(folder, settings.policy, settings.catalogue)
    raw = validate(folder, settings.policy, settings.catalogue, tables=("customers", "agreements"))
    assert "transactions" in raw.sources
