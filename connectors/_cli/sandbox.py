"""``shipmap sandbox``: run the local Fenix + Digital Genius API server in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from shipmap.connectors._cli._types import directory, host, non_negative_int, port, positive_int
from shipmap.connectors._sandbox import (
    DEFAULT_DUPLICATE_KEYS,
    DEFAULT_FAULT_IDENTITIES,
    DEFAULT_FAULTED,
    DEFAULT_KEEP,
    DEFAULT_TOKEN_TTL,
    FaultPlan,
    Sandbox,
    SandboxConfig,
    SandboxCredentials,
)

DEFAULT_PORT = 8765

# (flag, credential field, help)
_CREDENTIAL_FLAGS = (
    ("--fenix-username", "fenix_username", "Fenix login username (default demo-user)"),
    ("--fenix-password", "fenix_password", "Fenix login password (default demo-pass)"),
    ("--fenix-api-key", "fenix_api_key", "Fenix x-api-key (default demo-api-key)"),
    ("--fenix-store-name", "fenix_store_name", "Fenix store_name (default demo-store)"),
    ("--dg-api-key", "dg_api_key", "Digital Genius API key (default demo-key)"),
    ("--dg-api-secret", "dg_api_secret", "Digital Genius API secret (default demo-secret)"),
)


def _fault_plan(text: str) -> FaultPlan:
    try:
        return FaultPlan.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Credentials: the demo ones unless a --credentials file, SHIPMAP_SANDBOX_<FIELD> variables "
        "(e.g. SHIPMAP_SANDBOX_FENIX_PASSWORD) or the flags below say otherwise, later ones winning. "
        "Fault spec, e.g. '5xx=0.05,429=0.02,drop=0.01,slow=0.01:2.5,expire-every=500,seed=7' or "
        "'schedule=ok,500,429,ok'. See docs/sandbox.md."
    )
    parser.add_argument("--host", type=host, default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--token-ttl",
        type=_positive_seconds,
        default=DEFAULT_TOKEN_TTL,
        metavar="SECONDS",
        help="Fenix authToken lifetime (default 14400, the seed's 4 hours)",
    )
    parser.add_argument(
        "--faults", type=_fault_plan, default=None, metavar="SPEC", help="faults to inject into both APIs"
    )
    for api, name in (("fenix", "Fenix"), ("dg", "Digital Genius")):
        parser.add_argument(
            f"--{api}-faults",
            type=_fault_plan,
            default=None,
            metavar="SPEC",
            help=f"a fault plan of {name}'s own, answering its requests instead of --faults' (e.g."
            f" '5xx=1': {name} down while the other API answers)",
        )
    parser.add_argument(
        "--record", type=Path, metavar="FILE.jsonl", help="also append accepted requests here"
    )
    parser.add_argument(
        "--keep",
        type=non_negative_int,
        default=DEFAULT_KEEP,
        metavar="N",
        help=f"accepted requests kept in memory for /_sandbox/requests, the newest (default {DEFAULT_KEEP:,};"
        " 0 keeps all); counts and --record cover every request",
    )
    parser.add_argument(
        "--duplicate-keys",
        type=positive_int,
        default=DEFAULT_DUPLICATE_KEYS,
        metavar="N",
        help=f"distinct keys (order ids, external ids) the duplicate check remembers, the newest (default"
        f" {DEFAULT_DUPLICATE_KEYS:,}): a sandbox left running stays bounded",
    )
    parser.add_argument(
        "--faulted",
        type=positive_int,
        default=DEFAULT_FAULTED,
        metavar="N",
        help=f"injected error answers and drops kept for /_sandbox/faulted, the newest (default"
        f" {DEFAULT_FAULTED:,})",
    )
    parser.add_argument(
        "--fault-identities",
        type=positive_int,
        default=DEFAULT_FAULT_IDENTITIES,
        metavar="N",
        help=f"request identities each fault plan remembers attempts of, the most recent (default"
        f" {DEFAULT_FAULT_IDENTITIES:,}); a forgotten one draws as a first attempt again",
    )
    parser.add_argument(
        "--source-documents",
        type=directory,
        metavar="DIR",
        help="serve these JSON files as a retailer platform's API at /_source/{platform}/{path} (docs/serve.md)",
    )
    parser.add_argument(
        "--source-token",
        metavar="TOKEN",
        help="the X-Auth-Token the fake source API asks for (default: none)",
    )
    parser.add_argument(
        "--source-faults",
        type=_fault_plan,
        default=None,
        metavar="SPEC",
        help="faults the fake source API injects (its own plan; same spec as --faults)",
    )
    parser.add_argument("--credentials", type=Path, metavar="FILE", help="JSON or YAML file of credentials")
    group = parser.add_argument_group("credentials")
    for flag, field, help_text in _CREDENTIAL_FLAGS:
        group.add_argument(flag, dest=field, metavar="VALUE", help=help_text)


def run(args: argparse.Namespace) -> int:
    overrides = {field: getattr(args, field) for _, field, _ in _CREDENTIAL_FLAGS}
    credentials = SandboxCredentials.load(args.credentials, os.environ, overrides)
    config = SandboxConfig(
        host=args.host,
        port=args.port,
        token_ttl=args.token_ttl,
        credentials=credentials,
        faults=args.faults or FaultPlan(),
        fenix_faults=args.fenix_faults,
        dg_faults=args.dg_faults,
        record=args.record,
        keep=args.keep,
        duplicate_keys=args.duplicate_keys,
        faulted=args.faulted,
        fault_identities=args.fault_identities,
        source_documents=args.source_documents,
        source_token=args.source_token,
        source_faults=args.source_faults or FaultPlan(),
    )
    try:
        sandbox = Sandbox(config)
    except OSError as error:
        print(f"error: cannot record to {args.record}: {error.strerror or error}", file=sys.stderr)
        return 1

    def ready(url: str) -> None:
        # The URL alone on the first line, so a script can read it.
        print(url, flush=True)
        print(f"  Fenix   POST {url}/login", file=sys.stderr)
        print(f"          POST {url}/api/v1/orders/{{order_id}}/created", file=sys.stderr)
        print(
            f"          POST {url}/api/v1/order/{{order_id}}/fulfillment/{{fulfillment_id}}/created",
            file=sys.stderr,
        )
        print(f"  DG      POST {url}/execution (eu), {url}/eu/execution, {url}/us/execution", file=sys.stderr)
        print(f"  sandbox GET  {url}/_sandbox/requests  {url}/_sandbox/stats", file=sys.stderr)
        which = "demo (see docs/sandbox.md)" if credentials.is_demo() else "custom"
        faults = config.faults.spec()
        for api, own in (("fenix", config.fenix_faults), ("dg", config.dg_faults)):
            if own is not None:
                faults += f"; {api} faults: {own.spec()}"
        print(
            f"  credentials: {which}; token ttl {config.token_ttl:g}s; faults: {faults}",
            file=sys.stderr,
        )
        if config.record is not None:
            print(f"  recording to {config.record}", file=sys.stderr)
        print("  Ctrl-C stops.", file=sys.stderr, flush=True)

    # uvicorn shuts down gracefully on SIGINT and SIGTERM, then raises the signal again. Ctrl-C then ends the
    # command as it ends every other (`shipmap: interrupted`, 130); SIGTERM, a service manager's stop, with 0.
    terminated = False

    def terminate(signum: int, frame: FrameType | None) -> None:
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        sandbox.serve_forever(on_ready=ready)
    except KeyboardInterrupt:
        if not terminated:
            raise
    except OSError as error:
        print(f"error: cannot serve on {args.host}:{args.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
