"""One writer per block: the lease refuses a second writer, lets a run's own restart take
over, fences off the writer it replaced, and is released when a writer stops."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dbparallel.config import DataConfig
from dbparallel.data.sources import open_data
from dbparallel.errors import RunDirError
from dbparallel.training.holder import driver_session, holder_alive, process_space, session_driver
from dbparallel.training.lease import BlockLease, LeaseLost
from dbparallel.training.loop import BlockRun
from dbparallel.training.session_lease import release_session
from dbparallel.training.storage import Storage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_second_writer_is_refused_until_the_lease_lapses(tmp_path) -> None:
    storage, clock = Storage(str(tmp_path)), Clock()
    first = BlockLease(storage, 1, "run-a", 60.0, clock)
    assert first.acquire() == 1
    second = BlockLease(storage, 1, "run-b", 60.0, clock)
    with pytest.raises(RunDirError, match=r"block 1 is being trained by another process "
                                          r"\(pid \d+ on .*, session run-a, lease renewed "
                                          r"0 s ago\)"):
        second.acquire()
    clock.now += 59
    first.check()  # renewed: still held
    clock.now += 59
    with pytest.raises(RunDirError, match="renewed 59 s ago"):
        second.acquire()
    clock.now += 2  # the holder stopped renewing (a killed run): the lease lapses
    assert second.acquire() == 2
    with pytest.raises(LeaseLost, match="generation 2, this process holds 1"):
        first.check()  # the writer it replaced is fenced off


def test_a_live_writer_whose_lease_lapsed_is_warned_of_and_told_to_raise_the_timeout(
        tmp_path, caplog) -> None:
    """One step or checkpoint took longer than train.lease_timeout_s: the writer that takes
    the lapsed lease over says whose it was and how old, and the slow writer, still running,
    stops at its next check saying to raise the timeout."""
    storage, clock = Storage(str(tmp_path)), Clock()
    slow = BlockLease(storage, 0, "run-a", 60.0, clock)
    slow.acquire()
    clock.now += 75  # a step that long: no renewal in between
    with caplog.at_level(logging.WARNING, logger="dbparallel.training.lease"):
        assert BlockLease(storage, 0, "run-b", 60.0, clock).acquire() == 2
    assert f"block 0: taking over its lease from pid {os.getpid()} on {socket.gethostname()} " \
           f"(session run-a), which last renewed it 75 s ago, past train.lease_timeout_s=60 s; " \
           f"that process still runs on this machine: it stops writing the block at its " \
           f"next check" in caplog.text
    with pytest.raises(LeaseLost) as lost:
        slow.check()
    assert str(lost.value) == (
        f"block 0: another process took this block over (pid {os.getpid()} on "
        f"{socket.gethostname()}, session run-b; lease generation 2, this process holds 1); this "
        f"process stops writing. Its lease had lapsed: this process last renewed it 75 s ago, "
        f"past train.lease_timeout_s=60 s; if one of its steps or checkpoints takes that "
        f"long, raise train.lease_timeout_s")


def _holder_process(run: str) -> subprocess.Popen:
    """A real process that takes block 0's lease in ``run`` for session "killed", says so,
    and then waits (to be killed without releasing it)."""
    code = ("import sys, time; from dbparallel.training.lease import BlockLease; "
            "from dbparallel.training.storage import Storage; "
            f"BlockLease(Storage({run!r}), 0, 'killed', 3600.0).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_lease_of_a_killed_process_of_this_machine_is_taken_at_once(tmp_path,
                                                                      caplog) -> None:
    storage = Storage(str(tmp_path))
    holder = _holder_process(str(tmp_path))
    try:
        assert holder_alive(storage.read_json("blocks/block_0/lease.json")["holder"]) is True
        with pytest.raises(RunDirError, match=rf"\(pid {holder.pid} on .*, session killed, .*\), "
                                              r"which still runs on this machine: stop it") \
                as refused:
            BlockLease(storage, 0, "rerun", 3600.0).acquire()  # it runs: refused
        assert "Ray" not in str(refused.value)  # not a Ray run's process: no word of one
    finally:
        holder.kill()
        holder.wait()
    lease = storage.read_json("blocks/block_0/lease.json")
    assert lease["session"] == "killed" and lease["holder"]  # never released
    assert holder_alive(lease["holder"]) is False
    assert BlockLease(storage, 0, "rerun", 3600.0).acquire() == 2  # not an hour later
    assert f"held by pid {holder.pid} of this machine, which no longer runs (killed?); " \
           "taking it over" in caplog.text


def test_a_lease_lapses_by_its_holder_s_own_timeout(tmp_path) -> None:
    """A writer given train.lease_timeout_s=600 renews its lease every 150 s at least: a
    second writer with the default 120 waits for the holder's 600 before it takes it over
    (one of another machine: its process cannot be asked). A lease that does not record its
    holder's timeout lapses by the reader's."""
    storage, clock = Storage(str(tmp_path)), Clock()
    BlockLease(storage, 0, "run-a", 600.0, clock).acquire()
    lease = storage.read_json("blocks/block_0/lease.json")
    holder = lease["holder"].split("/")
    holder[1] = "other-host"
    storage.write_json("blocks/block_0/lease.json", {**lease, "holder": "/".join(holder)})
    clock.now += 130
    with pytest.raises(RunDirError, match=r"renewed 130 s ago\); stop it first \(`dbparallel stop "
                                          r"\S+` on other-host\) or wait for its lease to "
                                          r"lapse, its writer's train.lease_timeout_s=600 s "
                                          r"after its last renewal: in 470 s if it is not "
                                          r"renewed again"):
        BlockLease(storage, 0, "run-b", 120.0, clock).acquire()
    older = storage.read_json("blocks/block_0/lease.json")
    storage.write_json("blocks/block_0/lease.json", {**older, "timeout_s": "600"})
    with pytest.raises(RunDirError, match=r"lease.json: damaged, not readable .* delete it"):
        BlockLease(storage, 0, "run-b", 120.0, clock).acquire()
    del older["timeout_s"]  # as a writer of an earlier version wrote it
    storage.write_json("blocks/block_0/lease.json", older)
    assert BlockLease(storage, 0, "run-b", 120.0, clock).acquire() == 2


def test_a_holder_elsewhere_cannot_be_asked() -> None:
    here = f"{socket.gethostname()}/{os.getpid()}/0123abcd/{process_space()}"
    assert holder_alive(f"s/{here}") is True
    assert holder_alive(f"s/other-host/{os.getpid()}/0123abcd/{process_space()}") is None
    other_container = f"s/{socket.gethostname()}/{os.getpid()}/0123abcd/b:pid:[1]"
    assert holder_alive(other_container) is None  # same hostname, another pid namespace
    assert holder_alive(f"s/{socket.gethostname()}/{os.getpid()}/0123abcd") is None  # older


def test_a_holder_that_cannot_be_asked_is_waited_for_or_its_lease_deleted(tmp_path) -> None:
    storage = Storage(str(tmp_path))
    BlockLease(storage, 0, "elsewhere", 3600.0).acquire()
    lease = storage.read_json("blocks/block_0/lease.json")
    holder = lease["holder"].split("/")
    holder[1] = "other-host"  # the same lease, written by a process of another machine
    storage.write_json("blocks/block_0/lease.json", {**lease, "holder": "/".join(holder)})
    with pytest.raises(RunDirError, match=r"\(pid \d+ on other-host, session elsewhere, .*\); "
                                          r"stop it first \(`dbparallel stop \S+` on "
                                          r"other-host\) or wait for its lease to lapse, "
                                          r"train.lease_timeout_s=3600 s after its last "
                                          r"renewal: in \d+ s .*delete .*lease.json"):
        BlockLease(storage, 0, "rerun", 3600.0).acquire()


def test_a_refusal_names_the_driver_of_a_ray_run(tmp_path) -> None:
    """A Ray run's block processes hold the leases, and Ray starts one again if it is killed:
    the process to stop is the run's driver, which the session names."""
    storage = Storage(str(tmp_path))
    session = driver_session()
    assert session_driver(session) == (socket.gethostname(), str(os.getpid()))
    assert session_driver("0123abcd") is None  # a --local run: its writer is its driver
    actor = subprocess.Popen(  # a block actor of this process's run, as Ray would start it
        [sys.executable, "-c",
         "import sys, time; from dbparallel.training.lease import BlockLease; "
         "from dbparallel.training.storage import Storage; "
         f"BlockLease(Storage({str(tmp_path)!r}), 0, {session!r}, 3600.0).acquire(); "
         "print('held', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert actor.stdout is not None and actor.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=(
                rf"\(pid {actor.pid} on .*, session {session.partition('@')[0]}, .*\), which still "
                rf"runs on this machine: stop the run's driver first \(pid {os.getpid()} on "
                rf"{socket.gethostname()}: `dbparallel stop {storage.uri('')}` there, Ctrl-C, "
                rf"or `ray job stop`")):
            BlockLease(storage, 0, "rerun", 3600.0).acquire()
    finally:
        actor.kill()
        actor.wait()


