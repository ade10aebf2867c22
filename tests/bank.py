"""A hand-made bank for tests: a few customers with exactly the histories a test needs.

``TinyBank`` collects rows table by table and writes a raw folder with the contract's
types. Tests state the events they care about; everything else stays empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from propensity.schema import ARROW_TYPES, TABLES



def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC") if pd.Timestamp(text).tzinfo is None else pd.Timestamp(text).tz_convert("UTC")


def _d(text: str | date | None) -> date | None:
    return None if text is None else pd.Timestamp(text).date()


@dataclass
class TinyBank:
    rows: dict[str, list[dict]] = field(default_factory=lambda: {name: [] for name in TABLES})
    _seq: int = 0

    def _next(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq:06d}"

    def customer(self, cid: str, *, birth: str = "1985-06-15", brand: str = "dnb", since: str = "2020-01-01",
                 closed: str | None = None, gender: str | None = "female", email: str | None = None,
                 phone: str | None = None, postal_code: str = "0150") -> "TinyBank":
        self.rows["customers"].append(
            dict(customer_id=cid, brand=brand, birth_date=_d(birth), gender=gender, postal_code=postal_code,
                 email=email if email is not None else f"{cid.lower()}@example.no", phone=phone if phone is not None else "+4790000000",
                 customer_since=_d(since), closed_at=_d(closed))
        )
        return self

    def consent(self, cid: str, at: str, purpose: str = "personalised_marketing", granted: bool = True) -> "TinyBank":
        self.rows["consent_events"].append(dict(customer_id=cid, event_time=_ts(at), purpose=purpose, granted=granted, source="online_bank"))
        return self

    def reservation(self, cid: str, at: str, scope: str = "profiling", placed: bool = True) -> "TinyBank":
        self.rows["reservation_events"].append(dict(customer_id=cid, event_time=_ts(at), scope=scope, placed=placed))
        return self

    def agreement(self, cid: str, product: str, start: str, end: str | None = None, company: str = "bank") -> "TinyBank":
        self.rows["agreements"].append(dict(agreement_id=self._next("AG"), customer_id=cid, product=product, company=company,
                                            start_date=_d(start), end_date=_d(end)))
        return self

    def balance(self, cid: str, as_of: str, account_type: str, balance: float, company: str = "bank") -> "TinyBank":
        self.rows["balances"].append(dict(customer_id=cid, as_of_date=_d(as_of), account_type=account_type, company=company, balance=float(balance)))
        return self

    def transaction(self, cid: str, at: str, amount: float, kind: str = "card", merchant_category: str | None = "groceries") -> "TinyBank":
        self.rows["transactions"].append(dict(transaction_id=self._next("TX"), customer_id=cid, booked_at=_ts(at), amount=float(amount),
                                              kind=kind, merchant_category=merchant_category))
        return self

    def employment(self, cid: str, valid_from: str, sector: str = "K", name: str = "Acme AS") -> "TinyBank":
        self.rows["employment"].append(dict(customer_id=cid, valid_from=_d(valid_from), employer_name=name, employer_sector=sector))
        return self

    def demographics(self, cid: str, valid_from: str, household_size: int | None = 2, marital_status: str | None = "married",
                     region: str = "Oslo") -> "TinyBank":
        self.rows["demographics"].append(dict(customer_id=cid, valid_from=_d(valid_from), marital_status=marital_status,
                                              household_size=household_size, region=region))
        return self

    def digital(self, cid: str, at: str, event_type: str = "page_view", topic: str | None = "mortgage", channel: str = "web") -> "TinyBank":
        self.rows["digital_events"].append(dict(customer_id=cid, event_time=_ts(at), channel=channel, event_type=event_type, topic=topic))
        return self

    def contact(self, cid: str, at: str, topic: str = "mortgage", channel: str = "phone") -> "TinyBank":
        self.rows["contact_history"].append(dict(customer_id=cid, contact_time=_ts(at), channel=channel, topic=topic))
        return self

    def campaign(self, campaign_id: str, cid: str, product: str, channel: str, sent_at: str, response: str = "none",
                 responded_at: str | None = None) -> "TinyBank":
        self.rows["campaign_log"].append(dict(campaign_id=campaign_id, customer_id=cid, product=product, channel=channel,
                                              sent_at=_ts(sent_at), response=response,
                                              responded_at=None if responded_at is None else _ts(responded_at)))
        return self

    def tables(self) -> dict[str, pa.Table]:
        out = {}
        for name, table in TABLES.items():
            schema = pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in table.columns])
            rows = self.rows[name]
            columns = {c.name: [r[c.name] for r in rows] for c in table.columns}
            out[name] = pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in columns.items()}, schema=schema)
        return out

    def write(self, raw_dir: Path) -> Path:
        raw_dir.mkdir(parents=True, exist_ok=True)
        for name, table in self.tables().items():
            pq.write_table(table, raw_dir / f"{name}.parquet")
        return raw_dir

    def append_to(self, raw_dir: Path) -> Path:
        """Add these rows to the tables of an existing raw folder (e.g. a synthetic bank)."""
        for name, table in self.tables().items():
            path = raw_dir / f"{name}.parquet"
            existing = pq.read_table(path)
            pq.write_table(pa.concat_tables([existing, table.cast(existing.schema)]), path)
        return raw_dir
