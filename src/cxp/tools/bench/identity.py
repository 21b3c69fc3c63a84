"""Cost of device identity: `$7$` secret verification per PBKDF2 iteration count, certificate signing, CRL building.

Mosquitto checks a password on its single network thread, so hashes/s at an iteration count is also the
ceiling of password connects per second the broker can accept, and 1,000 devices connecting at once stall
it for 1,000 / (hashes/s). Python's hashlib and Mosquitto both call OpenSSL's PBKDF2, so the figures carry over.

    cxp bench identity [--iterations 1,101,1000,10000,210000] [--seconds 1.0] [--certs 200] [--crl-serials 10000]
                       [--connects 1000] [--broker-iterations 101,1000] [--devices 10000]   (--connects 0: no broker)

With --connects N it then measures the real thing: N connects in a burst against a private Mosquitto per
auth mode (anonymous, password file per iteration count over TCP and TLS, client certificates).
"""

from __future__ import annotations

import argparse
import time

from cryptography.hazmat.primitives import serialization

from cxp.identity.pki import build_crl, create_ca, device_key_and_csr, sign_device_csr
from cxp.identity.tokens import DEFAULT_ITERATIONS, hash_secret, new_secret, verify_secret

FLEET_BURST = 1_000


def _rate(fn, *, seconds: float) -> float:
    """Calls per second of fn, run for at least `seconds` (at least 3 calls)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return n / elapsed


def bench_verify(*, iterations: list[int], seconds: float) -> None:
    """Print verifications per second per iteration count and what a burst of connects costs the broker."""
    secret = new_secret()
    print("$7$ PBKDF2-SHA512 verify of a 256-bit secret (one core; Mosquitto verifies on one thread)")
    print(f"{'iterations':>10} {'verifies/s':>12} {'ms/verify':>10} {f'{FLEET_BURST:,} connects':>16}")
    for count in iterations:
        stored = hash_secret(secret, iterations=count)
        rate = _rate(lambda stored=stored: verify_secret(secret, stored), seconds=seconds)
        mark = "  ← default" if count == DEFAULT_ITERATIONS else ""
        print(f"{count:>10,} {rate:>12,.0f} {1000 / rate:>10.3f} {FLEET_BURST / rate:>14.2f} s{mark}")


def bench_certificates(*, certs: int, crl_serials: int) -> None:
    """Print device CSR generation, CSR signing and CRL building rates."""
    ca = create_ca()
    t0 = time.perf_counter()
    csrs = [device_key_and_csr(device_id=f"bench-{i:06d}")[1] for i in range(certs)]
    t1 = time.perf_counter()
    serials = [sign_device_csr(ca=ca, csr_pem=csr, device_id=f"bench-{i:06d}").serial for i, csr in enumerate(csrs)]
    t2 = time.perf_counter()
    print(f"\ncertificates (EC P-256), {certs} devices")
    print(f"  device key + CSR       {certs / (t1 - t0):>10,.0f} /s")
    print(f"  CA signs a device CSR  {certs / (t2 - t1):>10,.0f} /s (CSR verified, CN checked)")
    revoked = serials + list(range(1, max(0, crl_serials - len(serials)) + 1))
    t3 = time.perf_counter()
    crl = build_crl(ca=ca, revoked=revoked)
    t4 = time.perf_counter()
    size = len(crl.public_bytes(serialization.Encoding.DER))
    print(f"  CRL of {len(revoked):,} serials    {t4 - t3:>10.3f} s, {size / 1024:,.0f} KiB DER")


def main(argv: list[str] | None = None) -> None:
    """Run the identity benchmarks and print their figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", default="1,101,1000,10000,210000",
                    help="comma-separated PBKDF2 iteration counts (210000: OWASP's figure for human passwords)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time spent per iteration count")
    ap.add_argument("--certs", type=int, default=200, help="device CSRs generated and signed")
    ap.add_argument("--crl-serials", type=int, default=10_000, help="revoked serials in the CRL built")
    ap.add_argument("--connects", type=int, default=1_000, help="connects per auth mode on a private broker (0: skip)")
    ap.add_argument("--workers", type=int, default=32, help="client threads opening the connections")
    ap.add_argument("--broker-iterations", default=f"{DEFAULT_ITERATIONS},1000",
                    help="iteration counts of the password files the broker checks")
    ap.add_argument("--devices", type=int, default=10_000, help="lines in the broker's password file")
    args = ap.parse_args(argv)
    bench_verify(iterations=_ints(args.iterations), seconds=args.seconds)
    bench_certificates(certs=args.certs, crl_serials=args.crl_serials)
    if args.connects > 0:
        from cxp.tools.bench.identity_broker import run

        run(connects=args.connects, workers=args.workers, iterations=_ints(args.broker_iterations),
            devices=max(args.devices, args.connects))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]
