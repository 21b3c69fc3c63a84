"""Broker auth at fleet scale: `python -m cxp.tools.bench.broker_auth` or `cxp bench broker-auth` (prints JSON)."""

from __future__ import annotations

import argparse
import json
import sys

MECHANISMS = ("files", "dynsec")


def main(argv: list[str] | None = None) -> None:
    """Measure each mechanism at each fleet size and print one JSON object per run."""
    from cxp.tools.bench.broker_auth.connect import connect_rates, debug_log_cost
    from cxp.tools.bench.broker_auth.files import device_credentials
    from cxp.tools.bench.broker_auth.measure import GATEWAY, measure_dynsec, measure_files

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, action="append",
                        help="fleet size; repeat for several (default 10000 and 100000)")
    parser.add_argument("--mechanism", choices=[*MECHANISMS, "all"], default="all")
    parser.add_argument("--connect-clients", type=int, default=1000, help="devices connecting at once (0: skip)")
    parser.add_argument("--dynsec-batch", type=int, default=100, help="devices per control message")
    parser.add_argument("--dynsec-max-create-s", type=float, default=600.0,
                        help="cap on creating dynsec clients over MQTT from empty (rate still reported; 0: skip)")
    parser.add_argument("--extras", action=argparse.BooleanOptionalAction, default=True,
                        help="also: connect rate anonymous / password / password+TLS, and the cost of debug logging")
    args = parser.parse_args(argv)
    sizes = args.devices or [10_000, 100_000]
    mechanisms = MECHANISMS if args.mechanism == "all" else (args.mechanism,)
    for devices in sizes:
        for mechanism in mechanisms:
            if mechanism == "files":
                result = measure_files(devices, connect_clients=args.connect_clients)
            else:
                result = measure_dynsec(devices, batch=args.dynsec_batch, max_create_s=args.dynsec_max_create_s,
                                        connect_clients=args.connect_clients)
            print(json.dumps(result, indent=2))
            sys.stdout.flush()
    if args.extras:
        creds = device_credentials(max(args.connect_clients, 1) + 1, prefix="c")
        print(json.dumps({"connect_rates": connect_rates(creds[1:], gateway=GATEWAY),
                          "debug_log_cost": debug_log_cost(creds[0], GATEWAY)}, indent=2))


if __name__ == "__main__":
    main()
