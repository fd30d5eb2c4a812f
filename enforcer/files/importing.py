"""National snapshots: one registry file (white list, black list or devices with owners) in,
the next generation out, or a refusal that says why.

The file is streamed in bounded memory into roaring bitmaps (or device columns), compared
with the current generation (added, removed, changed), and checked the way DIRBS checks a
delivery (`enforcer.files.delivery`): too many bad rows (leading zeros stripped among them), a
list that shrinks too much, or whose IMEIs starting with 0 fall sharply in number, and
nothing is swapped. What the file does not cover is carried over: a new white list keeps
every device whose IMEIs are all still registered (the registry realigned to it in chunks
of rows, `enforcer.engine.realign`), a new black list keeps the white list and the registry
as they are, new devices keep both lists (the registry built from the file's columns).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
from pyroaring import BitMap64

from enforcer.engine.imei import imei_rules
from enforcer.config import Config
from enforcer.files.delivery import (file_refusal, leading_zero_refusal, leading_zero_count,
                                     shrink_refusal)
from enforcer.files.listfile import ListFileReader, LoadReport
from enforcer.engine.keyindex import missing_from
from enforcer.engine.lists import WHITE_LOW_COLUMN, BlackReason, Lists, keys_of
from enforcer.engine.devices import (ColumnMaker, DeviceColumns, DevicesBuild, build_devices,
                                     carry_ids, in_memory)
from enforcer.engine.realign import realign_white
from enforcer.files.devicefiles import RegistryFileReader
from enforcer.engine.state import EnforcementState
from enforcer.engine.tacs import TAC_SPACE, TacDatabase
from enforcer.engine.tacblocks import BlockedTacs
from enforcer.files.tacblockfile import TacBlockFileReader
from enforcer.files.tacfile import TacFileReader

ZERO_TAC_BELOW = TAC_SPACE // 10  # TACs below this start with 0 (reporting body 01 …)


class Kind(StrEnum):
    WHITE = "white"
    BLACK = "black"
    OWNERS = "owners"
    TAC = "tac"  # the GSMA's TAC database (enforcer.files.tacfile)
    TAC_BLOCKED = "tac_blocked"  # the regulator's blocked TACs (enforcer.files.tacblockfile)


@dataclass
class ImportReport:
    kind: Kind
    file: LoadReport
    before: int = 0  # entries of this kind in the current generation
    after: int = 0
    added: int = 0
    removed: int = 0
    # black: another reason; owners: another owner; tac: another entry; tac_blocked:
    # another reason
    changed: int = 0
    # How many IMEIs of this kind start with 0: white or black listed, or (owners) of the
    # devices, every slot; (tac, tac_blocked) how many TACs.
    leading_zero_before: int = 0
    leading_zero_after: int = 0
    devices: DevicesBuild | None = None
    refused: str | None = None
    generation: int | None = None  # the new one, when swapped

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind.value, "file": self.file.as_json(), "before": self.before,
                "after": self.after, "added": self.added, "removed": self.removed,
                "changed": self.changed,
                "leading_zero_before": self.leading_zero_before,
                "leading_zero_after": self.leading_zero_after,
                "registry": self.devices.as_json() if self.devices else None,
                "refused": self.refused, "generation": self.generation}


def import_file(state: EnforcementState, kind: Kind, path: Path, config: Config,
                columns: ColumnMaker = in_memory) -> tuple[EnforcementState | None, ImportReport]:
    """The next generation built from `path`, or None (and the reason in the report); a
    white list's realigned registry columns made by `columns`."""
    rules = imei_rules(config)
    lists_reader = ListFileReader(rules, config.lists.csv_chunk_lines,
                                  config.lists.bad_rows_reported)
    generation = state.generation + 1
    old = state.lists
    if kind is Kind.TAC:
        return _import_tacs(state, path, config)
    if kind is Kind.TAC_BLOCKED:
        return _import_blocked_tacs(state, path, config)
    if kind is Kind.WHITE:
        lists, gone, report = _white(old, lists_reader, path, generation, config, columns)
        if lists is None:
            return None, report
        devices, report.devices = realign_white(state.devices, old.white_index,
                                                lists.white_index, gone, columns=columns)
    elif kind is Kind.BLACK:
        black, loaded = lists_reader.read_black(path)
        report = _black_diff(old, black, loaded)
        report.refused = _refusal(report, config)
        if report.refused:
            return None, report
        lists = Lists.build(generation, old.white_index, black, old.cut_imeis, old.cut_pairs)
        # The same white list: the devices are aligned to it as they are.
        devices = state.devices
        report.devices = DevicesBuild(devices.count, 0, 0)
    else:
        registry_reader = RegistryFileReader(rules, lists_reader, config.lists.csv_chunk_lines)
        listed, loaded = registry_reader.read_devices(path)
        current = state.devices.device_columns(old.white_index)
        report = _owner_diff(current, listed, loaded)
        report.refused = _refusal(report, config)
        if report.refused:
            return None, report
        lists = replace(old, generation=generation)  # the same lists
        devices, report.devices = build_devices(lists.white_index, listed,
                                                state.devices.cartables,
                                                state.devices.operator_sims)
        if len(state.devices.ids):  # devices are numbered again: their ids follow their IMEIs
            devices = replace(devices, ids=carry_ids(dict(state.devices.ids.items()), current,
                                                     lists.white_index, devices))
    report.generation = generation
    # What a fold laid into the snapshot stays in it: the same watermark.
    return EnforcementState(lists, devices, state.policy, watermark=state.watermark,
                            tacs=state.tacs, blocked_tacs=state.blocked_tacs), report


