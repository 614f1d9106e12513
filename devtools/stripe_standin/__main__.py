"""`python -m devtools.stripe_standin`: serve the local Stripe stand-in until interrupted."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.stripe_standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--webhook-url", required=True, help="where to POST signed events")
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_standin_local_only"),
        help="the endpoint secret events are signed with",
    )
    parser.add_argument("--public-url", help="base URL browsers reach the payment page at (default http://HOST:PORT)")
    parser.add_argument("--state-file", type=Path, help="keep objects across restarts in this file (default: memory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="stripe-standin %(levelname)s %(message)s", stream=sys.stdout)
    from aiohttp import web

    from devtools.stripe_standin.app import Config, build_app

    browser_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host  # noqa: S104
    public_url = args.public_url or f"http://{browser_host}:{args.port}"
    app = build_app(Config(args.webhook_url, args.webhook_secret, public_url, args.state_file))
    print(
        f"Stripe stand-in (test mode) on {public_url}; signed webhooks to {args.webhook_url}",
        flush=True,
    )
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=logging.getLogger("stripe_standin.access"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
