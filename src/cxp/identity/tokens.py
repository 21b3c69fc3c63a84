"""Device access tokens: username = device id, a 256-bit random secret shown once, stored as Mosquitto `$7$` hashes.

Mosquitto's password file (mosquitto_passwd's default `-H sha512-pbkdf2`) holds one line per user:
`<username>:$7$<iterations>$<base64 salt>$<base64 hash>`, the hash being PBKDF2-HMAC-SHA512 of the password
with a 12-byte salt, 64 bytes long, standard base64 with padding. The broker itself checks these lines, so a
device's secret never has to exist anywhere but on the device.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cxp.identity.errors import BadParameter, BadSecretHash, InvalidDeviceId
from cxp.identity.files import PRIVATE_MODE, write_atomic
from cxp.identity.pki import check_device_id

# Why so few: the secret is 256 bits from `secrets`, so guessing it from a stolen hash is hopeless at any
# iteration count (stretching only helps low-entropy human passwords). Mosquitto verifies on its single
# thread, so every iteration is paid by every connect of the fleet: `cxp bench identity` measured the broker's
# CPU per password connect at 0.27 ms with 101 iterations against 1.2 ms with 1,000 (anonymous: 0.10 ms), i.e.
# ~0.3 s against ~1.2 s of the broker's only thread when 1,000 devices reconnect at once (10,000 iterations:
# ~28 ms per verify, ~30 s). 101 is also mosquitto_passwd's default, so our lines and the tool's look alike.
DEFAULT_ITERATIONS = 101
SALT_BYTES = 12  # what Mosquitto writes and reads back
SECRET_BYTES = 32
HASH_BYTES = 64
PREFIX = "$7$"


@dataclass(frozen=True)
class DeviceToken:
    """A device's new access token: the secret is shown to the caller once and never stored."""

    username: str
    secret: str = field(repr=False)
    password_hash: str

    def password_line(self) -> str:
        """This token's line of a Mosquitto password file."""
        return password_file_line(username=self.username, password_hash=self.password_hash)


def check_username(device_id: str) -> str:
    """A device id usable as a broker username: the contract's alphabet without ':' (the password file's separator)."""
    check_device_id(device_id)
    if ":" in device_id:
        raise InvalidDeviceId(f"device id {device_id!r} contains ':', which a Mosquitto password file cannot hold")
    return device_id


def new_secret() -> str:
    """256 random bits, URL-safe base64 (43 characters, no ':' or whitespace)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_secret(secret: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """The `$7$` PBKDF2-SHA512 hash of a secret, exactly as `mosquitto_passwd` writes it."""
    if iterations < 1:
        raise BadParameter("iterations must be at least 1")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise BadParameter(f"Mosquitto reads {SALT_BYTES}-byte salts only")
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, iterations)
    return f"{PREFIX}{iterations}${_b64(salt)}${_b64(digest)}"


def parse_hash(password_hash: str) -> tuple[int, bytes, bytes]:
    """Iterations, salt and digest of a `$7$` hash; BadSecretHash for anything else."""
    parts = password_hash.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        raise BadSecretHash("not a Mosquitto $7$ (PBKDF2-SHA512) hash")
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        digest = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise BadSecretHash("malformed $7$ hash") from exc
    if iterations < 1 or len(salt) != SALT_BYTES or len(digest) != HASH_BYTES:
        raise BadSecretHash("a $7$ hash needs iterations ≥ 1, a 12-byte salt and a 64-byte digest")
    return iterations, salt, digest


def verify_secret(secret: str, password_hash: str) -> bool:
    """Whether a secret matches a `$7$` hash; the comparison takes the same time wherever they differ."""
    iterations, salt, expected = parse_hash(password_hash)
    actual = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(actual, expected)


def issue_token(*, device_id: str, iterations: int = DEFAULT_ITERATIONS) -> DeviceToken:
    """A new secret for a device and its hash (store the hash, show the secret once)."""
    check_username(device_id)
    secret = new_secret()
    return DeviceToken(username=device_id, secret=secret, password_hash=hash_secret(secret, iterations=iterations))


def password_file_line(*, username: str, password_hash: str) -> str:
    """One line of a Mosquitto password file."""
    check_username(username)
    parse_hash(password_hash)
    return f"{username}:{password_hash}\n"


def write_password_file(path: Path, entries: Iterable[tuple[str, str]]) -> int:
    """Write (username, hash) pairs as a Mosquitto password file (atomically, mode 0600); returns the line count."""
    lines: dict[str, str] = {}
    for username, password_hash in entries:
        if username in lines:
            # Mosquitto would keep one of the two silently; a duplicate is a provisioning bug.
            raise InvalidDeviceId(f"user {username!r} appears twice")
        lines[username] = password_file_line(username=username, password_hash=password_hash)
    write_atomic(path, "".join(lines.values()).encode("utf-8"), PRIVATE_MODE)
    return len(lines)


def read_password_file(path: Path) -> dict[str, str]:
    """The (username → hash) pairs of a password file; blank lines and comments are skipped."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, password_hash = line.partition(":")
        if not sep:
            raise BadSecretHash(f"{path}:{number}: no ':' between user and hash")
        parse_hash(password_hash)
        entries[username] = password_hash
    return entries
