"""The cluster test's accounting (tests/support/cluster_accounting.py) on made-up runs: it passes the outcomes the
kill explains and fails each one it does not, so that tests/test_cluster.py's exact checks can fail."""

from __future__ import annotations

import pytest

from tests.support.cluster_accounting import LOSS_WINDOW_S, Attempt, account

MARKS = {"signal": 100.0, "kill": 100.01, "down": 103.0, "calm": 105.0}


def ok(device: str, n: int, at: float, node: str) -> Attempt:
    return Attempt(device, n, at - 0.002, at, 200, None, node)


def failed(device: str, n: int, at: float, node: str | None, status: int | None = 502) -> Attempt:
    return Attempt(device, n, at - 0.002, at, status, None if status else "RemoteDisconnected", node)


def run(*extra: Attempt) -> list[Attempt]:
    """Device d: #1-#3 on node1 before the kill, #4 after it on node2; device e on node3 throughout."""
    return [ok("d", 1, 97.0, "node1"), ok("d", 2, 99.5, "node1"), ok("d", 3, 99.99, "node1"),
            ok("d", 4, 101.0, "node2"), ok("e", 1, 99.0, "node3"), ok("e", 2, 110.0, "node3"), *extra]


def check(attempts: list[Attempt], arrived: list[tuple[str, int]]) -> None:
    account(attempts, arrived, "node1", MARKS).check()


EVERYTHING = [("d", 1), ("e", 1), ("d", 2), ("d", 3), ("d", 4), ("e", 2)]


def test_a_clean_run_passes() -> None:
    result = account(run(), EVERYTHING, "node1", MARKS)
    result.check()
    assert (result.records, result.lost, result.duplicates) == (6, [], {})


def test_a_loss_just_before_the_kill_is_the_boundary() -> None:
    result = account(run(), [key for key in EVERYTHING if key != ("d", 3)], "node1", MARKS)
    result.check()
    assert [(a.device, a.n) for a in result.lost] == [("d", 3)]
    assert "lost (answered 2xx by node1 before it died, never at the broker): 1" in result.report()


@pytest.mark.parametrize("missing", [("d", 1), ("d", 4), ("e", 1), ("e", 2)],
                         ids=["too long before the kill", "after the kill", "a survivor's", "a survivor's late"])
def test_any_other_loss_fails(missing: tuple[str, int]) -> None:
    with pytest.raises(AssertionError, match="lost, not explained"):
        check(run(), [key for key in EVERYTHING if key != missing])
    assert MARKS["kill"] - 97.0 > LOSS_WINDOW_S  # d#1 is outside the window


def test_a_duplicate_needs_an_unanswered_attempt_on_the_killed_node() -> None:
    # d#4 was first sent to node1 just before it died (502), then delivered by node2: two copies are explained
    explained = run(failed("d", 4, 100.005, "node1"))
    check(explained, [*EVERYTHING, ("d", 4)])
    with pytest.raises(AssertionError, match="duplicates not explained"):
        check(run(), [*EVERYTHING, ("d", 4)])  # no attempt that node1 took
    with pytest.raises(AssertionError, match="duplicates not explained"):
        check(explained, [*EVERYTHING, ("d", 4), ("d", 4)])  # one such attempt explains one extra copy
    with pytest.raises(AssertionError, match="duplicates not explained"):
        check(run(failed("d", 4, 100.005, "node2")), [*EVERYTHING, ("d", 4)])  # a survivor's 502 delivered nothing
    with pytest.raises(AssertionError, match="duplicates not explained"):  # sent after node1 died: not delivered
        check(run(failed("d", 4, 101.0, "node1"), failed("d", 4, 100.6, None, None)), [*EVERYTHING, ("d", 4)])


def test_a_record_never_answered_2xx_must_not_arrive() -> None:
    with pytest.raises(AssertionError, match="never answered 2xx"):
        check(run(), [*EVERYTHING, ("d", 5)])


def test_order_is_per_node() -> None:
    # d#4 (node2) before d#3 (node1): two nodes' stretches may interleave
    check(run(), [("d", 1), ("d", 2), ("d", 4), ("d", 3), ("e", 1), ("e", 2)])
    with pytest.raises(AssertionError, match="order broken"):
        check(run(), [("d", 2), ("d", 1), ("d", 3), ("d", 4), ("e", 1), ("e", 2)])


def test_failures_only_in_the_kill_window_and_from_the_killed_node() -> None:
    check(run(failed("d", 4, 100.5, "node1"), failed("d", 4, 100.3, None, None)), EVERYTHING)
    for stray in (failed("e", 2, 104.0, "node3", 503),  # a survivor's error in the kill window
                  failed("e", 2, 104.0, None, None),  # a connection closed unanswered, long after the kill
                  failed("d", 1, 98.0, "node1")):  # an error before the kill
        with pytest.raises(AssertionError, match="outside the kill window"):
            check(run(stray), EVERYTHING)
    with pytest.raises(AssertionError, match="drain-upgrade-undrain"):
        check(run(failed("e", 2, 106.0, "node3", 503)), EVERYTHING)
    with pytest.raises(AssertionError, match="drain-upgrade-undrain"):
        check(run(failed("e", 2, 106.0, None, None)), EVERYTHING)
