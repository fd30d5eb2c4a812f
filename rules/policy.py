"""Load and check the enforcement policy. An invalid policy is refused at start with a
message naming the offending key, e.g. `rules[5].grace_days: must be a positive integer`."""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from enforcer.engine.clones import MAX_RAT_ATTACHES, CloneRules
from enforcer.engine.imei import TAC_DIGITS

DEFAULT_POLICY = Path(__file__).with_name("default.toml")
MCC_RANGE = range(100, 1000)
MAX_RULES = 256  # the decision keeps each event's rule in a uint8
CLONE_KEYS = {f.name for f in dataclasses.fields(CloneRules)}
# Days are kept as uint16 day numbers; the window must fit well inside.
MAX_WINDOW_DAYS = 366
MAX_FLAG_DAYS = 36_525  # a century: for ever is 0


class Verdict(StrEnum):
    """3GPP TS 29.511 EquipmentStatus."""

    WHITELISTED = "WHITELISTED"
    GREYLISTED = "GREYLISTED"
    BLACKLISTED = "BLACKLISTED"


VERDICTS: tuple[Verdict, ...] = tuple(Verdict)


class Condition(StrEnum):
    EMERGENCY = "emergency"
    BLACKLISTED = "blacklisted"
    CUT_OFF = "cut_off"
    MALFORMED = "malformed"
    OWNER_OR_OPERATOR_SIM = "owner_or_operator_sim"
    MISUSED = "misused"  # the IMEI is flagged as cloned or shared (enforcer/engine/clones.py)
    OTHER_CARTABLE = "other_cartable"
    NO_CARTABLE = "no_cartable"
    UNREGISTERED_HOME = "unregistered_home"
    UNREGISTERED_ROAMER = "unregistered_roamer"
    # The IMEI's TAC is in no allocation of the TAC database: a counterfeit (DIRBS:
    # gsma_not_found). Never holds while no TAC database was imported.
    TAC_UNALLOCATED = "tac_unallocated"
    # The attach's radio is none the TAC's model has (a GSM-only model on LTE): a cloned
    # IMEI (DIRBS: inconsistent_rat). Never holds without a TAC database or a `rat`.
    RAT_INCONSISTENT = "rat_inconsistent"
    # The regulator blocks the IMEI's TAC, the whole model (not type-approved, recalled):
    # `registry import --kind tac_blocked`. Never holds while no such list was imported.
    TAC_BLOCKED = "tac_blocked"


class Scope(StrEnum):
    PAIR = "pair"
    IMEI = "imei"


class PolicyError(ValueError):
    """The policy file is not a valid policy; the message names the key."""


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition | None  # None only for the fallback, which always applies
    verdict: Verdict
    reason: str
    record: bool
    opens_notice: bool
    notice_kind: str | None
    grace_days: int
    reminder_days: tuple[int, ...]
    sms: bool
    cutoff_now: bool
    cutoff_scope: Scope | None
    exempt_when: tuple[Condition, ...]
    exempt_tacs: tuple[int, ...]
    unknown_equipment: bool = False  # N5g-eir answers 404 ERROR_EQUIPMENT_UNKNOWN instead


@dataclass(frozen=True)
class Policy:
    home_mcc: tuple[int, ...]
    rules: tuple[Rule, ...]  # in evaluation order, the fallback last
    clones: CloneRules

    def rule(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)


RULE_KEYS = {
    "name", "when", "verdict", "reason", "record", "opens_notice", "notice_kind",
    "grace_days", "reminder_days", "sms", "cutoff_now", "cutoff_scope", "exempt_when",
    "exempt_tacs", "unknown_equipment",
}
FALLBACK_NAME = "fallback"


def load_policy(path: str | Path | None = None) -> Policy:
    source = Path(path) if path else DEFAULT_POLICY
    try:
        with source.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {source}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy file {source} is not valid TOML: {exc}") from exc
    return parse_policy(data)


