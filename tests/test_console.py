"""The console: messages only from process 0, durations one way, the progress line's ETA and cadence."""

from __future__ import annotations

import jax
import pytest

from datarater import console


def test_only_process_0_talks(monkeypatch, capsys):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    console.say("from process 1")
    console.result("table from process 1")
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    console.say("hello")
    console.result("| a |")
    out = capsys.readouterr()
    assert out.err == "hello\n" and out.out == "| a |\n"  # messages on stderr, results on stdout


def test_durations():
    assert console.format_duration(0) == "0:00"
    assert console.format_duration(61.9) == "1:01"
    assert console.format_duration(3599) == "59:59"
    assert console.format_duration(3600 + 62) == "1:01:02"
    assert console.format_duration(float("inf")) == "?"


def test_progress_line_eta():
    clock = iter([100.0, 110.0])  # constructed at t=100, asked at t=110
    p = console.Progress(total_steps=30, start_step=10, label="x", clock=lambda: next(clock))
    # 10 s for steps 10 -> 15: 2 s a step, 15 steps to go
    assert p.line(15, loss=1.23456, tok_s="1,000", skipped=None) == "[x] step 15/30 | loss 1.235 | tok_s 1,000 | ETA 0:30"


def test_progress_at_most_one_line_every_so_often_and_always_the_last(capsys):
    now = [0.0]
    p = console.Progress(total_steps=10, label="x", every=5.0, clock=lambda: now[0])
    for step, t in [(1, 1.0), (2, 4.0), (3, 6.0), (4, 10.0), (5, 11.5), (10, 12.0)]:
        now[0] = t
        p.show(step)
    shown = [line.split(" | ")[0] for line in capsys.readouterr().err.splitlines()]
    # step 1 (the first), 3 (5 s after 1), 5 (5.5 s after 3) and 10, the last, 0.5 s after 5
    assert shown == ["[x] step 1/10", "[x] step 3/10", "[x] step 5/10", "[x] step 10/10"]


def test_kind_rates_time_each_kind_of_work_at_its_own_rate_after_its_warm_up():
    now = [0.0]
    r = console.KindRates({"aging": 100, "lookahead": 100}, clock=lambda: now[0])
    assert r.eta() == float("inf")
    now[0] = 12.0
    r.update({"aging": 25, "lookahead": 0})  # its warm-up (compiling): 0.48 s a step; look-aheads at that rate too
    assert r.eta() == pytest.approx(75 * 0.48 + 100 * 0.48)
    now[0] = 14.0
    r.update({"aging": 50, "lookahead": 0})  # 0.08 s a step once compiled: the warm-up no longer counts
    assert r.eta() == pytest.approx(50 * 0.08 + 100 * 0.08)
    now[0] = 34.0
    r.update({"aging": 50, "lookahead": 2})  # the look-ahead's warm-up, 10 s a step
    assert r.eta() == pytest.approx(50 * 0.08 + 98 * 10.0)
    now[0] = 35.0
    r.update({"aging": 50, "lookahead": 4})  # 0.5 s a look-ahead step once compiled
    assert r.eta() == pytest.approx(50 * 0.08 + 96 * 0.5)  # with the warm-ups in, 50 x 0.28 + 96 x 5.25 = 518
    now[0] = 36.0
    r.update({"aging": 50, "lookahead": 4})  # nothing advanced: the second goes to the next work done
    now[0] = 37.0
    r.update({"aging": 60, "lookahead": 4})
    assert r.spent["aging"] == pytest.approx(4.0) and r.eta() == pytest.approx(40 * 4.0 / 35 + 96 * 0.5)


def test_kind_rates_an_interval_holding_a_warm_up_times_no_kind():
    now = [0.0]
    r = console.KindRates({"a": 100, "b": 100}, clock=lambda: now[0])
    now[0] = 10.0
    r.update({"a": 10, "b": 0})  # a's warm-up
    now[0] = 11.0
    r.update({"a": 20, "b": 0})  # 0.1 s a step of a
    now[0] = 31.0
    r.update({"a": 30, "b": 10})  # b compiles in here: none of the 20 s is a's
    assert r.rate("a") == pytest.approx(0.1) and r.rate("b") == pytest.approx(1.0)


def test_quickstart_eta_is_calibrated_only_on_stages_that_had_work():
    """A stage an earlier run did takes no time: it must not make the machine look fast (the bug
    where a full=true run after the default one printed "overall ETA 0:17" for 39 minutes)."""
    from datarater.programs.quickstart_clock import StageClock

    now = [0.0]
    clock = StageClock([("corpus", 20.0), ("meta-train", 130.0), ("sweep", 1000.0), ("report", 50.0)], clock=lambda: now[0])
    assert clock.begin("corpus").endswith("overall ETA 20:00)")  # the reference seconds before any measure
    now[0] += 1.0
    clock.end(worked=False)  # the corpus was already built: 1 s says nothing of the speed
    assert clock.speed() == 1.0
    clock.begin("meta-train")
    now[0] += 260.0  # this machine is twice as slow as the reference
    clock.end()
    assert clock.speed() == 2.0
    assert "overall ETA 35:00)" in clock.begin("sweep")  # (1000 + 50) x 2
    now[0] += 2.0  # every LM turned out to be finished: 2 s say nothing of the speed either
    clock.end(worked=False)
    assert clock.speed() == 2.0 and clock.eta() == 100.0
