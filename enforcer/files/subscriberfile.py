"""Reader for the operator's provisioning file of its subscribers (`subscribers import`):
`imsi,msisdn`, header optional, gzip accepted, read a chunk of rows at a time, bad rows
reported by line as the registry's files report them. IMSI and MSISDN are read as operator
feeds write them (`enforcer.engine.subscriber.parse_imsi`, `parse_msisdn`); an IMSI of
another country than the policy's `home_mcc` is a bad row (`not_home_imsi`), as the attach
stream keeps only home IMSIs' numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from enforcer.engine.numbers import LearnedPairs, latest_pairs
from enforcer.engine.subscriber import IdentityError, parse_imsi, parse_msisdn
from enforcer.files.listfile import ListFileReader, LoadReport, csv_row_chunks

FIELDS = 2
NOT_TWO_FIELDS = "not_imsi_and_msisdn"
BAD_IMSI, BAD_MSISDN, NOT_HOME_IMSI = "bad_imsi", "bad_msisdn", "not_home_imsi"


class SubscriberFileReader:
    def __init__(self, reader: ListFileReader, chunk_lines: int,
                 home_mcc: tuple[int, ...]) -> None:
        self._reader = reader  # how bad rows are counted and kept for the report
        self._chunk_lines = chunk_lines
        self._home_mcc = frozenset(home_mcc)

    def chunks(self, path: Path, report: LoadReport, seen_ms: int) -> Iterator[LearnedPairs]:
        """The good rows of each chunk as pairs seen at `seen_ms` (an IMSI given twice in a
        chunk: its later row). The chunks end where the file cannot be read further,
        `report.unreadable` saying why; `report.loaded` counts the good rows."""
        for rows in csv_row_chunks(path, self._chunk_lines, report):
            imsis: list[int] = []
            msisdns: list[int] = []
            for number, fields, text in rows:
                report.rows += 1
                pair = self._pair(fields)
                if isinstance(pair, str):
                    self._reader.bad(report, number, pair, text)
                    continue
                imsis.append(pair[0])
                msisdns.append(pair[1])
            report.loaded += len(imsis)
            yield latest_pairs(np.array(imsis, np.uint64), np.array(msisdns, np.uint64),
                               np.full(len(imsis), seen_ms, np.int64))

    def _pair(self, fields: list[bytes]) -> tuple[int, int] | str:
        """(IMSI, MSISDN), or the reason the row is bad."""
        if len(fields) != FIELDS:
            return NOT_TWO_FIELDS
        try:
            imsi = parse_imsi(fields[0].decode("utf-8", "replace"))
        except IdentityError:
            return BAD_IMSI
        if imsi.mcc not in self._home_mcc:
            return NOT_HOME_IMSI
        try:
            return imsi.value, parse_msisdn(fields[1].decode("utf-8", "replace"))
        except IdentityError:
            return BAD_MSISDN
