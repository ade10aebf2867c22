"""The project's exception types. Each message says what is wrong and what to do."""

from __future__ import annotations

from dataclasses import dataclass, field


class PropensityError(Exception):
    """Base class: every error the pipeline raises on purpose."""


class ConfigError(PropensityError):
    """A configuration file is missing or invalid."""


@dataclass(frozen=True)
class Violation:
    """One breach of the input contract: where, what, a few rows, and the fix."""

    table: str
    column: str | None
    kind: str
    message: str
    rows: list[dict] = field(default_factory=list)
    fix: str = ""

    def render(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        text = f"[{self.kind}] {where}: {self.message}"
        if self.rows:
            shown = "\n".join(f"      {row}" for row in self.rows)
            text += f"\n    offending rows (up to 5):\n{shown}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class ContractError(PropensityError):
    """Raw input breaks DATA_CONTRACT.md. Nothing downstream runs, nothing is written."""

    def __init__(self, violations: list[Violation]):
        self.violations = list(violations)
        lines = [f"input refused: {len(self.violations)} contract violation(s)"]
        lines += [v.render() for v in self.violations]
        super().__init__("\n".join(lines))


class PrivacyGuardError(PropensityError):
    """An output would break the data policy (a forbidden value, a lost or extra row)."""


class MissingInputError(PropensityError):
    """Something a step needs is not there (features, a champion model, a score partition)."""


class JobLockedError(PropensityError):
    """Another run of the same job holds the lock on this data folder."""
