"""Draining: a node leaving its load balancer's rotation without a client seeing an error.

``POST <httpServerAdminPath>/drain`` (``admin.py``) starts it. From then on health answers 503 ``"draining"``, so the
balancer stops sending new requests here; requests that still arrive are served, and every answer says
``Connection: close`` and closes its connection, so clients and the balancer open their next connection elsewhere.
After the grace (``httpServerDrainGrace``, or the drain's own ``?grace=``) the node is *drained*: the connections
left idle are closed, and it may be stopped, upgraded or restarted. ``POST <httpServerAdminPath>/undrain`` ends it.

A drain lasts as long as the plugin process, unless asked to persist (``?persist=true``): then it is written to a
marker file in eKuiper's data folder, so that a plugin upgraded or restarted while drained comes back drained (its
grace over) until it is undrained, and the operator, not the restart, decides when the node takes traffic again. Not
by default: a data folder on a persistent volume (eKuiper's Helm chart) would bring the pod that replaces a drained
one up drained. Only the event-loop thread uses it.

Example::

    drain = Drain(Path("/kuiper/data/pyhttppush.draining"))
    drain.start(10.0)           # health 503 "draining"; answers close their connection; drained 10 s later
    drain.state()               # {"graceS": 10.0, "graceLeftS": 9.5, "drained": False, "persisted": False}
    drain.start(10.0, persist=True)   # the same, kept in the marker file across the plugin's restarts
    drain.stop()                # the marker is removed; health is the sources' again
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .answers import Answer, Later, ServerFault

log = logging.getLogger(__name__)
_now = time.monotonic


class Drain:
    def __init__(self, marker: Path | None = None) -> None:
        self.marker = marker
        #: whether the node is draining (or drained)
        self.active = False
        #: whether the drain is kept in the marker file
        self.persisted = False
        self.grace = 0.0
        self._until = 0.0  # monotonic time the grace ends
        self._timer: asyncio.TimerHandle | None = None
        #: ``?wait=true`` answers held until the grace is over, each given how the wait ended
        self._waiting: list[_Held] = []
        #: called once the grace is over (the server closes its idle connections)
        self.on_drained: Callable[[], None] = lambda: None
        if marker is not None and marker.is_file():  # drained before this process started: still drained
            self.active = self.persisted = True
            log.warning("this node was drained before the plugin started (%s): health answers 503 \"draining\" "
                        "until POST <httpServerAdminPath>/undrain", marker)

    @property
    def drained(self) -> bool:
        return self.active and _now() >= self._until

    def state(self) -> dict[str, Any]:
        """What health and the admin actions show of it."""
        return {"graceS": self.grace, "graceLeftS": round(max(0.0, self._until - _now()), 3), "drained": self.drained,
                "persisted": self.persisted}

    def start(self, grace: float, persist: bool = False) -> None:
        """Drain for ``grace`` seconds (again: the grace starts over); with ``persist``, across the plugin's restarts
        too. On the event loop. Raises :class:`~.answers.ServerFault` when the marker cannot be written: not draining
        then, as the caller would have it believe."""
        if persist:
            self._write_marker({"since": time.time(), "grace": grace})
        elif self.persisted:
            self._remove_marker()
        self.active, self.persisted = True, persist
        self.grace = grace
        self._until = _now() + grace
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(grace, self._over)
        log.warning("draining%s: health answers 503 \"draining\", every answer closes its connection; drained in "
                    "%g s", " (kept across restarts)" if persist else "", grace)

    def stop(self) -> None:
        """Undrain: health is the sources' again, and connections are kept alive."""
        was = self.active
        self.active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._release("undrained")
        if self.persisted:
            self._remove_marker()
            self.persisted = False
        if was:
            log.warning("undrained: the node takes new requests again")

    def hold(self, answer: Callable[[str], Answer]) -> Later:
        """An answer given once the grace is over (``?wait=true``): ``answer("drained")``; ``answer("undrained")``
        when an undrain comes first, ``answer("stopped")`` when the server stops first."""
        later = _Held(answer)
        if self.drained:
            later.end("drained")
        else:
            self._waiting.append(later)
        return later

    def _over(self) -> None:
        self._timer = None
        # The loop's timer may fire a little before the monotonic clock reaches the grace's end: drained from now on,
        # or a held ``?wait=true`` would answer "drained": false.
        self._until = min(self._until, _now())
        log.warning("drained: closing idle connections; the node may be stopped or upgraded")
        self.on_drained()
        self._release("drained")

    def _release(self, ended: str) -> None:
        waiting, self._waiting = self._waiting, []
        for later in waiting:
            later.end(ended)

    def _write_marker(self, content: dict[str, Any]) -> None:
        if self.marker is None:
            raise ServerFault("persist=true keeps a drain in eKuiper's data folder, and the plugin found none "
                              "(<eKuiper root>/data); not draining")
        try:
            self.marker.write_text(json.dumps(content) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ServerFault(f"cannot write the drain marker {self.marker}: {exc.strerror or exc}; not "
                              "draining") from None

    def _remove_marker(self) -> None:
        assert self.marker is not None
        try:
            self.marker.unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot remove the drain marker %s: %s (a restarted plugin would come back drained)",
                      self.marker, exc.strerror or exc)


class _Held(Later):
    """A ``?wait=true`` answer."""

    __slots__ = ("_answer",)

    def __init__(self, answer: Callable[[str], Answer]) -> None:
        super().__init__()
        self._answer = answer

    def end(self, ended: str) -> None:
        self.resolve(self._answer(ended))

    def cancel(self) -> None:
        """The server stops before the grace is over."""
        self.end("stopped")