@pytest.mark.parametrize("first_release", [True, False])
def test_a_renewal_that_lands_after_the_driver_released_the_lease_is_released_too(
        tmp_path, first_release: bool) -> None:
    """A Ray run that stops: the driver releases its session's leases, kills the block
    processes and releases again. A process that read its lease before the first release
    writes it back after it (seen on a `dbparallel stop`: the block left held), and Ray's kill
    returns before the process has ended: the second release waits for it. So it does where
    the first release was cut short (a second Ctrl-C) with nothing released: it waits for the
    session's holders the leases name."""
    from dbparallel.training.session_lease import release_once_gone

    storage = Storage(str(tmp_path))
    session = driver_session()
    actor = _renewing_actor(tmp_path, session)
    try:
        assert actor.stdout is not None and actor.stdout.readline().strip() == "held"
        released = release_session(storage, [0], session) if first_release else []
        assert [holder_alive(h) for h in released] == [True] * first_release
        assert actor.stdin is not None
        actor.stdin.write("go\n")  # its renewal lands a second after both releases began
        actor.stdin.flush()
        release_once_gone(storage, [0], session, released, 60.0)
        assert actor.wait(timeout=60) == 0
    finally:
        actor.kill()
        actor.wait()
    lease = storage.read_json("blocks/block_0/lease.json")
    assert lease["holder"] == "" and lease["ended"] is True


