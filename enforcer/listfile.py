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

from enforcer.digits import ZERO, luhn_digits, matrix_values
from enforcer.imei import (IMEI_DIGITS, IMEISV_DIGITS, KEY_DIGITS, SPARE_CHECK_DIGIT, CheckDigit,
                           ImeiRules, parse_imei)
from enforcer.lists import BLACK_REASONS, BlackReason
from enforcer.roaringfmt import bitmap_from_sorted_keys

GZIP_MAGIC = b"\x1f\x8b"
HEADER_NAMES = frozenset({"imei", "imei_key", "pei", "imeisv", "imeis", "cartable_id"})
UTF8_BOM = b"\xef\xbb\xbf"
NEWLINE, CARRIAGE_RETURN = ord("\n"), ord("\r")
SPARE = int(SPARE_CHECK_DIGIT)
TYPICAL_LINE_BYTES = 16  # one IMEI and its newline: blocks hold about csv_chunk_lines lines


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
        first = True  # the first non-blank line, which may be a header, is still to come
        for number, block in line_blocks(path, self._chunk_lines * TYPICAL_LINE_BYTES):
            uniform = None if first else uniform_imeis(block)
            if uniform is not None:
                keys, mismatches = uniform
                report.rows += len(keys)
                report.check_digit_mismatch += mismatches
            else:
                lines = block.split(b"\n")  # as iterating the file splits: on LF only
                if not lines[-1]:
                    lines.pop()
                rows, first = _rows(lines, number, first)
                keys, _ = self._parse(rows, report, with_reason=False)
            white |= bitmap_from_sorted_keys(sorted_unique(keys))
        report.loaded = len(white)
        return white, report

    def read_black(self, path: Path) -> tuple[dict[BlackReason, BitMap64], LoadReport]:
        report = LoadReport(str(path))
        black = {r: BitMap64() for r in BlackReason}
        for keys, reasons in self._chunks(path, report, with_reason=True):
            for code, reason in enumerate(BLACK_REASONS):
                chosen = keys[reasons == code]
                if len(chosen):
                    black[reason] |= bitmap_from_sorted_keys(sorted_unique(chosen))
        report.loaded = len(BitMap64.union(*black.values()))
        return black, report

    def _chunks(self, path: Path, report: LoadReport,
                with_reason: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for rows in csv_row_chunks(path, self._chunk_lines):
            yield self._parse(rows, report, with_reason)

    def _parse(self, rows: list[tuple[int, list[bytes], bytes]], report: LoadReport,
               with_reason: bool) -> tuple[np.ndarray, np.ndarray]:
        reasons_by_name = {r.value: i for i, r in enumerate(BLACK_REASONS)}
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
        return np.array(keys, dtype=np.uint64), np.array(reasons, dtype=np.uint8)

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
        number, first = 0, True
        while True:
            lines = list(islice(stream, chunk_lines))
            if not lines:
                return
            rows, first = _rows(lines, number + 1, first)
            yield rows
            number += len(lines)


def _rows(lines: list[bytes], first_number: int, first: bool
          ) -> tuple[list[tuple[int, list[bytes], bytes]], bool]:
    """The data rows of `lines`, and whether the file's first non-blank line is still to
    come (only it may be a header)."""
    rows = []
    for number, raw in enumerate(lines, first_number):
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
    return rows, first


def line_blocks(path: Path, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, complete lines) blocks of about `block_bytes`; the first
    line comes alone, since a header is read line by line."""
    with _open(path) as stream:
        first = stream.readline()
        if not first:
            return
        yield 1, first
        number, carry = 2, b""
        while True:
            data = stream.read(block_bytes)
            if not data:
                if carry:
                    yield number, carry
                return
            data = carry + data
            end = data.rfind(b"\n") + 1
            if end == 0:
                carry = data
                continue
            block, carry = data[:end], data[end:]
            yield number, block
            number += block.count(b"\n")


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique, by sorting: numpy 2's hashing unique is several times slower on IMEIs."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


def uniform_imeis(block: bytes) -> tuple[np.ndarray, int] | None:
    """(keys, check-digit mismatches) when every line of `block` is one IMEI of the same
    width (14, 15 or 16 ASCII digits, LF or CRLF ends): the common national file, read
    with numpy. None when any line is otherwise; the caller then reads it line by line."""
    data = np.frombuffer(block, dtype=np.uint8)
    if not len(data) or data[-1] != NEWLINE:
        return None
    width = int(np.argmax(data == NEWLINE)) + 1
    if len(data) % width:
        return None
    lines = data.reshape(-1, width)
    if not (lines[:, -1] == NEWLINE).all():
        return None
    digits = lines[:, :-1]
    if width > 1 and (digits[:, -1] == CARRIAGE_RETURN).all():
        digits = digits[:, :-1]
    if digits.shape[1] not in (KEY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS):
        return None
    if not ((digits >= ZERO) & (digits <= ZERO + 9)).all():
        return None
    keys = matrix_values(digits[:, :KEY_DIGITS])
    mismatches = 0
    if digits.shape[1] == IMEI_DIGITS:
        sent = digits[:, KEY_DIGITS] - ZERO
        mismatches = int(((sent != luhn_digits(digits[:, :KEY_DIGITS]))
                          & (sent != SPARE)).sum())
    return keys, mismatches


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(len(GZIP_MAGIC))
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else path.open("rb")
