"""IMEI parsing: every form a network or registry sends, and every malformed class."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import imei as stdnum_imei

from enforcer.engine.imei import (CheckDigit, ImeiRules, Problem, luhn_digit, mistyped,
                                  parse_imei)

VALID_IMEI = "490154203237518"  # a published example with a valid check digit


def test_fifteen_digits_with_valid_check_digit(rules: ImeiRules) -> None:
    p = parse_imei(VALID_IMEI, rules)
    assert (p.key, p.tac, p.snr, p.svn) == ("49015420323751", "49015420", "323751", None)
    assert p.check_digit is CheckDigit.VALID
    assert not p.malformed and p.problems == ()


def test_wrong_check_digit_is_a_finding_not_a_malformation(rules: ImeiRules) -> None:
    p = parse_imei("490154203237519", rules)
    assert p.key == "49015420323751"
    assert p.check_digit is CheckDigit.MISMATCH
    assert not p.malformed


def test_spare_zero_in_place_of_the_check_digit_counts_as_absent(rules: ImeiRules) -> None:
    p = parse_imei("490154203237510", rules)
    assert p.check_digit is CheckDigit.ABSENT and p.key == "49015420323751"


def test_fourteen_digits_is_the_key_itself(rules: ImeiRules) -> None:
    p = parse_imei("49015420323751", rules)
    assert p.key == "49015420323751" and p.check_digit is CheckDigit.ABSENT


def test_imeisv_keeps_the_software_version(rules: ImeiRules) -> None:
    p = parse_imei("4901542032375123", rules)
    assert (p.key, p.svn, p.check_digit) == ("49015420323751", "23", CheckDigit.ABSENT)


@pytest.mark.parametrize("value", [
    f"imei-{VALID_IMEI}", f"IMEI-{VALID_IMEI}", "imeisv-4901542032375123",
    f"  {VALID_IMEI}\t", f"\n imei-{VALID_IMEI} ",
])
def test_3gpp_pei_forms_and_whitespace(rules: ImeiRules, value: str) -> None:
    assert parse_imei(value, rules).key == "49015420323751"


@pytest.mark.parametrize("value", ["imei-4901542032375181", "imeisv-490154203237518",
                                   "imei-49015420323751"])
def test_pei_prefix_with_the_wrong_length_is_malformed(rules: ImeiRules, value: str) -> None:
    p = parse_imei(value, rules)
    assert p.key == "49015420323751" and Problem.PEI_FORM in p.problems


def test_integers_of_any_kind_are_read_as_digits(rules: ImeiRules) -> None:
    import numpy as np

    assert parse_imei(np.int64(490154203237518), rules).key == "49015420323751"
    assert parse_imei(490154203237518, rules).key == "49015420323751"


@pytest.mark.parametrize("number", [
    13327001001504,  # issue 18: 013327001001504 saved as a number, or the key 13327001001504
    35209900176148,  # a key whose TAC is 35: as a number, no different from the one above
    1215800375276, 12345, 0])
def test_a_number_of_14_digits_or_fewer_has_no_key(rules: ImeiRules, number: int) -> None:
    """A JSON number holds no leading zero: which IMEI it was, nobody can tell."""
    p = parse_imei(number, rules)
    assert (p.key, p.problems) == (None, (Problem.NUMBER_TOO_SHORT,))


@given(st.integers(min_value=0, max_value=10**18))
def test_a_number_reads_as_its_digits_from_15_digits_on(rules: ImeiRules, number: int) -> None:
    """A number of 15 or more digits is read as the same digits in a string; a smaller one is
    number_too_short."""
    read = parse_imei(number, rules)
    if number < 10**14:
        assert (read.key, read.problems) == (None, (Problem.NUMBER_TOO_SHORT,))
    else:
        assert read == parse_imei(str(number), rules)


def test_persian_digits_are_digits(rules: ImeiRules) -> None:
    persian = VALID_IMEI.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    assert parse_imei(persian, rules).key == "49015420323751"


@pytest.mark.parametrize(("value", "problem"), [
    ("", Problem.EMPTY),
    ("   ", Problem.EMPTY),
    (None, Problem.EMPTY),
    ("49015420323751*", Problem.NON_DIGIT),
    ("#06#", Problem.NON_DIGIT),
    ("4901 5420 3237 518", Problem.NON_DIGIT),
    ("35209900ABCDEF", Problem.HEX),
    ("3520990017614", Problem.TOO_SHORT),
    ("20990017614", Problem.TOO_SHORT),
    ("35209900176148231", Problem.TOO_LONG),
    ("000000000000000", Problem.ALL_ZEROS),
    ("77777777777777", Problem.REPEATED_DIGIT),
    ("001001231234567", Problem.TEST_TAC),
    ("001017991234567", Problem.TEST_TAC),
    ("00441234123456", Problem.TEST_TAC),
    ("00861234123456", Problem.TEST_TAC),
    ("00911234123456", Problem.TEST_TAC),
    ("004999010640000", Problem.PLACEHOLDER),
    ("imei-004999010640000", Problem.PLACEHOLDER),
])
def test_malformed_classes(rules: ImeiRules, value: object, problem: Problem) -> None:
    p = parse_imei(value, rules)
    assert p.malformed
    assert problem in p.problems


def test_tac_00_followed_by_other_digits_is_not_a_test_tac(rules: ImeiRules) -> None:
    assert parse_imei("00101812345678", rules).problems == ()
    assert parse_imei("00451234123456", rules).problems == ()


def test_placeholders_are_configurable() -> None:
    own = ImeiRules.from_config([], ["352099001761481"])
    assert Problem.PLACEHOLDER in parse_imei("35209900176148", own).problems
    assert parse_imei("004999010640000", own).problems == ()


def test_json_has_exactly_the_documented_fields(rules: ImeiRules) -> None:
    assert set(parse_imei(VALID_IMEI, rules).as_json()) == {
        "input", "key", "tac", "snr", "svn", "check_digit", "malformed", "problems"}


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.floats(),
                 st.lists(st.integers())))
@settings(max_examples=500)
def test_never_raises_and_key_is_14_digits_or_none(rules: ImeiRules, value: object) -> None:
    p = parse_imei(value, rules)
    assert p.key is None or (len(p.key) == 14 and p.key.isdigit() and p.key.isascii())
    assert p.malformed == bool(p.problems)
    assert (p.key is None) <= p.malformed


@given(st.from_regex(r"\A[0-9]{14}\Z"))
def test_key_check_digit_roundtrip(rules: ImeiRules, key: str) -> None:
    p = parse_imei(key + luhn_digit(key), rules)
    assert p.key == key
    assert parse_imei(p.key, rules).key == key
    assert parse_imei(f"imeisv-{key}42", rules).key == key


@given(st.from_regex(r"\A[0-9]{15}\Z"))
@settings(max_examples=2000)
def test_check_digit_agrees_with_python_stdnum(rules: ImeiRules, value: str) -> None:
    p = parse_imei(value, rules)
    assert (p.check_digit is CheckDigit.VALID) == stdnum_imei.is_valid(value)
    if p.check_digit is CheckDigit.MISMATCH:
        assert not stdnum_imei.is_valid(value) and value[-1] != "0"


@settings(max_examples=300)
@given(key=st.integers(0, 10**14 - 1), sent=st.sampled_from("0123456789"),
       form=st.sampled_from(["{}", "imei-{}"]))
def test_a_typed_imei_is_mistyped_exactly_when_its_check_digit_is_not_luhn_s_nor_spare(
        key: int, sent: str, form: str) -> None:
    """The buyer's status query refuses what `mistyped` names: a 15-digit IMEI whose 15th
    digit is neither the Luhn digit of the other 14 (any one mistyped digit) nor the spare 0;
    14 digits and an IMEISV are never refused for it."""
    rules = ImeiRules.from_config([], [])
    digits = f"{key:014d}"
    imei = parse_imei(form.format(digits + sent), rules)
    assert (mistyped(imei) is not None) == (sent not in (luhn_digit(digits), "0"))
    assert mistyped(parse_imei(digits, rules)) is None
    assert mistyped(parse_imei(digits + sent + "1", rules)) is None  # an IMEISV
