"""The agent API: ``/v1/agents/...`` and ``/v1/queues/...`` on the adapters' aiohttp app.

| method + path | what |
| --- | --- |
| ``PUT /v1/agents/{agent}`` | register / heartbeat: ``{"groups": [...], "slots": 3}`` |
| ``POST /v1/agents/{agent}/heartbeat`` | keep a registered agent live |
| ``GET /v1/agents/{agent}`` / ``DELETE`` | read / log out (stop receiving claims) |
| ``POST /v1/agents/{agent}/claim`` | ``{"group"?: ...}``: pop the next message atomically |
| ``POST /v1/agents/{agent}/conversations/{conv}/{action}`` | ``accept``, ``reply``, ``wait``, |
| | ``resolve``, ``transfer`` (``{"group": ..., "reason"?: ...}``) |
| ``GET /v1/queues``, ``GET /v1/queues/{group}?top=10`` | depth, oldest age, top items |

Every request carries ``Authorization: Bearer <token>``, one of ``OMNI_AGENT_TOKENS``.
Each action is recorded in Redis first (see :mod:`sla.agents`), then produced as an
agent event to ``omni.agent-events`` (acks=all), which the SLA worker applies to the
conversation's timers (idempotently). Errors: 400 bad input, 401 auth, 404 unknown
agent / conversation not held, 409 capacity or another agent's conversation, 503
broker unavailable (the action is recorded; retrying the request is safe).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from ..router import topics
from ..router.events import AgentEvent
from ..router.exceptions import BrokerUnavailable, InvalidRecord, OmniError, RequestRejected
from ..router.http import HttpContext, Installer, read_limited
from ..router.models import Decision
from ..router.settings import AgentApiSettings
from .agents import AgentDesk, ConvAction

__all__ = ["install", "installer"]

log = logging.getLogger(__name__)
MAX_BODY_BYTES: Final = 16_384
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
_GROUP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
ACTIONS: Final[dict[str, ConvAction]] = {
    "accept": "accept", "reply": "reply", "wait": "wait_customer",
    "resolve": "resolve", "transfer": "transfer",
}


class _HttpError(OmniError):
    """A refused agent API request: its HTTP status, error code and message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _fail(status: int, error: str, message: str) -> _HttpError:
    return _HttpError(status, error, message)


def _stored_decision(raw: bytes | None, message_id: str) -> dict[str, Any] | None:
    """The claimed message's decision as JSON, decoded through :class:`Decision`; None
    when it expired, or (logged) when what Redis holds is not a decision."""
    if not raw:
        return None
    try:
        decision: dict[str, Any] = orjson.loads(Decision.from_json(raw).to_json())
    except InvalidRecord as exc:
        log.warning("agent API: stored decision of %s unreadable: %s", message_id, exc)
        return None
    return decision


def installer(api_settings: AgentApiSettings) -> Installer:
    """An ``install(app, ctx)`` bound to explicit settings (tests, embedding)."""

    def _install(app: web.Application, ctx: HttpContext) -> None:
        _install_routes(app, ctx, api_settings)

    return _install


def install(app: web.Application, ctx: HttpContext) -> None:
    """Add the agent API to the adapters' app (the process's ``agent_api`` settings)."""
    _install_routes(app, ctx, ctx.settings.agent_api)


