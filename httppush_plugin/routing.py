"""The endpoint table: (path, method) → the source instances subscribed to it (fan-out).

Only the event-loop thread reads or changes the table, so it needs no lock. Each route keeps its subscriptions
grouped by what they receive — equal decoders (``Decoder.key``) and equal ``meta`` fields — so the handler decodes
and frames a body once per group, however many sources subscribe.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field

from .auth import Authenticator, describe
from .channel import ChannelSender
from .config import ConfigError, EndpointConfig
from .decoders import Decoder

_ids = itertools.count(1)


@dataclass(eq=False)
class Subscription:
    """One source instance on one endpoint. Registered at configure time; its sender is attached in ``open()``,
    a moment later (the SDK dials the host's channel and starts ``open()`` after ``configure()`` returns)."""

    endpoint: EndpointConfig
    decoder: Decoder
    label: str = ""
    #: (ruleId, opId, instanceId) from the start command, when known: a second start for it replaces this one
    instance: tuple[str, str, int] | None = None
    sender: ChannelSender | None = None
    id: int = field(default_factory=lambda: next(_ids))
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = (f"rule {self.instance[0]} stream {self.instance[1]} instance {self.instance[2]}"
                          if self.instance else f"source #{self.id}")

    def attach(self, sender: ChannelSender) -> None:
        """Call on the event loop."""
        self.sender = sender
        self.label = sender.label
        self.ready.set()

    def detach(self) -> None:
        """Call on the event loop: the source is gone; requests waiting for it stop waiting."""
        self.sender = None
        self.ready.set()


@dataclass
class Group:
    """Subscriptions of one route that get the same frames: equal decoders and equal meta fields."""

    decoder: Decoder
    meta: tuple[str, ...]
    subscriptions: list[Subscription]


@dataclass
class Route:
    subscriptions: list[Subscription] = field(default_factory=list)
    #: who may push here: every subscription agrees (checked by :meth:`EndpointTable.add`), so it never changes
    auth: Authenticator | None = None
    #: rebuilt on every change
    groups: list[Group] = field(default_factory=list)

    def regroup(self) -> None:
        grouped: dict[Hashable, Group] = {}
        for sub in self.subscriptions:
            key = (sub.decoder.key, sub.endpoint.meta)
            if key not in grouped:
                grouped[key] = Group(sub.decoder, sub.endpoint.meta, [])
            grouped[key].subscriptions.append(sub)
        self.groups = list(grouped.values())


class EndpointTable:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Route] = {}

    def __len__(self) -> int:
        return sum(len(route.subscriptions) for route in self._routes.values())

    def add(self, sub: Subscription) -> list[Subscription]:
        """Register ``sub``; returns the subscriptions it replaces (same source instance, started again).

        Raises :class:`ConfigError` (nothing changed) when the route's other subscriptions have another ``auth``:
        one request is either admitted for all of them or for none."""
        replaced = [old for route in self._routes.values() for old in route.subscriptions
                    if sub.instance is not None and old.instance == sub.instance]
        key = (sub.endpoint.path, sub.endpoint.method)
        route = self._routes.get(key)
        others = [old for old in route.subscriptions if old not in replaced] if route is not None else []
        if others and others[0].endpoint.auth != sub.endpoint.auth:
            raise ConfigError(
                f"{sub.label} and {others[0].label} both serve {sub.endpoint.method} {sub.endpoint.path}, with "
                f"different 'auth' ({describe(sub.endpoint.auth)} and {describe(others[0].endpoint.auth)}); "
                "sources on one path and method must use the same auth settings (e.g. one config group)")
        for old in replaced:
            self.remove(old)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = Route(auth=sub.endpoint.auth)
        route.subscriptions.append(sub)
        route.regroup()
        return replaced

    def remove(self, sub: Subscription) -> None:
        key = (sub.endpoint.path, sub.endpoint.method)
        route = self._routes.get(key)
        if route is None or sub not in route.subscriptions:
            return
        route.subscriptions.remove(sub)
        route.regroup()  # an emptied route has no groups: a request already routed to it is refused, not answered
        if not route.subscriptions:
            del self._routes[key]

    def lookup(self, path: str, method: str) -> Route | None:
        return self._routes.get((path, method))

    def methods(self, path: str) -> list[str]:
        """The methods served on ``path`` (for 405's ``Allow``); empty when the path is unknown."""
        return sorted(method for (p, method) in self._routes if p == path)
