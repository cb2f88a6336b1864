"""The one driver of engine generators: drive() consumes, relay() forwards; both close."""

from __future__ import annotations

import pytest

from napari_unet.engine.events import STOPPED, StepDone, TileDone, drive, relay


def _job(log: list, n: int = 3):
    try:
        for i in range(1, n + 1):
            yield StepDone(step=i, total=n, loss=1.0 / i, lr=1e-3, seconds=0.0)
        return "result"
    finally:
        log.append("closed")


def test_drive_calls_the_handler_in_order_and_returns_the_value():
    log, seen = [], []
    assert drive(_job(log), lambda e: seen.append(e.step)) == "result"
    assert seen == [1, 2, 3] and log == ["closed"]


def test_drive_closes_the_generator_when_the_handler_raises():
    log = []
    gen = _job(log)

    def fail(event):
        if event.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(gen, fail)
    assert log == ["closed"]
    assert gen.gi_frame is None  # finished: its cleanup ran here, not at garbage collection


def test_relay_maps_drops_and_returns():
    log = []

    def odd_only(event):
        return TileDone(event.step, event.total) if event.step % 2 else None

    def outer():
        value = yield from relay(_job(log), odd_only)
        return value.upper()

    events = []
    assert drive(outer(), events.append) == "RESULT"
    assert events == [TileDone(1, 3), TileDone(3, 3)] and log == ["closed"]


def test_relay_stops_before_the_next_step_and_closes():
    log, asked = [], []

    def stop():
        asked.append(True)
        return len(asked) > 2  # two steps run, the third is never started

    events = []
    assert drive(relay(_job(log), stop=stop), events.append) is STOPPED
    assert [e.step for e in events] == [1, 2] and log == ["closed"]


def test_closing_a_relay_closes_the_inner_generator():
    log = []
    gen = relay(_job(log))
    next(gen)
    gen.close()
    assert log == ["closed"]
