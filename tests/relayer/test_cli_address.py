"""The bridge commands read an address given in mixed case as a checksummed one: a wrong
checksum (a mistyped character) is refused in words, never sent to (review 19: `order-claim
--to` accepted it, and a claim pays the recipient irrevocably). Lower or upper case carries no
checksum and is taken as written."""

from __future__ import annotations

import pytest

from tessera.relayer.cli import _address

GOOD = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_a_checksummed_or_single_case_address_is_taken():
    assert _address("--to", GOOD) == GOOD
    assert _address("--to", GOOD.lower()) == GOOD
    assert _address("--to", "0x" + GOOD[2:].upper()) == GOOD


@pytest.mark.parametrize("typo", [GOOD[:-1] + "9", GOOD[:10] + GOOD[10].swapcase() + GOOD[11:]])
def test_a_mixed_case_address_with_a_wrong_checksum_is_refused(typo):
    with pytest.raises(ValueError, match="wrong checksum"):
        _address("--to", typo)


def test_junk_is_not_an_address():
    with pytest.raises(ValueError, match="is not an address"):
        _address("--to", "0x1234")


def test_valid_forms_without_a_lower_case_prefix_are_taken():
    # Review 20: a checksummed address without 0x, and 0X with lower case, were refused
    assert _address("--to", GOOD[2:]) == GOOD
    assert _address("--to", "0X" + GOOD[2:].lower()) == GOOD
