"""Building a generation of state from the registry's files, ready to snapshot or swap in.
Every file gets the checks of a registry delivery that need no earlier generation
(`enforcer.files.delivery.file_refusal`); one that fails them refuses the build."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from enforcer.config import Config
from enforcer.heap import give_back
from enforcer.files.delivery import file_refusal
from enforcer.engine.imei import imei_rules
from enforcer.files.listfile import ListFileReader, LoadReport
from enforcer.engine.lists import Lists
from enforcer.engine.pairset import PairSet
from enforcer.engine.devices import Cartables, DeviceColumns, DevicesBuild, build_devices
from enforcer.files.devicefiles import RegistryFileReader
from enforcer.engine.state import EnforcementState
from rules.policy import Policy


@dataclass(frozen=True)
class SourceFiles:
    white: Path
    black: Path | None = None
    devices: Path | None = None
    cartables: Path | None = None
    operator_sims: Path | None = None


@dataclass
class BuildReport:
    generation: int
    files: dict[str, LoadReport] = field(default_factory=dict)
    devices: DevicesBuild | None = None
    refused: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"generation": self.generation,
                "files": {k: v.as_json() for k, v in self.files.items()},
                "registry": self.devices.as_json() if self.devices else None,
                "refused": self.refused}


def build_from_files(files: SourceFiles, config: Config, policy: Policy,
                     generation: int) -> tuple[EnforcementState | None, BuildReport]:
    """The generation built from `files`, or None when a file fails its checks. Every file
    is read first, so the report covers them all; `refused` gives each failing file's
    reason."""
    rules = imei_rules(config)
    lists_reader = ListFileReader(rules, config.lists.csv_chunk_lines,
                                  config.lists.bad_rows_reported)
    registry_reader = RegistryFileReader(rules, lists_reader, config.lists.csv_chunk_lines)
    report = BuildReport(generation)
    white, report.files["white"] = lists_reader.read_white(files.white)
    black = None
    if files.black:
        black, report.files["black"] = lists_reader.read_black(files.black)
    lists = Lists.build(generation, white, black)
    # The black list's bitmaps are indexed now: not held beside the registry's columns,
    # the build's largest.
    del white, black
    give_back()
    columns = DeviceColumns.empty()
    if files.devices:
        columns, report.files["devices"] = registry_reader.read_devices(files.devices)
    cartables = Cartables.empty()
    if files.cartables:
        cartables, report.files["cartables"] = registry_reader.read_cartables(files.cartables)
    operator_sims = PairSet.empty()
    if files.operator_sims:
        operator_sims, report.files["operator_sims"] = \
            registry_reader.read_operator_sims(files.operator_sims)
    refusals = [f"{name} file {loaded.path}: {refused}" for name, loaded in report.files.items()
                if (refused := file_refusal(loaded, config.lists.max_bad_share))]
    if refusals:
        report.refused = "; ".join(refusals)
        return None, report
    devices, report.devices = build_devices(
        lists.white_index, columns, cartables, operator_sims)
    return EnforcementState(lists, devices, policy), report