def _white(old: Lists, reader: ListFileReader, path: Path, generation: int,
           config: Config, columns: ColumnMaker) -> tuple[Lists | None, np.ndarray, ImportReport]:
    """The next generation's lists with the white list of `path` (None if refused), the
    keys of `old`'s white list it lacks (uint64, ascending) and the report. The file is
    indexed with no set of it beside the index (`ListFileReader.read_white`), the index's
    low bits a column `columns` makes, like the registry's (mapped from the next snapshot's
    file in the command's process); the two lists are compared through their indexes
    (`missing_from`). The checks need only the lists' sizes: the keys a refused delivery
    lacks (a truncated file's, most of the list) are counted, not collected."""
    white_index, loaded = reader.read_white(
        path, lambda count: columns(WHITE_LOW_COLUMN, count, np.dtype(np.uint16)))
    report = ImportReport(Kind.WHITE, loaded, before=len(old.white_index),
                          after=len(white_index),
                          leading_zero_before=leading_zero_count(old.white_index),
                          leading_zero_after=leading_zero_count(white_index))
    report.refused = _refusal(report, config)
    pieces = missing_from(old.white_index, white_index)
    if report.refused:
        gone = np.zeros(0, np.uint64)
        report.removed = sum(len(piece) for piece in pieces)
    else:
        gone = np.concatenate([np.zeros(0, np.uint64), *pieces])
        report.removed = len(gone)
    report.added = report.after - (report.before - report.removed)
    if report.refused:
        return None, gone, report
    return old.with_white(generation, white_index), gone, report


def _import_tacs(state: EnforcementState, path: Path,
                 config: Config) -> tuple[EnforcementState | None, ImportReport]:
    """A new TAC database: the lists and the registry are the current generation's, as they
    are (the devices stay aligned to the same white list)."""
    reader = TacFileReader(config.lists.csv_chunk_lines, config.lists.bad_rows_reported)
    tacs, loaded = reader.read(path)
    old = state.tacs if state.tacs is not None else TacDatabase.empty()
    report = _tac_report(Kind.TAC, loaded, old, tacs)
    report.refused = _refusal(report, config)
    if report.refused:
        return None, report
    return _next_generation(state, report, tacs=tacs), report


