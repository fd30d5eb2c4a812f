"""Dead letters of any size: a message that fits goes out unchanged with its dlq-* headers;
a larger one is cut to the bound (the value first, then the original headers, then the key)
and says what was cut, the original value's size and its SHA-256. Measured as the clients
measure: kafka-python's own estimate of the record stays within its request limit."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatchBuilder

from enforcer.engine.attachdecode import DeadLetter
from consumers.receive import Record
from consumers.deadletters import (MAX_DETAIL_BYTES, ORIGINAL_SHA256_HEADER, ORIGINAL_SIZE_HEADER,
                                   TRUNCATED_HEADER, dead_letter, measure)
from enforcer.config import (MAX_REQUEST_BYTES, MIN_DEAD_LETTER_BYTES, RECORD_FRAMING_BYTES,
                             ConfigError, load_config)

TOO_LARGE = DeadLetter("too_large", "1048400 bytes, at most 4096")
ISSUE_SIZE = 1_048_400  # under a stock broker's message.max.bytes, over what a producer sends
UNBOUNDED = 1 << 40


def record(value: bytes | None, key: bytes | None = b"k",
           headers: list[tuple[str, bytes | None]] | None = None) -> Record:
    return Record("attach-events", 3, 41, key, value, headers or [])


def headers_of(publication) -> dict[str, bytes]:
    return {name: v for name, v in publication.headers if name.startswith("dlq-")}


def test_a_letter_that_fits_goes_out_unchanged() -> None:
    letter = dead_letter("attach-events.dlq", record(b"not json", headers=[("trace", b"7")]),
                         DeadLetter("not_json", "bad"), MIN_DEAD_LETTER_BYTES)
    assert (letter.key, letter.value) == (b"k", b"not json")
    assert letter.headers[0] == ("trace", b"7")
    assert headers_of(letter) == {
        "dlq-reason": b"not_json", "dlq-detail": b"bad", "dlq-source-topic": b"attach-events",
        "dlq-source-partition": b"3", "dlq-source-offset": b"41"}


def test_the_issues_message_is_cut_to_the_default_bound_with_its_size_and_digest() -> None:
    value = bytes(range(256)) * (ISSUE_SIZE // 256) + b"x" * (ISSUE_SIZE % 256)
    bound = load_config(environ={}).kafka.dead_letter_max_bytes
    letter = dead_letter("attach-events.dlq", record(value), TOO_LARGE, bound)
    assert measure(letter.key, letter.value, letter.headers) <= bound < ISSUE_SIZE
    assert value.startswith(letter.value) and len(letter.value) > bound - 1000
    marks = headers_of(letter)
    assert marks[TRUNCATED_HEADER] == b"value"
    assert marks[ORIGINAL_SIZE_HEADER] == b"1048400"
    assert marks[ORIGINAL_SHA256_HEADER] == hashlib.sha256(value).hexdigest().encode()
    assert marks["dlq-reason"] == b"too_large"


def test_a_detail_quoting_the_message_is_cut_between_characters() -> None:
    letter = dead_letter("d", record(b"{}"), DeadLetter("duplicate_key", "k" * 10**6),
                         MIN_DEAD_LETTER_BYTES)
    assert headers_of(letter)["dlq-detail"] == b"k" * MAX_DETAIL_BYTES
    persian = dead_letter("d", record(b"{}"), DeadLetter("duplicate_key", "k" + "ک" * 600),
                          MIN_DEAD_LETTER_BYTES)
    assert headers_of(persian)["dlq-detail"].decode() == "k" + "ک" * 511


@pytest.mark.parametrize("bound", [MIN_DEAD_LETTER_BYTES - 1,
                                   MAX_REQUEST_BYTES - RECORD_FRAMING_BYTES + 1])
def test_a_bound_the_producer_could_not_keep_is_refused_at_load(bound: int) -> None:
    with pytest.raises(ConfigError, match="kafka.dead_letter_max_bytes"):
        load_config(environ={"EIR_KAFKA__DEAD_LETTER_MAX_BYTES": str(bound)})


def filler(size: int, byte: int) -> bytes:
    return bytes([byte]) * size


sizes = st.integers(0, 3 * MIN_DEAD_LETTER_BYTES)
some_headers = st.lists(st.tuples(st.text(max_size=20), st.one_of(
    st.none(), st.builds(filler, sizes, st.integers(0, 255)))), max_size=4)


@settings(max_examples=300, deadline=None)
@given(value_size=sizes, key=st.one_of(st.none(), st.builds(filler, sizes, st.just(7))),
       headers=some_headers, byte=st.integers(0, 255),
       bound=st.integers(MIN_DEAD_LETTER_BYTES, 3 * MIN_DEAD_LETTER_BYTES))
def test_every_letter_fits_its_bound_and_says_what_was_cut(value_size, key, headers, bound,
                                                           byte) -> None:
    value = filler(value_size, byte) + b"end"
    source = record(value, key, headers)
    letter = dead_letter("dlq", source, TOO_LARGE, bound)
    size = measure(letter.key, letter.value, letter.headers)
    assert size <= bound
    # What kafka-python itself counts against max_request_size stays within the framing.
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(
        letter.key, letter.value, list(letter.headers)) <= size + RECORD_FRAMING_BYTES
    marks = headers_of(letter)
    unbounded = dead_letter("dlq", source, TOO_LARGE, UNBOUNDED)
    assert (unbounded.key, unbounded.value) == (key, value)
    whole = measure(key, value, unbounded.headers)
    if whole <= bound:
        assert (letter.key, letter.value) == (key, value)
        assert list(letter.headers[:len(headers)]) == headers
        assert TRUNCATED_HEADER not in marks
        return
    cut = marks[TRUNCATED_HEADER].decode().split(",")
    assert marks[ORIGINAL_SIZE_HEADER] == str(len(value)).encode()
    assert marks[ORIGINAL_SHA256_HEADER] == hashlib.sha256(value).hexdigest().encode()
    assert value.startswith(letter.value) and ("value" in cut) == (letter.value != value)
    kept = [h for h in letter.headers if not h[0].startswith("dlq-")]
    assert ("headers" in cut) == (kept != headers) and kept in ([], headers)
    assert ("key" in cut) == (letter.key != key)
    assert letter.key == key or key.startswith(letter.key)
