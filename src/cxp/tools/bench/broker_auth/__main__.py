"""`python -m cxp.tools.bench.broker_auth`."""

from cxp.tools.bench.broker_auth import main

main()
