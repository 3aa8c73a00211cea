"""RepositoryWatcher: a model folder is reported once its files have settled, never half-written."""

from __future__ import annotations

from pathlib import Path

from perceiver_serve.engine.watcher import Changes, RepositoryWatcher, snapshot


def is_model(folder: Path) -> bool:
    return (folder / "model.toml").is_file()


def model(root: Path, name: str, weights: bytes = b"w" * 100) -> Path:
    folder = root / name
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "model.toml").write_text('task = "text-classification"\nsource = "checkpoint"\n')
    (folder / "checkpoint" / "model.safetensors").write_bytes(weights)
    return folder


def test_a_new_model_is_reported_once_it_has_settled(tmp_path):
    watcher = RepositoryWatcher(tmp_path, settle_s=1.0, is_model=is_model)
    model(tmp_path, "a")
    assert not watcher.poll(now=0.0)   # first seen
    assert not watcher.poll(now=0.5)   # not settled yet
    assert watcher.poll(now=1.0) == Changes(load=("a",))
    assert not watcher.poll(now=2.0)   # reported once


def test_a_checkpoint_written_slowly_is_never_reported_half_written(tmp_path):
    watcher = RepositoryWatcher(tmp_path, settle_s=1.0, is_model=is_model)
    folder = model(tmp_path, "slow", b"")
    weights = folder / "checkpoint" / "model.safetensors"
    now = 0.0
    for byte in range(50):  # one byte per poll, polls 2 s apart (longer than settle_s)
        with open(weights, "ab") as f:
            f.write(bytes([byte]))
        now += 2.0
        assert not watcher.poll(now), f"reported after {byte + 1} of 50 bytes"
    assert not watcher.poll(now + 0.5)
    assert watcher.poll(now + 2.0) == Changes(load=("slow",))
    assert snapshot(folder)["checkpoint/model.safetensors"][0] == 50


def test_a_folder_is_not_reported_again_until_it_changes(tmp_path):
    """A failed load is not retried in a loop: the folder was reported as it is."""
    watcher = RepositoryWatcher(tmp_path, settle_s=0.0, is_model=is_model)
    folder = model(tmp_path, "broken", b"not a checkpoint")
    watcher.poll(0.0)
    assert watcher.poll(1.0) == Changes(load=("broken",))
    assert not any(watcher.poll(t) for t in (2.0, 3.0, 4.0))
    (folder / "checkpoint" / "model.safetensors").write_bytes(b"fixed, and longer")
    watcher.poll(5.0)
    assert watcher.poll(6.0) == Changes(load=("broken",))


def test_accepted_models_are_known_and_removed_ones_unloaded(tmp_path):
    watcher = RepositoryWatcher(tmp_path, settle_s=0.0, is_model=is_model)
    folder = model(tmp_path, "served")
    (tmp_path / "not-a-model").mkdir()
    watcher.accept("served")
    assert not watcher.poll(0.0) and not watcher.poll(1.0)
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()
    assert watcher.poll(2.0) == Changes(unload=("served",))
    assert not watcher.poll(3.0)
