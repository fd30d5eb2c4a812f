"""Reader for TAC database files, in either of two forms (gzip accepted, read a bounded block
at a time, bad rows reported by line as the lists' reader reports them):

- the GSMA TAC database's export: `|`-separated, a header naming the columns (any order,
  any case, spaces or `_`): `TAC`, `Manufacturer`, `Model Name`, `Device Type`, `Bands`,
  and optionally `Marketing Name` (the model people read, when given), `Allocation Date`
  and others, which are ignored. The radios are read from `Bands` ("GSM 900,WCDMA FDD
  Band I,LTE FDD BAND 3"), the way DIRBS-Core reads them into its `rat_bitmask`.
- a plain CSV, `tac,manufacturer,model,device_type,rats`, header optional (with one, the
  columns may come in any order); `rats` names radios separated by spaces, `;`, `|`, `/` or
  `+` (`GERAN LTE`, `2G;3G;4G`; see `enforcer.engine.tacs.RAT_NAMES`), empty for unknown.

A TAC is 8 digits; 7 digits are a TAC of reporting body 0… whose leading zero a spreadsheet
stripped, a bad row of its own reason (`leading_zero_stripped`). A TAC seen twice keeps its
first row; the later ones are bad (`duplicate_tac`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from enforcer.engine.imei import TAC_DIGITS
from enforcer.engine.tacs import NO_RATS, RAT_NAMES, Rat, TacDatabase, device_type_code
from enforcer.files.listfile import (LEADING_ZERO_STRIPPED, UTF8_BOM, BadRow, LoadReport,
                                     line_blocks)

GSMA_SEPARATOR = "|"
BAD_TAC = "bad_tac"
GSMA_REQUIRED = ("tac", "manufacturer", "model_name", "device_type", "bands")
GSMA_MARKETING_NAME = "marketing_name"
PLAIN_COLUMNS = ("tac", "manufacturer", "model", "device_type", "rats")
RAT_SEPARATORS = re.compile(r"[\s;|/+]+")
TYPICAL_LINE_BYTES = 64  # a plain row with its names: blocks hold about csv_chunk_lines rows
# The GSMA's band names, by the radio they belong to (DIRBS-Core's bands-to-RAT reading).
_BAND_WORDS: tuple[tuple[re.Pattern[str], Rat], ...] = (
    (re.compile(r"GSM|GPRS|EDGE"), Rat.GERAN),
    (re.compile(r"WCDMA|UMTS|HSPA|HSDPA|HSUPA|TD-SCDMA|TDS-CDMA"), Rat.UTRAN),
    (re.compile(r"LTE"), Rat.EUTRA),
    (re.compile(r"\bNR\b|5G"), Rat.NR),
)


class TacFileError(ValueError):
    """The file's header is not one of a TAC file; the message says what it lacks."""


@dataclass
class _Columns:
    """What the rows read so far hold, one entry a TAC."""

    tac: list[int] = field(default_factory=list)
    rats: list[int] = field(default_factory=list)
    device_type: list[int] = field(default_factory=list)
    manufacturer: list[str] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)


def tac_fault(text: str) -> str | None:
    """Why a file's TAC field is no TAC (`bad_tac`, or 7 digits: LEADING_ZERO_STRIPPED);
    None when it is one."""
    if not (text.isascii() and text.isdigit()) or len(text) > TAC_DIGITS:
        return BAD_TAC
    if len(text) == TAC_DIGITS - 1:
        return LEADING_ZERO_STRIPPED
    return None if len(text) == TAC_DIGITS else BAD_TAC


def rats_of_bands(bands: str) -> Rat:
    """The radios a GSMA `Bands` text names; NO_RATS when it names none."""
    text = bands.upper()
    rats = NO_RATS
    for words, rat in _BAND_WORDS:
        if words.search(text):
            rats |= rat
    return rats


def rats_of_names(names: str) -> Rat | None:
    """The radios a plain file's `rats` field names; None when one name is not a radio."""
    rats = NO_RATS
    for name in RAT_SEPARATORS.split(names.strip().lower()):
        if not name:
            continue
        if name not in RAT_NAMES:
            return None
        rats |= RAT_NAMES[name]
    return rats