def parse_policy(data: dict[str, Any]) -> Policy:
    _no_unknown(data, {"home_mcc", "fallback", "rules", "clones"}, "")
    home = _required(data, "home_mcc", "home_mcc")
    if not isinstance(home, list) or not home or not all(
            isinstance(m, int) and m in MCC_RANGE for m in home):
        raise PolicyError("home_mcc: must be a non-empty list of 3-digit country codes")
    raw_rules = _required(data, "rules", "rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError("rules: must be a non-empty array of tables ([[rules]])")
    if len(raw_rules) >= MAX_RULES:
        raise PolicyError(f"rules: at most {MAX_RULES - 1} rules (and the fallback)")
    rules = [_rule(r, f"rules[{i}]") for i, r in enumerate(raw_rules)]
    fallback = _fallback(_required(data, "fallback", "fallback"))
    names = [r.name for r in rules]
    for i, name in enumerate(names):
        if name in names[:i] or name == FALLBACK_NAME:
            raise PolicyError(f"rules[{i}].name: '{name}' is used twice or reserved")
    _emergency_first(rules)
    clones = _clones(data.get("clones", {}))
    _flags_outlast_notices(rules, clones)
    return Policy(tuple(home), tuple(rules) + (fallback,), clones)


@functools.cache
def default_clones() -> CloneRules:
    """The [clones] thresholds of rules/default.toml: what a policy file leaves out."""
    with DEFAULT_POLICY.open("rb") as f:
        raw = tomllib.load(f)["clones"]
    missing = CLONE_KEYS - raw.keys()
    if missing:
        raise PolicyError(f"{DEFAULT_POLICY}: clones.{min(missing)} is missing")
    return _clones(raw, raw)


def _clones(raw: Any, defaults: dict[str, Any] | None = None) -> CloneRules:
    if not isinstance(raw, dict):
        raise PolicyError("clones: must be a table")
    _no_unknown(raw, CLONE_KEYS, "clones.")
    base = defaults if defaults is not None else dataclasses.asdict(default_clones())
    merged = {f: raw.get(f, base[f]) for f in CLONE_KEYS}
    for key in ("distinct_imsis", "window_days", "operators_within_minutes",
                "far_cells_within_minutes", "rat_inconsistent_attaches", "flag_days"):
        value = merged[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PolicyError(f"clones.{key}: must be a whole number, 0 or more")
    if merged["distinct_imsis"] < 2:
        raise PolicyError("clones.distinct_imsis: at least 2 (one SIM is no clone)")
    if not 1 <= merged["window_days"] <= MAX_WINDOW_DAYS:
        raise PolicyError(f"clones.window_days: between 1 and {MAX_WINDOW_DAYS}")
    flag_days = merged["flag_days"]
    if flag_days and not merged["window_days"] <= flag_days <= MAX_FLAG_DAYS:
        raise PolicyError(f"clones.flag_days: 0 (for ever), or from clones.window_days"
                          f" to {MAX_FLAG_DAYS}")
    if merged["rat_inconsistent_attaches"] > MAX_RAT_ATTACHES:
        raise PolicyError(f"clones.rat_inconsistent_attaches: at most {MAX_RAT_ATTACHES}")
    km = merged["far_cells_km"]
    if not isinstance(km, (int, float)) or isinstance(km, bool) or km <= 0:
        raise PolicyError("clones.far_cells_km: must be a positive number")
    merged["far_cells_km"] = float(km)
    return CloneRules(**merged)


def _flags_outlast_notices(rules: list[Rule], clones: CloneRules) -> None:
    # A notice on `misused` rechecked at its deadline after the flag ended would be cancelled:
    # the flag would never cut anyone.
    for i, rule in enumerate(rules):
        if (clones.flag_days and rule.when is Condition.MISUSED and rule.opens_notice
                and rule.grace_days >= clones.flag_days):
            raise PolicyError(f"rules[{i}].grace_days: less than clones.flag_days"
                              f" ({clones.flag_days}), or the flag ends before the deadline")


def _emergency_first(rules: list[Rule]) -> None:
    # 3GPP TS 23.401 §5.3.2.1: an emergency attach is never refused, whatever else holds.
    if rules[0].when is not Condition.EMERGENCY:
        raise PolicyError("rules[0].when: the first rule must be 'emergency'")
    if rules[0].verdict is Verdict.BLACKLISTED or rules[0].cutoff_now:
        raise PolicyError("rules[0].verdict: an emergency attach is never BLACKLISTED or cut off")
    if rules[0].exempt_when or rules[0].exempt_tacs:
        raise PolicyError("rules[0].exempt_when: the emergency rule takes no exemptions")


def _fallback(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError("fallback: must be a table")
    _no_unknown(raw, {"verdict", "reason"}, "fallback.")
    return Rule(FALLBACK_NAME, None, _enum(Verdict, raw, "verdict", "fallback.verdict"),
                _text(raw, "reason", "fallback.reason"), True, False, None, 0, (), False,
                False, None, (), ())


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    _no_unknown(raw, RULE_KEYS, f"{where}.")
    opens = _flag(raw, "opens_notice", False, where)
    cutoff_now = _flag(raw, "cutoff_now", False, where)
    scope = _enum(Scope, raw, "cutoff_scope", f"{where}.cutoff_scope") \
        if "cutoff_scope" in raw else None
    kind, grace, reminders = None, 0, ()
    if opens:
        kind = _text(raw, "notice_kind", f"{where}.notice_kind")
        grace = _required(raw, "grace_days", f"{where}.grace_days")
        if not isinstance(grace, int) or isinstance(grace, bool) or grace <= 0:
            raise PolicyError(f"{where}.grace_days: must be a positive integer")
        reminders = raw.get("reminder_days", [])
        if not isinstance(reminders, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 < d < grace
                for d in reminders):
            raise PolicyError(f"{where}.reminder_days: each must be a whole number of days "
                              f"between 1 and grace_days - 1 ({grace - 1})")
    else:
        for key in ("notice_kind", "grace_days", "reminder_days", "sms"):
            if key in raw:
                raise PolicyError(f"{where}.{key}: only meaningful with opens_notice = true")
    if (opens or cutoff_now) and scope is None:
        raise PolicyError(f"{where}.cutoff_scope: required (pair or imei) when the rule "
                          "opens a notice or cuts off")
    if opens and cutoff_now:
        raise PolicyError(f"{where}.cutoff_now: a rule either opens a notice or cuts off now")
    exempt = raw.get("exempt_when", [])
    if not isinstance(exempt, list):
        raise PolicyError(f"{where}.exempt_when: must be a list of conditions")
    if raw.get("when") in exempt:
        raise PolicyError(f"{where}.exempt_when: exempting the rule's own condition means "
                          "it never applies; remove the rule instead")
    tacs = raw.get("exempt_tacs", [])
    if not isinstance(tacs, list) or not all(
            isinstance(t, str) and len(t) == TAC_DIGITS and t.isdigit() for t in tacs):
        raise PolicyError(f"{where}.exempt_tacs: must be a list of 8-digit TAC strings")
    return Rule(
        name=_text(raw, "name", f"{where}.name"),
        when=_enum(Condition, raw, "when", f"{where}.when"),
        verdict=_enum(Verdict, raw, "verdict", f"{where}.verdict"),
        reason=_text(raw, "reason", f"{where}.reason"),
        record=_flag(raw, "record", True, where),
        opens_notice=opens,
        notice_kind=kind,
        grace_days=grace,
        reminder_days=tuple(sorted(reminders, reverse=True)),
        sms=_flag(raw, "sms", opens, where),
        cutoff_now=cutoff_now,
        cutoff_scope=scope,
        exempt_when=tuple(_enum(Condition, {"c": c}, "c", f"{where}.exempt_when[{i}]")
                          for i, c in enumerate(exempt)),
        exempt_tacs=tuple(int(t) for t in tacs),
        unknown_equipment=_flag(raw, "unknown_equipment", False, where),
    )


def _no_unknown(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise PolicyError(f"{where}{key}: unknown key")


def _required(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise PolicyError(f"{where}: required")
    return raw[key]


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    value = _required(raw, key, where)
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{where}: must be a non-empty string")
    return value


def _flag(raw: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise PolicyError(f"{where}.{key}: must be true or false")
    return value


def _enum(kind: type[StrEnum], raw: dict[str, Any], key: str, where: str) -> Any:
    value = _required(raw, key, where)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise PolicyError(f"{where}: '{value}' is not one of {allowed}") from None
