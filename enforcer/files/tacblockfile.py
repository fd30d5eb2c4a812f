"""Reader for the regulator's list of blocked TACs: a CSV `tac,reason` (header optional;
with one, the two columns in either order), gzip accepted, read a bounded block at a time,
bad rows reported by line as the lists' reader reports them.

`reason` is one of `enforcer.engine.tacblocks.TacBlockReason` in any case, with spaces or
`-` for `_` ("Not type-approved" is `not_type_approved`); another is a bad row
(`unknown_reason`). The TAC is checked as the TAC database's reader checks it (`bad_tac`,
`leading_zero_stripped`); a TAC seen twice keeps its first row (`duplicate_tac`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from enforcer.engine.tacblocks import TAC_BLOCK_REASONS, BlockedTacs
from enforcer.files.listfile import (LEADING_ZERO_STRIPPED, UTF8_BOM, BadRow, LoadReport,
                                     line_blocks)
from enforcer.files.tacfile import csv_fields, header_name, tac_fault

COLUMNS = ("tac", "reason")
TYPICAL_LINE_BYTES = 32  # "35209900,not_type_approved": blocks hold about csv_chunk_lines rows
_REASON_CODES = {reason.value: code for code, reason in enumerate(TAC_BLOCK_REASONS)}


def reason_code(text: str) -> int | None:
    """TAC_BLOCK_REASONS index of a file's reason, None when it names none."""
    return _REASON_CODES.get(text.strip().lower().replace(" ", "_").replace("-", "_"))


class TacBlockFileReader:
    def __init__(self, chunk_lines: int, report_limit: int) -> None:
        self._block_bytes = chunk_lines * TYPICAL_LINE_BYTES
        self._report_limit = report_limit

    def read(self, path: Path) -> tuple[BlockedTacs, LoadReport]:
        """The blocked TACs the file holds and the report of its reading; a file that cannot
        be read to its end stops where it does (`LoadReport.unreadable`)."""
        report = LoadReport(str(path))
        tacs: dict[int, int] = {}  # TAC -> reason code, first row kept
        columns: tuple[int, int] | None = None  # where tac and reason are
        for number, block in line_blocks(path, self._block_bytes, report):
            for offset, raw in enumerate(block.split(b"\n")):
                text = raw.decode("utf-8", "replace").strip()
                if columns is None:
                    text = text.removeprefix(UTF8_BOM.decode()).strip()
                    if not text:
                        continue
                    names = [header_name(f) for f in csv_fields(text) or [""]]
                    columns = (0, 1)
                    if names[0] in COLUMNS and set(COLUMNS) <= set(names):
                        columns = (names.index("tac"), names.index("reason"))
                        continue
                if text:
                    self._row(columns, number + offset, text, tacs, report)
        report.loaded = len(tacs)
        return BlockedTacs.build(np.fromiter(tacs, np.uint32, len(tacs)),
                                 np.fromiter(tacs.values(), np.uint8, len(tacs))), report

    def _row(self, columns: tuple[int, int], number: int, text: str, tacs: dict[int, int],
             report: LoadReport) -> None:
        report.rows += 1
        fields = csv_fields(text)
        if fields is None:
            self._bad(report, number, "bad_quoting", text)
            return
        if len(fields) != len(COLUMNS):
            self._bad(report, number, "field_count", text)
            return
        tac_text, reason_text = fields[columns[0]], fields[columns[1]]
        fault = tac_fault(tac_text)
        if fault is not None:
            if fault == LEADING_ZERO_STRIPPED:
                report.leading_zero_stripped += 1
            self._bad(report, number, fault, text)
            return
        code = reason_code(reason_text)
        if code is None:
            self._bad(report, number, "unknown_reason", text)
            return
        if int(tac_text) in tacs:
            self._bad(report, number, "duplicate_tac", text)
            return
        tacs[int(tac_text)] = code

    def _bad(self, report: LoadReport, number: int, reason: str, text: str) -> None:
        report.bad += 1
        if len(report.bad_rows) < self._report_limit:
            report.bad_rows.append(BadRow(number, reason, text))

