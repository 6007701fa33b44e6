"""db.FairLock: reentrant, and handed over in arrival order (a thread that releases and
asks again at once goes to the back of the queue)."""

from __future__ import annotations

import threading
import time

from changeover.control.db import FairLock


def wait_for(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_it_is_reentrant_and_held_until_the_last_exit() -> None:
    lock = FairLock()
    got: list[str] = []

    def other() -> None:
        with lock:
            got.append("other")

    th = threading.Thread(target=other)
    with lock, lock, lock:  # would deadlock here if it were not reentrant
        th.start()
        wait_for(lambda: len(lock._waiting) == 1)
        lock.__exit__()  # two exits of three: still held
        lock.__exit__()
        # Still ours, the other thread still queued (white-box: a release would hand it
        # over at once, before the other thread could show it by appending).
        assert lock._owner == threading.get_ident() and list(lock._waiting) == [th.ident]
        assert got == []
        lock.__enter__()
        lock.__enter__()
    th.join(5)
    assert not th.is_alive() and got == ["other"]  # the last exit released it


def test_waiters_get_it_in_arrival_order_before_the_holder_gets_it_again() -> None:
    lock = FairLock()
    order: list[str] = []

    def waiter(name: str) -> None:
        with lock:
            order.append(name)

    lock.__enter__()
    threads = []
    for n, name in enumerate("abc"):
        th = threading.Thread(target=waiter, args=(name,))
        th.start()
        threads.append(th)
        wait_for(lambda n=n: len(lock._waiting) == n + 1)
    lock.__exit__()
    with lock:  # asks again at once: queued behind a, b and c
        order.append("holder")
    for th in threads:
        th.join(5)
    assert order == ["a", "b", "c", "holder"]


def test_the_urgent_lane_goes_first_but_never_twice_in_a_row_while_others_wait() -> None:
    lock = FairLock()
    order: list[str] = []

    def waiter(name: str) -> None:
        if name.startswith("u"):
            with lock.urgent():
                order.append(name)
        else:
            with lock:
                order.append(name)

    lock.__enter__()
    threads = []
    for n, name in enumerate(["a", "b", "u1", "u2", "c"]):
        th = threading.Thread(target=waiter, args=(name,))
        th.start()
        threads.append(th)
        wait_for(lambda n=n: len(lock._waiting) + len(lock._urgent) == n + 1)
    lock.__exit__()
    for th in threads:
        th.join(5)
    # u1 before everyone queued before it; then one ordinary waiter before u2; then the rest.
    assert order == ["u1", "a", "u2", "b", "c"]
