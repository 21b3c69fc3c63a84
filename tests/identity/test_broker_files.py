"""Rendering the broker's identity files from credentials (pure) and writing them with the broker's ownership."""

from __future__ import annotations

import stat

import pytest

from cxp.core.config import Settings, StackSettings
from cxp.identity import BadParameter, IdentityError, InvalidDeviceId
from cxp.identity.broker import (
    ADMIN_ACCOUNT,
    GATEWAY_ACCOUNT,
    LOADER_ACCOUNT,
    BrokerPaths,
    DeviceLogin,
    ensure_service_accounts,
    render_device_acl,
    render_device_passwords,
    rotation_username,
    service_secret,
    write_device_files,
)
from cxp.identity.tokens import hash_secret, read_password_file, verify_secret

HASH = hash_secret("s3cret")


def test_first_token_uses_the_pattern_and_a_rotation_gets_its_own_block() -> None:
    logins = [DeviceLogin("dev-1", "dev-1", HASH), DeviceLogin(rotation_username("dev-1", 2), "dev-1", HASH)]
    acl = render_device_acl(logins)
    assert "pattern write +/%u/telemetry" in acl
    assert "user dev-1~2\ntopic write +/dev-1/telemetry" in acl
    assert "user dev-1\n" not in acl
    assert render_device_passwords(logins).splitlines() == [f"dev-1:{HASH}", f"dev-1~2:{HASH}"]


@pytest.mark.parametrize("login", [
    DeviceLogin("dev-2", "dev-1", HASH),        # a username of another device
    DeviceLogin("dev-1~x", "dev-1", HASH),      # a rotation mark without a generation
    DeviceLogin(GATEWAY_ACCOUNT, GATEWAY_ACCOUNT, HASH),  # a service account's name
    DeviceLogin("dev-1", "dev-1", "plain"),     # not a $7$ hash
])
def test_logins_that_would_let_a_device_speak_for_another_are_refused(login: DeviceLogin) -> None:
    with pytest.raises(IdentityError):
        render_device_acl([login])


def test_device_ids_the_password_file_cannot_hold_are_refused() -> None:
    with pytest.raises(InvalidDeviceId):
        render_device_passwords([DeviceLogin("a:b", "a:b", HASH)])
    with pytest.raises(BadParameter):
        render_device_passwords([DeviceLogin("d", "d", HASH), DeviceLogin("d", "d", HASH)])


def test_service_accounts_get_secrets_once_and_hashed_lines(tmp_path) -> None:
    settings = Settings(stack=StackSettings(dir=tmp_path))
    ensure_service_accounts(settings)
    first = {a: service_secret(settings, a) for a in (GATEWAY_ACCOUNT, ADMIN_ACCOUNT, LOADER_ACCOUNT)}
    ensure_service_accounts(settings)
    assert {a: service_secret(settings, a) for a in first} == first
    paths = BrokerPaths.of(settings)
    lines = read_password_file(paths.service_passwords)
    assert all(verify_secret(first[a], lines[a]) for a in first)
    assert first[GATEWAY_ACCOUNT] not in paths.service_passwords.read_text()
    assert stat.S_IMODE((tmp_path / "secrets" / f"{ADMIN_ACCOUNT}.secret").stat().st_mode) == 0o600


def test_device_files_are_private_and_a_bad_row_leaves_them_unchanged(tmp_path) -> None:
    settings = Settings(stack=StackSettings(dir=tmp_path))
    write_device_files(settings, logins=[DeviceLogin("d1", "d1", HASH)], crl_pem=b"crl")
    paths = BrokerPaths.of(settings)
    before = paths.device_passwords.read_text()
    assert stat.S_IMODE(paths.device_passwords.stat().st_mode) == 0o600
    assert paths.crl.read_bytes() == b"crl"
    with pytest.raises(BadParameter):
        write_device_files(settings, logins=[DeviceLogin("d1", "d1", HASH), DeviceLogin("x", "d1", HASH)])
    assert paths.device_passwords.read_text() == before
