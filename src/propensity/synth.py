"""A deterministic synthetic bank whose true start probabilities are known.

``generate_bank(customers, months, start, seed, transactions_per_month, policy, catalogue)``
simulates a retail bank month by month and returns a ``SyntheticBank``: the eleven input
tables of DATA_CONTRACT.md (``schema.TABLES``, exact columns, order and Arrow types) and the
``truth`` behind them. ``write_bank`` writes one Parquet file per table, staged and renamed
into place. The same arguments give byte-identical tables: every random draw comes from a
``numpy.random.Generator(PCG64)`` seeded by ``(seed, stream, month)``; nothing else is random.
Arguments refused (``ValueError``): ``customers < 1``, ``months < 2``, ``start`` not the first
day of a month, ``transactions_per_month <= 0``, a negative ``seed``.

Time
----
The simulation covers ``months`` calendar months from ``start``. Snapshot ``t_m`` is the last
day of month ``m``. A customer is *active at* ``t_m`` when ``customer_since <= t_m`` and
``closed_at`` is null or later than ``t_m`` (``closed_at`` never falls on a month end). Most
customers exist before ``start``; about 12 % join during the period and about 0.35 % of the
active customers leave per month. Every row of a customer is dated on or after
``customer_since`` and before ``closed_at``; agreements of a leaving customer end on
``closed_at``. Ages stay within 18..90 over the whole period.

Products and the truth
----------------------
At each snapshot ``t_m`` every active customer has, for every catalogue product ``p``, a
monthly hazard ``h[m, p]``: the probability of starting ``p`` during month ``m + 1`` if not
holding it. It is 0 where the customer is not eligible at ``t_m`` (whole-year age within the
catalogue's range, brand in its brands); elsewhere it is the hazard that *would* apply,
holders included. Starts are drawn from these hazards (``start_date`` a uniformly random day
of month ``m + 1``; a start falling on or after ``closed_at`` does not happen; the hazard of
the last snapshot is never realised). ``truth["product_hazard"]`` holds
``(customer_id, snapshot_date, product, p_start)`` for every active customer x snapshot x
product.

A hazard path never depends on the customer's own starts of that product (latent states do
not end when the product starts; product effects run one way: mortgage -> home and life
insurance, car loan -> car insurance). Hence, given the hazard path, the true probability of
the label "starts ``p`` in ``(t_m, t_m + H months]``" for a customer not holding ``p`` at
``t_m`` and still a customer is::

    1 - prod_{k=0}^{H-1} (1 - p_start[t_{m+k}])

an oracle that reads future hazards. Latent states last several months, so the hazards are
persistent and the oracle is close to what the month-end features can know.

What drives the hazards (and where it shows)
--------------------------------------------
Latent life events, monthly Markov states (``truth["latent_events"]``: customer_id, month =
first day of the calendar month the state held in, event):

=================  ==========================================  ===========================================
event              raises the hazard of                        leaves traces in
=================  ==========================================  ===========================================
home_buying        mortgage (~x80), home_insurance, bsu        housing card spend (transactions), mortgage
                                                               page views (digital, 60 % of episodes),
                                                               mortgage contacts (contact_history)
car_buying         car_loan (~x40), car_insurance (~x15)       car card spend (transactions); car_loan page
                                                               views (digital, 40 % of episodes)
investing          mutual_funds (~x40), pension_savings (x5)   funds/pension page views (digital, 70 %),
                                                               savings-app logins, savings contacts,
                                                               large outgoing transfers (transactions)
cash_squeeze       consumer_loan (~x40), credit_card (x2)      negative current balance (balances),
                                                               electronics/restaurant spend (transactions),
                                                               consumer_loan page views (digital, 50 %)
expecting_child    life_insurance (x6)                         health spend (transactions), insurance page
                                                               views (digital, 50 %), insurance contacts
new_parent         life_insurance (x10), savings_account (x3)  household_size + 1 (demographics), grocery and
                                                               health spend, insurance page views
job_change         savings_account, pension_savings (x4,       new employment row (employer), salary change
                   for 3 months)                               (transactions)
travel_planning    the canary product ONLY                     travel card spend (transactions) ONLY
=================  ==========================================  ===========================================

Observable drivers besides the events: age (customers) for most products; salary level
(transactions; also shifts mortgage, funds, pension, consumer loan); a spending style that
shows as restaurant/electronics spend (transactions) for credit_card; employer sector
(employment: F/H more car loans, J/K more funds, O/P/Q fewer pension savings); couple and
household size (demographics) for mortgage, car loan, life insurance; wealth (savings
balance) for funds; liquidity (current balance) for savings_account; products held and
recently started (agreements) for home/car/life insurance. The onsets of the events
depend on the same attributes (e.g. home buying peaks at 25-39 for couples with salary).

The canary (``catalogue.canary_product``, default travel_insurance) has hazard
``0.002 + 0.12 * travel_planning``; ``travel_planning`` starts with a constant 3.5 % per
month for everyone and ends with 40 % per month, independent of every other attribute, and
shows only as ``travel`` card spending. Travel page views, banners and campaigns are
independent of it; canary agreements end only at yearly anniversaries so an ended one says
nothing about the current state. A model without transactions features scores AUC ~ 0.5.

Other tables: consents follow two-state Markov chains per purpose (stationary shares
personalised_marketing ~50 %, group_data_sharing ~33 %, email_sms_marketing ~40 %; ~0.4 %
of non-consenting customers grant and withdraw within one month); reservations likewise
(profiling ~3 %, each channel ~4 %, all_channels ~2.5 %, customer_matching ~10 %).
Campaigns go out every third month to 6 % of the customers the policy lets the bank
contact in that channel; they have no effect on hazards ("converted" = started the product
within 30 days). Balances are month-end levels drawn from customer traits; they are not
reconciled with the transaction amounts.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity.atomic import staged_dir
from propensity.config import Catalogue, Policy
from propensity.schema import (
    ACCOUNT_TYPES,
    CAMPAIGN_CHANNELS,
    COMPANIES,
    CONTACT_CHANNELS,
    CONTACT_TOPICS,
    DIGITAL_CHANNELS,
    DIGITAL_EVENT_TYPES,
    MERCHANT_CATEGORIES,
    RESPONSES,
    ARROW_TYPES,
    TABLES,
    TOPICS,
    TRANSACTION_KINDS,
)

__all__ = ["SyntheticBank", "generate_bank", "write_bank", "TRUTH_TABLES"]


@dataclass(frozen=True)
class SyntheticBank:
    """The eleven contract tables (``tables``) and the simulation's truth (``truth``)."""

    tables: dict[str, pa.Table]
    truth: dict[str, pa.Table]


TRUTH_TABLES: dict[str, pa.Schema] = {
    "product_hazard": pa.schema(
        [("customer_id", pa.string()), ("snapshot_date", pa.date32()), ("product", pa.string()), ("p_start", pa.float64())]
    ),
    "latent_events": pa.schema([("customer_id", pa.string()), ("month", pa.date32()), ("event", pa.string())]),
}

# ---------------------------------------------------------------- the world's parameters
# The synthetic world is a model; its constants live here, named, not inside the steps.
_US_PER_S = 1_000_000
_S_PER_DAY = 86_400
_DAYS_18Y = 6575  # >= 18 calendar years in days
_YEAR = 365.25

_AGE_EDGES = np.array([18, 25, 35, 45, 55, 65, 75, 91], dtype=float)  # age bands at start
_AGE_WEIGHTS = np.array([0.11, 0.17, 0.17, 0.17, 0.15, 0.13, 0.10])
_EMPLOYED = np.array([0.55, 0.84, 0.87, 0.86, 0.72, 0.15, 0.02])
_INCOME_AGE = np.array([-0.35, -0.10, 0.05, 0.10, 0.08, 0.0, 0.0])
_MEDIAN_SALARY = 35_000.0  # monthly net salary inflow, NOK
_MARITAL = ("single", "cohabiting", "married", "divorced", "widowed")
_MARITAL_BY_BAND = np.array([
    [0.82, 0.15, 0.03, 0.00, 0.00],
    [0.40, 0.33, 0.25, 0.02, 0.00],
    [0.22, 0.22, 0.46, 0.10, 0.00],
    [0.18, 0.15, 0.52, 0.14, 0.01],
    [0.15, 0.10, 0.55, 0.17, 0.03],
    [0.12, 0.08, 0.55, 0.15, 0.10],
    [0.10, 0.04, 0.45, 0.11, 0.30],
])
_KIDS_BY_BAND = np.array([0.1, 0.7, 1.4, 1.0, 0.3, 0.05, 0.02])

_NACE = tuple("ABCDEFGHIJKLMNOPQRSTU")
_SECTOR_WEIGHTS = np.array([2, 2, 8, 1, 1, 9, 13, 5, 4, 4, 2, 1, 6, 5, 6, 8, 20, 2, 2, 0.1, 0.1], dtype=float)
_SECTOR_INCOME = np.array(
    [0.85, 1.5, 1.05, 1.25, 1.0, 1.0, 0.85, 0.95, 0.72, 1.3, 1.35, 1.1, 1.2, 0.85, 1.05, 0.95, 0.93, 0.85, 0.85, 0.7, 1.1]
)
_SECTOR_WORDS = ("Landbruk", "Olje", "Industri", "Kraft", "Renovasjon", "Bygg", "Handel", "Transport", "Hotell", "Data",
                 "Finans", "Eiendom", "Consult", "Service", "Etat", "Skole", "Helse", "Kultur", "Forening", "Husstell",
                 "Ambassade")
_NAME_WORDS = ("Nord", "Fjord", "Vest", "Berg", "Sol", "Havn", "Lia", "Dal", "Elv", "Skog", "Stein", "Bakke", "Vik",
               "Nes", "Fjell", "Strand", "Tind", "Os", "Haug", "Eik", "Lund", "Moe", "Aas", "Rud")
_NAME_SUFFIXES = ("AS", "AS", "ASA", "SA", "ANS")

# Region, postal-code range and population share.
_REGIONS = (
    ("Oslo", 10, 1299, 0.13), ("Akershus", 1300, 1499, 0.13), ("Ostfold", 1500, 1899, 0.06),
    ("Innlandet", 2000, 2999, 0.07), ("Vestfold", 3100, 3299, 0.05), ("Buskerud", 3300, 3699, 0.05),
    ("Telemark", 3700, 3999, 0.03), ("Rogaland", 4000, 4399, 0.09), ("Agder", 4400, 4999, 0.06),
    ("Vestland", 5000, 5999, 0.12), ("More og Romsdal", 6000, 6699, 0.05), ("Trondelag", 7000, 7999, 0.09),
    ("Nordland", 8000, 8999, 0.045), ("Troms", 9000, 9499, 0.03), ("Finnmark", 9500, 9999, 0.015),
)