def _renewing_actor(tmp_path: Path, session: str) -> subprocess.Popen:
    """A block process of ``session`` that holds block 0's lease, says "held", and once told
    (a line on its stdin) renews it a second later (writes back the lease it read), then
    ends."""
    return subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from dbparallel.training.lease import BlockLease; "
         "from dbparallel.training.storage import Storage; "
         f"lease = BlockLease(Storage({str(tmp_path)!r}), 0, {session!r}, 3600.0); "
         "lease.acquire(); print('held', flush=True); sys.stdin.readline(); time.sleep(1); "
         "lease._write()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _dead_actor_lease(storage: Storage, driver_pid: int) -> None:
    """Block 0's lease as a Ray run leaves it once the block has trained: written long ago by
    an actor process that is gone, for the driver ``driver_pid`` of this machine."""
    actor = subprocess.Popen([sys.executable, "-c", "pass"])
    actor.wait()
    session = f"0123abcd@{socket.gethostname()}:{driver_pid}"
    storage.write_json("blocks/block_0/lease.json", {
        "generation": 1, "session": session, "renewed_at": 0.0,  # never renewed since
        "holder": f"{session}/{socket.gethostname()}/{actor.pid}/0123abcd/{process_space()}"})


def test_a_block_whose_run_goes_on_is_refused_however_old_its_lease(tmp_path) -> None:
    """The driver assembles the blocks (up to train.assembly_timeout_s) after Ray stopped
    their actors: a second run is refused until it ends, then takes the lease at once."""
    storage = Storage(str(tmp_path))
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _dead_actor_lease(storage, driver.pid)
        with pytest.raises(RunDirError, match=rf"block 0 was trained by a run whose driver "
                                              rf"still runs on this machine \(pid "
                                              rf"{driver.pid}; it assembles the blocks"):
            BlockLease(storage, 0, "rerun", 120.0, clock=Clock()).acquire()
    finally:
        driver.kill()
        driver.wait()
    assert BlockLease(storage, 0, "rerun", 120.0, clock=Clock()).acquire() == 2


