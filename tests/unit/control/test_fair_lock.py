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


def test_it_is_reentrant() -> None:
    lock = FairLock()
    with lock, lock, lock:
        pass
    with lock:  # fully released above
        pass


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