_JOIN_SHARE = 0.12
_CHURN = 0.0035
_TENURE_MEAN_DAYS = 9 * _YEAR

# Latent states: monthly exit probability while in the state.
_EXIT = {"home": 0.20, "car": 0.33, "invest": 0.15, "squeeze": 0.35, "travel": 0.40}
_TRAVEL_ONSET = 0.035
_EXPECTING_MONTHS = 8
_NEW_PARENT_MONTHS = 6
_BROWSE = {"home": 0.6, "car": 0.4, "invest": 0.7, "squeeze": 0.5, "expecting": 0.5}
_JOB_CHANGE = 0.008
_HIRE = 0.01
_RETIRE = 0.05
_MARRY = 0.003
_BURN_IN_MONTHS = 12
_HAZARD_CAP = 0.6
_CANARY_BASE, _CANARY_STATE = 0.002, 0.12

# Agreements: monthly end probability; the canary ends only at anniversaries.
_END_RATE = {"mortgage": 0.004, "car_loan": 0.015, "consumer_loan": 0.025, "credit_card": 0.005,
             "savings_account": 0.003, "bsu": 0.005, "mutual_funds": 0.006, "pension_savings": 0.001,
             "home_insurance": 0.004, "car_insurance": 0.008, "life_insurance": 0.002}
_END_RATE_DEFAULT = 0.005
_CANARY_ANNIVERSARY_END = 0.15
_LOAN_PRODUCTS = {"mortgage": (2_500_000.0, 0.5, 300), "car_loan": (280_000.0, 0.4, 60),
                  "consumer_loan": (90_000.0, 0.6, 60)}  # principal median, sigma, months to repay
_HISTORY_SHARE = 0.25

# Transactions: shares of the mean monthly count, card categories and amounts (median NOK, sigma).
_CARD_SHARE, _DD_SHARE, _TRANSFER_SHARE, _ATM_SHARE = 0.75, 0.12, 0.10, 0.03
_CARD_WEIGHTS = {"groceries": 0.36, "travel": 0.04, "car": 0.05, "housing": 0.07, "restaurants": 0.14,
                 "electronics": 0.04, "health": 0.06, "other": 0.24}
_CARD_AMOUNT = {"groceries": (450, 0.7), "travel": (2500, 0.9), "car": (900, 1.0), "housing": (1200, 0.8),
                "restaurants": (350, 0.6), "electronics": (1500, 0.9), "health": (500, 0.7), "other": (300, 1.0)}
_EXTRA_AMOUNT = {"groceries": (600, 0.6), "travel": (4000, 0.9), "car": (4000, 1.2), "housing": (3500, 0.8),
                 "restaurants": (400, 0.6), "electronics": (2500, 0.8), "health": (700, 0.7), "other": (300, 1.0)}
_MERCHANT_NULL = 0.03
_SALARY_DAY = 20
_PENSION_INCOME = 22_000.0

# Digital behaviour: monthly rates per unit of digital activity.
_LOGINS, _NULL_TOPIC_VIEWS, _TOPIC_VIEWS, _IMPRESSIONS = 2.0, 1.0, 0.12, 0.12
_CLICK_BASE, _CLICK_INTEREST = 0.02, 0.25
_CHANNEL_DNB = {"mobile_bank": 0.6, "savings_app": 0.1, "web": 0.3}
_CHANNEL_SBANKEN = {"sbanken_app": 0.7, "web": 0.3}

_CONTACT_BASE = 0.05
_CONTACT_TOPIC_WEIGHTS = {"card": 0.2, "direct_debit": 0.15, "complaint": 0.08, "other": 0.3, "interest_rate": 0.05,
                          "savings": 0.07, "insurance_change": 0.08, "mortgage": 0.07}
_CONTACT_CHANNEL = np.array([[0.40, 0.35, 0.10, 0.15], [0.55, 0.10, 0.25, 0.10]])  # under 65, 65+

# Consents and reservations: (monthly grant/place probability, withdraw/lift probability).
_CONSENT_RATES = {"personalised_marketing": (0.025, 0.025), "group_data_sharing": (0.01, 0.02),
                  "email_sms_marketing": (0.012, 0.018)}
_CONSENT_DEFAULT = (0.01, 0.02)
_RESERVATION_RATES = {"profiling": (0.0012, 0.04), "all_channels": (0.0008, 0.03), "customer_matching": (0.004, 0.036)}
_RESERVATION_DEFAULT = (0.0015, 0.035)
_DOUBLE_FLIP = 0.004
_EXPLICIT_REFUSAL = 0.15
_CONSENT_SOURCES = ("online_bank", "app", "adviser")
_SOURCE_WEIGHTS = np.array([0.45, 0.45, 0.10])
_CONSENT_HISTORY_DAYS = 3 * 365

_CAMPAIGN_EVERY, _CAMPAIGN_SHARE, _CONVERSION_DAYS = 3, 0.06, 30
_RESPONSE_OPENED, _RESPONSE_CLICKED = 0.25, 0.06
_ID_CHUNK = 8_000_000


# ---------------------------------------------------------------- public API
def generate_bank(
    customers: int,
    months: int,
    start: date,
    seed: int,
    transactions_per_month: float,
    policy: Policy,
    catalogue: Catalogue,
) -> SyntheticBank:
    """Simulate the bank; return the contract tables and the truth (see the module docstring)."""
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if months < 2:
        raise ValueError(f"months must be at least 2, got {months}")
    if start.day != 1:
        raise ValueError(f"start must be the first day of a month, got {start}")
    if not transactions_per_month > 0:
        raise ValueError(f"transactions_per_month must be positive, got {transactions_per_month}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if months > 12 * 60:
        raise ValueError(f"months must be at most 720 (ages stay within 18..90), got {months}")
    return _Simulation(customers, months, start, seed, float(transactions_per_month), policy, catalogue).run()


def write_bank(bank: SyntheticBank, raw_dir: Path, truth_dir: Path) -> None:
    """Write ``raw_dir/<table>.parquet`` and ``truth_dir/<name>.parquet``, replacing both folders.

    Both folders are written to staging folders beside them and renamed into place only
    once every file is complete: a failure leaves the previous folders (or none) intact.
    """
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    if raw_dir.resolve() == truth_dir.resolve():
        raise ValueError("raw_dir and truth_dir must be different folders")
    with staged_dir(raw_dir) as raw_stage, staged_dir(truth_dir) as truth_stage:
        for name, table in bank.tables.items():
            pq.write_table(table, raw_stage / f"{name}.parquet")
        for name, table in bank.truth.items():
            pq.write_table(table, truth_stage / f"{name}.parquet")


# ---------------------------------------------------------------- small vectorised tools
def _stream(seed: int, name: str, *keys: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, month): parts do not shift each other."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode()), *keys])))


def _day(d: date) -> int:
    return int(np.datetime64(d, "D").astype(np.int64))


def _shift_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    months = d.astype("datetime64[M]")
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (d - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day


def _whole_years(birth_ymd: tuple[np.ndarray, np.ndarray, np.ndarray], at_day: int | np.ndarray) -> np.ndarray:
    """Age in completed years on ``at_day`` (one day for all, or one per person)."""
    y, mo, d = _ymd(np.atleast_1d(np.asarray(at_day, dtype=np.int64)))
    by, bm, bd = birth_ymd
    return y - by - ((mo < bm) | ((mo == bm) & (d < bd))).astype(np.int64)


def _piecewise(x: np.ndarray, edges: list[float], values: list[float]) -> np.ndarray:
    """values[i] for edges[i-1] <= x < edges[i] (len(values) == len(edges) + 1)."""
    return np.asarray(values, dtype=float)[np.searchsorted(np.asarray(edges, dtype=float), x, side="right")]


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (rows x k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    u = np.asarray(rng.random(len(probs)))
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1)


def _lognormal(rng: np.random.Generator, median: np.ndarray | float, sigma: np.ndarray | float, size: int) -> np.ndarray:
    return np.asarray(median) * np.exp(np.asarray(sigma) * rng.standard_normal(size))


def _seconds_in(rng: np.random.Generator, lo_day: np.ndarray, hi_day: np.ndarray) -> np.ndarray:
    """A random whole second in [lo_day, hi_day) per row, as microseconds since the epoch."""
    span = (hi_day - lo_day) * _S_PER_DAY
    s = np.minimum(np.floor(rng.random(len(lo_day)) * span).astype(np.int64), span - 1)
    return (lo_day * _S_PER_DAY + s) * _US_PER_S


def _fixed_width(prefix: str, numbers: np.ndarray, digits: int, suffix: str = "") -> pa.ChunkedArray:
    """Strings ``prefix + zero-padded number + suffix`` built as raw Arrow buffers (no Python loop over rows)."""
    head, tail = prefix.encode(), suffix.encode()
    width = len(head) + digits + len(tail)
    chunks = []
    numbers = np.asarray(numbers, dtype=np.int64)
    for lo in range(0, max(len(numbers), 1), _ID_CHUNK):
        part = numbers[lo:lo + _ID_CHUNK]
        n = len(part)
        buf = np.empty((n, width), dtype=np.uint8)
        if head:
            buf[:, :len(head)] = np.frombuffer(head, dtype=np.uint8)
        if tail:
            buf[:, width - len(tail):] = np.frombuffer(tail, dtype=np.uint8)
        rest = part.copy()
        for j in range(len(head) + digits - 1, len(head) - 1, -1):
            buf[:, j] = 48 + rest % 10
            rest //= 10
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        chunks.append(pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)]))
    return pa.chunked_array(chunks, type=pa.string())


def _take(values: pa.Array | tuple[str, ...], codes: np.ndarray, null: np.ndarray | None = None) -> pa.ChunkedArray:
    """``values[codes]`` as an Arrow string column; rows where ``null`` is true are null."""
    dictionary = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
    codes = np.asarray(codes, dtype=np.int32)
    chunks: list[pa.Array] = []
    for lo in range(0, max(len(codes), 1), _ID_CHUNK):
        part = codes[lo:lo + _ID_CHUNK]
        mask = None if null is None else np.asarray(null[lo:lo + _ID_CHUNK], dtype=bool)
        taken = dictionary.take(pa.array(np.where(mask, 0, part) if mask is not None else part, mask=mask))
        chunks.extend(taken.chunks if isinstance(taken, pa.ChunkedArray) else [taken])
    return pa.chunked_array(chunks, type=pa.string())


def _dates(days: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    arr = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    return pa.array(arr, type=pa.date32(), mask=null)


def _timestamps(us: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    arr = np.asarray(us, dtype=np.int64).astype("datetime64[us]")
    return pa.array(arr, mask=null).cast(pa.timestamp("us", tz="UTC"))


def _contract_table(name: str, columns: dict[str, pa.Array | pa.ChunkedArray]) -> pa.Table:
    spec = TABLES[name]
    schema = pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in spec.columns])
    if list(columns) != list(schema.names):
        raise AssertionError(f"{name}: built columns {list(columns)} differ from the contract {schema.names}")
    return pa.table([columns[n] for n in schema.names], schema=schema)