def test_a_lease_left_by_this_process_s_earlier_run_is_taken(tmp_path) -> None:
    # a notebook's earlier run that ended without releasing its leases: this process runs
    # no other run now, so its own pid as the driver does not hold the block
    storage = Storage(str(tmp_path))
    _dead_actor_lease(storage, os.getpid())
    assert BlockLease(storage, 0, "rerun", 3600.0, clock=Clock()).acquire() == 2


def test_a_lease_an_interrupted_release_left_held_is_taken_by_a_rerun_in_this_process(
        tmp_path, monkeypatch, caplog) -> None:
    # a second Ctrl-C landing in a local run's release, in a program that calls train again
    storage = Storage(str(tmp_path))
    first = BlockLease(storage, 0, "run-a", 3600.0, clock=Clock())
    first.acquire()
    with monkeypatch.context() as m:
        def cut_short(path, data, *args, **kwargs):
            raise KeyboardInterrupt

        m.setattr(storage, "write_json", cut_short)
        with pytest.raises(KeyboardInterrupt):
            first.release()
    assert first.read()["holder"] == first.holder  # still held, by this very process
    rerun = BlockLease(storage, 0, "run-b", 3600.0, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="dbparallel.training.lease"):
        assert rerun.acquire() == 2  # at once, not after train.lease_timeout_s
    assert ("block 0: its lease was left held by an earlier run of this process, which "
            "stopped without releasing it (interrupted?); taking it over") in caplog.text
    with pytest.raises(LeaseLost):
        first.check()
    # a writer of this process that holds its lease is refused as any other's is
    with pytest.raises(RunDirError, match=r"is being trained by another process \(pid "
                                          rf"{os.getpid()} on .*, session run-b"):
        BlockLease(storage, 0, "run-c", 3600.0, clock=Clock()).acquire()


def test_a_restart_in_the_same_run_takes_over_and_fences_the_old_one(tmp_path) -> None:
    storage = Storage(str(tmp_path))
    old = BlockLease(storage, 0, "run", 60.0)
    old.acquire()
    new = BlockLease(storage, 0, "run", 60.0)  # Ray's restart of the block's actor
    assert new.acquire() == 2
    with pytest.raises(LeaseLost):
        old.check()
    new.check()


def test_release_lets_the_next_writer_in_at_once(tmp_path) -> None:
    storage = Storage(str(tmp_path))
    a = BlockLease(storage, 0, "run-a", 3600.0)
    a.acquire()
    a.release()
    assert BlockLease(storage, 0, "run-b", 3600.0).acquire() == 2
    c = BlockLease(storage, 1, "run-c", 3600.0)
    c.acquire()
    release_session(storage, [0, 1], "run-c")  # a driver releasing its killed actors' leases
    assert BlockLease(storage, 1, "run-d", 3600.0).acquire() == 2


def test_an_ended_session_cannot_take_its_blocks_again(tmp_path) -> None:
    """A process of a run that has ended (a Ray Train group that Ray starts again after the
    driver gave up) is refused; a restart during the run, and the next run, are not."""
    from dbparallel.errors import RunDirError

    storage = Storage(str(tmp_path))
    BlockLease(storage, 0, "run-e", 3600.0).acquire()
    restarted = BlockLease(storage, 0, "run-e", 3600.0)  # Ray restarted it during the run
    restarted.acquire()
    assert restarted.took_over_own
    release_session(storage, [0], "run-e")
    with pytest.raises(RunDirError, match="block 0: the run that started this process has "
                                          "ended"):
        BlockLease(storage, 0, "run-e", 3600.0).acquire()
    nxt = BlockLease(storage, 0, "run-f", 3600.0)
    assert nxt.acquire() == 3 and not nxt.took_over_own
    nxt.release()
    assert BlockLease(storage, 0, "run-g", 3600.0).acquire() == 4  # "ended" went with run-e


