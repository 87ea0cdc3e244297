"""Secrets stored in the database: Fernet with a key derived (HKDF) from SECRET_KEY or FIELD_ENCRYPTION_KEY."""

from __future__ import annotations

import pytest

from common.crypto import DecryptionError, decrypt, encrypt, last4


def test_round_trip_and_the_stored_text_is_not_the_secret(settings):
    settings.FIELD_ENCRYPTION_KEY = ""
    token = encrypt("sk_test_abcdefghijklmnop")
    assert "sk_test" not in token and "abcdefgh" not in token
    assert decrypt(token) == "sk_test_abcdefghijklmnop"
    assert encrypt("same") != encrypt("same")  # a fresh IV each time


def test_another_secret_key_cannot_read_it(settings):
    settings.FIELD_ENCRYPTION_KEY = ""
    token = encrypt("sk_test_abcdefghijklmnop")
    settings.SECRET_KEY = settings.SECRET_KEY + "-rotated"
    with pytest.raises(DecryptionError):
        decrypt(token)


def test_field_encryption_key_wins_over_secret_key(settings):
    settings.FIELD_ENCRYPTION_KEY = "a separate key"
    token = encrypt("whsec_1234567890")
    settings.SECRET_KEY = "something else entirely"
    assert decrypt(token) == "whsec_1234567890"  # SECRET_KEY is not used while FIELD_ENCRYPTION_KEY is set
    assert decrypt(token, secret="a separate key") == "whsec_1234567890"
    with pytest.raises(DecryptionError):
        decrypt(token, secret="wrong key")


@pytest.mark.parametrize("garbage", ["", "not a token", "gAAAAA" + "A" * 80, "\x00", "é"])
def test_garbage_is_a_decryption_error(garbage):
    with pytest.raises(DecryptionError):
        decrypt(garbage, secret="k")


def test_tampered_token_is_refused():
    token = encrypt("sk_test_abcdefghijklmnop", secret="k")
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(DecryptionError):
        decrypt(tampered, secret="k")


def test_only_the_last_four_characters_are_shown():
    assert last4("sk_test_abcdefghijklmnop") == "mnop"
    assert last4("short") == ""
