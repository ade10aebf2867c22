"""The input tables of DATA_CONTRACT.md, declared as data.

Each table lists its columns with a logical type, whether nulls are allowed, and the
closed set of values where the contract fixes one. Enumerations that the policy or the
catalogue own (consent purposes, reservation scopes, products) are named here by the
source they come from and filled in by ``contract`` from the loaded configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

LogicalType = Literal["str", "date", "timestamp", "bool", "int", "float"]


@dataclass(frozen=True)
class Column:
    name: str
    type: LogicalType
    nullable: bool = False
    values: tuple[str, ...] | None = None
    values_from: Literal["consents", "reservations", "products"] | None = None
    min_value: float | None = None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    category: str | None = None
    time_column: str | None = None  # the column that places a row in time
    required: bool = True
    # Rows are events of the relationship and cannot predate customer_since. Facts about
    # the person that begin earlier (a job, a household) set this to False.
    starts_with_customer: bool = True

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


COMPANIES = ("bank", "insurance", "asset_management")
ACCOUNT_TYPES = ("current", "savings", "bsu", "funds", "pension", "loan", "credit_card")
TRANSACTION_KINDS = ("card", "transfer", "direct_debit", "salary", "atm")
DIGITAL_CHANNELS = ("mobile_bank", "savings_app", "sbanken_app", "web")
DIGITAL_EVENT_TYPES = ("login", "page_view", "banner_impression", "banner_click")
CONTACT_CHANNELS = ("phone", "chat", "branch", "email")
CAMPAIGN_CHANNELS = ("email", "sms", "online_bank_message", "phone", "letter", "app", "web", "adviser")
RESPONSES = ("none", "opened", "clicked", "converted")

_CID = Column("customer_id", "str")

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "customers",
            (
                _CID,
                Column("brand", "str", values=("dnb", "sbanken")),
                Column("birth_date", "date"),
                Column("gender", "str", nullable=True, values=("female", "male", "other")),
                Column("postal_code", "str"),
                Column("email", "str", nullable=True),
                Column("phone", "str", nullable=True),
                Column("customer_since", "date"),
                Column("closed_at", "date", nullable=True),
            ),
            key=("customer_id",),
            category="personal",
        ),
        Table(
            "demographics",
            (
                _CID,
                Column("valid_from", "date"),
                Column("marital_status", "str", nullable=True),
                Column("household_size", "int", nullable=True, min_value=1),
                Column("region", "str"),
            ),
            key=("customer_id", "valid_from"),
            category="demographics",
            time_column="valid_from",
            starts_with_customer=False,
        ),
        Table(
            "consent_events",
            (
                _CID,
                Column("event_time", "timestamp"),
                Column("purpose", "str", values_from="consents"),
                Column("granted", "bool"),
                Column("source", "str", values=("online_bank", "app", "adviser")),
            ),
            key=("customer_id", "event_time", "purpose"),
            time_column="event_time",
        ),
        Table(
            "reservation_events",
            (
                _CID,
                Column("event_time", "timestamp"),
                Column("scope", "str", values_from="reservations"),
                Column("placed", "bool"),
            ),
            key=("customer_id", "event_time", "scope"),
            time_column="event_time",
        ),
        Table(
            "agreements",
            (
                Column("agreement_id", "str"),
                _CID,
                Column("product", "str", values_from="products"),
                Column("company", "str", values=COMPANIES),
                Column("start_date", "date"),
                Column("end_date", "date", nullable=True),
            ),
            key=("agreement_id",),
            category="agreements",
            time_column="start_date",
        ),
        Table(
            "balances",
            (
                _CID,
                Column("as_of_date", "date"),
                Column("account_type", "str", values=ACCOUNT_TYPES),
                Column("company", "str", values=COMPANIES),
                Column("balance", "float"),
            ),
            key=("customer_id", "as_of_date", "account_type"),
            category="account_balance",
            time_column="as_of_date",
        ),
        Table(
            "transactions",
            (
                Column("transaction_id", "str"),
                _CID,
                Column("booked_at", "timestamp"),
                Column("amount", "float"),
                Column("kind", "str", values=TRANSACTION_KINDS),
                Column("merchant_category", "str", nullable=True),
            ),
            key=("transaction_id",),
            category="transactions",
            time_column="booked_at",
        ),
        Table(
            "employment",
            (
                _CID,
                Column("valid_from", "date"),
                Column("employer_name", "str"),
                Column("employer_sector", "str"),
            ),
            key=("customer_id", "valid_from"),
            category="employer",
            time_column="valid_from",
            starts_with_customer=False,
        ),
        Table(
            "digital_events",
            (
                _CID,
                Column("event_time", "timestamp"),
                Column("channel", "str", values=DIGITAL_CHANNELS),
                Column("event_type", "str", values=DIGITAL_EVENT_TYPES),
                Column("topic", "str", nullable=True),
            ),
            category="digital_behaviour",
            time_column="event_time",
        ),
        Table(
            "contact_history",
            (
                _CID,
                Column("contact_time", "timestamp"),
                Column("channel", "str", values=CONTACT_CHANNELS),
                Column("topic", "str"),
            ),
            category="contact_history",
            time_column="contact_time",
        ),
        Table(
            "campaign_log",
            (
                Column("campaign_id", "str"),
                _CID,
                Column("product", "str", values_from="products"),
                Column("channel", "str", values=CAMPAIGN_CHANNELS),
                Column("sent_at", "timestamp"),
                Column("response", "str", values=RESPONSES),
                Column("responded_at", "timestamp", nullable=True),
            ),
            key=("campaign_id", "customer_id"),
            category="contact_history",
            time_column="sent_at",
        ),
    )
}

# Merchant categories and topics the synthetic bank uses and the feature SQL pivots on.
# A bank with other values still passes the contract; unknown values fall into `other`.
MERCHANT_CATEGORIES = ("groceries", "travel", "car", "housing", "restaurants", "electronics", "health", "other")
TOPICS = ("mortgage", "car_loan", "consumer_loan", "credit_card", "savings", "funds", "pension", "insurance", "travel")
CONTACT_TOPICS = ("mortgage", "interest_rate", "direct_debit", "insurance_change", "card", "complaint", "savings", "other")


# How each logical type is stored in Parquet (what the synthetic bank writes).
ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
}
