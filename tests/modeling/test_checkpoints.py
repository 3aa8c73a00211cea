"""Every way a checkpoint directory can be wrong gives a CheckpointError naming file and key."""

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from perceiver_serve.modeling import CheckpointError, load_model

ARCH = "PerceiverForSequenceClassification"


@pytest.fixture()
def ckpt(checkpoint_dirs, tmp_path):
    """A private, writable copy of a good checkpoint."""
    return shutil.copytree(checkpoint_dirs[ARCH, "safetensors"], tmp_path / "ckpt")


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def _edit_weights(path, edit):
    state = load_file(path / "model.safetensors")
    edit(state)
    save_file(state, path / "model.safetensors")


def _fails(path, *fragments, **kwargs):
    with pytest.raises(CheckpointError) as info:
        load_model(path, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


def test_missing_directory(tmp_path):
    _fails(tmp_path / "nope", "nope", "not found")


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    _fails(ckpt, "config.json", "not found")


def test_config_not_json(ckpt):
    (ckpt / "config.json").write_text("{not json")
    _fails(ckpt, "config.json", "not valid JSON")


def test_config_wrong_field_type(ckpt):
    _edit_config(ckpt, d_latents="wide")
    _fails(ckpt, "config.json", "'d_latents'")


def test_unknown_architecture(ckpt):
    _edit_config(ckpt, architectures=["PerceiverForTimeTravel"])
    _fails(ckpt, "config.json", "unknown architecture", "PerceiverForTimeTravel")


def test_no_architecture(ckpt):
    _edit_config(ckpt, architectures=None)
    _fails(ckpt, "config.json", "'architectures' is missing")


def test_no_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    _fails(ckpt, "no weights found", "model.safetensors", "pytorch_model.bin")


def test_missing_key(ckpt):
    _edit_weights(ckpt, lambda s: s.pop("perceiver.encoder.cross_attention.mlp.dense1.bias"))
    _fails(ckpt, "missing weight", "perceiver.encoder.cross_attention.mlp.dense1.bias", str(ckpt))


def test_unexpected_key(ckpt):
    _edit_weights(ckpt, lambda s: s.update({"perceiver.stowaway": torch.zeros(3)}))
    _fails(ckpt, "unexpected weight", "perceiver.stowaway")


def test_wrong_shape(ckpt):
    _edit_weights(ckpt, lambda s: s.update({"perceiver.embeddings.latents": torch.zeros(9, 32)}))
    _fails(ckpt, "perceiver.embeddings.latents", "(9, 32)", "(8, 32)")


def test_config_disagrees_with_weights(ckpt):
    _edit_config(ckpt, num_latents=16)
    _fails(ckpt, "perceiver.embeddings.latents", "(8, 32)", "(16, 32)")


def test_truncated_safetensors(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    _fails(ckpt, "model.safetensors", "corrupt or truncated")


def test_garbage_safetensors(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 100)
    _fails(ckpt, "model.safetensors", "corrupt or truncated")


def test_truncated_bin(checkpoint_dirs, tmp_path):
    path = shutil.copytree(checkpoint_dirs[ARCH, "bin"], tmp_path / "bin")
    data = (path / "pytorch_model.bin").read_bytes()
    (path / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    _fails(path, "pytorch_model.bin", "cannot read weights safely")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_code_is_refused(ckpt, capsys):
    (ckpt / "model.safetensors").unlink()
    with open(ckpt / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Payload()}, f)
    _fails(ckpt, "pytorch_model.bin", "cannot read weights safely")
    assert "code ran" not in capsys.readouterr().out


def test_bin_that_is_not_a_state_dict(ckpt):
    (ckpt / "model.safetensors").unlink()
    torch.save([torch.zeros(2)], ckpt / "pytorch_model.bin")
    _fails(ckpt, "pytorch_model.bin", "mapping of tensor names")


def test_sharded_safetensors_load(ckpt, reference_models):
    state = load_file(ckpt / "model.safetensors")
    keys = sorted(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, ckpt / "model-00001-of-00002.safetensors")
    save_file({k: state[k] for k in keys[half:]}, ckpt / "model-00002-of-00002.safetensors")
    weight_map = {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (ckpt / "model.safetensors").unlink()
    model = load_model(ckpt)
    assert torch.equal(model.state_dict()["perceiver.embeddings.latents"], state["perceiver.embeddings.latents"])


def test_shard_outside_directory_is_refused(ckpt):
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))
    (ckpt / "model.safetensors").unlink()
    _fails(ckpt, "outside the checkpoint directory")


def test_unsupported_dtype(ckpt):
    with pytest.raises(ValueError, match="unsupported dtype"):
        load_model(ckpt, dtype="float8")
