"""Progress lines show only what is known: no loss before a block reports one, an ETA once
its step rate has been observed. A fake clock stands in for time."""

from __future__ import annotations

import math

from dbparallel.runtime.progress import BlockBars
from dbparallel.training.progress import Progress, duration, progress_shown


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_block_that_has_not_reported_is_starting_with_no_loss() -> None:
    bars = BlockBars(2, 200, enabled=False, line_every_s=math.inf, clock=Clock())
    assert bars.line() == "progress: block 0 0/200 starting | block 1 0/200 starting"
    bars.update(0, 0)  # a block that reports its (resumed) step before its first loss
    bars.update(1, 20, math.nan)  # a skipped non-finite step
    assert bars.line() == "progress: block 0 0/200 | block 1 20/200"
    assert "nan" not in bars.line()
    bars.close()


def test_an_eta_from_each_blocks_observed_step_rate() -> None:
    clock = Clock()
    bars = BlockBars([0, 1], 200, enabled=False, line_every_s=math.inf, clock=clock)
    clock.now = 100.0  # the time a block takes to start is not part of its rate
    bars.update(0, 0)
    bars.update(1, 50, 0.9)
    assert bars.line() == ("progress: block 0 0/200 | block 1 50/200 loss 0.9000")
    clock.now = 110.0
    bars.update(0, 50, 0.5)  # 5 steps/s: 150 steps in 30 s
    bars.update(1, 60, 0.8)  # 1 step/s: 140 steps in 2m20s
    assert bars.line() == ("progress: block 0 50/200 loss 0.5000 eta 30s | "
                           "block 1 60/200 loss 0.8000 eta 2m20s")
    clock.now = 140.0
    bars.update(0, 200, 0.25)
    assert bars.line().startswith("progress: block 0 200/200 loss 0.2500 done | ")
    bars.close()


def test_lines_are_printed_every_line_every_s(capsys) -> None:
    clock = Clock()
    bars = BlockBars([3], 10, enabled=False, line_every_s=15.0, clock=clock)
    bars.update(3, 2, 0.5)
    assert capsys.readouterr().err == ""
    clock.now = 20.0
    bars.update(3, 4, 0.4)
    seen = capsys.readouterr()
    assert seen.err == "progress: block 3 4/10 loss 0.4000 eta 1m00s\n"
    assert seen.out == ""  # stdout: results alone
    bars.close()


def test_duration() -> None:
    assert [duration(s) for s in (0, 45.4, 65, 3725, -3)] == ["0s", "45s", "1m05s", "1h02m",
                                                              "0s"]


def test_a_queued_block_shows_queued_until_it_starts() -> None:
    bars = BlockBars(3, 10, enabled=False, line_every_s=1e9)
    bars.queue([2])
    assert bars.line() == ("progress: block 0 0/10 starting | block 1 0/10 starting | "
                           "block 2 0/10 queued")
    bars.start(2)
    assert bars.line().endswith("block 2 0/10 starting")
    bars.close()


def test_bars_take_a_count_per_block() -> None:
    bars = BlockBars([0, 1], [30, 10], enabled=False, line_every_s=1e9)
    bars.update(0, 10, 0.5)
    bars.update(1, 10, 0.25)
    line = bars.line()
    assert "block 0 10/30 loss 0.5000" in line and "block 1 10/10 loss 0.2500 done" in line
    bars.close()


def test_a_restarted_block_shows_its_restarts() -> None:
    bars = BlockBars(2, 200, enabled=False, line_every_s=math.inf, clock=Clock())
    bars.update(0, 40, 0.5)
    bars.update(1, 40, 0.25, restarts=2)
    assert bars.line() == ("progress: block 0 40/200 loss 0.5000 | "
                           "block 1 40/200 loss 0.2500 restarts 2")
    bars.close()


def test_work_lines_give_a_rate_and_an_eta_off_a_terminal(capsys) -> None:
    clock = Clock()
    with Progress(300, "gen_ppl scorer", "step", tty=False, line_every_s=15.0,
                  clock=clock) as bar:
        bar.update(10)
        assert capsys.readouterr().err == ""  # not yet 15 s
        clock.now = 20.0
        bar.update(30)  # 40 steps in 20 s: 260 more in 2m10s
        assert capsys.readouterr().err == "gen_ppl scorer: 40/300 step, 2.00 step/s, eta 2m10s\n"
        clock.now = 150.0
        bar.update(260)
    assert capsys.readouterr().err == "gen_ppl scorer: 300/300 step, 2.00 step/s, done in 2m30s\n"


def test_quick_work_writes_no_line(capsys) -> None:
    with Progress(8, "continuing prompts", "prompt", tty=False, clock=Clock()) as bar:
        bar.update(8)
    assert capsys.readouterr().err == ""