def test_a_fenced_off_block_run_writes_nothing(tiny_cfg, tmp_path) -> None:
    index = open_data(DataConfig())
    storage = Storage(tiny_cfg.run_dir)
    zombie = BlockRun(tiny_cfg, 0, index, storage, session="run")
    zombie.train_until(6)
    manifest = storage.read_json("blocks/block_0/manifest.json")
    replacement = BlockRun(tiny_cfg, 0, index, storage, session="run")  # took it over
    with pytest.raises(LeaseLost):
        zombie.train_until(12)  # its next checkpoint is refused
    assert storage.read_json("blocks/block_0/manifest.json") == manifest
    replacement.train_until(12)
    assert [e["step"] for e in storage.read_json("blocks/block_0/manifest.json")["state"]] \
        == [6, 12]
    replacement.close()
    lease = json.loads((tmp_path / "run" / "blocks" / "block_0" / "lease.json").read_text())
    assert lease["holder"] == "" and lease["generation"] == 2


def test_a_deleted_lease_file_does_not_let_a_zombie_take_the_block_back(tiny_cfg,
                                                                        tmp_path) -> None:
    """lease.json deleted (as a refusal offers when its writer cannot be asked): the next
    writer's generation still passes that of every writer that wrote a checkpoint (the
    manifest records it), so a zombie of the deleted lease is fenced off instead of writing
    its lease back over the new writer's."""
    tiny_cfg.train.steps = 24
    index = open_data(DataConfig())
    storage = Storage(tiny_cfg.run_dir)
    first = BlockRun(tiny_cfg, 0, index, storage, session="run")
    first.train_until(6)
    zombie = BlockRun(tiny_cfg, 0, index, storage, session="run")  # Ray's restart
    first.close()  # fenced off: it releases nothing
    try:
        zombie.train_until(12)
        assert (zombie.lease.generation, storage.read_json(
            "blocks/block_0/manifest.json")["generation"]) == (2, 2)
        (tmp_path / "run" / "blocks" / "block_0" / "lease.json").unlink()
        manifest = storage.read_json("blocks/block_0/manifest.json")
        rerun = BlockRun(tiny_cfg, 0, index, storage, session="rerun")
        assert rerun.lease.generation == 3  # not 1, below the zombie's
        with pytest.raises(LeaseLost, match="generation 3, this process holds 2"):
            zombie.train_until(18)
        assert storage.read_json("blocks/block_0/manifest.json") == manifest
        rerun.train_until(18)
        assert [e["step"] for e in storage.read_json("blocks/block_0/manifest.json")["state"]] \
            == [12, 18]
        rerun.close()
    finally:
        zombie.close()
    assert storage.read_json("blocks/block_0/lease.json")["generation"] == 3


def test_a_zombie_that_wrote_no_checkpoint_stops_once_its_lease_was_deleted(tmp_path) -> None:
    """A writer took a lapsed lease over (generation 2) and hung (paused, split off) before it
    wrote a checkpoint, so the manifest keeps no generation of it; its lease.json is deleted,
    as a refusal offers when its holder cannot be asked, and a new run takes the block with
    generation 1. The zombie, which did not take the block from that writer, stops at its next
    check instead of writing its lease back over the new one (which then lost the block)."""
    storage, clock = Storage(str(tmp_path)), Clock()
    BlockLease(storage, 0, "run-a", 60.0, clock).acquire()  # a killed run's, never renewed
    clock.now += 61
    zombie = BlockLease(storage, 0, "run-b", 60.0, clock)
    assert zombie.acquire() == 2
    (tmp_path / "blocks" / "block_0" / "lease.json").unlink()
    new = BlockLease(storage, 0, "run-c", 60.0, clock)
    assert new.acquire() == 1  # no checkpoint recorded the zombie's generation
    with pytest.raises(LeaseLost) as lost:
        zombie.check()
    assert str(lost.value) == (
        f"block 0: another process took this block since (pid {os.getpid()} on "
        f"{socket.gethostname()}, session run-c; lease generation 1, this process holds 2: a lower "
        f"one, which a writer takes where {tmp_path}/blocks/block_0/lease.json was deleted); "
        f"this process stops writing")
    new.check()
    assert storage.read_json("blocks/block_0/lease.json")["holder"] == new.holder


