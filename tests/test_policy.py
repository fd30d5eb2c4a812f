"""The policy and the configuration: defaults load, invalid input is refused naming the key."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest

from enforcer.config import ConfigError, load_config
from rules.policy import DEFAULT_POLICY, Condition, PolicyError, Scope, load_policy, parse_policy

DEFAULT = tomllib.loads(DEFAULT_POLICY.read_text())


def test_default_policy_is_the_documented_order() -> None:
    policy = load_policy()
    assert [r.when for r in policy.rules[:-1]] == [
        Condition.EMERGENCY, Condition.BLACKLISTED, Condition.CUT_OFF, Condition.MALFORMED,
        Condition.TAC_BLOCKED, Condition.TAC_UNALLOCATED, Condition.OWNER_OR_OPERATOR_SIM,
        Condition.MISUSED, Condition.OTHER_CARTABLE,
        Condition.NO_CARTABLE, Condition.UNREGISTERED_HOME, Condition.UNREGISTERED_ROAMER]
    assert policy.rules[-1].name == "fallback"
    transfer = policy.rule("other_cartable")
    assert (transfer.notice_kind, transfer.grace_days, transfer.reminder_days,
            transfer.cutoff_scope) == ("ownership_transfer", 30, (7, 1), Scope.PAIR)
    assert policy.rule("roamer").sms is False
    assert policy.home_mcc == (432,)
    misuse = policy.rule("misuse")
    assert (misuse.notice_kind, misuse.grace_days, misuse.cutoff_scope) == ("misuse", 7,
                                                                            Scope.PAIR)
    assert (policy.clones.distinct_imsis, policy.clones.window_days) == (3, 20)


def test_clone_thresholds_a_policy_leaves_out_are_rules_default_toml_s() -> None:
    data = copy.deepcopy(DEFAULT)
    data["clones"] = {"window_days": 5}
    clones = parse_policy(data).clones
    assert clones.window_days == 5
    assert clones.distinct_imsis == DEFAULT["clones"]["distinct_imsis"]
    assert clones.far_cells_km == DEFAULT["clones"]["far_cells_km"]
    del data["clones"]
    assert parse_policy(data).clones == load_policy().clones


def edit(change) -> dict:
    data = copy.deepcopy(DEFAULT)
    change(data)
    return data


def rule(data: dict, name: str) -> dict:
    return next(r for r in data["rules"] if r["name"] == name)


@pytest.mark.parametrize(("change", "key"), [
    (lambda d: rule(d, "malformed").update(verdict="GREY"), "rules[3].verdict"),
    (lambda d: rule(d, "other_cartable").update(grace_days=0), "rules[8].grace_days"),
    (lambda d: rule(d, "other_cartable").update(reminder_days=[40]), "rules[8].reminder_days"),
    (lambda d: rule(d, "other_cartable").pop("cutoff_scope"), "rules[8].cutoff_scope"),
    (lambda d: rule(d, "unregistered").update(cutoff_scope="device"), "rules[10].cutoff_scope"),
    (lambda d: rule(d, "owner").update(when="owner"), "rules[6].when"),
    (lambda d: rule(d, "owner").update(colour="blue"), "rules[6].colour"),
    (lambda d: rule(d, "owner").update(grace_days=3), "rules[6].grace_days"),
    (lambda d: rule(d, "roamer").update(exempt_tacs=["123"]), "rules[11].exempt_tacs"),
    (lambda d: rule(d, "roamer").update(exempt_when=["sometimes"]), "rules[11].exempt_when[0]"),
    (lambda d: rule(d, "roamer").update(exempt_when=["unregistered_roamer"]),
     "rules[11].exempt_when"),
    (lambda d: rule(d, "other_cartable").update(reminder_days=7), "rules[8].reminder_days"),
    (lambda d: d["rules"].extend(dict(d["rules"][4], name=f"r{i}") for i in range(250)),
     "rules"),
    (lambda d: rule(d, "emergency").update(verdict="BLACKLISTED"), "rules[0].verdict"),
    (lambda d: d["rules"].reverse(), "rules[0].when"),
    (lambda d: d["rules"].append(dict(d["rules"][6])), "rules[12].name"),
    (lambda d: d.update(home_mcc=[43]), "home_mcc"),
    (lambda d: d.pop("fallback"), "fallback"),
    (lambda d: d.update(colour=1), "colour"),
    (lambda d: d["clones"].update(distinct_imsis=1), "clones.distinct_imsis"),
    (lambda d: d["clones"].update(window_days=0), "clones.window_days"),
    (lambda d: d["clones"].update(far_cells_km=-1), "clones.far_cells_km"),
    (lambda d: d["clones"].update(operators_within_minutes="5"), "clones.operators_within"),
    (lambda d: d["clones"].update(colour=1), "clones.colour"),
    (lambda d: d["clones"].update(flag_days=19), "clones.flag_days"),  # under window_days
    (lambda d: d["clones"].update(flag_days=-1), "clones.flag_days"),
    (lambda d: d["clones"].update(flag_days=7), "clones.flag_days"),
    (lambda d: d["clones"].update(flag_days=20, window_days=20)
     or next(r for r in d["rules"] if r["when"] == "misused").update(grace_days=20),
     "rules[7].grace_days"),
])
def test_invalid_policy_is_refused_naming_the_key(change, key: str) -> None:
    with pytest.raises(PolicyError, match="^" + re.escape(key)):
        parse_policy(edit(change))


def test_policy_file_that_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[[rules]\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(path)


def test_config_defaults_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "eir.toml"
    path.write_text('[state]\ndir = "/var/lib/eir"\n[lists]\nbad_rows_reported = 3\n')
    config = load_config(path, environ={"EIR_LISTS__CSV_CHUNK_LINES": "500",
                                        "EIR_IMEI__PLACEHOLDERS": "11111111111111, 22222222222222"})
    assert config.state.dir == "/var/lib/eir"
    assert config.lists.bad_rows_reported == 3
    assert config.lists.csv_chunk_lines == 500
    assert config.imei.placeholders == ["11111111111111", "22222222222222"]
    assert load_config(environ={}).lists.csv_chunk_lines == 1_000_000


@pytest.mark.parametrize(("text", "environ", "message"), [
    ("[state]\ndirectory = 'x'\n", {}, "state.directory"),
    ("[lists]\ncsv_chunk_lines = 'many'\n", {}, "lists.csv_chunk_lines"),
    ("", {"EIR_LISTS__CSV_CHUNK_LINES": "many"}, "EIR_LISTS__CSV_CHUNK_LINES"),
    ("", {"EIR_NOPE__X": "1"}, "EIR_NOPE__X"),
])
def test_invalid_configuration_names_the_key(tmp_path: Path, text: str, environ: dict,
                                             message: str) -> None:
    path = tmp_path / "eir.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=environ)



def test_the_production_example_configuration_loads() -> None:
    config = load_config(Path(__file__).parents[1] / "deploy" / "eir-enforcer.toml", environ={})
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.postgres.dsn.startswith("postgresql://eir@pg.core.example")
