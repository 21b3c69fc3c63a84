"""Device secrets: 256 random bits, hashed exactly as `mosquitto_passwd` does, verified in constant time."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxp.identity import BadSecretHash, InvalidDeviceId
from cxp.identity.tokens import (
    DEFAULT_ITERATIONS,
    hash_secret,
    issue_token,
    new_secret,
    parse_hash,
    password_file_line,
    read_password_file,
    verify_secret,
    write_password_file,
)

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


def test_a_token_is_a_256_bit_secret_shown_once_and_a_hash() -> None:
    token = issue_token(device_id="ebike-000007")
    assert token.username == "ebike-000007"
    assert len(token.secret) == 43 and ":" not in token.secret  # 32 bytes, URL-safe base64
    assert token.secret not in repr(token) and token.secret not in token.password_hash
    assert verify_secret(token.secret, token.password_hash)
    assert token.password_line() == f"ebike-000007:{token.password_hash}\n"
    assert len({new_secret() for _ in range(100)}) == 100


def test_the_hash_has_mosquittos_layout() -> None:
    stored = hash_secret("s3cret")
    prefix, iterations, salt, digest = stored.split("$")[1:]
    assert (prefix, int(iterations)) == ("7", DEFAULT_ITERATIONS)
    assert len(salt) == 16 and len(digest) == 88  # 12-byte salt, 64-byte SHA-512, standard base64
    assert hash_secret("s3cret") != stored  # a fresh salt each time


def test_a_known_vector_from_mosquitto_passwd_2_0() -> None:
    # Written by `mosquitto_passwd -c -b pw dev-1 s3cret` (Mosquitto 2.0.11).
    line = ("dev-1:$7$101$E5hD33fDp+wT3U5w$njzyMOAzVsQXDZrXGQv4kDQ9+adl8NyWNLNeTrhawSY5C2wxgh2USHYNK9fm/h2thZ5/rfCR4kG"
            "PkYQDzF+pbw==")
    stored = line.split(":", 1)[1]
    assert verify_secret("s3cret", stored)
    assert not verify_secret("s3cret ", stored)
    iterations, salt, _ = parse_hash(stored)
    assert hash_secret("s3cret", iterations=iterations, salt=salt) == stored


@pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is not installed")
def test_lines_written_by_the_installed_mosquitto_passwd_verify(tmp_path: Path) -> None:
    secret = new_secret()
    pw = tmp_path / "pw"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pw), "dev-9", secret], check=True, capture_output=True)
    entries = read_password_file(pw)
    assert list(entries) == ["dev-9"]
    assert verify_secret(secret, entries["dev-9"])
    assert not verify_secret(new_secret(), entries["dev-9"])


@pytest.mark.parametrize("bad", ["", "$6$abc$def", "$7$x$E5hD33fDp+wT3U5w$AAAA", "$7$0$E5hD33fDp+wT3U5w$" + "A" * 88,
                                 "$7$101$c2hvcnQ=$" + "A" * 88, "$7$101$E5hD33fDp+wT3U5w$AAAA", "plain"])
def test_anything_but_a_7_hash_is_refused(bad: str) -> None:
    with pytest.raises(BadSecretHash):
        verify_secret("x", bad)


def test_usernames_that_break_a_password_file_are_refused() -> None:
    for device_id in ("dev:1", "a/b", "", "dev 1"):
        with pytest.raises(InvalidDeviceId):
            issue_token(device_id=device_id)
    with pytest.raises(InvalidDeviceId):
        password_file_line(username="dev:1", password_hash=hash_secret("x"))


def test_the_password_file_round_trips_with_owner_only_mode(tmp_path: Path) -> None:
    tokens = [issue_token(device_id=f"d{i}") for i in range(5)]
    path = tmp_path / "passwd"
    assert write_password_file(path, [(t.username, t.password_hash) for t in tokens]) == 5
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    back = read_password_file(path)
    assert back == {t.username: t.password_hash for t in tokens}
    assert all(verify_secret(t.secret, back[t.username]) for t in tokens)
    assert not any(t.secret in path.read_text() for t in tokens)
    with pytest.raises(InvalidDeviceId, match="twice"):
        write_password_file(path, [("d1", tokens[0].password_hash), ("d1", tokens[1].password_hash)])
    path.write_text("d1 no separator\n")
    with pytest.raises(BadSecretHash):
        read_password_file(path)


@settings(max_examples=40, deadline=None)
@given(secret=st.text(min_size=0, max_size=80), iterations=st.integers(min_value=1, max_value=50))
def test_any_secret_verifies_against_its_own_hash_only(secret: str, iterations: int) -> None:
    stored = hash_secret(secret, iterations=iterations)
    assert parse_hash(stored)[0] == iterations
    assert verify_secret(secret, stored)
    assert not verify_secret(secret + "x", stored)
