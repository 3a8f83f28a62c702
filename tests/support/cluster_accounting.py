"""The cluster test's accounting (tests/test_cluster.py; checked on made-up runs by
tests/test_cluster_accounting.py): what the devices were answered against what arrived at the broker.

Each request attempt is an :class:`Attempt` (status, or the connection error; the node named by ``X-Served-By``).
:func:`account` compares the attempts with the broker's ``(device, n)`` arrivals, given the moments of the run
(``signal``: the SIGKILLs sent; ``kill``: the killed node's processes all dead; ``down``: HAProxy marked it DOWN;
``calm``: every device answered again), and :meth:`Accounting.check` holds them to the rules in docs/scaling.md:

- a record answered 2xx and missing at the broker was answered by the killed node, sent before it died and answered
  at most :data:`LOSS_WINDOW_S` before (what its eKuiper held died with it);
- a record that arrived more than once had, for each extra copy, an attempt sent to the killed node before it died
  that got no 2xx (the node may have delivered it; the retry with the same key went to another node, whose keys are
  its own);
- nothing arrived that was never answered 2xx;
- each device's records arrived in order within each node's stretch (records that arrived twice are left out: which
  copy came first is not known, and they are accounted for above);
- the only failed attempts are the kill's: answered between the signal and the calm, by the killed node, or by no
  node for a request sent at most :data:`UNNAMED_WINDOW_S` after it died; from the calm on (the
  drain-upgrade-undrain cycle) none at all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: A lost record (answered 2xx by the killed node, never at the broker) was answered at most this long before the
#: node died: what its eKuiper held in its channel, rule and mqtt sink (measured: docs/scaling.md).
LOSS_WINDOW_S = 2.0
#: A connection HAProxy closed without an answer (no ``X-Served-By``) is the kill's only if its request was sent at
#: most this long after the killed node died (measured: the request right behind the victim's last answer, sent
#: within milliseconds of its death). Later, or from a survivor's stretch, it is a failure.
UNNAMED_WINDOW_S = 0.5

Key = tuple[str, int]


@dataclass(eq=False)
class Attempt:
    device: str
    n: int
    sent: float
    done: float
    status: int | None  # None: the connection failed (error says how)
    error: str | None
    served_by: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Accounting:
    victim: str
    kill: float
    records: int
    attempts: int
    lost: list[Attempt]
    duplicates: dict[Key, int]
    duplicate_causes: dict[Key, list[Attempt]]
    strays: list[Key]
    disorder: list[str]
    kill_failures: list[Attempt]
    other_failures: list[Attempt]
    cycle_failures: list[Attempt]

    def report(self) -> str:
        failures = dict(Counter(str(a.status or a.error) for a in self.kill_failures))
        lines = [f"records answered 2xx: {self.records}; attempts {self.attempts} (retries "
                 f"{self.attempts - self.records}); failed attempts in the kill window {len(self.kill_failures)} "
                 f"({failures}), during the drain-upgrade-undrain cycle {len(self.cycle_failures)}"]
        ages = [self.kill - a.done for a in self.lost]
        lines.append(f"lost (answered 2xx by {self.victim} before it died, never at the broker): {len(self.lost)}"
                     + (f", answered {min(ages) * 1000:.0f}-{max(ages) * 1000:.0f} ms before" if ages else ""))
        causes = ", ".join(f"{d}#{n} x{count} ({len(self.duplicate_causes.get((d, n), []))} attempt(s) {self.victim} "
                           f"took unanswered)" for (d, n), count in list(self.duplicates.items())[:10])
        lines.append(f"duplicates: {len(self.duplicates)}" + (f": {causes}" if causes else ""))
        return "\n".join(lines)

    def check(self) -> None:
        assert not self.strays, f"arrived but never answered 2xx: {self.strays[:10]}"
        bad_lost = [a for a in self.lost if a.served_by != self.victim or a.sent > self.kill
                    or a.done < self.kill - LOSS_WINDOW_S]
        assert not bad_lost, f"records answered 2xx and lost, not explained by the kill: {bad_lost[:10]}"
        unexplained = {key: count for key, count in self.duplicates.items()
                       if count - 1 > len(self.duplicate_causes.get(key, []))}
        assert not unexplained, f"duplicates not explained by the kill: {unexplained}"
        assert not self.disorder, f"per-device order broken within a node's stretch: {self.disorder[:10]}"
        assert not self.other_failures, (
            f"failed attempts outside the kill window or not from the killed node: {self.other_failures[:10]}")
        assert not self.cycle_failures, (
            f"clients saw errors during the drain-upgrade-undrain cycle: {self.cycle_failures[:10]}")


def account(attempts: Iterable[Attempt], arrived: list[Key], victim: str, marks: Mapping[str, float]) -> Accounting:
    """Compare the ``attempts`` with the broker's ``arrived`` keys (in arrival order); ``marks``: ``signal``,
    ``kill``, ``down``, ``calm`` (monotonic times, see the module docstring)."""
    attempts = list(attempts)
    ok = {(a.device, a.n): a for a in attempts if a.ok}
    counts = Counter(arrived)
    strays = [key for key in counts if key not in ok]
    lost = sorted((ok[key] for key in set(ok) - set(counts)), key=lambda a: a.done)
    failed = [a for a in attempts if not a.ok]
    maybe_delivered: dict[Key, list[Attempt]] = defaultdict(list)
    for a in failed:  # the victim may have delivered what it took before it died, and never answered
        if a.served_by in (victim, None) and a.sent <= marks["kill"]:
            maybe_delivered[(a.device, a.n)].append(a)
    duplicates = {key: count for key, count in counts.items() if count > 1}
    last_seen: dict[tuple[str, str], int] = {}
    disorder = []
    for key in dict.fromkeys(arrived):
        if key in duplicates or key not in ok:
            continue
        device, n = key
        node = ok[key].served_by or "?"
        previous = last_seen.get((device, node))
        if previous is not None and n <= previous:
            disorder.append(f"{device}: #{n} after #{previous} from {node}")
        last_seen[(device, node)] = n
    kill_window = [a for a in failed if marks["signal"] <= a.done <= marks["calm"] and (
        a.served_by == victim or (a.served_by is None and a.sent <= marks["kill"] + UNNAMED_WINDOW_S))]
    cycle = [a for a in failed if a.done > marks["calm"]]
    sorted_out = {id(a) for a in kill_window + cycle}
    other = [a for a in failed if id(a) not in sorted_out]
    return Accounting(victim, marks["kill"], len(ok), len(attempts), lost, duplicates, dict(maybe_delivered), strays,
                      disorder, kill_window, other, cycle)
