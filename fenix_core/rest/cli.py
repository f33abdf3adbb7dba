"""``fenix-api``: run the REST service on a database.

::

    fenix-api --database-url sqlite:///fenix.db --token-file tokens.json \\
              --host 0.0.0.0 --port 12347 --public-url http://fenix.example:12347 \\
              --plugin mypackage.cloud:make_cloud --session-webhook http://ops/hook

Every option can also come from the environment: ``FENIX_API_`` and the
option's name in capitals with ``_`` for ``-`` (``FENIX_API_PORT=0``,
``FENIX_API_TOKEN_FILE``); repeatable options take a comma-separated list
(``FENIX_API_PLUGIN=a:make,b:make``); a flag takes true or false
(``FENIX_API_METRICS_WITHOUT_TOKEN=true``). A command-line option wins. With
``--port 0`` a free port is picked; the first line printed is
``fenix-api serving on URL``.

Cloud, action and workflow plug-ins come from the ``fenix`` entry-point group
and from ``--plugin MODULE:CALLABLE`` (called without arguments; it returns
the plug-in object). ``--simulated-cloud FILE`` serves a SimulatedCloud
kept in FILE, to try the API out.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..engine import Engine
from ..errors import FenixError
from .auth import Authenticator, TokenAuthenticator
from .json_logs import JsonFormatter
from .service import FenixService

__all__ = ["main", "parser"]


ENV_PREFIX = "FENIX_API_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _from_environment(p: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Defaults of ``p``'s options from ``FENIX_API_<OPTION>`` variables."""
    given: set[str] = set()
    for action in p._actions:
        name = ENV_PREFIX + action.dest.upper()
        if not action.option_strings or name not in environ:
            continue
        raw = environ[name]
        value: Any = raw
        if isinstance(action, argparse._AppendAction):
            value = [item.strip() for item in raw.split(",") if item.strip()]
        elif isinstance(action, argparse._StoreTrueAction):
            if raw.strip().lower() not in _TRUE | _FALSE:
                p.error(f"{name}: expected true or false, got {raw!r}")
            value = raw.strip().lower() in _TRUE
        elif action.type is int:
            try:
                value = int(raw)
            except ValueError:
                p.error(f"{name}: expected an integer, got {raw!r}")
        if action.choices is not None and value not in action.choices:
            p.error(f"{name}: expected one of {', '.join(map(str, action.choices))}, got {raw!r}")
        action.default = value
        action.required = False
        given.add(action.dest)
    for group in p._mutually_exclusive_groups:
        if any(a.dest in given for a in group._group_actions):
            group.required = False


def parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; ``environ`` (default os.environ) gives defaults."""
    p = argparse.ArgumentParser(
        prog="fenix-api", description="Fenix v1 compatible maintenance API over fenix-core."
    )
    p.add_argument("--database-url", default="sqlite:///fenix.db", help="SQLAlchemy URL")
    auth = p.add_mutually_exclusive_group(required=True)
    auth.add_argument(
        "--token-file",
        help='JSON: {"admin": [token, ...], "projects": {token: project_id, ...}}',
    )
    auth.add_argument(
        "--keystone-cloud",
        metavar="CLOUD",
        help="validate Keystone tokens with the service credentials of this clouds.yaml "
        "entry ('envvars': the OS_* variables); needs the openstack extra",
    )
    p.add_argument(
        "--admin-role",
        action="append",
        metavar="ROLE",
        help="with --keystone-cloud: a Keystone role that makes a token the admin "
        "(repeatable; default: admin)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12347, help="0 picks a free port")
    p.add_argument("--public-url", help="this API's URL as managers reach it (notification links)")
    p.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE:CALLABLE", help="a plug-in factory"
    )
    p.add_argument("--simulated-cloud", metavar="FILE", help="serve a SimulatedCloud kept in FILE")
    p.add_argument("--session-webhook", action="append", default=[], metavar="URL")
    p.add_argument("--host-webhook", action="append", default=[], metavar="URL")
    p.add_argument("--max-body", type=int, default=1 << 20, help="largest request body, bytes")
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object a line (time, level, logger, message)",
    )
    p.add_argument(
        "--metrics-without-token",
        action="store_true",
        help="serve /metrics to anyone who reaches it (default: an admin token)",
    )
    _from_environment(p, os.environ if environ is None else environ)
    return p


def _configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _load_plugin(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"--plugin {spec!r}: expected MODULE:CALLABLE")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"--plugin {spec!r}: {exc}") from None
    return factory()


def _authenticator(args: argparse.Namespace) -> Authenticator:
    if args.token_file is not None and args.keystone_cloud is not None:
        raise SystemExit("fenix-api: give --token-file or --keystone-cloud, not both")
    if args.token_file is not None:
        if args.admin_role:
            raise SystemExit("--admin-role applies to --keystone-cloud only")
        return TokenAuthenticator.from_file(args.token_file)
    from .keystone import from_cloud_config

    try:
        return from_cloud_config(args.keystone_cloud, admin_roles=args.admin_role or ("admin",))
    except Exception as exc:  # openstack's config errors have no common base to name
        raise SystemExit(f"fenix-api: --keystone-cloud {args.keystone_cloud}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _configure_logging(args.log_level, args.log_format)
    plugins = [_load_plugin(spec) for spec in args.plugin]
    if args.simulated_cloud:
        from ..testing import SimulatedCloud

        plugins.append(SimulatedCloud(state_path=args.simulated_cloud))
    try:
        authenticator = _authenticator(args)
        engine = Engine(database_url=args.database_url, plugins=plugins)
        service = FenixService(
            engine,
            authenticator,
            host=args.host,
            port=args.port,
            public_url=args.public_url,
            admin_webhooks={
                "maintenance.session": args.session_webhook,
                "maintenance.host": args.host_webhook,
            },
            max_body=args.max_body,
            metrics_token=not args.metrics_without_token,
        )
    except FenixError as exc:
        print(f"fenix-api: {exc}", file=sys.stderr)
        return 2
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    with engine, service:
        print(f"fenix-api serving on {service.url}", flush=True)
        stopped.wait()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
