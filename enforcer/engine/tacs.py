"""The TAC database: what the GSMA allocated each type allocation code (the IMEI's first 8
digits, 3GPP TS 23.003 §6.2.1) to: manufacturer, model, device type and the radios the
model has.

About 200,000 TACs are held as sorted numpy columns, one row a TAC, and the names as two
string tables (a UTF-8 blob and offsets), so the database costs a few megabytes and no
Python object per TAC; a batch of IMEI keys is looked up with one `searchsorted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag
from typing import Iterable, NamedTuple

import numpy as np

from enforcer.engine.imei import SNR_SPACE, TAC_DIGITS

NO_ROW = -1  # `TacDatabase.rows` where a TAC was never allocated
TAC_SPACE = 10 ** TAC_DIGITS


class Rat(IntFlag):
    """Radio access technologies a model has, as bits (3GPP TS 29.571 §5.4.3.2 RatType;
    DIRBS keeps the same four generations in its `rat_bitmask`)."""

    GERAN = 1  # 2G: GSM, GPRS, EDGE
    UTRAN = 2  # 3G: WCDMA, HSPA, TD-SCDMA
    EUTRA = 4  # 4G: LTE, LTE-M, NB-IoT
    NR = 8  # 5G


NO_RATS = Rat(0)  # the database names none of the model's radios: nothing to compare with

# What the attach's `rat` field (and a plain TAC file's `rats` column) may say, lower-case:
# 3GPP RatType values, the Diameter RAT-Type names (TS 29.212 §5.3.31) and common words.
RAT_NAMES: dict[str, Rat] = {
    **dict.fromkeys(("geran", "gsm", "gprs", "edge", "2g"), Rat.GERAN),
    **dict.fromkeys(("utran", "wcdma", "umts", "hspa", "td-scdma", "3g"), Rat.UTRAN),
    **dict.fromkeys(("eutra", "eutran", "e-utran", "e-utra", "lte", "lte-m", "ltem", "nbiot",
                     "nb-iot", "4g"), Rat.EUTRA),
    **dict.fromkeys(("nr", "nr_redcap", "nr-redcap", "5g"), Rat.NR),
}


def rat_of(name: str | None) -> Rat:
    """The radio an attach names (`rat`, any case); NO_RATS when absent or not known, which
    no model is inconsistent with."""
    return RAT_NAMES.get(name.strip().lower(), NO_RATS) if name else NO_RATS


class DeviceType(NamedTuple):
    code: int
    name: str


# Few on purpose: the NOC's metrics are labelled by them. The GSMA's own device types
# ("Smartphone", "Mobile Phone/Feature phone", "Dongle", "IoT Device" …) map onto these.
DEVICE_TYPES: tuple[str, ...] = ("unknown", "smartphone", "feature_phone", "tablet", "modem",
                                 "module", "wearable", "iot", "router", "computer", "vehicle",
                                 "other")
UNKNOWN_DEVICE_TYPE = 0
OTHER_DEVICE_TYPE = DEVICE_TYPES.index("other")
# Tried in order on the lower-cased text: the first word found names the type.
_DEVICE_TYPE_WORDS: tuple[tuple[str, str], ...] = (
    ("smartphone", "smartphone"), ("feature", "feature_phone"), ("mobile phone", "feature_phone"),
    ("tablet", "tablet"), ("modem", "modem"), ("dongle", "modem"), ("module", "module"),
    ("wearable", "wearable"), ("watch", "wearable"), ("iot", "iot"), ("router", "router"),
    ("cpe", "router"), ("computer", "computer"), ("laptop", "computer"), ("pda", "computer"),
    ("vehicle", "vehicle"))


def device_type_code(text: str) -> int:
    """DEVICE_TYPES index for a device type as a TAC file writes it (GSMA's names or ours,
    any case, `_` or space); UNKNOWN_DEVICE_TYPE when empty, OTHER_DEVICE_TYPE when no word
    of ours is in it."""
    text = text.strip().lower().replace("_", " ")
    if not text:
        return UNKNOWN_DEVICE_TYPE
    return next((DEVICE_TYPES.index(name) for word, name in _DEVICE_TYPE_WORDS if word in text),
                OTHER_DEVICE_TYPE)


@dataclass(frozen=True, eq=False)
class StringTable:
    """Strings as one UTF-8 blob and offsets: string i is blob[offsets[i]:offsets[i + 1]]."""

    blob: np.ndarray  # uint8
    offsets: np.ndarray  # uint32 (uint64 past 4 GB), one more than there are strings

    @classmethod
    def of(cls, strings: Iterable[str]) -> StringTable:
        encoded = [s.encode() for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.uint64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8),
                   offsets.astype(np.uint32 if offsets[-1] < 2 ** 32 else np.uint64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self.blob[int(self.offsets[index]):int(self.offsets[index + 1])].tobytes().decode()

    @property
    def nbytes(self) -> int:
        return self.blob.nbytes + self.offsets.nbytes


class TacInfo(NamedTuple):
    """What a reader is told of one TAC."""

    tac: int
    manufacturer: str
    model: str
    device_type: str  # one of DEVICE_TYPES
    rats: tuple[str, ...]  # Rat names, e.g. ("GERAN", "EUTRA")

    def as_json(self) -> dict[str, object]:
        return {"tac": f"{self.tac:0{TAC_DIGITS}d}", "manufacturer": self.manufacturer,
                "model": self.model, "device_type": self.device_type, "rats": list(self.rats)}


@dataclass(frozen=True, eq=False)
class TacDatabase:
    """One row a TAC, in TAC order. Build with `TacDatabase.build`."""

    tac: np.ndarray  # uint32, sorted, unique, each below TAC_SPACE
    rats: np.ndarray  # uint8 Rat bits
    device_type: np.ndarray  # uint8 DEVICE_TYPES index
    manufacturer: np.ndarray  # uint32 index into manufacturers
    model: np.ndarray  # uint32 index into models
    manufacturers: StringTable
    models: StringTable

    @classmethod
    def build(cls, tacs: np.ndarray, rats: np.ndarray, device_type: np.ndarray,
              manufacturer: list[str], model: list[str]) -> TacDatabase:
        """From one entry a TAC, in any order (unique TACs): the names are interned."""
        order = np.argsort(np.asarray(tacs, dtype=np.uint32), kind="stable")
        makers, maker_index = _interned([manufacturer[i] for i in order])
        models, model_index = _interned([model[i] for i in order])
        return cls(np.asarray(tacs, dtype=np.uint32)[order],
                   np.asarray(rats, dtype=np.uint8)[order],
                   np.asarray(device_type, dtype=np.uint8)[order],
                   maker_index, model_index, StringTable.of(makers), StringTable.of(models))

    @classmethod
    def empty(cls) -> TacDatabase:
        return cls.build(np.zeros(0, np.uint32), np.zeros(0, np.uint8), np.zeros(0, np.uint8),
                         [], [])

    def __len__(self) -> int:
        return len(self.tac)

    def rows(self, imei_keys: np.ndarray) -> np.ndarray:
        """int64 row of each IMEI key's (uint64, 14 digits) TAC; NO_ROW where the TAC was
        never allocated or the key is no IMEI's."""
        tacs = np.asarray(imei_keys, dtype=np.uint64) // np.uint64(SNR_SPACE)
        # A key no IMEI has (NO_KEY) is beyond every TAC, not wrapped into one.
        return self.rows_of_tacs(np.minimum(tacs, TAC_SPACE).astype(np.uint32))

    def rows_of_tacs(self, tacs: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self.tac, tacs).astype(np.int64)
        if not len(self.tac):
            return np.full(len(at), NO_ROW, dtype=np.int64)
        found = self.tac[np.minimum(at, len(self.tac) - 1)] == tacs
        return np.where(found, at, NO_ROW)

    def info(self, tac: int) -> TacInfo | None:
        """The TAC's entry, None when it was never allocated."""
        row = int(self.rows_of_tacs(np.array([tac], dtype=np.uint32))[0])
        if row == NO_ROW:
            return None
        rats = Rat(int(self.rats[row]))
        return TacInfo(tac, self.manufacturers[int(self.manufacturer[row])],
                       self.models[int(self.model[row])],
                       DEVICE_TYPES[int(self.device_type[row])],
                       tuple(r.name for r in Rat if r in rats and r.name))

    def info_of_key(self, imei_key: int) -> TacInfo | None:
        return self.info(imei_key // SNR_SPACE)

    def device_types(self, imei_keys: np.ndarray) -> np.ndarray:
        """uint8 DEVICE_TYPES index of each IMEI key's TAC; UNKNOWN_DEVICE_TYPE where the
        TAC was never allocated or the key is no IMEI's."""
        rows = self.rows(imei_keys)
        if not len(self.tac):
            return np.full(len(rows), UNKNOWN_DEVICE_TYPE, dtype=np.uint8)
        return np.where(rows != NO_ROW, self.device_type[np.maximum(rows, 0)],
                        np.uint8(UNKNOWN_DEVICE_TYPE))

    def inconsistent(self, rows: np.ndarray, rats: np.ndarray) -> np.ndarray:
        """bool per event: its radio (`rats`, Rat bits, 0 when not told) is none the model at
        its TAC `rows` has; False where the TAC is unallocated or its radios are unknown."""
        model = np.where(rows != NO_ROW, self.rats[np.maximum(rows, 0)] if len(self.tac)
                         else np.uint8(0), np.uint8(0))
        return (rats != 0) & (model != 0) & ((model & rats) == 0)

    @property
    def nbytes(self) -> int:
        return (self.tac.nbytes + self.rats.nbytes + self.device_type.nbytes
                + self.manufacturer.nbytes + self.model.nbytes + self.manufacturers.nbytes
                + self.models.nbytes)

    def changed_rows(self, other: TacDatabase) -> int:
        """How many TACs both databases hold with another make, model, type or radios."""
        both, here, there = np.intersect1d(self.tac, other.tac, assume_unique=True,
                                           return_indices=True)
        differs = ((self.rats[here] != other.rats[there])
                   | (self.device_type[here] != other.device_type[there]))
        for row in np.flatnonzero(~differs):
            a, b = int(here[row]), int(there[row])
            differs[row] = (
                self.manufacturers[int(self.manufacturer[a])]
                != other.manufacturers[int(other.manufacturer[b])]
                or self.models[int(self.model[a])] != other.models[int(other.model[b])])
        return int(differs.sum()) if len(both) else 0


def _interned(strings: list[str]) -> tuple[list[str], np.ndarray]:
    """The distinct strings (first seen first) and each string's index among them."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(s, len(index)) for s in strings), dtype=np.uint32,
                        count=len(strings))
    return list(index), codes
