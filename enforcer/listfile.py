"""Streaming reader for the registry's list files: `imei[,reason]`, header optional, gzip
accepted. A file is read a bounded number of lines at a time and each chunk is merged into
roaring bitmaps, so a 300 M-row national list never exists as Python objects."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Iterator

import numpy as np
from pyroaring import BitMap64

from enforcer.imei import IMEISV_DIGITS, KEY_DIGITS, CheckDigit, ImeiRules, parse_imei
from enforcer.lists import BLACK_REASONS, BlackReason
from enforcer.roaringfmt import bitmap_from_sorted_keys

GZIP_MAGIC = b"\x1f\x8b"
HEADER_NAMES = frozenset({"imei", "imei_key", "pei", "imeisv", "imeis", "cartable_id"})
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str
    text: str


@dataclass
class LoadReport:
    path: str
    rows: int = 0
    loaded: int = 0
    bad: int = 0
    check_digit_mismatch: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path, "rows": self.rows, "loaded": self.loaded, "bad": self.bad,
            "check_digit_mismatch": self.check_digit_mismatch,
            "bad_rows": [{"line": b.line, "reason": b.reason, "text": b.text}
                         for b in self.bad_rows],
        }


class ListFileReader:
    def __init__(self, rules: ImeiRules, chunk_lines: int, report_limit: int) -> None:
        self._rules = rules
        self._chunk_lines = chunk_lines
        self._report_limit = report_limit

    def read_white(self, path: Path) -> tuple[BitMap64, LoadReport]:
        report = LoadReport(str(path))
        white = BitMap64()
        for keys, _ in self._chunks(path, report, with_reason=False):
            white |= bitmap_from_sorted_keys(np.unique(keys))
        report.loaded = len(white)
        return white, report

    def read_black(self, path: Path) -> tuple[dict[BlackReason, BitMap64], LoadReport]:
        report = LoadReport(str(path))
        black = {r: BitMap64() for r in BlackReason}
        for keys, reasons in self._chunks(path, report, with_reason=True):
            for code, reason in enumerate(BLACK_REASONS):
                chosen = keys[reasons == code]
                if len(chosen):
                    black[reason] |= bitmap_from_sorted_keys(np.unique(chosen))
        report.loaded = len(BitMap64.union(*black.values()))
        return black, report

    def _chunks(self, path: Path, report: LoadReport,
                with_reason: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        reasons_by_name = {r.value: i for i, r in enumerate(BLACK_REASONS)}
        for rows in csv_row_chunks(path, self._chunk_lines):
            keys: list[int] = []
            reasons: list[int] = []
            for number, fields, text in rows:
                report.rows += 1
                key = self._key(fields[0], number, text, report)
                if key is None:
                    continue
                if with_reason:
                    name = fields[1].decode("utf-8", "replace").lower() if len(fields) > 1 else ""
                    if name not in reasons_by_name:
                        self.bad(report, number, "unknown_reason" if name else
                                 "missing_reason", text)
                        continue
                    reasons.append(reasons_by_name[name])
                keys.append(key)
            yield np.array(keys, dtype=np.uint64), np.array(reasons, dtype=np.uint8)

    def _key(self, field_: bytes, number: int, text: bytes, report: LoadReport) -> int | None:
        # Fast path for the overwhelmingly common clean row; anything else gets the full parser.
        # (15 digits carry a check digit to verify, so they take the full parser.)
        if len(field_) in (KEY_DIGITS, IMEISV_DIGITS) and field_.isdigit():
            return int(field_[:KEY_DIGITS])
        parsed = parse_imei(field_.decode("utf-8", "replace"), self._rules)
        if parsed.key is None:
            self.bad(report, number, parsed.problems[0].value, text)
            return None
        if parsed.check_digit is CheckDigit.MISMATCH:
            report.check_digit_mismatch += 1
        return int(parsed.key)

    def bad(self, report: LoadReport, number: int, reason: str, text: bytes) -> None:
        report.bad += 1
        if len(report.bad_rows) < self._report_limit:
            report.bad_rows.append(BadRow(number, reason, text.decode("utf-8", "replace")))


def csv_row_chunks(path: Path, chunk_lines: int
                   ) -> Iterator[list[tuple[int, list[bytes], bytes]]]:
    """Chunks of (line number, fields, line) for the data rows of a CSV file: blank lines
    and a header on line 1 are skipped, fields are stripped of spaces and quotes."""
    with _open(path) as stream:
        number = 0
        first = True
        while True:
            lines = list(islice(stream, chunk_lines))
            if not lines:
                return
            rows = []
            for raw in lines:
                number += 1
                text = raw.strip()
                if not text:
                    continue
                if first:
                    # Spreadsheet exports start with a byte-order mark; a header may follow.
                    text = text.removeprefix(UTF8_BOM).strip()
                    if not text:
                        continue
                    first = False
                    name = text.split(b",", 1)[0].strip().strip(b'"')
                    if name.decode("utf-8", "replace").lower() in HEADER_NAMES:
                        continue
                fields = [f.strip().strip(b'"') for f in text.split(b",")]
                rows.append((number, fields, text))
            yield rows


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(len(GZIP_MAGIC))
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else path.open("rb")
