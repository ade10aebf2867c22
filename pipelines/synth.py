"""Job: write a synthetic bank (raw extracts per DATA_CONTRACT.md plus truth/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from propensity import synth
from propensity.config import Settings, load_settings


def run(settings: Settings, customers: int, months: int, seed: int, out: Path,
        progress: Callable[[str], None] = print) -> dict[str, int]:
    progress(f"generating {customers:,} customers x {months} months (seed {seed})")
    bank = synth.generate_bank(customers, months, settings.synth.start, seed,
                               settings.synth.transactions_per_month, settings.policy, settings.catalogue)
    truth = out.parent / "truth"  # beside the raw folder, never inside it
    synth.write_bank(bank, out, truth)
    progress(f"wrote {out} and {truth}")
    return {name: table.num_rows for name, table in bank.tables.items()}


if __name__ == "__main__":
    s = load_settings()
    run(s, s.synth.customers, s.synth.months, s.seed, s.raw_dir)
