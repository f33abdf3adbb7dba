"""The built-in health gates: ``instances_back``, ``http`` and ``host_guard``.

A session names the gates it wants in ``controls.gates``; each is asked before
every host starts until it says ok (see :class:`~fenix_core.hookspecs.Gate`).
``host_guard`` needs no naming: when the cloud driver is a
:class:`~fenix_core.hookspecs.HostGuard`, every session asks it before each
controller host, ahead of the gates it names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..controls import HOST_GUARD
from ..errors import InvalidInput, PluginError
from .hookspecs import Gate, GateContext, GateResult, HostGuard, InstanceReadiness, hookimpl

__all__ = ["HOST_GUARD", "BuiltinGates", "HostGuardGate", "HttpGate", "InstancesBackGate"]


def _number(params: Mapping[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(key, f"expected a number of seconds, got {value!r}")
    if value < 0:
        raise InvalidInput(key, f"must be >= 0, got {value!r}")
    return float(value)


def _known(params: Mapping[str, Any], known: Sequence[str]) -> None:
    extra = sorted(set(params) - set(known))
    if extra:
        raise InvalidInput(extra[0], "unknown parameter")


class InstancesBackGate:
    """Every instance moved off the last host is ready again (ACTIVE / Ready)
    and has stayed so for ``soak_seconds``. Instances deleted meanwhile do not
    count. Parameters: ``soak_seconds`` (0), ``retry_after`` (30)."""

    name = "instances_back"

    def validate_params(self, params: Mapping[str, Any]) -> None:
        _known(params, ("soak_seconds", "retry_after"))
        _number(params, "soak_seconds", 0.0)
        _number(params, "retry_after", 30.0)

    def check(self, context: GateContext) -> GateResult:
        soak = _number(context.params, "soak_seconds", 0.0)
        retry = _number(context.params, "retry_after", 30.0) or 30.0
        driver = context.driver
        if driver is None:
            raise PluginError(self.name, "no cloud driver to ask")
        readiness = driver if isinstance(driver, InstanceReadiness) else None
        waiting = []
        for instance_id in context.moved_instances:
            if driver.locate(instance_id) is None:
                continue  # deleted (scaled in): nothing to wait for
            if readiness is not None and not readiness.instance_is_ready(instance_id):
                waiting.append(instance_id)
        if waiting:
            context.memo.pop("ready_since", None)
            return GateResult.wait(
                f"instances moved off {context.last_host} are not ready yet: "
                + ", ".join(sorted(waiting)),
                retry,
            )
        since = datetime.fromisoformat(
            context.memo.setdefault("ready_since", context.now.isoformat())
        )
        left = soak - (context.now - since).total_seconds()
        if left > 0:
            return GateResult.wait(
                f"instances moved off {context.last_host} are ready; soaking {left:.0f} s more",
                left,
            )
        return GateResult.ok()


class HttpGate:
    """GET ``url``: ok when the status is ``expect_status`` (200) and, if
    ``json_field`` (a dotted path) is given, the JSON body has ``json_value``
    there (any true value if ``json_value`` is not given). Anything else,
    including a connection error, is "not yet". Parameters: ``url``,
    ``expect_status``, ``json_field``, ``json_value``, ``timeout`` (5 s),
    ``retry_after`` (30 s). Needs ``httpx`` (the ``gates`` extra)."""

    name = "http"

    def validate_params(self, params: Mapping[str, Any]) -> None:
        _known(
            params, ("url", "expect_status", "json_field", "json_value", "timeout", "retry_after")
        )
        url = params.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInput("url", f"required: an http(s) URL, got {url!r}")
        status = params.get("expect_status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise InvalidInput("expect_status", f"expected an HTTP status, got {status!r}")
        field = params.get("json_field")
        if field is not None and (not isinstance(field, str) or not field):
            raise InvalidInput("json_field", f"expected a dotted path, got {field!r}")
        _number(params, "timeout", 5.0)
        _number(params, "retry_after", 30.0)

    def check(self, context: GateContext) -> GateResult:
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise PluginError(self.name, "needs httpx: pip install 'fenix-core[gates]'") from None
        params = context.params
        url = str(params["url"])
        expect = int(params.get("expect_status", 200))
        retry = _number(params, "retry_after", 30.0) or 30.0
        try:
            response = httpx.get(url, timeout=_number(params, "timeout", 5.0))
        except httpx.HTTPError as exc:
            return GateResult.wait(f"GET {url} failed: {exc}", retry)
        if response.status_code != expect:
            return GateResult.wait(
                f"GET {url} answered {response.status_code}, expected {expect}", retry
            )
        field = params.get("json_field")
        if field is None:
            return GateResult.ok()
        try:
            value: Any = response.json()
            for part in str(field).split("."):
                value = value[int(part)] if isinstance(value, list) else value[part]
        except (ValueError, KeyError, IndexError, TypeError):
            return GateResult.wait(f"GET {url}: no JSON field {field}", retry)
        wanted = params.get("json_value")
        good = bool(value) if "json_value" not in params else value == wanted
        if not good:
            return GateResult.wait(
                f"GET {url}: {field} is {value!r}"
                + (f", expected {wanted!r}" if "json_value" in params else ""),
                retry,
            )
        return GateResult.ok()


class HostGuardGate:
    """The cloud driver's own guard (:class:`~fenix_core.hookspecs.HostGuard`):
    ok when it has no reason to hold ``host`` back; a driver without one
    always lets it go. Parameter: ``retry_after`` (30)."""

    name = HOST_GUARD

    def validate_params(self, params: Mapping[str, Any]) -> None:
        _known(params, ("retry_after",))
        _number(params, "retry_after", 30.0)

    def check(self, context: GateContext) -> GateResult:
        driver: object = context.driver
        if not isinstance(driver, HostGuard):
            return GateResult.ok()
        reason = driver.host_guard(context.host)
        if reason is None:
            return GateResult.ok()
        return GateResult.wait(reason, _number(context.params, "retry_after", 30.0) or 30.0)


class BuiltinGates:
    """Registers the built-in gates with every engine."""

    @hookimpl
    def fenix_gates(self) -> Sequence[Gate]:
        return [InstancesBackGate(), HttpGate(), HostGuardGate()]