def _install_routes(
    app: web.Application, ctx: HttpContext, api_settings: AgentApiSettings
) -> None:
    if ctx.redis is None:
        # an ingest-only app (tests, a Redis-less edge) simply has no agent API
        log.warning("agent API not installed: the HttpContext has no Redis client")
        return
    desk = AgentDesk(ctx.redis, ctx.keys, live_ttl_s=api_settings.agent_live_ttl_s)
    events_topic = ctx.settings.topic(topics.AGENT_EVENTS)
    tokens = [t.get_secret_value().encode() for t in api_settings.agent_tokens]

    def authenticate(request: web.Request) -> None:
        if not tokens:
            raise _fail(401, "auth_not_configured",
                        "agent API authentication is not configured: set OMNI_AGENT_TOKENS")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _fail(401, "missing_auth", "send 'Authorization: Bearer <agent token>'")
        if not any(hmac.compare_digest(token.encode(), t) for t in tokens):
            raise _fail(401, "bad_token", "unknown bearer token")

    def path_id(request: web.Request, name: str, pattern: re.Pattern[str] = _ID) -> str:
        value = request.match_info[name]
        if not pattern.match(value):
            raise _fail(400, f"bad_{name}",
                        f"{name} must match {pattern.pattern}, got {value[:80]!r}")
        return value

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            raw = await read_limited(request, MAX_BODY_BYTES)
        except RequestRejected as exc:
            raise _fail(exc.status, exc.reason, str(exc)) from None
        if not raw.strip():
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _fail(400, "bad_json", f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _fail(400, "bad_json", "body must be a JSON object")
        return data

    async def publish(event: AgentEvent) -> None:
        await ctx.sink.send_records(
            events_topic, [(event.conversation_id.encode(), event.to_json())]
        )

    def handler(
        fn: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                authenticate(request)
                response: web.StreamResponse = await fn(request)
                return response
            except _HttpError as exc:
                return web.json_response(
                    {"error": exc.error, "message": exc.message}, status=exc.status
                )
            except BrokerUnavailable as exc:
                log.warning("agent API: %s", exc)
                return web.json_response(
                    {"error": "broker_unavailable",
                     "message": "the action is recorded but its event was not acknowledged "
                                "by Kafka; retry the same request"},
                    status=503, headers={"Retry-After": "2"},
                )
        return wrapped

    async def register(request: web.Request) -> web.Response:
        agent = path_id(request, "agent")
        data = await body(request)
        groups = data.get("groups")
        if (not isinstance(groups, list) or not groups
                or not all(isinstance(g, str) and _GROUP.match(g) for g in groups)):
            raise _fail(400, "bad_groups",
                        f"'groups' must be a non-empty list of group ids, got {groups!r}")
        slots = data.get("slots", 1)
        if isinstance(slots, bool) or not isinstance(slots, int) or not (
            1 <= slots <= api_settings.max_slots
        ):
            raise _fail(400, "bad_slots",
                        f"'slots' must be an integer 1..{api_settings.max_slots}, got {slots!r}")
        info = await desk.register(agent, list(dict.fromkeys(groups)), slots, ctx.now_ms())
        return web.json_response({"agent": agent, "groups": list(info.groups),
                                  "slots": info.slots, "active": list(info.active)})

    async def heartbeat(request: web.Request) -> web.Response:
        agent = path_id(request, "agent")
        if not await desk.heartbeat(agent, ctx.now_ms()):
            raise _fail(404, "unknown_agent",
                        f"agent {agent!r} is not registered; PUT /v1/agents/{agent} first")
        return web.json_response({"agent": agent, "live": True})

    async def get_agent(request: web.Request) -> web.Response:
        agent = path_id(request, "agent")
        info = await desk.get(agent, ctx.now_ms())
        if info is None:
            raise _fail(404, "unknown_agent", f"agent {agent!r} is not registered")
        return web.json_response({"agent": agent, "groups": list(info.groups),
                                  "slots": info.slots, "live": info.live,
                                  "active": list(info.active)})

    async def logout(request: web.Request) -> web.Response:
        agent = path_id(request, "agent")
        await desk.logout(agent)
        return web.json_response({"agent": agent, "live": False})

    async def claim(request: web.Request) -> web.Response:
        agent = path_id(request, "agent")
        data = await body(request)
        now = ctx.now_ms()
        info = await desk.get(agent, now)
        if info is None or not info.live:
            raise _fail(404, "unknown_agent",
                        f"agent {agent!r} is not registered or its heartbeat expired; "
                        f"PUT /v1/agents/{agent} with its groups and slots")
        group = data.get("group")
        if group is not None and (not isinstance(group, str) or group not in info.groups):
            raise _fail(400, "bad_group",
                        f"agent {agent!r} serves {list(info.groups)}, not {group!r}")
        result = await desk.claim(agent, [group] if group else list(info.groups), now)
        if result.status == "unknown":
            raise _fail(404, "unknown_agent", f"agent {agent!r} is not live; heartbeat first")
        if result.status == "full":
            raise _fail(409, "at_capacity",
                        f"agent {agent!r} holds {result.active} conversation(s) of "
                        f"{info.slots} slot(s); resolve or transfer one first")
        if result.status == "empty":
            return web.json_response({"claimed": None})
        assert result.conversation_id is not None
        assert result.message_id is not None
        try:
            await publish(AgentEvent("claim", result.conversation_id, agent, now,
                                     group=result.group or "", message_id=result.message_id))
        except BrokerUnavailable as exc:  # the claim stands; its event only informs
            log.warning("agent API: claim event not produced: %s", exc)
        decision = _stored_decision(result.decision, result.message_id)
        return web.json_response({"claimed": {
            "message_id": result.message_id, "conversation_id": result.conversation_id,
            "group": result.group, "decision": decision,
        }})

    async def act(request: web.Request) -> web.Response:
        agent = path_id(request, "agent")
        conv = path_id(request, "conv")
        action = ACTIONS.get(request.match_info["action"])
        if action is None:
            raise _fail(404, "unknown_action",
                        f"action must be one of {sorted(ACTIONS)}, "
                        f"got {request.match_info['action']!r}")
        data = await body(request)
        to_group = ""
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _fail(400, "bad_reason", "'reason' must be a string")
        if action == "transfer":
            to_group = data.get("group") or ""
            if not isinstance(to_group, str) or not _GROUP.match(to_group):
                raise _fail(400, "bad_group",
                            f"transfer needs {{'group': <skill group>}}, got {to_group!r}")
        now = ctx.now_ms()
        result = await desk.act(agent, conv, action, now, to_group)
        if result.status == "none":
            raise _fail(404, "not_assigned",
                        f"conversation {conv!r} is not assigned; claim it first")
        if result.status == "other":
            raise _fail(409, "not_yours",
                        f"conversation {conv!r} is held by agent {result.detail!r}")
        if result.status == "released":
            raise _fail(409, "released",
                        f"conversation {conv!r} was already {result.detail}; claim it again")
        await publish(AgentEvent(
            action, conv, agent, now, group=result.group,
            to_group=to_group or None, message_id=result.message_id or None, reason=reason,
        ))
        return web.json_response({"conversation_id": conv, "action": action,
                                  "status": "repeated" if result.status == "again" else "ok"})

    async def queues(_: web.Request) -> web.Response:
        now = ctx.now_ms()
        staffing = await desk.staffing(now)
        out = []
        for g in await desk.known_groups():
            view = await desk.queue_view(g, now, top=0)
            out.append({"group": g, "depth": view.depth, "oldest_age_s": view.oldest_age_s,
                        "agents": staffing.agents.get(g, 0),
                        "slots": staffing.slots.get(g, 0)})
        return web.json_response({"queues": out})

    async def queue(request: web.Request) -> web.Response:
        group = path_id(request, "group", _GROUP)
        try:
            top = int(request.query.get("top", "10"))
        except ValueError:
            raise _fail(400, "bad_top", "'top' must be an integer 0..100") from None
        if not 0 <= top <= 100:
            raise _fail(400, "bad_top", "'top' must be an integer 0..100")
        view = await desk.queue_view(group, ctx.now_ms(), top=top)
        if view.depth == 0 and group not in await desk.known_groups():
            raise _fail(404, "unknown_group",
                        f"no queue and no agent for group {group!r}; see GET /v1/queues")
        return web.json_response({"group": group, "depth": view.depth,
                                  "oldest_age_s": view.oldest_age_s, "top": view.top})

    r = app.router
    r.add_put("/v1/agents/{agent}", handler(register))
    r.add_get("/v1/agents/{agent}", handler(get_agent))
    r.add_delete("/v1/agents/{agent}", handler(logout))
    r.add_post("/v1/agents/{agent}/heartbeat", handler(heartbeat))
    r.add_post("/v1/agents/{agent}/claim", handler(claim))
    r.add_post("/v1/agents/{agent}/conversations/{conv}/{action}", handler(act))
    r.add_get("/v1/queues", handler(queues))
    r.add_get("/v1/queues/{group}", handler(queue))
