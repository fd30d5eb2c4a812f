"""Readers for the registry's device files, with bad rows reported by line number:

- devices: `imeis,owner_msisdn,source,registered_on`; imeis in slot order separated by `;`,
  owner empty when the device is in no cartable, source one of import, passenger,
  pre_scheme, repair, registered_on YYYY-MM-DD;
- cartables (national-ID cartables): `cartable_id,msisdn`, one row per SIM;
- operator SIMs: `imei,msisdn`.

An IMEI whose leading zero a spreadsheet stripped makes its row bad,
`imei_leading_zero_stripped` (see `enforcer.files.listfile.ZeroStripped`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np

from enforcer.engine.imei import ImeiRules, parse_imei
from enforcer.files.listfile import (LEADING_ZERO_STRIPPED, NOT_HELD, ListFileReader, LoadReport,
                                     csv_row_chunks)
from enforcer.engine.pairset import PairSet
from enforcer.engine.devices import (FIRST_DAY, LAST_DAY, MAX_SLOTS, NO_CARTABLE, OWNER_LIMIT,
                                     Cartables, DeviceColumns, DeviceRecord, Source, day_number)
from enforcer.engine.subscriber import IdentityError, parse_msisdn

SLOT_SEPARATOR = b";"
IMEI_ZERO_STRIPPED = f"imei_{LEADING_ZERO_STRIPPED}"


class RegistryFileReader:
    def __init__(self, rules: ImeiRules, reader: ListFileReader, chunk_lines: int) -> None:
        self._rules = rules
        self._reader = reader
        self._chunk_lines = chunk_lines

    def read_devices(self, path: Path) -> tuple[DeviceColumns, LoadReport]:
        report = LoadReport(str(path))
        stripped = self._reader.zero_stripped(IMEI_ZERO_STRIPPED)
        records: list[DeviceRecord] = []
        holds: list[int] = []
        for rows in csv_row_chunks(path, self._chunk_lines, report):
            for number, fields, text in rows:
                report.rows += 1
                # Every IMEI of the row votes on the file's widths; the row is held at the
                # first width one of them is held at.
                held = next((width for width in [stripped.vote(imei.strip()) for imei in
                                                 fields[0].split(SLOT_SEPARATOR)] if width),
                            NOT_HELD)
                parsed = self._device(fields)
                if isinstance(parsed, str):
                    self._reader.bad(report, number, parsed, text)
                    continue
                if held:
                    stripped.hold(held, number, text)
                records.append(parsed)
                holds.append(held)
        bad = stripped.settle(report)
        if bad:
            # The file's order is kept: of two devices that claim one IMEI, the first wins.
            records = [record for record, held in zip(records, holds) if held not in bad]
        report.loaded = len(records)
        return DeviceColumns.from_records(records), report

    def _device(self, fields: list[bytes]) -> DeviceRecord | str:
        if len(fields) != 4:
            return "expected_4_fields"
        imeis = []
        for text in fields[0].split(SLOT_SEPARATOR):
            parsed = parse_imei(text.decode("utf-8", "replace"), self._rules)
            if parsed.imei_key is None:
                return f"imei_{parsed.problems[0].value}"
            imeis.append(parsed.imei_key)
        if not 1 <= len(imeis) <= MAX_SLOTS or len(set(imeis)) != len(imeis):
            return "bad_slots"
        owner = None
        if fields[1]:
            try:
                owner = parse_msisdn(fields[1].decode("utf-8", "replace"))
            except IdentityError:
                return "bad_owner_msisdn"
            if owner >= OWNER_LIMIT:
                return "owner_msisdn_too_long"
        try:
            source = Source(fields[2].decode("utf-8", "replace"))
        except ValueError:
            return "unknown_source"
        try:
            day = date.fromisoformat(fields[3].decode("ascii", "replace"))
        except ValueError:
            return "bad_registered_on"
        if not FIRST_DAY <= day_number(day) <= LAST_DAY:
            return "registered_on_out_of_range"
        return DeviceRecord(tuple(imeis), owner, source, day)

    def read_cartables(self, path: Path) -> tuple[Cartables, LoadReport]:
        report = LoadReport(str(path))
        msisdns: list[int] = []
        ids: list[int] = []
        for rows in csv_row_chunks(path, self._chunk_lines, report):
            for number, fields, text in rows:
                report.rows += 1
                try:
                    cartable = int(fields[0])
                    msisdn = parse_msisdn(fields[1].decode("utf-8", "replace"))
                except (ValueError, IndexError):
                    self._reader.bad(report, number, "bad_cartable_row", text)
                    continue
                if not 0 <= cartable < NO_CARTABLE:
                    self._reader.bad(report, number, "cartable_id_out_of_range", text)
                    continue
                ids.append(cartable)
                msisdns.append(msisdn)
        report.loaded = len(msisdns)
        return Cartables.from_links(np.array(msisdns, np.uint64), np.array(ids, np.uint32)), report

    def read_operator_sims(self, path: Path) -> tuple[PairSet, LoadReport]:
        report = LoadReport(str(path))
        stripped = self._reader.zero_stripped(IMEI_ZERO_STRIPPED)
        keys: list[int] = []
        msisdns: list[int] = []
        holds: list[int] = []
        for rows in csv_row_chunks(path, self._chunk_lines, report):
            for number, fields, text in rows:
                report.rows += 1
                held = stripped.vote(fields[0])
                parsed = parse_imei(fields[0].decode("utf-8", "replace"), self._rules)
                try:
                    msisdn = parse_msisdn(fields[1].decode("utf-8", "replace"))
                except (IdentityError, IndexError):
                    self._reader.bad(report, number, "bad_msisdn", text)
                    continue
                if parsed.imei_key is None:
                    self._reader.bad(report, number, f"imei_{parsed.problems[0].value}", text)
                    continue
                if held:
                    stripped.hold(held, number, text)
                keys.append(parsed.imei_key)
                msisdns.append(msisdn)
                holds.append(held)
        bad = stripped.settle(report)
        kept = ~np.isin(np.array(holds, np.uint8), list(bad))
        report.loaded = int(kept.sum())
        return PairSet.from_pairs(np.array(keys, np.uint64)[kept],
                                  np.array(msisdns, np.uint64)[kept]), report
