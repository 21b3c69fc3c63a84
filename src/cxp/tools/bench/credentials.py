"""Cost of the credential registry at fleet scale: a full broker sync from the database, issuing, revoking and
self-provisioning one device (each of which ends in a sync), on a scratch database of its own.

    cxp bench credentials [--devices 10000 --devices 100000] [--revoked-certs 0.01] [--repeat 3]

Each fleet is N token devices (one shared `$7$` hash: hashing is paid once at creation and is measured by
`cxp bench identity`) plus a fraction of revoked certificates that the CRL lists. The broker files go to a
temporary directory and no broker is signalled: the reload and disconnect costs are `cxp bench broker-auth`'s.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from cxp.core.config import Settings, StackSettings, get_settings
from cxp.identity.files import PkiPaths, init_ca
from cxp.identity.provisioning import create_provisioning_key, provision_device
from cxp.identity.service import create_credential, revoke_credential, sync_broker
from cxp.identity.tokens import hash_secret
from cxp.stack import start_stack
from cxp.store.db import connect
from cxp.store.migrate import apply_migrations

BENCH_DB = "cxp_bench_credentials"


def _load(conn, *, devices: int, revoked_certs: int) -> None:
    conn.execute("TRUNCATE device_credentials, provisioning_keys, provisioning_audit, devices, products CASCADE")
    conn.execute("INSERT INTO products (product_id, name) VALUES ('bench-p', 'bench')")
    conn.execute("INSERT INTO devices (device_id, product_id, activated_at)"
                 " SELECT 'bd' || lpad(i::text, 7, '0'), 'bench-p', now() FROM generate_series(1, %s) i", (devices,))
    conn.execute("INSERT INTO device_credentials (device_id, kind, username, generation, secret_hash)"
                 " SELECT device_id, 'token', device_id, 1, %s FROM devices", (hash_secret(secrets.token_urlsafe(32)),))
    conn.execute(
        "INSERT INTO device_credentials (device_id, kind, serial_hex, fingerprint_sha256, not_before, not_after,"
        " state, revoked_at) SELECT device_id, 'certificate', md5(device_id) || 'ab', md5(device_id) || md5(device_id),"
        " now(), now() + interval '365 days', 'revoked', now() FROM devices ORDER BY device_id LIMIT %s",
        (revoked_certs,))


def _timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _measure(conn, settings: Settings, *, devices: int, revoked_share: float, repeat: int) -> dict:
    """The figures of one fleet size."""
    _load(conn, devices=devices, revoked_certs=int(devices * revoked_share))
    sync_s, sync = _timed(lambda: sync_broker(conn=conn, settings=settings), repeat)
    conn.execute("INSERT INTO devices (device_id, product_id, activated_at) SELECT 'bn' || i, 'bench-p', now()"
                 " FROM generate_series(0, %s) i", (repeat,))
    new_ids, victims, fresh = iter(range(repeat)), iter(range(1, devices + 1)), iter(range(repeat))
    issue_s, _ = _timed(lambda: create_credential(conn=conn, settings=settings, device_id=f"bn{next(new_ids)}",
                                                  kind="token"), repeat)
    revoke_s, _ = _timed(lambda: revoke_credential(conn=conn, settings=settings,
                                                   device_id=f"bd{next(victims):07d}"), repeat)
    key = create_provisioning_key(conn=conn, product_id="bench-p", name="bench", max_devices=repeat)
    provision_s, _ = _timed(lambda: provision_device(conn=conn, settings=settings, token=key.token,
                                                     device_id=f"bp{next(fresh)}", client="bench"), repeat)
    files = Path(settings.stack.dir) / "mosquitto"
    return {"devices": devices, "crl_serials": sync.crl_serials, "sync_s": round(sync_s, 3),
            "issue_token_s": round(issue_s, 3), "revoke_device_s": round(revoke_s, 3),
            "self_provision_s": round(provision_s, 3), "passwd_bytes": (files / "devices.passwd").stat().st_size,
            "crl_bytes": (files / "tls" / "crl.pem").stat().st_size}


def run(*, devices: list[int], revoked_share: float, repeat: int) -> list[dict]:
    """One result per fleet size."""
    base = get_settings()
    base = base.model_copy(update={"db": base.db.model_copy(update={"name": BENCH_DB})})
    start_stack(base)
    results = []
    with tempfile.TemporaryDirectory() as tmp, connect(base.db, autocommit=True) as conn:
        apply_migrations(conn)
        root = Path(tmp)
        settings: Settings = base.model_copy(update={
            "stack": StackSettings(dir=root), "pki": base.pki.model_copy(update={"dir": root / "pki"}),
            "mqtt": base.mqtt.model_copy(update={"secrets_dir": root / "secrets"})})
        init_ca(paths=PkiPaths(root / "pki"))
        for n in devices:
            results.append(_measure(conn, settings, devices=n, revoked_share=revoked_share, repeat=repeat))
            print(json.dumps(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    """Parse options and print one JSON line per fleet size."""
    parser = argparse.ArgumentParser(prog="cxp bench credentials", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, action="append", help="fleet size (repeatable; default 10000)")
    parser.add_argument("--revoked-certs", type=float, default=0.01, help="share of devices with a revoked cert")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is printed)")
    args = parser.parse_args(argv)
    run(devices=args.devices or [10_000], revoked_share=args.revoked_certs, repeat=args.repeat)