class _Rows:
    """Per-month chunks of one table, concatenated once at the end."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, **columns: np.ndarray) -> None:
        for key, values in columns.items():
            self.parts.setdefault(key, []).append(np.asarray(values))

    def get(self, key: str, dtype: type | str) -> np.ndarray:
        """The whole column; its chunks are released (each column is read once)."""
        parts = self.parts.pop(key, None)
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)


# ---------------------------------------------------------------- the simulation
class _Simulation:
    """State of every simulated person, advanced one calendar month at a time."""

    def __init__(self, n: int, months: int, start: date, seed: int, tpm: float, policy: Policy, catalogue: Catalogue):
        self.n, self.M, self.seed, self.tpm = n, months, seed, tpm
        self.start = start
        self.policy, self.catalogue = policy, catalogue
        base = np.datetime64(start, "M")
        self.ms = (base + np.arange(months + 2)).astype("datetime64[D]").astype(np.int64)  # first day of month m
        self.products = catalogue.ids
        self.P = len(self.products)
        self.pidx = {p: j for j, p in enumerate(self.products)}
        self.canary = catalogue.canary_product or ("travel_insurance" if "travel_insurance" in self.pidx else None)
        self.company = np.array([COMPANIES.index(catalogue.products[p].company) for p in self.products], dtype=np.int8)
        el = [catalogue.products[p].eligibility for p in self.products]
        self.min_age = np.array([e.min_age if e.min_age is not None else 0 for e in el])
        self.max_age = np.array([e.max_age if e.max_age is not None else 999 for e in el])
        self.brand_ok = np.array([[e.brands is None or b in e.brands for b in ("dnb", "sbanken")] for e in el])
        self.consents = policy.consents
        self.reservations = policy.reservations
        self.personalised_consent = next(
            (r.when.consent for r in policy.tier_rules if r.tier == "personalised" and r.when.consent), None
        )
        self.objections = [r.when.reservation for r in policy.tier_rules if r.tier == "excluded" and r.when.reservation]
        self.cat = {c: i for i, c in enumerate(MERCHANT_CATEGORIES)}
        self.topic = {t: i for i, t in enumerate(TOPICS)}
        # collected rows
        self.tx, self.dig, self.con, self.bal = _Rows(), _Rows(), _Rows(), _Rows()
        self.cev, self.rev, self.emp_rows, self.dem_rows = _Rows(), _Rows(), _Rows(), _Rows()
        self.agr, self.agr_end, self.camp, self.truth_h, self.truth_ev = _Rows(), _Rows(), _Rows(), _Rows(), _Rows()
        self.n_agreements = 0

    # ------------------------------------------------------------ helpers over people
    def rng(self, name: str, *keys: int) -> np.random.Generator:
        return _stream(self.seed, name, *keys)

    def window(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Customers who are customers on some day of month m, with their [lo, hi) days in it."""
        lo = np.maximum(self.ms[m], self.since)
        hi = np.minimum(self.ms[m + 1], self.closed_at)
        idx = np.flatnonzero(lo < hi)
        return idx, lo[idx], hi[idx]

    def active_at(self, m: int) -> np.ndarray:
        return np.flatnonzero((self.since < self.ms[m + 1]) & (self.close_month > m))

    def age_at(self, day: int) -> np.ndarray:
        return (day - self.birth) / _YEAR

    def held(self, product: str, idx: np.ndarray) -> np.ndarray:
        j = self.pidx.get(product)
        return self.holding[idx, j] if j is not None else np.zeros(len(idx), dtype=bool)

    def started_within(self, product: str, idx: np.ndarray, m: int, months: int) -> np.ndarray:
        j = self.pidx.get(product)
        if j is None:
            return np.zeros(len(idx), dtype=bool)
        return self.holding[idx, j] & (self.start_month[idx, j] > m - months)

    def sector_in(self, letters: str, idx: np.ndarray) -> np.ndarray:
        codes = [_NACE.index(c) for c in letters]
        return self.employed[idx] & np.isin(self.sector[idx], codes)

    def couple(self, idx: np.ndarray) -> np.ndarray:
        return (self.marital[idx] == 1) | (self.marital[idx] == 2)

    def income_rel(self, idx: np.ndarray) -> np.ndarray:
        rel = np.where(self.employed[idx], self.income[idx] / _MEDIAN_SALARY, np.where(self.retired[idx], 0.7, 0.45))
        return np.clip(rel, 0.3, 3.0)

    # ------------------------------------------------------------ the run
    def run(self) -> SyntheticBank:
        self.people()
        self.initial_portfolio()
        self.initial_consents()
        for b in range(_BURN_IN_MONTHS):
            self.transition(-_BURN_IN_MONTHS + b, record=False)
        self.initial_records()
        market = self.rng("market").normal(0.004, 0.03, self.M).cumsum()
        self.market = np.exp(market)
        for m in range(self.M):
            self.transition(m, record=True)
            self.join_records(m)
            self.record_latent(m)
            self.transactions(m)
            self.digital(m)
            self.contacts(m)
            prev_consent, prev_reservation = self.consent_state.copy(), self.reservation_state.copy()
            self.consent_events(m)
            self.balances(m)
            hazard, active = self.hazards(m)
            if m % _CAMPAIGN_EVERY == _CAMPAIGN_EVERY - 1:
                self.campaign(m, prev_consent, prev_reservation)
            self.held_before = self.holding.copy()
            if m + 1 < self.M:
                self.starts_and_ends(m, hazard, active)
        return SyntheticBank(tables=self.tables(), truth=self.truth())

    # ------------------------------------------------------------ people
    def people(self) -> None:
        rng = self.rng("people")
        n, M = self.n, self.M
        start_day = self.ms[0]
        last_day = self.ms[M] - 1
        hi_birth = _day(_shift_years(self.start, -18))
        last_date = np.datetime64(int(last_day), "D").astype(date)
        lo_birth = _day(_shift_years(last_date, -91)) + 2
        max_age_days = start_day - lo_birth
        band = rng.choice(len(_AGE_WEIGHTS), size=n, p=_AGE_WEIGHTS)
        band_lo = np.minimum(_AGE_EDGES[band] * _YEAR, max_age_days - 1)
        band_hi = np.minimum(_AGE_EDGES[band + 1] * _YEAR, max_age_days)
        age_days = band_lo + rng.random(n) * (band_hi - band_lo)
        self.birth = np.clip(start_day - age_days.astype(np.int64), lo_birth, hi_birth)
        self.birth_ymd = _ymd(self.birth)
        age0 = self.age_at(start_day)
        self.band = np.clip(np.searchsorted(_AGE_EDGES, age0, side="right") - 1, 0, len(_AGE_WEIGHTS) - 1)
        self.sbanken = rng.random(n) < 0.2
        self.gender = rng.choice(4, size=n, p=[0.485, 0.485, 0.01, 0.02])  # 3 = unknown (null)

        # customer_since, closing
        joiner = rng.random(n) < _JOIN_SHARE
        tenure = rng.exponential(_TENURE_MEAN_DAYS, n)
        max_tenure = np.maximum(start_day - 1 - (self.birth + _DAYS_18Y), 0)
        since_old = start_day - 1 - np.floor(np.minimum(tenure, max_tenure)).astype(np.int64)
        since_new = start_day + np.floor(rng.random(n) * (last_day + 1 - start_day)).astype(np.int64)
        self.since = np.where(joiner, since_new, since_old)
        self.join_month = np.where(joiner, np.searchsorted(self.ms, self.since, side="right") - 1, -1)
        first_close = np.where(joiner, self.join_month + 2, 0)
        close_month = first_close + rng.geometric(_CHURN, n) - 1
        closed = close_month <= M - 1
        self.close_month = np.where(closed, close_month, 10 * M + 10)
        close_day = rng.integers(0, 27, n)
        self.closed_at = np.where(closed, self.ms[np.minimum(close_month, M)] + close_day, np.iinfo(np.int64).max // 4)
        self.is_closed = closed

        # contact details
        region_w = np.array([r[3] for r in _REGIONS])
        self.region = rng.choice(len(_REGIONS), size=n, p=region_w / region_w.sum())
        lo = np.array([r[1] for r in _REGIONS])[self.region]
        hi = np.array([r[2] for r in _REGIONS])[self.region]
        self.postal = lo + np.floor(rng.random(n) * (hi - lo + 1)).astype(np.int64)
        self.email_null = rng.random(n) < 0.05
        self.email_domain = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
        self.phone_null = rng.random(n) < 0.05
        self.phone_number = np.where(rng.random(n) < 0.85, 90_000_000, 40_000_000) + rng.integers(0, 10_000_000, n)
        self.phone_format = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])

        # traits
        young = age0 < 35
        self.tx_act = rng.gamma(5.0, 0.2, n)
        self.dig_act = rng.gamma(2.5, 0.4, n) * _piecewise(age0, [35, 55, 65], [1.3, 1.0, 0.8, 0.5])
        self.spender = rng.gamma(4.0, 0.25, n) * np.where(young, 1.3, 1.0)
        self.liquidity = rng.lognormal(0.0, 0.5, n)
        self.occupational_pension = rng.random(n) < 0.3

        # work and income
        self.employed = rng.random(n) < _EMPLOYED[self.band]
        self.retired = ~self.employed & (age0 >= 62)
        self.n_employers = max(60, n // 30)
        emp_sector = np.concatenate([
            np.arange(len(_NACE)),
            rng.choice(len(_NACE), size=self.n_employers - len(_NACE), p=_SECTOR_WEIGHTS / _SECTOR_WEIGHTS.sum()),
        ])
        self.employer_sector = emp_sector
        order = np.argsort(emp_sector, kind="stable")
        self.employers_by_sector = order
        self.sector_offsets = np.searchsorted(emp_sector[order], np.arange(len(_NACE) + 1))
        self.employer_word = rng.integers(0, len(_NAME_WORDS), self.n_employers)
        self.employer_suffix = rng.integers(0, len(_NAME_SUFFIXES), self.n_employers)
        self.sector = rng.choice(len(_NACE), size=n, p=_SECTOR_WEIGHTS / _SECTOR_WEIGHTS.sum())
        self.employer = self.pick_employer(rng, self.sector)
        self.income = (_MEDIAN_SALARY * np.exp(_INCOME_AGE[self.band] + 0.35 * rng.standard_normal(n))
                       * _SECTOR_INCOME[self.sector])
        self.pension_income = _PENSION_INCOME * rng.lognormal(0.0, 0.25, n)
        self.job_start = np.maximum(start_day - 1 - rng.integers(0, int(10 * _YEAR), n), self.birth + _DAYS_18Y)
        inc = self.income_rel(np.arange(n))
        self.wealth = rng.lognormal(0.0, 0.9, n) * np.clip(age0 / 45.0, 0.4, 1.6) * np.maximum(inc, 0.5) ** 0.6

        # household
        self.marital = _categorical(rng, _MARITAL_BY_BAND[self.band]).astype(np.int8)
        kids = rng.poisson(_KIDS_BY_BAND[self.band] * np.where(self.couple(np.arange(n)), 1.0, 0.5))
        self.hh = np.minimum(np.where(self.couple(np.arange(n)), 2, 1) + kids, 7)

        # latent states
        self.home = np.zeros(n, bool)
        self.car = np.zeros(n, bool)
        self.invest = np.zeros(n, bool)
        self.squeeze = np.zeros(n, bool)
        self.travel = np.zeros(n, bool)
        self.expecting = np.zeros(n, np.int8)
        self.new_parent = np.zeros(n, np.int8)
        self.job_recent = np.full(n, 99, np.int16)
        self.browse = {k: np.zeros(n, bool) for k in _BROWSE}

    def pick_employer(self, rng: np.random.Generator, sector: np.ndarray) -> np.ndarray:
        lo, hi = self.sector_offsets[sector], self.sector_offsets[sector + 1]
        return self.employers_by_sector[lo + np.floor(rng.random(len(sector)) * (hi - lo)).astype(np.int64)]

    # ------------------------------------------------------------ latent life events
    def transition(self, m: int, record: bool) -> None:
        """Advance the latent states, jobs and households into month m."""
        rng = self.rng("transition", m + _BURN_IN_MONTHS)
        n = self.n
        everyone = np.arange(n)
        day = self.ms[m] if m >= 0 else self.ms[0] + 31 * m
        age = self.age_at(day)
        inc = self.income_rel(everyone)
        couple = self.couple(everyone)
        u = rng.random((10, n))

        def step(state: np.ndarray, onset: np.ndarray, exit_p: float, uu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            new = np.where(state, uu >= exit_p, uu < onset)
            return new, new & ~state

        q_home = 0.006 * _piecewise(age, [25, 40, 55], [1.0, 2.0, 0.7, 0.15]) * np.where(couple, 1.4, 1.0) \
            * np.where(self.employed, inc ** 0.5, 0.3)
        q_car = 0.005 * np.where(self.hh >= 3, 1.3, 1.0) * _piecewise(age, [25, 65], [0.8, 1.2, 0.5]) \
            * np.where(self.sector_in("FH", everyone), 1.3, 1.0)
        q_invest = 0.004 * np.clip(self.wealth, 0.1, 10) ** 0.4 * inc ** 0.5 \
            * np.where(self.sector_in("JK", everyone), 1.8, 1.0) * _piecewise(age, [25, 65], [0.7, 1.0, 0.8])
        q_squeeze = 0.006 * np.where(age < 35, 1.5, 1.0) * np.where(self.employed, inc ** -0.5, 1.5)
        self.home, on_home = step(self.home, q_home, _EXIT["home"], u[0])
        self.car, on_car = step(self.car, q_car, _EXIT["car"], u[1])
        self.invest, on_invest = step(self.invest, q_invest, _EXIT["invest"], u[2])
        self.squeeze, on_squeeze = step(self.squeeze, q_squeeze, _EXIT["squeeze"], u[3])
        # The canary's state: constant onset and exit, independent of everything else.
        self.travel, _ = step(self.travel, np.full(n, _TRAVEL_ONSET), _EXIT["travel"], u[4])

        b = rng.random((len(_BROWSE), n))
        for k, (name, onset) in enumerate((("home", on_home), ("car", on_car), ("invest", on_invest),
                                           ("squeeze", on_squeeze))):
            self.browse[name] = np.where(onset, b[k] < _BROWSE[name], self.browse[name])

        # children: expecting for eight months, then a birth and six months as a new parent
        birth = self.expecting >= _EXPECTING_MONTHS
        self.new_parent = np.where(self.new_parent > 0, self.new_parent + 1, 0).astype(np.int8)
        self.new_parent[self.new_parent > _NEW_PARENT_MONTHS] = 0
        self.new_parent[birth] = 1
        self.hh = np.where(birth, np.minimum(self.hh + 1, 9), self.hh)
        q_child = np.where(couple & (age >= 24) & (age <= 42), 0.008,
                           np.where(~couple & (age >= 22) & (age <= 40), 0.0015, 0.0))
        onset_child = (self.expecting == 0) & (self.new_parent == 0) & ~birth & (u[5] < q_child)
        self.expecting = np.where(birth, 0, np.where(self.expecting > 0, self.expecting + 1, 0)).astype(np.int8)
        self.expecting[onset_child] = 1
        self.browse["expecting"] = np.where(onset_child, b[4] < _BROWSE["expecting"], self.browse["expecting"])

        # partners
        marry = np.isin(self.marital, (0, 3, 4)) & (age >= 20) & (age <= 50) & (u[6] < _MARRY)
        self.marital = np.where(marry, 1, self.marital).astype(np.int8)
        self.hh = np.where(marry, np.minimum(self.hh + 1, 9), self.hh)

        # work: job changes, hires, retirements
        change = self.employed & (age < 67) & (u[7] < _JOB_CHANGE)
        hire = ~self.employed & ~self.retired & (age >= 20) & (age <= 62) & (u[8] < _HIRE)
        retire = self.employed & (age >= 67) & (u[9] < _RETIRE)
        moved = change | hire
        keep_sector = rng.random(n) < 0.6
        new_sector = np.where(keep_sector & change, self.sector,
                              rng.choice(len(_NACE), size=n, p=_SECTOR_WEIGHTS / _SECTOR_WEIGHTS.sum()))
        new_employer = self.pick_employer(rng, new_sector)
        raise_factor = rng.lognormal(0.06, 0.10, n)
        start_income = _MEDIAN_SALARY * np.exp(-0.15 + 0.3 * rng.standard_normal(n)) * _SECTOR_INCOME[new_sector]
        self.income = np.where(change, self.income * raise_factor, np.where(hire, start_income, self.income))
        self.sector = np.where(moved, new_sector, self.sector)
        self.employer = np.where(moved, new_employer, self.employer)
        self.employed = (self.employed | hire) & ~retire
        self.retired = self.retired | retire
        self.job_recent = np.where(moved, 0, np.minimum(self.job_recent + 1, 99)).astype(np.int16)

        if not record:
            return
        # Rows only for people who were already customers before this month (joiners get theirs at joining).
        idx, lo, hi = self.window(m)
        known = self.since[idx] < self.ms[m]
        idx, lo, hi = idx[known], lo[known], hi[known]
        r = self.rng("records", m)
        job = moved[idx]
        if job.any():
            j = idx[job]
            self.emp_rows.add(c=j, day=lo[job] + np.floor(r.random(job.sum()) * (hi[job] - lo[job])).astype(np.int64),
                              employer=self.employer[j])
        dem = (birth | marry)[idx]
        if dem.any():
            d = idx[dem]
            self.add_demographics(r, d, lo[dem] + np.floor(r.random(dem.sum()) * (hi[dem] - lo[dem])).astype(np.int64))

    def add_demographics(self, rng: np.random.Generator, idx: np.ndarray, day: np.ndarray) -> None:
        k = len(idx)
        self.dem_rows.add(c=idx, day=day, marital=self.marital[idx], hh=self.hh[idx], region=self.region[idx],
                          marital_null=rng.random(k) < 0.03, hh_null=rng.random(k) < 0.03)

    def initial_records(self) -> None:
        """Demographics and employment rows of the customers who exist before the start."""
        rng = self.rng("initial_records")
        old = np.flatnonzero(self.join_month < 0)
        self.add_demographics(rng, old, self.since[old])
        e = old[self.employed[old]]
        self.emp_rows.add(c=e, day=np.maximum(self.since[e], self.job_start[e]), employer=self.employer[e])

    def join_records(self, m: int) -> None:
        new = np.flatnonzero(self.join_month == m)
        if not len(new):
            return
        rng = self.rng("join_records", m)
        self.add_demographics(rng, new, self.since[new])
        e = new[self.employed[new]]
        self.emp_rows.add(c=e, day=self.since[e], employer=self.employer[e])
        # their consents and reservations, set on the first day
        self.initial_consent_events(rng, new, self.since[new], self.since[new] + 1, explicit_refusal=False)

    def record_latent(self, m: int) -> None:
        a = self.active_at(m)
        for name, state in (("home_buying", self.home), ("car_buying", self.car), ("investing", self.invest),
                            ("cash_squeeze", self.squeeze), ("expecting_child", self.expecting > 0),
                            ("new_parent", self.new_parent > 0), ("job_change", self.job_recent == 0),
                            ("travel_planning", self.travel)):
            c = a[state[a]]
            self.truth_ev.add(c=c, m=np.full(len(c), m, np.int16), ev=np.full(len(c), _EVENTS.index(name), np.int8))

    # ------------------------------------------------------------ agreements
    def initial_portfolio(self) -> None:
        """Products held at the start (or brought at joining) and a few agreements that ended before."""
        rng = self.rng("portfolio")
        n, P = self.n, self.P
        everyone = np.arange(n)
        start_day = self.ms[0]
        ref_day = np.where(self.join_month >= 0, self.since, start_day)
        age = (ref_day - self.birth) / _YEAR
        inc = self.income_rel(everyone)
        couple = self.couple(everyone)
        band = self.band
        probs = {
            "mortgage": np.array([0.08, 0.35, 0.55, 0.55, 0.45, 0.25, 0.08])[band] * np.where(couple, 1.2, 1.0)
            * np.where(self.employed, np.minimum(inc, 1.5) ** 0.5, 0.5),
            "car_loan": np.array([0.06, 0.14, 0.16, 0.14, 0.10, 0.05, 0.03])[band],
            "consumer_loan": np.full(n, 0.06),
            "credit_card": 0.35 * self.spender ** 0.5,
            "savings_account": np.full(n, 0.55),
            "bsu": np.full(n, 0.35),
            "mutual_funds": 0.2 * self.wealth ** 0.3,
            "pension_savings": 0.12 * np.where(age >= 40, 1.5, 1.0),
            "car_insurance": np.full(n, 0.35),
        }
        self.holding = np.zeros((n, P), dtype=bool)
        u = rng.random((n, P))
        # joiners bring fewer products; eligibility applies at the start (or at joining)
        scale = np.where(self.join_month >= 0, 0.6, 1.0)
        elig = self.eligible_matrix(_whole_years(self.birth_ymd, ref_day))
        order = sorted(range(P), key=lambda j: self.products[j] not in ("mortgage", "car_loan"))
        for j in order:
            p = self.products[j]
            if p == "home_insurance":
                pr = 0.2 + 0.5 * self.held("mortgage", everyone)
            elif p == "life_insurance":
                pr = 0.1 + 0.15 * self.held("mortgage", everyone)
            elif p == self.canary or p == "travel_insurance":
                pr = np.full(n, 0.2)  # independent of everything: the canary stays clean
            else:
                pr = probs.get(p, np.full(n, 0.1))
            self.holding[:, j] = (u[:, j] < np.clip(pr * scale, 0, 0.95)) & elig[:, j]

        # start dates: any day from max(customer_since, 18th birthday) before the start; joiners on joining
        lo = np.maximum(self.since, self.birth + _DAYS_18Y)
        span = np.maximum(start_day - lo, 1)
        start = lo[:, None] + np.floor(rng.random((n, P)) * span[:, None]).astype(np.int64)
        start = np.minimum(start, start_day - 1)
        start = np.where((self.join_month >= 0)[:, None], self.since[:, None], start)
        hc, hp = np.nonzero(self.holding)
        self.start_month = np.full((n, P), -9999, dtype=np.int32)
        self.start_month[hc, hp] = self.month_index(start[hc, hp])
        self.current_agreement = np.full((n, P), -1, dtype=np.int64)
        self.current_agreement[hc, hp] = self.new_agreements(hc, hp, start[hc, hp])
        self.start_day_of = np.full((n, P), -1, dtype=np.int64)
        self.start_day_of[hc, hp] = start[hc, hp]
        self.held_before = self.holding.copy()
        self.loan_principal = {p: med * rng.lognormal(0.0, sig, n) * np.clip(inc, 0.5, 3) ** 0.7
                               for p, (med, sig, _) in _LOAN_PRODUCTS.items()}

        # agreements that ended before the start (history only; independent of every state)
        old = np.flatnonzero((self.join_month < 0) & (self.since < start_day - 730) & (rng.random(n) < _HISTORY_SHARE))
        prod = rng.integers(0, P, len(old))
        ok = self.brand_ok[prod, self.sbanken[old].astype(int)]
        old, prod = old[ok], prod[ok]
        s = self.since[old] + np.floor(rng.random(len(old)) * (start_day - 400 - self.since[old])).astype(np.int64)
        age_then = _whole_years(tuple(v[old] for v in self.birth_ymd), s)
        ok = (age_then >= self.min_age[prod]) & (age_then <= self.max_age[prod])
        old, prod, s = old[ok], prod[ok], s[ok]
        e = s + 1 + np.floor(rng.random(len(old)) * (start_day - 2 - s)).astype(np.int64)
        ids = self.new_agreements(old, prod, s)
        self.agr_end.add(a=ids, day=e)

    def eligible_matrix(self, whole_age: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        brand = self.sbanken.astype(int) if idx is None else self.sbanken[idx].astype(int)
        a = whole_age[:, None]
        return (a >= self.min_age[None, :]) & (a <= self.max_age[None, :]) & self.brand_ok.T[brand]

    def month_index(self, days: np.ndarray) -> np.ndarray:
        months = np.asarray(days, dtype=np.int64).astype("datetime64[D]").astype("datetime64[M]")
        return (months - np.datetime64(self.start, "M")).astype(np.int64)

    def new_agreements(self, c: np.ndarray, j: np.ndarray, day: np.ndarray) -> np.ndarray:
        ids = self.n_agreements + np.arange(len(c), dtype=np.int64)
        self.n_agreements += len(c)
        self.agr.add(c=c, p=j, day=day)
        return ids

    def starts_and_ends(self, m: int, hazard: np.ndarray, active: np.ndarray) -> None:
        """Draw the starts and ends of month m + 1 from the hazards at the end of month m."""
        rng = self.rng("agreements", m)
        lo, hi = self.ms[m + 1], self.ms[m + 2]
        k = len(active)
        held = self.holding[active]
        start = (rng.random((k, self.P)) < hazard) & ~held
        day = lo + np.floor(rng.random((k, self.P)) * (hi - lo)).astype(np.int64)
        start &= day < self.closed_at[active][:, None]
        # ends: monthly rates; the canary only at yearly anniversaries
        rate = np.array([_END_RATE.get(p, _END_RATE_DEFAULT) for p in self.products])
        end = held & (rng.random((k, self.P)) < rate[None, :])
        if self.canary is not None:
            jc = self.pidx[self.canary]
            months_held = (m + 1) - self.start_month[active, jc]
            anniversary = (months_held >= 12) & (months_held % 12 == 0)
            end[:, jc] = held[:, jc] & anniversary & (rng.random(k) < _CANARY_ANNIVERSARY_END)
        end_day = lo + np.floor(rng.random((k, self.P)) * (hi - lo)).astype(np.int64)
        ec, ej = np.nonzero(end)
        self.agr_end.add(a=self.current_agreement[active[ec], ej], day=end_day[ec, ej])
        self.holding[active[ec], ej] = False
        self.current_agreement[active[ec], ej] = -1
        sc, sj = np.nonzero(start)
        ids = self.new_agreements(active[sc], sj, day[sc, sj])
        self.holding[active[sc], sj] = True
        self.current_agreement[active[sc], sj] = ids
        self.start_month[active[sc], sj] = m + 1
        self.start_day_of[active[sc], sj] = day[sc, sj]

    # ------------------------------------------------------------ hazards (the truth)
    def hazards(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        a = self.active_at(m)
        t = self.ms[m + 1] - 1
        age = self.age_at(t)[a]
        inc = self.income_rel(a)
        couple = self.couple(a)
        emp = self.employed[a]
        home, car, invest, squeeze = self.home[a], self.car[a], self.invest[a], self.squeeze[a]
        expecting, parent = self.expecting[a] > 0, self.new_parent[a] > 0
        job = self.job_recent[a] <= 2
        mortgage_recent = self.started_within("mortgage", a, m, 3)
        mortgage_held = self.held("mortgage", a)
        recipes = {
            "mortgage": lambda: 0.002 * _piecewise(age, [25, 45, 60], [0.6, 1.5, 0.8, 0.3])
            * np.where(emp, inc ** 0.5, 0.4) * np.where(couple, 1.3, 1.0) * np.where(home, 80.0, 1.0),
            "car_loan": lambda: 0.003 * np.where(self.hh[a] >= 3, 1.3, 1.0)
            * _piecewise(age, [25, 65, 75], [0.8, 1.2, 0.6, 0.3]) * np.where(self.sector_in("FH", a), 1.4, 1.0)
            * np.where(car, 40.0, 1.0),
            "consumer_loan": lambda: 0.003 * np.where(age < 35, 1.5, 1.0) * inc ** -0.5 * np.where(squeeze, 40.0, 1.0),
            "credit_card": lambda: 0.009 * self.spender[a] ** 1.5 * _piecewise(age, [30, 60], [1.5, 1.0, 0.5])
            * inc ** 0.3 * np.where(squeeze, 2.0, 1.0),
            "savings_account": lambda: 0.01 * self.liquidity[a] ** 0.6 * np.where(job, 4.0, 1.0)
            * np.where(parent, 3.0, 1.0) * np.where(age < 30, 1.4, 1.0),
            "bsu": lambda: 0.012 * np.where(emp, 1.8, 0.6) * np.where(home, 3.0, 1.0) * np.where(age < 25, 1.3, 1.0),
            "mutual_funds": lambda: 0.004 * np.clip(self.wealth[a], 0.1, 10) ** 0.4 * inc ** 0.5
            * np.where(self.sector_in("JK", a), 1.8, 1.0) * np.where(invest, 40.0, 1.0),
            "pension_savings": lambda: 0.004 * _piecewise(age, [30, 40], [0.5, 1.0, 2.0]) * inc ** 0.7
            * np.where(self.sector_in("OPQ", a), 0.6, 1.0) * np.where(job, 4.0, 1.0) * np.where(invest, 5.0, 1.0),
            "home_insurance": lambda: 0.004 * np.where(mortgage_recent, 40.0, np.where(mortgage_held, 2.0, 1.0))
            * np.where(home, 4.0, 1.0),
            "car_insurance": lambda: 0.004 * np.where(self.started_within("car_loan", a, m, 3), 30.0, 1.0)
            * np.where(car, 15.0, 1.0),
            "life_insurance": lambda: 0.004 * np.where(expecting, 6.0, 1.0) * np.where(parent, 10.0, 1.0)
            * np.where(self.started_within("mortgage", a, m, 6), 4.0, np.where(mortgage_held, 1.5, 1.0))
            * np.where(couple, 1.3, 1.0) * _piecewise(age, [30, 50], [0.7, 1.5, 0.8]),
        }
        hazard = np.empty((len(a), self.P))
        for j, p in enumerate(self.products):
            if p == self.canary or p == "travel_insurance":
                # The canary reads the travel-planning state and nothing else.
                h = _CANARY_BASE + _CANARY_STATE * self.travel[a]
            else:
                h = recipes[p]() if p in recipes else np.full(len(a), 0.005)
            hazard[:, j] = np.minimum(h, _HAZARD_CAP)
        whole = _whole_years((self.birth_ymd[0][a], self.birth_ymd[1][a], self.birth_ymd[2][a]), t)
        hazard *= self.eligible_matrix(whole, a)
        self.truth_h.add(c=a, m=np.full(len(a), m, np.int16), h=hazard.ravel())
        return hazard, a

    # ------------------------------------------------------------ transactions
    def transactions(self, m: int) -> None:
        rng = self.rng("transactions", m)
        w, lo, hi = self.window(m)
        k = len(w)
        frac = (hi - lo) / (self.ms[m + 1] - self.ms[m])
        lam = self.tpm * self.tx_act[w] * frac
        cats = MERCHANT_CATEGORIES
        c = self.cat
        weights = np.tile(np.array([_CARD_WEIGHTS.get(x, 0.05) for x in cats]), (k, 1))
        for x in ("restaurants", "electronics"):
            if x in c:
                weights[:, c[x]] *= self.spender[w]
        weights /= weights.sum(axis=1, keepdims=True)
        base_rate = weights * (lam * _CARD_SHARE)[:, None]
        extra = np.zeros((k, len(cats)))
        expecting, parent = self.expecting[w] > 0, self.new_parent[w] > 0
        for x, add in (("housing", 1.5 * self.home[w]), ("car", 2.0 * self.car[w]), ("travel", 2.5 * self.travel[w]),
                       ("electronics", 1.0 * self.squeeze[w]), ("restaurants", 1.0 * self.squeeze[w]),
                       ("health", 1.2 * expecting + 0.6 * parent), ("groceries", 2.0 * parent)):
            if x in c:
                extra[:, c[x]] += add
        extra *= frac[:, None]

        blocks: list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]] = []  # owner, kind, cat, amount, time

        def add_block(owner: np.ndarray, kind: str, cat: np.ndarray, amount: np.ndarray, time: np.ndarray | None = None):
            if time is None:
                time = _seconds_in(rng, lo[owner], hi[owner])
            blocks.append((owner, TRANSACTION_KINDS.index(kind), cat, amount, time))

        cell_owner = np.repeat(np.arange(k), len(cats))
        cell_cat = np.tile(np.arange(len(cats)), k)
        for rates, amounts in ((base_rate, _CARD_AMOUNT), (extra, _EXTRA_AMOUNT)):
            counts = rng.poisson(rates).ravel()
            owner = np.repeat(cell_owner, counts)
            cat = np.repeat(cell_cat, counts)
            med = np.array([amounts.get(x, (300, 1.0))[0] for x in cats], dtype=float)[cat]
            sig = np.array([amounts.get(x, (300, 1.0))[1] for x in cats], dtype=float)[cat]
            amount = -_lognormal(rng, med, sig, len(cat))
            cat = np.where(rng.random(len(cat)) < _MERCHANT_NULL, -1, cat)
            add_block(owner, "card", cat, amount)
        # direct debits (half housing, half other) and the mortgage instalment
        n_dd = rng.poisson(lam * _DD_SHARE)
        owner = np.repeat(np.arange(k), n_dd)
        cat = np.where(rng.random(len(owner)) < 0.5, c.get("housing", -1), c.get("other", -1))
        add_block(owner, "direct_debit", cat, -_lognormal(rng, 1200.0, 0.6, len(owner)))
        mort = np.flatnonzero(self.held("mortgage", w))
        due = self.ms[m] + 14
        mort = mort[(lo[mort] <= due) & (due < hi[mort])]
        due = np.full(len(mort), due)
        add_block(mort, "direct_debit", np.full(len(mort), c.get("housing", -1)),
                  -np.round(self.loan_principal["mortgage"][w[mort]] * 0.006, 0),
                  _seconds_in(rng, due, due + 1))
        # transfers in and out, savings transfers of investors, cash
        n_tr = rng.poisson(lam * _TRANSFER_SHARE)
        owner = np.repeat(np.arange(k), n_tr)
        sign = np.where(rng.random(len(owner)) < 0.4, 1.0, -1.0)
        add_block(owner, "transfer", np.full(len(owner), -1), sign * _lognormal(rng, 2000.0, 1.2, len(owner)))
        n_inv = rng.poisson(1.0 * self.invest[w] * frac)
        owner = np.repeat(np.arange(k), n_inv)
        add_block(owner, "transfer", np.full(len(owner), -1), -_lognormal(rng, 10_000.0, 0.6, len(owner)))
        n_atm = rng.poisson(lam * _ATM_SHARE)
        owner = np.repeat(np.arange(k), n_atm)
        add_block(owner, "atm", np.full(len(owner), -1), -100.0 * np.ceil(_lognormal(rng, 8.0, 0.5, len(owner))))
        # salary (employed) and public pension (retired) on the 20th
        pay_day = self.ms[m] + _SALARY_DAY - 1
        in_window = (lo <= pay_day) & (pay_day < hi)
        for mask, pay_kind, pay in ((self.employed[w], "salary", self.income[w]),
                                    (self.retired[w], "transfer", self.pension_income[w])):
            owner = np.flatnonzero(mask & in_window)
            add_block(owner, pay_kind, np.full(len(owner), -1), pay[owner] * _lognormal(rng, 1.0, 0.02, len(owner)),
                      pay_day * _S_PER_DAY * _US_PER_S + rng.integers(0, 6 * 3600, len(owner)) * _US_PER_S)

        owner = np.concatenate([b[0] for b in blocks])
        kind = np.concatenate([np.full(len(b[0]), b[1], np.int8) for b in blocks])
        cat = np.concatenate([b[2] for b in blocks]).astype(np.int8)
        amount = np.round(np.concatenate([b[3] for b in blocks]), 2)
        time = np.concatenate([b[4] for b in blocks])
        order = np.lexsort((time, owner))
        self.tx.add(c=w[owner[order]].astype(np.int32), t=time[order], amount=amount[order], kind=kind[order],
                    cat=cat[order])

    # ------------------------------------------------------------ digital behaviour
    def digital(self, m: int) -> None:
        rng = self.rng("digital", m)
        w, lo, hi = self.window(m)
        k = len(w)
        frac = (hi - lo) / (self.ms[m + 1] - self.ms[m])
        act = self.dig_act[w] * frac
        T = len(TOPICS)
        tp = self.topic
        views = np.full((k, T), _TOPIC_VIEWS) * act[:, None]
        interest = np.zeros((k, T))
        expecting, parent = self.expecting[w] > 0, self.new_parent[w] > 0

        def browsing(state: np.ndarray, flag: str) -> np.ndarray:
            return state * np.where(self.browse[flag][w], 1.0, 0.2)

        for name, rate in (("mortgage", 2.5 * browsing(self.home[w], "home")),
                           ("savings", 0.4 * browsing(self.home[w], "home") + 0.3 * browsing(self.invest[w], "invest")),
                           ("car_loan", 1.5 * browsing(self.car[w], "car")),
                           ("funds", 2.0 * browsing(self.invest[w], "invest")),
                           ("pension", 0.6 * browsing(self.invest[w], "invest")),
                           ("consumer_loan", 1.5 * browsing(self.squeeze[w], "squeeze")),
                           ("insurance", 0.7 * browsing(expecting, "expecting") + 0.3 * parent),
                           ("credit_card", 0.15 * self.spender[w])):
            if name in tp:
                views[:, tp[name]] += rate * frac
        for name, state in (("mortgage", self.home[w]), ("car_loan", self.car[w]), ("funds", self.invest[w]),
                            ("pension", self.invest[w]), ("consumer_loan", self.squeeze[w]),
                            ("insurance", expecting | parent)):
            if name in tp:
                interest[:, tp[name]] = state
        # travel views, banners and clicks follow the baseline only: nothing outside transactions
        # may reveal the canary's state.
        cell_owner = np.repeat(np.arange(k), T)
        cell_topic = np.tile(np.arange(T), k)
        n_view = rng.poisson(views).ravel()
        impressions = rng.poisson(np.full((k, T), _IMPRESSIONS) * act[:, None])
        clicks = rng.binomial(impressions, _CLICK_BASE + _CLICK_INTEREST * interest).ravel()
        impressions = impressions.ravel()
        n_login = rng.poisson(_LOGINS * act)
        n_null = rng.poisson(_NULL_TOPIC_VIEWS * act)
        n_app = rng.poisson(2.0 * self.invest[w] * frac)
        owner = np.concatenate([np.repeat(np.arange(k), n_login), np.repeat(np.arange(k), n_app),
                                np.repeat(cell_owner, n_view), np.repeat(np.arange(k), n_null),
                                np.repeat(cell_owner, impressions), np.repeat(cell_owner, clicks)])
        types = DIGITAL_EVENT_TYPES
        etype = np.concatenate([np.full(n_login.sum(), types.index("login")), np.full(n_app.sum(), types.index("login")),
                                np.full(n_view.sum() + n_null.sum(), types.index("page_view")),
                                np.full(impressions.sum(), types.index("banner_impression")),
                                np.full(clicks.sum(), types.index("banner_click"))]).astype(np.int8)
        topic = np.concatenate([np.full(n_login.sum() + n_app.sum(), -1), np.repeat(cell_topic, n_view),
                                np.full(n_null.sum(), -1), np.repeat(cell_topic, impressions),
                                np.repeat(cell_topic, clicks)]).astype(np.int8)
        ch = DIGITAL_CHANNELS
        probs = np.zeros((2, len(ch)))
        for row, spec in enumerate((_CHANNEL_DNB, _CHANNEL_SBANKEN)):
            for name, p in spec.items():
                probs[row, ch.index(name)] = p
        sb = self.sbanken[w[owner]].astype(int)
        channel = _categorical(rng, probs[sb]).astype(np.int8)
        app_rows = slice(n_login.sum(), n_login.sum() + n_app.sum())
        channel[app_rows] = np.where(sb[app_rows] == 1, ch.index("sbanken_app"), ch.index("savings_app"))
        time = _seconds_in(rng, lo[owner], hi[owner])
        order = np.lexsort((time, owner))
        self.dig.add(c=w[owner[order]].astype(np.int32), t=time[order], ch=channel[order], et=etype[order],
                     topic=topic[order])

    # ------------------------------------------------------------ contacts with the bank
    def contacts(self, m: int) -> None:
        rng = self.rng("contacts", m)
        w, lo, hi = self.window(m)
        k = len(w)
        frac = (hi - lo) / (self.ms[m + 1] - self.ms[m])
        T = len(CONTACT_TOPICS)
        tw = np.array([_CONTACT_TOPIC_WEIGHTS.get(t, 0.05) for t in CONTACT_TOPICS])
        rates = np.tile(_CONTACT_BASE * tw / tw.sum(), (k, 1))
        ct = {t: i for i, t in enumerate(CONTACT_TOPICS)}
        for name, rate in (("mortgage", 0.4 * self.home[w]), ("savings", 0.2 * self.invest[w]),
                           ("insurance_change", 0.06 * ((self.expecting[w] > 0) | (self.new_parent[w] > 0))),
                           ("interest_rate", 0.03 * self.held("mortgage", w)), ("card", 0.02 * self.held("credit_card", w))):
            if name in ct:
                rates[:, ct[name]] += rate
        counts = rng.poisson(rates * frac[:, None]).ravel()
        owner = np.repeat(np.repeat(np.arange(k), T), counts)
        topic = np.repeat(np.tile(np.arange(T), k), counts).astype(np.int8)
        old = (self.age_at(self.ms[m])[w[owner]] >= 65).astype(int)
        channel = _categorical(rng, _CONTACT_CHANNEL[old]).astype(np.int8)
        time = _seconds_in(rng, lo[owner], hi[owner])
        order = np.lexsort((time, owner))
        self.con.add(c=w[owner[order]].astype(np.int32), t=time[order], ch=channel[order], topic=topic[order])

    # ------------------------------------------------------------ balances at the month end
    def balances(self, m: int) -> None:
        rng = self.rng("balances", m)
        a = self.active_at(m)
        k = len(a)
        t = self.ms[m + 1] - 1
        months_held = {p: m - self.start_month[a, j] for p, j in self.pidx.items()}
        rows: list[tuple[np.ndarray, str, str, np.ndarray]] = []
        base = 0.8 * np.where(self.employed[a], self.income[a], np.where(self.retired[a], self.pension_income[a], 15_000.0))
        current = base * self.liquidity[a] * _lognormal(rng, 1.0, 0.4, k) * np.where(self.squeeze[a], -0.15, 1.0)
        rows.append((np.arange(k), "current", "bank", current))
        growth = 1.0 + 0.004 * (m + 12)
        for product, account, level in (
            ("savings_account", "savings", lambda i: 60_000 * self.wealth[a[i]] * growth
             * _lognormal(rng, 1.0, 0.15, len(i)) * np.where(self.home[a[i]], 1.3, 1.0)),
            ("bsu", "bsu", lambda i: np.minimum(300_000.0, 27_500 * (months_held["bsu"][i] + 1) / 12
                                                * _lognormal(rng, 1.0, 0.1, len(i)))),
            ("mutual_funds", "funds", lambda i: 100_000 * self.wealth[a[i]] * self.market[m]
             * np.minimum(1.0, (months_held["mutual_funds"][i] + 1) / 12) * _lognormal(rng, 1.0, 0.1, len(i))),
            ("credit_card", "credit_card", lambda i: -4_000 * self.spender[a[i]] * _lognormal(rng, 1.0, 0.6, len(i))
             * (rng.random(len(i)) < 0.7)),
        ):
            if product in self.pidx:
                i = np.flatnonzero(self.holding[a, self.pidx[product]])
                rows.append((i, account, self.catalogue.products[product].company, level(i)))
        # pension: private pension savings (its company), else an occupational pension with the group insurer
        private = self.held("pension_savings", a)
        i = np.flatnonzero(private)
        if len(i):
            rows.append((i, "pension", self.catalogue.products["pension_savings"].company,
                         1_500.0 * (months_held["pension_savings"][i] + 1) * self.market[m]
                         * _lognormal(rng, 1.0, 0.2, len(i))))
        age = self.age_at(t)[a]
        i = np.flatnonzero(~private & self.occupational_pension[a] & self.employed[a])
        rows.append((i, "pension", "insurance", 400_000.0 * (self.income[a[i]] / _MEDIAN_SALARY)
                     * np.clip((age[i] - 25) / 40, 0.05, 1.0) * _lognormal(rng, 1.0, 0.1, len(i))))
        # loans: one row summing the outstanding principal of every loan held
        loan = np.zeros(k)
        has_loan = np.zeros(k, dtype=bool)
        for product, (_, _, term) in _LOAN_PRODUCTS.items():
            if product in self.pidx:
                h = self.holding[a, self.pidx[product]]
                left = np.clip(1.0 - months_held[product] / term, 0.05, 1.0)
                loan -= np.where(h, self.loan_principal[product][a] * left, 0.0)
                has_loan |= h
        i = np.flatnonzero(has_loan)
        rows.append((i, "loan", "bank", loan[i]))
        idx = np.concatenate([r[0] for r in rows])
        acct = np.concatenate([np.full(len(r[0]), ACCOUNT_TYPES.index(r[1]), np.int8) for r in rows])
        comp = np.concatenate([np.full(len(r[0]), COMPANIES.index(r[2]), np.int8) for r in rows])
        value = np.round(np.concatenate([r[3] for r in rows]), 2)
        order = np.lexsort((acct, idx))
        self.bal.add(c=a[idx[order]].astype(np.int32), m=np.full(len(idx), m, np.int16), acct=acct[order],
                     comp=comp[order], value=value[order])

    # ------------------------------------------------------------ consents and reservations
    def initial_consents(self) -> None:
        n = self.n
        self.consent_state = np.zeros((n, len(self.consents)), dtype=bool)
        self.reservation_state = np.zeros((n, len(self.reservations)), dtype=bool)
        old = np.flatnonzero(self.join_month < 0)
        lo = np.maximum(self.since[old], self.ms[0] - _CONSENT_HISTORY_DAYS)
        self.initial_consent_events(self.rng("initial_consents"), old, lo, np.full(len(old), self.ms[0]),
                                    explicit_refusal=True)

    def stationary(self, purpose: str, rates: dict, default: tuple[float, float]) -> float:
        g, w = rates.get(purpose, default)
        return g / (g + w)

    def consent_rates(self, idx: np.ndarray, purpose: str) -> tuple[np.ndarray, float]:
        g, w = _CONSENT_RATES.get(purpose, _CONSENT_DEFAULT)
        if purpose == self.personalised_consent:
            # digital users consent a little more often
            g = g * (0.8 + 0.2 * np.minimum(self.dig_act[idx], 2.0))
        return np.broadcast_to(np.asarray(g, dtype=float), idx.shape), w

    def initial_consent_events(self, rng: np.random.Generator, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                               explicit_refusal: bool) -> None:
        """The state at start (or at joining) of each purpose and scope, as one event in [lo, hi)."""
        for j, purpose in enumerate(self.consents):
            g, w = self.consent_rates(idx, purpose)
            on = rng.random(len(idx)) < g / (g + w)
            self.consent_state[idx, j] = on
            refuse = ~on & (rng.random(len(idx)) < (_EXPLICIT_REFUSAL if explicit_refusal else 0.0))
            sel = on | refuse
            self.cev.add(c=idx[sel], t=_seconds_in(rng, lo[sel], hi[sel]), p=np.full(sel.sum(), j, np.int8),
                         v=on[sel], src=rng.choice(3, size=sel.sum(), p=_SOURCE_WEIGHTS).astype(np.int8))
        for j, scope in enumerate(self.reservations):
            on = rng.random(len(idx)) < self.stationary(scope, _RESERVATION_RATES, _RESERVATION_DEFAULT)
            self.reservation_state[idx, j] = on
            self.rev.add(c=idx[on], t=_seconds_in(rng, lo[on], hi[on]), p=np.full(on.sum(), j, np.int8),
                         v=np.ones(on.sum(), bool))

    def consent_events(self, m: int) -> None:
        rng = self.rng("consents", m)
        w, lo, hi = self.window(m)
        keep = self.since[w] < self.ms[m]  # joiners of this month already have their first events
        w, lo, hi = w[keep], lo[keep], hi[keep]
        for j, purpose in enumerate(self.consents):
            g, wd = self.consent_rates(w, purpose)
            state = self.consent_state[w, j]
            u = rng.random(len(w))
            flip = np.where(state, u < wd, u < g)
            self.consent_state[w[flip], j] = ~state[flip]
            self.cev.add(c=w[flip], t=_seconds_in(rng, lo[flip], hi[flip]), p=np.full(flip.sum(), j, np.int8),
                         v=~state[flip], src=rng.choice(3, size=flip.sum(), p=_SOURCE_WEIGHTS).astype(np.int8))
            if purpose == self.personalised_consent:
                # a few change their mind twice within the month: grant, then withdraw
                twice = ~state & ~flip & (rng.random(len(w)) < _DOUBLE_FLIP) & (hi - lo >= 1)
                c, l, h = w[twice], lo[twice], hi[twice]
                t1 = _seconds_in(rng, l, h)
                end = h * _S_PER_DAY * _US_PER_S
                gap = np.maximum(end - t1 - _US_PER_S, _US_PER_S)
                t2 = np.minimum(t1 + _US_PER_S + (np.floor(rng.random(len(c)) * gap / _US_PER_S)).astype(np.int64)
                                * _US_PER_S, end - _US_PER_S)
                ok = t2 > t1
                c, t1, t2 = c[ok], t1[ok], t2[ok]
                src = rng.choice(3, size=2 * len(c), p=_SOURCE_WEIGHTS).astype(np.int8)
                self.cev.add(c=np.concatenate([c, c]), t=np.concatenate([t1, t2]), p=np.full(2 * len(c), j, np.int8),
                             v=np.concatenate([np.ones(len(c), bool), np.zeros(len(c), bool)]), src=src)
        for j, scope in enumerate(self.reservations):
            place, lift = _RESERVATION_RATES.get(scope, _RESERVATION_DEFAULT)
            state = self.reservation_state[w, j]
            u = rng.random(len(w))
            flip = np.where(state, u < lift, u < place)
            self.reservation_state[w[flip], j] = ~state[flip]
            self.rev.add(c=w[flip], t=_seconds_in(rng, lo[flip], hi[flip]), p=np.full(flip.sum(), j, np.int8),
                         v=~state[flip])

    # ------------------------------------------------------------ campaigns
    def campaign(self, m: int, prev_consent: np.ndarray, prev_reservation: np.ndarray) -> None:
        """One campaign in month m to customers the policy lets us contact in its channel all month."""
        number = m // _CAMPAIGN_EVERY
        product = self.products[number % self.P]
        j = self.pidx[product]
        channel = CAMPAIGN_CHANNELS[number % len(CAMPAIGN_CHANNELS)]
        rng = self.rng("campaign", m)
        # active all month: a customer at both month ends
        a = np.flatnonzero((self.since <= self.ms[m] - 1) & (self.close_month > m))
        ok = ~self.held_before[a, j]
        whole = _whole_years((self.birth_ymd[0][a], self.birth_ymd[1][a], self.birth_ymd[2][a]), self.ms[m] - 1)
        ok &= self.eligible_matrix(whole, a)[:, j]
        r_index = {r: i for i, r in enumerate(self.reservations)}
        c_index = {c: i for i, c in enumerate(self.consents)}
        blocked = list(self.objections)
        rule = self.policy.channels.get(channel)
        if rule is not None and rule.reservable_as:
            blocked += [rule.reservable_as, self.policy.all_channels_reservation]
        for scope in blocked:
            if scope in r_index:
                ok &= ~prev_reservation[a, r_index[scope]] & ~self.reservation_state[a, r_index[scope]]
        if rule is not None and rule.needs_consent_for_unheld_product in c_index:
            ci = c_index[rule.needs_consent_for_unheld_product]
            ok &= prev_consent[a, ci] & self.consent_state[a, ci]
        sent_day = self.ms[m] + 2
        started_before = (self.start_month[a, j] == m) & (self.start_day_of[a, j] <= sent_day)
        ok &= ~started_before
        target = a[ok & (rng.random(len(a)) < _CAMPAIGN_SHARE)]
        sent = (sent_day * _S_PER_DAY + 8 * 3600 + rng.integers(0, 4 * 3600, len(target))) * _US_PER_S
        self.camp.add(c=target, m=np.full(len(target), m, np.int16), p=np.full(len(target), j, np.int16),
                      ch=np.full(len(target), CAMPAIGN_CHANNELS.index(channel), np.int8), t=sent,
                      u=rng.random(len(target)), delay=rng.exponential(20 * 3600, len(target)))

    # ------------------------------------------------------------ assembly
    @cached_property
    def agreement_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        c = self.agr.get("c", np.int64)
        p = self.agr.get("p", np.int64)
        s = self.agr.get("day", np.int64)
        end = np.full(len(c), -1, dtype=np.int64)
        end[self.agr_end.get("a", np.int64)] = self.agr_end.get("day", np.int64)
        # a leaving customer's agreements end on closed_at
        closed = self.is_closed[c]
        ca = self.closed_at[c]
        end = np.where(closed & ((end < 0) | (end > ca)), ca, end)
        return c, p, s, end

    def tables(self) -> dict[str, pa.Table]:
        n = self.n
        digits = max(7, len(str(n)))
        cid_numbers = np.arange(1, n + 1)
        cid = _fixed_width("C", cid_numbers, digits).combine_chunks()
        t: dict[str, pa.Table] = {}

        # customers
        local = _fixed_width("c", cid_numbers, digits).combine_chunks()
        domain = _take(("@example.no", "@example.com", "@mail.example.net"), self.email_domain)
        email = pc.binary_join_element_wise(local, domain, "")
        d8 = _fixed_width("", self.phone_number, 8)
        spaced = pc.binary_join_element_wise("+47 ", pc.utf8_slice_codeunits(d8, 0, 3), " ",
                                             pc.utf8_slice_codeunits(d8, 3, 5), " ", pc.utf8_slice_codeunits(d8, 5, 8), "")
        phone = pc.choose(pa.array(self.phone_format.astype(np.int8)),
                          pc.binary_join_element_wise("+47", d8, ""), d8, spaced)
        t["customers"] = _contract_table("customers", {
            "customer_id": cid,
            "brand": _take(("dnb", "sbanken"), self.sbanken.astype(np.int8)),
            "birth_date": _dates(self.birth),
            "gender": _take(("female", "male", "other", "other"), self.gender, self.gender == 3),
            "postal_code": _fixed_width("", self.postal, 4),
            "email": pc.if_else(pa.array(self.email_null), pa.scalar(None, pa.string()), email),
            "phone": pc.if_else(pa.array(self.phone_null), pa.scalar(None, pa.string()), phone),
            "customer_since": _dates(self.since),
            "closed_at": _dates(np.where(self.is_closed, self.closed_at, 0), ~self.is_closed),
        })

        # demographics
        r = self.dem_rows
        c, day = r.get("c", np.int64), r.get("day", np.int64)
        order = np.lexsort((day, c))
        t["demographics"] = _contract_table("demographics", {
            "customer_id": cid.take(pa.array(c[order])),
            "valid_from": _dates(day[order]),
            "marital_status": _take(_MARITAL, r.get("marital", np.int8)[order], r.get("marital_null", bool)[order]),
            "household_size": pa.array(r.get("hh", np.int64)[order], type=pa.int64(), mask=r.get("hh_null", bool)[order]),
            "region": _take(tuple(x[0] for x in _REGIONS), r.get("region", np.int64)[order]),
        })

        # consent and reservation events
        for name, rows, col, values, flag in (("consent_events", self.cev, "purpose", self.consents, "granted"),
                                              ("reservation_events", self.rev, "scope", self.reservations, "placed")):
            c, tt, p = rows.get("c", np.int64), rows.get("t", np.int64), rows.get("p", np.int8)
            order = np.lexsort((p, tt, c))
            columns = {
                "customer_id": cid.take(pa.array(c[order])),
                "event_time": _timestamps(tt[order]),
                col: _take(tuple(values), p[order]),
                flag: pa.array(rows.get("v", bool)[order], type=pa.bool_()),
            }
            if name == "consent_events":
                columns["source"] = _take(_CONSENT_SOURCES, rows.get("src", np.int8)[order])
            t[name] = _contract_table(name, columns)

        # agreements
        c, p, s, end = self.agreement_arrays
        order = np.lexsort((p, s, c))
        a_digits = max(9, len(str(len(c))))
        t["agreements"] = _contract_table("agreements", {
            "agreement_id": _fixed_width("A", np.arange(1, len(c) + 1), a_digits),
            "customer_id": cid.take(pa.array(c[order])),
            "product": _take(self.products, p[order]),
            "company": _take(COMPANIES, self.company[p[order]]),
            "start_date": _dates(s[order]),
            "end_date": _dates(np.maximum(end[order], 0), end[order] < 0),
        })

        # balances
        r = self.bal
        month_end = self.ms[1:self.M + 1] - 1
        t["balances"] = _contract_table("balances", {
            "customer_id": _take(cid, r.get("c", np.int32)),
            "as_of_date": _dates(month_end[r.get("m", np.int16)]),
            "account_type": _take(ACCOUNT_TYPES, r.get("acct", np.int8)),
            "company": _take(COMPANIES, r.get("comp", np.int8)),
            "balance": pa.array(r.get("value", np.float64), type=pa.float64()),
        })

        # transactions (already ordered by month, customer, time)
        r = self.tx
        cat = r.get("cat", np.int8)
        t["transactions"] = _contract_table("transactions", {
            "transaction_id": _fixed_width("T", np.arange(1, len(cat) + 1), max(10, len(str(len(cat))))),
            "customer_id": _take(cid, r.get("c", np.int32)),
            "booked_at": _timestamps(r.get("t", np.int64)),
            "amount": pa.array(r.get("amount", np.float64), type=pa.float64()),
            "kind": _take(TRANSACTION_KINDS, r.get("kind", np.int8)),
            "merchant_category": _take(MERCHANT_CATEGORIES, cat, cat < 0),
        })
        del cat

        # employment
        r = self.emp_rows
        c, day, employer = r.get("c", np.int64), r.get("day", np.int64), r.get("employer", np.int64)
        order = np.lexsort((day, c))
        names = pc.binary_join_element_wise(
            _take(_NAME_WORDS, self.employer_word), _take(_SECTOR_WORDS, self.employer_sector),
            _take(_NAME_SUFFIXES, self.employer_suffix), " ")
        t["employment"] = _contract_table("employment", {
            "customer_id": cid.take(pa.array(c[order])),
            "valid_from": _dates(day[order]),
            "employer_name": _take(names.combine_chunks(), employer[order]),
            "employer_sector": _take(_NACE, self.employer_sector[employer[order]]),
        })

        # digital events and contacts (ordered by month, customer, time)
        r = self.dig
        topic = r.get("topic", np.int8)
        t["digital_events"] = _contract_table("digital_events", {
            "customer_id": _take(cid, r.get("c", np.int32)),
            "event_time": _timestamps(r.get("t", np.int64)),
            "channel": _take(DIGITAL_CHANNELS, r.get("ch", np.int8)),
            "event_type": _take(DIGITAL_EVENT_TYPES, r.get("et", np.int8)),
            "topic": _take(TOPICS, topic, topic < 0),
        })
        r = self.con
        t["contact_history"] = _contract_table("contact_history", {
            "customer_id": _take(cid, r.get("c", np.int32)),
            "contact_time": _timestamps(r.get("t", np.int64)),
            "channel": _take(CONTACT_CHANNELS, r.get("ch", np.int8)),
            "topic": _take(CONTACT_TOPICS, r.get("topic", np.int8)),
        })

        t["campaign_log"] = self.campaign_log(cid, c_agr=self.agreement_arrays)
        return {name: t[name] for name in TABLES}

    def campaign_log(self, cid: pa.Array, c_agr: tuple[np.ndarray, ...]) -> pa.Table:
        r = self.camp
        c, m, p = r.get("c", np.int64), r.get("m", np.int64), r.get("p", np.int64)
        order = np.lexsort((c, m))
        c, m, p = c[order], m[order], p[order]
        ch, sent = r.get("ch", np.int8)[order], r.get("t", np.int64)[order]
        u, delay = r.get("u", float)[order], np.minimum(r.get("delay", float)[order], 7 * _S_PER_DAY)
        # converted: the product started within 30 days after the send date (campaigns cause nothing)
        ac, ap, astart, _ = c_agr
        day0 = self.ms[0] - 200 * 366  # keeps day offsets positive
        agreement_key = (ac * self.P + ap) * 10**6 + (astart - day0)
        agreement_key.sort()
        sent_day = sent // (_S_PER_DAY * _US_PER_S)
        wanted = (c * self.P + p) * 10**6
        pos = np.searchsorted(agreement_key, wanted + (sent_day - day0), side="right")
        found = agreement_key[np.minimum(pos, len(agreement_key) - 1)] if len(agreement_key) else np.zeros(len(c), np.int64)
        next_start = found - wanted + day0
        converted = (pos < len(agreement_key)) & (found >= wanted) & (found < wanted + 10**6) \
            & (next_start <= sent_day + _CONVERSION_DAYS)
        response = np.where(converted, 3, np.where(u < _RESPONSE_CLICKED, 2, np.where(u < _RESPONSE_OPENED, 1, 0)))
        responded = np.where(
            converted,
            (next_start * _S_PER_DAY + 9 * 3600 + np.floor(delay).astype(np.int64) % (10 * 3600)) * _US_PER_S,
            sent + np.floor(delay).astype(np.int64) * _US_PER_S,
        )
        month_tag = np.datetime64(self.start, "M") + m
        year = month_tag.astype("datetime64[Y]").astype(np.int64) + 1970
        month = month_tag.astype(np.int64) % 12 + 1
        campaign_id = pc.binary_join_element_wise(_fixed_width("CMP", year * 100 + month, 6),
                                                  _take(self.products, p), "-")
        return _contract_table("campaign_log", {
            "campaign_id": campaign_id,
            "customer_id": _take(cid, c),
            "product": _take(self.products, p),
            "channel": _take(CAMPAIGN_CHANNELS, ch),
            "sent_at": _timestamps(sent),
            "response": _take(RESPONSES, response),
            "responded_at": _timestamps(responded, response == 0),
        })

    def truth(self) -> dict[str, pa.Table]:
        digits = max(7, len(str(self.n)))
        cid = _fixed_width("C", np.arange(1, self.n + 1), digits).combine_chunks()
        month_end = self.ms[1:self.M + 1] - 1
        r = self.truth_h
        c, m = r.get("c", np.int32), r.get("m", np.int16)
        rows = len(c) * self.P
        hazard = pa.table({
            "customer_id": _take(cid, np.repeat(c, self.P)),
            "snapshot_date": _dates(np.repeat(month_end[m], self.P)),
            "product": _take(self.products, np.tile(np.arange(self.P, dtype=np.int32), len(c))),
            "p_start": pa.array(r.get("h", np.float64), type=pa.float64()),
        }, schema=TRUTH_TABLES["product_hazard"])
        assert hazard.num_rows == rows
        r = self.truth_ev
        c, m, ev = r.get("c", np.int64), r.get("m", np.int64), r.get("ev", np.int8)
        order = np.lexsort((ev, c, m))
        events = pa.table({
            "customer_id": cid.take(pa.array(c[order])),
            "month": _dates(self.ms[m[order]]),
            "event": _take(_EVENTS, ev[order]),
        }, schema=TRUTH_TABLES["latent_events"])
        return {"product_hazard": hazard, "latent_events": events}


_EVENTS = ("home_buying", "car_buying", "investing", "cash_squeeze", "expecting_child", "new_parent", "job_change",
           "travel_planning")