class TacFileReader:
    def __init__(self, chunk_lines: int, report_limit: int) -> None:
        self._block_bytes = chunk_lines * TYPICAL_LINE_BYTES
        self._report_limit = report_limit

    def read(self, path: Path) -> tuple[TacDatabase, LoadReport]:
        """The database the file holds and the report of its reading. A file that cannot
        be read to its end stops where it does (`LoadReport.unreadable`), and one whose
        first line is a GSMA header lacking a column is read as having no rows, the report
        saying which (`unreadable`)."""
        report = LoadReport(str(path))
        columns = _Columns()
        layout: _Layout | None = None
        for number, block in line_blocks(path, self._block_bytes, report):
            for offset, raw in enumerate(block.split(b"\n")):
                text = raw.decode("utf-8", "replace").strip()
                if layout is None:
                    text = text.removeprefix(UTF8_BOM.decode()).strip()
                    if not text:
                        continue
                    try:
                        layout = _Layout.of_first_line(text)
                    except TacFileError as error:
                        report.unreadable = str(error)
                        return TacDatabase.empty(), report
                    if layout.header:
                        continue
                if text:
                    self._row(layout, number + offset, text, columns, report)
        report.loaded = len(columns.tac)
        return TacDatabase.build(np.array(columns.tac, dtype=np.uint32),
                                 np.array(columns.rats, dtype=np.uint8),
                                 np.array(columns.device_type, dtype=np.uint8),
                                 columns.manufacturer, columns.model), report

    def _row(self, layout: _Layout, number: int, text: str, columns: _Columns,
             report: LoadReport) -> None:
        report.rows += 1
        fields = layout.fields(text)
        if fields is None:
            self._bad(report, number, "bad_quoting", text)
            return
        if len(fields) != layout.width:
            self._bad(report, number, "field_count", text)
            return
        tac_text = fields[layout.tac]
        fault = tac_fault(tac_text)
        if fault is not None:
            if fault == LEADING_ZERO_STRIPPED:
                report.leading_zero_stripped += 1
            self._bad(report, number, fault, text)
            return
        rats = layout.rats(fields)
        if rats is None:
            self._bad(report, number, "unknown_rat", text)
            return
        tac = int(tac_text)
        if tac in columns.seen:
            self._bad(report, number, "duplicate_tac", text)
            return
        columns.seen.add(tac)
        columns.tac.append(tac)
        columns.rats.append(int(rats))
        columns.device_type.append(device_type_code(fields[layout.device_type]))
        columns.manufacturer.append(fields[layout.manufacturer])
        columns.model.append(layout.model(fields))

    def _bad(self, report: LoadReport, number: int, reason: str, text: str) -> None:
        report.bad += 1
        if len(report.bad_rows) < self._report_limit:
            report.bad_rows.append(BadRow(number, reason, text))


@dataclass(frozen=True)
class _Layout:
    """Where a file's columns are, and how its fields and radios are read."""

    gsma: bool
    header: bool
    width: int
    tac: int
    manufacturer: int
    model_column: int
    marketing_name: int | None
    device_type: int
    radios: int

    @classmethod
    def of_first_line(cls, text: str) -> _Layout:
        if GSMA_SEPARATOR in text:
            names = [header_name(f) for f in text.split(GSMA_SEPARATOR)]
            missing = [n for n in GSMA_REQUIRED if n not in names]
            if missing:
                raise TacFileError(f"a GSMA TAC export's header lacks {', '.join(missing)}")
            marketing = names.index(GSMA_MARKETING_NAME) if GSMA_MARKETING_NAME in names else None
            return cls(True, True, len(names), names.index("tac"), names.index("manufacturer"),
                       names.index("model_name"), marketing, names.index("device_type"),
                       names.index("bands"))
        first = csv_fields(text) or [""]
        names = [header_name(f) for f in first]
        if names[0] == "tac":
            missing = [n for n in PLAIN_COLUMNS if n not in names]
            if missing:
                raise TacFileError(f"a TAC file's header lacks {', '.join(missing)}")
            return cls(False, True, len(names), *(names.index(n) for n in PLAIN_COLUMNS[:3]),
                       None, names.index("device_type"), names.index("rats"))
        return cls(False, False, len(PLAIN_COLUMNS), 0, 1, 2, None, 3, 4)

    def fields(self, text: str) -> list[str] | None:
        if self.gsma:
            return [f.strip().replace('"', "") for f in text.split(GSMA_SEPARATOR)]
        return csv_fields(text)

    def rats(self, fields: list[str]) -> Rat | None:
        radios = fields[self.radios]
        return rats_of_bands(radios) if self.gsma else rats_of_names(radios)

    def model(self, fields: list[str]) -> str:
        if self.marketing_name is not None and fields[self.marketing_name]:
            return fields[self.marketing_name]
        return fields[self.model_column]


def header_name(header_field: str) -> str:
    """A header field as a column name: unquoted, lower-case, spaces as `_`."""
    return header_field.strip().strip('"').strip().lower().replace(" ", "_")


def csv_fields(text: str) -> list[str] | None:
    """One CSV line's fields, stripped; None when its quotes are not closed."""
    try:
        return [f.strip() for f in next(csv.reader([text], strict=True), [])]
    except csv.Error:
        return None
