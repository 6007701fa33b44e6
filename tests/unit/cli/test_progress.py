"""cli.progress: the download line a player sees during ``launcher sync``."""

from __future__ import annotations

import io
import threading

from changeover.cli.progress import ProgressLine, render


def test_render_shows_bytes_rate_and_eta() -> None:
    assert render("downloading", 0, None, 0.0) == "downloading  0 B"
    assert render("downloading", 3 << 20, 12 << 20, 2.0) == (
        "downloading  3.0 MiB / 12.0 MiB  1.5 MiB/s  ETA 0:06"
    )
    # Done: no ETA left to show.
    assert render("downloading", 12 << 20, 12 << 20, 4.0) == (
        "downloading  12.0 MiB / 12.0 MiB  3.0 MiB/s"
    )


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_is_redrawn_in_place_at_most_ten_times_a_second_and_erased() -> None:
    out, now = _Tty(), [0.0]
    with ProgressLine(out, clock=lambda: now[0]) as line:
        line.add(1 << 20, 4 << 20)
        now[0] = 0.05
        line.add(1 << 20)  # too soon after the last redraw: counted, not drawn
        now[0] = 1.0
        line.add(1 << 20)
    frames = out.getvalue().split("\r")
    assert frames[1].startswith("downloading  1.0 MiB / 4.0 MiB")
    assert frames[2].startswith("downloading  3.0 MiB / 4.0 MiB  3.0 MiB/s  ETA 0:00")
    assert frames[-2].strip() == "" and frames[-1] == ""  # erased, cursor at the start
    assert len(frames) == 5


def test_nothing_is_drawn_off_a_terminal_or_when_disabled() -> None:
    for stream, enabled in ((io.StringIO(), True), (_Tty(), False)):
        with ProgressLine(stream, enabled=enabled) as line:
            line.add(10, 100)
        assert stream.getvalue() == ""
        assert line.done == 10


def test_threads_adding_at_once_lose_no_bytes() -> None:
    line = ProgressLine(io.StringIO())
    threads = [
        threading.Thread(target=lambda: [line.add(1, 8000) for _ in range(1000)]) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert line.done == 8000 and line.total == 8000
