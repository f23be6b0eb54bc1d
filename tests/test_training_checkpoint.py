"""Checkpoints written atomically, read safely; the run lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from llama_from_scratch.training.checkpoint import RunLock, TrainingError, atomic_folder, load_state, save_state


def state(step, size=1000):
    return {"step": step, "model": {"w": torch.full((size,), float(step))}, "optimizer": {"state": {}}}


def test_round_trip_and_weights_only(tmp_path):
    save_state(tmp_path / "c.pt", state(3))
    loaded = load_state(tmp_path / "c.pt")
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.full((1000,), 3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_a_failing_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    save_state(tmp_path / "c.pt", state(1))
    before = (tmp_path / "c.pt").read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(TrainingError, match="previous checkpoint there is intact"):
        save_state(tmp_path / "c.pt", state(2))
    assert (tmp_path / "c.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_full_disk_is_an_error_and_the_previous_checkpoint_survives(tmp_path):
    """A real failed write: the file-size limit (RLIMIT_FSIZE) makes write() fail with EFBIG, as a
    full disk fails it with ENOSPC, in the middle of torch.save."""
    save_state(tmp_path / "c.pt", state(1, size=1000))
    before = (tmp_path / "c.pt").read_bytes()
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from llama_from_scratch.training.checkpoint import TrainingError, save_state
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            save_state({str(tmp_path / "c.pt")!r}, {{"step": 2, "model": {{"w": torch.zeros(1_000_000)}},
                                                   "optimizer": {{}}}})
        except TrainingError as err:
            print(err)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "previous checkpoint there is intact" in proc.stdout
    assert (tmp_path / "c.pt").read_bytes() == before
    assert load_state(tmp_path / "c.pt")["step"] == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_files_are_errors(tmp_path, damage):
    save_state(tmp_path / "c.pt", state(1))
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes({"truncate": data[: len(data) // 2], "garbage": b"x" * 500, "empty": b""}[damage])
    with pytest.raises(TrainingError, match="corrupt or truncated"):
        load_state(tmp_path / "c.pt")


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"step": 1, "model": {}, "optimizer": {}, "evil": Evil()}, tmp_path / "c.pt")
    with pytest.raises(TrainingError):
        load_state(tmp_path / "c.pt")
    assert not (tmp_path / "pwned").exists()


def test_not_a_training_checkpoint(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "c.pt")
    with pytest.raises(TrainingError, match="not a training checkpoint"):
        load_state(tmp_path / "c.pt")


def test_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from llama_from_scratch.training.checkpoint import RunLock
        with RunLock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingError, match=f"pid {holder.pid}"):
            with RunLock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the dead holder's lock is gone
        pass


def test_atomic_folder_swaps_in_on_success_and_keeps_the_old_on_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and (out / "old.txt").read_text() == "old"
    with atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]
