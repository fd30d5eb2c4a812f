"""Streaming reader for the registry's list files: `imei[,reason]`, header optional, gzip
accepted. A file is read a bounded number of lines at a time, so a 300 M-row national list
never exists as Python objects: a white list into its index, in two readings
(`enforcer.engine.keysort`), a black list's chunks merged into roaring bitmaps.

IMEIs whose leading zero a spreadsheet stripped are recognised in every file that holds
IMEIs (`ZeroStripped`) and reported as bad rows of their own reason. A file that cannot be
read to its end (truncated or corrupt gzip, no permission, gone) is read as far as it goes
and the report says why (`LoadReport.unreadable`): the delivery is then refused, whatever
its rows (`enforcer.files.delivery.file_refusal`)."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Callable, Iterator, NamedTuple, TypeVar

import numpy as np
from pyroaring import BitMap64

from enforcer.engine.digits import ZERO, luhn_digits, matrix_values
from enforcer.engine.imei import (IMEI_DIGITS, IMEISV_DIGITS, KEY_DIGITS, SPARE_CHECK_DIGIT,
                                  CheckDigit, ImeiRules, luhn_digit, parse_imei)
from enforcer.engine.keyindex import KeyIndex, sorted_unique
from enforcer.engine.keysort import ChunkTally, LowMaker, in_memory_low
from enforcer.engine.lists import BLACK_REASONS, BlackReason
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys

GZIP_MAGIC = b"\x1f\x8b"
HEADER_NAMES = frozenset({"imei", "imei_key", "pei", "imeisv", "imeis", "cartable_id", "imsi"})
UTF8_BOM = b"\xef\xbb\xbf"
NEWLINE, CARRIAGE_RETURN = ord("\n"), ord("\r")
SPARE = int(SPARE_CHECK_DIGIT)
TYPICAL_LINE_BYTES = 16  # one IMEI and its newline: blocks hold about csv_chunk_lines lines
LEADING_ZERO_STRIPPED = "leading_zero_stripped"
CHANGED_WHILE_READ = "the file changed while it was read"
PIECE_KEYS = 1 << 20  # keys held back from a white list's blocks, counted and placed at a time
T = TypeVar("T")
# What reading a file raises when the file is at fault, not the product: the operating
# system's refusals (nothing there, a directory, no permission, an I/O error;
# gzip.BadGzipFile is one too) and a gzip stream cut short (EOFError) or corrupt (zlib.error).
UNREADABLE = (OSError, EOFError, zlib.error)


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
    leading_zero_stripped: int = 0  # of the bad rows
    bad_rows: list[BadRow] = field(default_factory=list)
    unreadable: str | None = None  # why the file could not be read past its `rows`

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path, "rows": self.rows, "loaded": self.loaded, "bad": self.bad,
            "check_digit_mismatch": self.check_digit_mismatch,
            "leading_zero_stripped": self.leading_zero_stripped,
            "bad_rows": [{"line": b.line, "reason": b.reason, "text": b.text}
                         for b in self.bad_rows],
            "unreadable": self.unreadable,
        }


NOT_HELD = 0  # ZeroStripped.vote: the row is no stripped IMEI or IMEISV


class ZeroStripped:
    """The rows of one file that may have lost their leading zero to a spreadsheet that saved
    IMEIs as numbers, in either of the two forms it makes:

    - a 15-digit IMEI saved as 14 digits (`013327001001504` as `13327001001504`): 14 digits
      whose zero-padded 15-digit form passes the check digit (Luhn, 3GPP TS 23.003 Annex B).
      One honest 14-digit key in ten passes too: these rows are bad in a file of 15-digit
      IMEIs (more of them than 14-digit rows that fail the test), keys otherwise.
    - a 16-digit IMEISV saved as 15 digits: 15 digits whose last is neither the check digit
      nor the spare 0 (an IMEISV's SVN is no check digit: about eight in ten fail so). These
      rows are bad in a file of IMEISVs (more of them than 15-digit rows that pass),
      IMEIs with a wrong check digit otherwise.

    So each such row is held until the whole file has been read, by the width it was read
    at (`KEY_DIGITS` or `IMEI_DIGITS`). The caller keeps the held rows' values by that width;
    this counts them, and the IMEI fields of each width, and keeps the first few for the
    report."""

    def __init__(self, reason: str, report_limit: int) -> None:
        self.reason = reason
        self.keys = 0  # 14-digit fields that cannot be a stripped IMEI
        self.imeis = 0  # 15-digit fields
        self.checked_imeis = 0  # of them, those whose check digit holds (or is the spare 0)
        self.imeisvs = 0  # 16-digit fields
        self.held = {KEY_DIGITS: 0, IMEI_DIGITS: 0}
        self._first: dict[int, list[BadRow]] = {KEY_DIGITS: [], IMEI_DIGITS: []}
        self._report_limit = report_limit

    def vote(self, imei: bytes) -> int:
        """Counts one IMEI field (ASCII digits as read); the width its row is held at, or
        NOT_HELD."""
        if not imei.isdigit():
            return NOT_HELD
        if len(imei) == KEY_DIGITS:
            if luhn_digit("0" + imei[:-1].decode()) == chr(imei[-1]):
                return KEY_DIGITS
            self.keys += 1
        elif len(imei) == IMEI_DIGITS:
            self.imeis += 1
            if chr(imei[-1]) not in (luhn_digit(imei[:-1].decode()), SPARE_CHECK_DIGIT):
                return IMEI_DIGITS
            self.checked_imeis += 1
        elif len(imei) == IMEISV_DIGITS:
            self.imeisvs += 1
        return NOT_HELD

    def vote_block(self, block: UniformBlock, first_line: int) -> np.ndarray:
        """`vote` for each row of a uniform block (one IMEI a line, starting at line
        `first_line`), the rows it holds already `hold`-ed: the width each is held at."""
        digits = block.digits
        width = digits.shape[1]
        held = np.zeros(len(digits), dtype=bool)
        if width == IMEISV_DIGITS:
            self.imeisvs += len(digits)
        elif width == IMEI_DIGITS:
            held = block.mismatched
            self.imeis += len(digits)
            self.checked_imeis += len(digits) - block.check_digit_mismatch
        elif width == KEY_DIGITS:
            padded = np.full((len(digits), KEY_DIGITS), ZERO, dtype=np.uint8)
            padded[:, 1:] = digits[:, :-1]
            held = luhn_digits(padded) == digits[:, -1] - ZERO
            self.keys += len(digits) - int(held.sum())
        for row in np.flatnonzero(held):
            self.hold(width, first_line + int(row), digits[row].tobytes())
        return np.where(held, width, NOT_HELD).astype(np.uint8)

    def hold(self, width: int, line: int, text: bytes) -> None:
        self.held[width] += 1
        if len(self._first[width]) < self._report_limit:
            self._first[width].append(BadRow(line, self.reason, text.decode("utf-8", "replace")))

    def settle(self, report: LoadReport) -> frozenset[int]:
        """Once the file is read: the widths whose held rows are bad rows, now counted and
        reported (by line, within the report's limit) in `report`."""
        bad = frozenset(width for width, stripped in (
            (KEY_DIGITS, self.imeis > self.keys),
            (IMEI_DIGITS, self.imeisvs > self.checked_imeis)) if stripped)
        for width in bad:
            report.bad += self.held[width]
            report.leading_zero_stripped += self.held[width]
            report.bad_rows = sorted([*report.bad_rows, *self._first[width]],
                                     key=lambda row: row.line)[:self._report_limit]
        return bad


class ListFileReader:
    def __init__(self, rules: ImeiRules, chunk_lines: int, report_limit: int) -> None:
        self._rules = rules
        self._chunk_lines = chunk_lines
        self._report_limit = report_limit

    def zero_stripped(self, reason: str = LEADING_ZERO_STRIPPED) -> ZeroStripped:
        return ZeroStripped(reason, self._report_limit)

    def read_white(self, path: Path, make_low: LowMaker = in_memory_low
                   ) -> tuple[KeyIndex, LoadReport]:
        """The white list of `path` as an index, and what was read. The file is read twice
        (`enforcer.engine.keysort`): the keys of each chunk counted, then placed in rows
        `make_low` makes room for, so that no set of the whole list is held beside the
        index (a bitmap was 0.44 GB at 300 M IMEIs, 20 % of a national state; issue 21
        part 4). A file that reads otherwise the second time (changed, cut, gone) is
        `unreadable` in the report, with an empty list: the delivery is refused."""
        report = LoadReport(str(path))
        tally = ChunkTally()
        held = self._white_pass(path, report, tally.add)
        for keys in _pieces(held):
            tally.add(keys)
        placement = tally.placement(make_low)
        again = LoadReport(str(path))
        try:
            self._white_pass(path, again, placement.add)
            for keys in _pieces(held):
                placement.add(keys)
            white = placement.index()
        except ValueError:
            report.unreadable = again.unreadable or CHANGED_WHILE_READ
            return KeyIndex.from_sorted_keys(np.zeros(0, np.uint64)), report
        report.loaded = len(white)
        return white, report

    def _white_pass(self, path: Path, report: LoadReport,
                    take: Callable[[np.ndarray], None]) -> BitMap64:
        """One reading of a white list: each block's keys given to `take` (uint64, in file
        order, repeats kept), but those `ZeroStripped` holds, which are returned once the
        file is read where their width is not settled as bad (a bitmap: in a file of
        14-digit keys, one in ten is held)."""
        held = {KEY_DIGITS: BitMap64(), IMEI_DIGITS: BitMap64()}
        stripped = self.zero_stripped()
        first = True  # the first non-blank line, which may be a header, is still to come
        for number, block in line_blocks(path, self._chunk_lines * TYPICAL_LINE_BYTES,
                                         report):
            uniform = None if first else uniform_imeis(block)
            if uniform is not None:
                keys = uniform.keys
                holds = stripped.vote_block(uniform, number)
                report.rows += len(keys)
                report.check_digit_mismatch += uniform.check_digit_mismatch
            else:
                lines = block.split(b"\n")  # as iterating the file splits: on LF only
                if not lines[-1]:
                    lines.pop()
                rows, first = _rows(lines, number, first)
                keys, _, holds = self._parse(rows, report, False, stripped)
            if holds.any():
                for width, keys_held in held.items():
                    keys_held |= bitmap_from_sorted_keys(sorted_unique(keys[holds == width]))
                keys = keys[holds == NOT_HELD]
            take(keys)
        bad = stripped.settle(report)
        return BitMap64.union(BitMap64(), *(keys_held for width, keys_held in held.items()
                                            if width not in bad))

    def read_black(self, path: Path) -> tuple[dict[BlackReason, BitMap64], LoadReport]:
        report = LoadReport(str(path))
        black = {r: BitMap64() for r in BlackReason}
        held = {width: {r: BitMap64() for r in BlackReason}
                for width in (KEY_DIGITS, IMEI_DIGITS)}
        stripped = self.zero_stripped()
        for keys, reasons, holds in self._chunks(path, report, True, stripped):
            kept = holds == NOT_HELD
            _add_by_reason(black, keys[kept], reasons[kept])
            for width, by_reason in held.items():
                _add_by_reason(by_reason, keys[holds == width], reasons[holds == width])
        bad = stripped.settle(report)
        for width, by_reason in held.items():
            for reason, keys in by_reason.items():
                if width not in bad:
                    black[reason] |= keys
        report.loaded = len(BitMap64.union(*black.values()))
        return black, report

    def _chunks(self, path: Path, report: LoadReport, with_reason: bool,
                stripped: ZeroStripped) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for rows in csv_row_chunks(path, self._chunk_lines, report):
            yield self._parse(rows, report, with_reason, stripped)

    def _parse(self, rows: list[tuple[int, list[bytes], bytes]], report: LoadReport,
               with_reason: bool, stripped: ZeroStripped
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys, reason codes (when `with_reason`) and the width `stripped` holds each row at
        (NOT_HELD: none)."""
        reasons_by_name = {r.value: i for i, r in enumerate(BLACK_REASONS)}
        keys: list[int] = []
        reasons: list[int] = []
        holds: list[int] = []
        for number, fields, text in rows:
            report.rows += 1
            held = stripped.vote(fields[0])
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
            if held:
                stripped.hold(held, number, text)
            keys.append(key)
            holds.append(held)
        return (np.array(keys, dtype=np.uint64), np.array(reasons, dtype=np.uint8),
                np.array(holds, dtype=np.uint8))

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


def _pieces(keys: BitMap64) -> Iterator[np.ndarray]:
    """A bitmap's keys, ascending, PIECE_KEYS at a time (uint64 each)."""
    iterator = iter(keys)
    for start in range(0, len(keys), PIECE_KEYS):
        size = min(PIECE_KEYS, len(keys) - start)
        yield np.fromiter(islice(iterator, size), np.uint64, size)


def _add_by_reason(black: dict[BlackReason, BitMap64], keys: np.ndarray,
                   reasons: np.ndarray) -> None:
    for code, reason in enumerate(BLACK_REASONS):
        chosen = keys[reasons == code]
        if len(chosen):
            black[reason] |= bitmap_from_sorted_keys(sorted_unique(chosen))


def csv_row_chunks(path: Path, chunk_lines: int, report: LoadReport
                   ) -> Iterator[list[tuple[int, list[bytes], bytes]]]:
    """Chunks of (line number, fields, line) for the data rows of a CSV file: blank lines
    and a header on line 1 are skipped, fields are stripped of spaces and quotes. They end
    where the file cannot be read further, `report.unreadable` saying why."""
    return _as_far_as_readable(_row_chunks(path, chunk_lines), report)


def _row_chunks(path: Path, chunk_lines: int) -> Iterator[list[tuple[int, list[bytes], bytes]]]:
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


def line_blocks(path: Path, block_bytes: int, report: LoadReport
                ) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, complete lines) blocks of about `block_bytes`; the first
    line comes alone, since a header is read line by line. They end where the file cannot
    be read further, `report.unreadable` saying why."""
    return _as_far_as_readable(_blocks(path, block_bytes), report)


def _blocks(path: Path, block_bytes: int) -> Iterator[tuple[int, bytes]]:
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


class UniformBlock(NamedTuple):
    keys: np.ndarray  # uint64
    check_digit_mismatch: int
    digits: np.ndarray  # the lines' ASCII digits, one row a line, line ends left out
    # bool, a line: its check digit is neither the Luhn digit nor the spare 0 (all False
    # but for 15 digits)
    mismatched: np.ndarray


def uniform_imeis(block: bytes) -> UniformBlock | None:
    """The block read with numpy when every line is one IMEI of the same width (14, 15 or
    16 ASCII digits, LF or CRLF ends): the common national file. None when any line is
    otherwise; the caller then reads it line by line."""
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
    mismatched = np.zeros(len(digits), dtype=bool)
    if digits.shape[1] == IMEI_DIGITS:
        sent = digits[:, KEY_DIGITS] - ZERO
        mismatched = (sent != luhn_digits(digits[:, :KEY_DIGITS])) & (sent != SPARE)
    return UniformBlock(keys, int(mismatched.sum()), digits, mismatched)


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(len(GZIP_MAGIC))
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else path.open("rb")


def _as_far_as_readable(chunks: Iterator[T], report: LoadReport) -> Iterator[T]:
    """`chunks` of a file until a fault of the file's (at its opening or part way) ends
    them; `report.unreadable` then says why, and the rows read until then stay counted."""
    try:
        yield from chunks
    except UNREADABLE as exc:
        report.unreadable = _unreadable_why(exc)


def _unreadable_why(exc: OSError | EOFError | zlib.error) -> str:
    """Why a file could not be read, for a report: a gzip stream's faults by name, the
    operating system's by its own words ("Permission denied", "Is a directory")."""
    if isinstance(exc, EOFError):
        return "truncated gzip (it ends before its end-of-stream marker)"
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return f"corrupt gzip ({exc})"
    return exc.strerror or str(exc)