def test_a_call_s_progress_choice_holds_for_the_work_within_it(capsys) -> None:
    # train(progress=True) off a terminal (a notebook): the evaluation's bars are drawn as
    # the blocks' are; progress=False: lines
    with progress_shown(True), Progress(4, "gen_ppl scorer", "step", clock=Clock()) as bar:
        assert bar.tty
        bar.update(4)
    assert "gen_ppl scorer:   0%|" in capsys.readouterr().err  # tqdm's bar, not a line
    clock = Clock()
    with progress_shown(False), Progress(4, "gen_ppl scorer", "step", clock=clock) as bar:
        clock.now = 20.0
        bar.update(2)
    assert not bar.tty
    assert capsys.readouterr().err.startswith("gen_ppl scorer: 2/4 step, 0.10 step/s")
    with Progress(4, "gen_ppl scorer", "step") as bar:  # outside: as stderr is
        assert bar.tty is False  # (pytest's captured stderr is no terminal)


def test_a_terminal_bar_draws_a_step_with_its_own_loss(capsys) -> None:
    bars = BlockBars(1, 10, enabled=True, clock=Clock())
    bars.bars[0].mininterval = 0  # draw at every update
    bars.update(0, 5, 1.5)
    bars.update(0, 10, 2.5)
    drawn = capsys.readouterr().err.split("\r")
    assert "10/10" in drawn[-1] and "loss=2.5000" in drawn[-1], drawn[-1]
    bars.close()


def test_a_done_block_s_bar_keeps_the_time_its_steps_took(capsys) -> None:
    """Bars close once every block is done and assembled; a block done before that shows
    the time and rate of its own steps."""
    bars = BlockBars(2, 10, enabled=True, clock=Clock())
    tqdm_clock = Clock()
    for bar in bars.bars.values():
        bar._time = tqdm_clock
        bar.start_t = bar.last_print_t = 0.0
    tqdm_clock.now = 5.0
    bars.update(0, 10, 1.0)  # block 0 done at 5 s
    tqdm_clock.now = 50.0  # block 1 trains on, then the assembly
    bars.update(1, 10, 1.0)
    assert bars.bars[0].format_dict["elapsed"] == 5.0
    assert bars.bars[1].format_dict["elapsed"] == 50.0
    bars.close()
    assert "10/10 [00:05<00:00" in capsys.readouterr().err


def test_a_block_s_bar_clock_starts_when_the_block_starts(capsys) -> None:
    """--local trains the blocks in turn, and a queued block waits for a slot: a block's bar
    counts its time and rate from its start (at the step it resumed from), not from when the
    bars were drawn."""
    bars = BlockBars(2, 10, enabled=True, clock=Clock())
    tqdm_clock = Clock()
    for bar in bars.bars.values():
        bar._time = tqdm_clock
        bar.start_t = bar.last_print_t = 0.0
    bars.start(0, 0)
    tqdm_clock.now = 30.0
    bars.update(0, 10, 1.0)  # block 0: 30 s
    bars.start(1, 4)  # block 1 resumes at step 4, after block 0
    tqdm_clock.now = 36.0
    bars.update(1, 10, 1.0)
    assert bars.bars[0].format_dict["elapsed"] == 30.0
    assert bars.bars[1].format_dict["elapsed"] == 6.0
    assert bars.bars[1].format_dict["initial"] == 4  # its rate: 6 steps in 6 s
    bars.close()
    err = capsys.readouterr().err
    assert "10/10 [00:06<00:00,  1.00it/s" in err, err


def test_a_block_s_shown_loss_is_the_one_its_report_gives(tmp_path, monkeypatch) -> None:
    """The bars and progress lines show the mean weighted loss of a block's last
    train.log_every steps, as report.json's final_loss and `dbparallel status` do, not one
    step's (a run's last line read 10.78 where its report said 9.36)."""
    from pathlib import Path

    from dbparallel.config import load_config
    from dbparallel.runtime import progress
    from dbparallel.runtime.local import run_local

    shown: dict[int, float] = {}
    update = progress.BlockBars.update

    def seen(self, block: int, step: int, loss: float | None = None, **kw) -> None:
        if loss is not None:
            shown[block] = loss
        update(self, block, step, loss, **kw)

    monkeypatch.setattr(progress.BlockBars, "update", seen)
    recipe = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"
    cfg = load_config([recipe], [f"run.dir={tmp_path / 'run'}", "train.steps=6",
                                 "train.log_every=3", "train.checkpoint_every=6",
                                 "metrics.port=0"])
    report = run_local(cfg, None, progress=False)
    assert shown == {row["block"]: row["final_loss"] for row in report["per_block"]}