@pytest.mark.parametrize("lands", ["after the takeover", "before its read-back"])
def test_the_writer_a_lease_was_taken_from_is_written_over_when_its_renewal_lands_late(
        tmp_path, lands) -> None:
    """A fenced-off writer that read its own lease before its replacement took the block and
    wrote it after: the replacement, which took the block from it, writes its lease back
    (a lower generation of another writer does not make it stop), and the old writer stops at
    its next check. Where the renewal lands between the replacement's write and its
    read-back, the replacement still takes the block (before, it was refused as if a racing
    writer had won)."""
    storage, clock = Storage(str(tmp_path)), Clock()
    old = BlockLease(storage, 0, "run-a", 60.0, clock)
    old.acquire()
    held = storage.read_json("blocks/block_0/lease.json")
    clock.now += 61
    new = BlockLease(storage, 0, "run-b", 60.0, clock)

    def renewal() -> None:  # old's renewal, landing late
        storage.write_json("blocks/block_0/lease.json", held)
        landed.append(1)

    landed: list[int] = []
    if lands == "before its read-back":
        write = new._write

        def write_then_renew() -> None:  # the renewal lands just after its first write
            write()
            if not landed:
                renewal()

        new._write = write_then_renew
    assert new.acquire() == 2
    if lands == "after the takeover":
        renewal()
        new.check()
    assert landed and storage.read_json("blocks/block_0/lease.json")["holder"] == new.holder
    with pytest.raises(LeaseLost, match="session run-b; lease generation 2, this process holds 1"):
        old.check()


def test_two_processes_training_one_block_are_refused(tiny_cfg, tmp_path) -> None:
    index = open_data(DataConfig())
    storage = Storage(tiny_cfg.run_dir)
    running = BlockRun(tiny_cfg, 1, index, storage)  # e.g. `train --local --block 1`
    with pytest.raises(RunDirError, match="block 1 is being trained by another process"):
        BlockRun(tiny_cfg, 1, index, storage)  # the same command in a second terminal
    running.close()
    BlockRun(tiny_cfg, 1, index, storage).close()  # once it stopped, the next one may


def test_an_ended_session_cannot_take_a_block_its_writer_had_released(tiny_cfg) -> None:
    """A block process whose start failed gives its lease up (and records why): once the
    driver has ended the run, a process of it that Ray starts again is refused there too, and
    leaves the failure record in place."""
    index = open_data(DataConfig())
    storage = Storage(tiny_cfg.run_dir)
    tiny_cfg.train.checkpoint_every = 2
    first = BlockRun(tiny_cfg, 0, index, storage, session="run-h")
    first.train_until(2)
    first.close()
    for state in storage.listdir("blocks/block_0"):
        if state.startswith("state_"):
            storage.write_bytes(f"blocks/block_0/{state}", b"not a checkpoint")
    with pytest.raises(RunDirError, match="none of its checkpoints can be read"):
        BlockRun(tiny_cfg, 0, index, storage, session="run-h")  # released, failure recorded
    assert storage.read_json("blocks/block_0/lease.json")["holder"] == ""
    release_session(storage, [0], "run-h")  # the driver ends the run
    with pytest.raises(RunDirError, match="block 0: the run that started this process has "
                                          "ended"):
        BlockLease(storage, 0, "run-h", 3600.0).acquire()
    assert storage.read_json("blocks/block_0/failed.json")["type"] == "RunDirError"
    assert BlockLease(storage, 0, "run-i", 3600.0).acquire() == 3  # the next run may


def test_a_pid_no_process_can_have_is_not_known_to_run_or_not() -> None:
    here = f"s/{socket.gethostname()}/{{}}/nonce/{process_space()}"
    assert holder_alive(here.format(os.getpid())) is True
    assert holder_alive(here.format(10 ** 30)) is None  # a damaged lease.json
