"""Liveness and readiness, for the orchestrator and the NOC: the process answers (/healthz),
and it is fit to take traffic (/readyz): state loaded, database reachable, partitions
assigned. Each check says why when it fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# A check returns None when all is well, else the reason.
Check = Callable[[], str | None]
OK = "ok"


@dataclass(frozen=True)
class ReadinessReport:
    ready: bool
    checks: dict[str, str]  # check name: "ok" or the reason

    def as_json(self) -> dict[str, object]:
        return {"ready": self.ready, "checks": self.checks}


class Readiness:
    def __init__(self, checks: dict[str, Check]) -> None:
        self._checks = checks

    def report(self) -> ReadinessReport:
        results = {}
        for name, check in self._checks.items():
            try:
                reason = check()
            except Exception as exc:  # noqa: BLE001 - a failing check is a reason, not a crash
                reason = f"check failed: {type(exc).__name__}"
            results[name] = reason or OK
        return ReadinessReport(all(r == OK for r in results.values()), results)