def _import_blocked_tacs(state: EnforcementState, path: Path,
                         config: Config) -> tuple[EnforcementState | None, ImportReport]:
    """A new list of blocked TACs, the rest of the generation as it is."""
    reader = TacBlockFileReader(config.lists.csv_chunk_lines, config.lists.bad_rows_reported)
    blocked, loaded = reader.read(path)
    old = state.blocked_tacs if state.blocked_tacs is not None else BlockedTacs.empty()
    report = _tac_report(Kind.TAC_BLOCKED, loaded, old, blocked)
    report.refused = _refusal(report, config)
    if report.refused:
        return None, report
    return _next_generation(state, report, blocked_tacs=blocked), report


def _tac_report(kind: Kind, loaded: LoadReport, old: TacDatabase | BlockedTacs,
                new: TacDatabase | BlockedTacs) -> ImportReport:
    """What replacing one table keyed by TAC with another changes: TACs added, removed and
    changed, and those written without their leading zero before and after."""
    common = len(np.intersect1d(old.tac, new.tac, assume_unique=True))
    return ImportReport(kind, loaded, before=len(old), after=len(new),
                        added=len(new) - common, removed=len(old) - common,
                        changed=old.changed_rows(new),
                        leading_zero_before=int(np.count_nonzero(old.tac < ZERO_TAC_BELOW)),
                        leading_zero_after=int(np.count_nonzero(new.tac < ZERO_TAC_BELOW)))


def _next_generation(state: EnforcementState, report: ImportReport,
                     **tac_parts: TacDatabase | BlockedTacs) -> EnforcementState:
    """The lists and the registry as they are (the devices stay aligned to the same white
    list), under the next generation number, with the TAC part the report is of."""
    report.generation = state.generation + 1
    return replace(state, lists=replace(state.lists, generation=report.generation),
                   **tac_parts)


def _refusal(report: ImportReport, config: Config) -> str | None:
    checks = config.lists
    kind = report.kind.value
    return (file_refusal(report.file, checks.max_bad_share)
            or shrink_refusal(kind, report.before, report.after, checks.max_shrink_share)
            or leading_zero_refusal(kind, report.leading_zero_before, report.leading_zero_after,
                                    checks.max_leading_zero_fall))


def _black_diff(old: Lists, black: dict[BlackReason, BitMap64],
                loaded: LoadReport) -> ImportReport:
    new_union = BitMap64.union(*black.values())
    old_keys = old.black_index.keys()
    new_keys = keys_of(new_union)
    both = np.intersect1d(old_keys, new_keys, assume_unique=True)
    new_reason = Lists.build(0, BitMap64(), black).black_reasons(both)
    changed = int((old.black_reasons(both) != new_reason).sum())
    return ImportReport(Kind.BLACK, loaded, before=len(old_keys), after=len(new_keys),
                        added=len(new_keys) - len(both), removed=len(old_keys) - len(both),
                        changed=changed, leading_zero_before=leading_zero_count(old_keys),
                        leading_zero_after=leading_zero_count(new_keys))


def _owner_diff(old: DeviceColumns, new: DeviceColumns, loaded: LoadReport) -> ImportReport:
    """Devices matched by their first IMEI."""
    def first_imeis(columns: DeviceColumns) -> tuple[np.ndarray, np.ndarray]:
        first = columns.imei_slot == 0
        keys, devices = columns.imei_key[first], columns.imei_device[first]
        order = np.argsort(keys, kind="stable")
        return keys[order], columns.owner[devices[order]]

    old_keys, old_owner = first_imeis(old)
    new_keys, new_owner = first_imeis(new)
    both, at_old, at_new = np.intersect1d(old_keys, new_keys, return_indices=True)
    changed = int((old_owner[at_old] != new_owner[at_new]).sum())
    return ImportReport(Kind.OWNERS, loaded, before=len(old_keys), after=len(new_keys),
                        added=len(new_keys) - len(both), removed=len(old_keys) - len(both),
                        changed=changed, leading_zero_before=leading_zero_count(old.imei_key),
                        leading_zero_after=leading_zero_count(new.imei_key))

