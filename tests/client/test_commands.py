"""perceiver-client's unary commands against the real server: the REST answer, as JSON or text."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from perceiver_serve.client.cli import main
from perceiver_serve.client.video import VideoGeometry


def picture(path, seed: int, size=(40, 56)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    return picture(root / "a.png", 1), picture(root / "b.png", 2)


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_classify_text_json_is_the_rest_answer(capsys, address, rest, transport):
    code, out, _ = run(capsys, *address, *transport, "classify-text", "I loved it", "I did not", "--top-k", "2",
                       "--json")
    assert code == 0
    expected = rest.post("/classify/text", json={"texts": ["I loved it", "I did not"], "top_k": 2}).json()
    assert json.loads(out) == expected


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_fill_mask_json_is_the_rest_answer(capsys, address, rest, transport):
    text = "The [MASK][MASK][MASK] sat on the mat."
    code, out, _ = run(capsys, *address, *transport, "fill-mask", text, "--top-k", "3", "--json")
    assert code == 0
    assert json.loads(out) == rest.post("/fill-mask", json={"text": text, "top_k": 3}).json()


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_classify_image_json_is_the_rest_answer(capsys, address, rest, frames, transport):
    code, out, _ = run(capsys, *address, *transport, "classify-image", str(frames[0]), "--top-k", "3", "--json")
    assert code == 0
    expected = rest.post("/classify/image", files={"image": frames[0].read_bytes()}, data={"top_k": "3"}).json()
    assert json.loads(out) == expected


def test_text_output_names_each_label_with_its_score(capsys, address, rest):
    code, out, _ = run(capsys, *address, "classify-text", "Great film", "--top-k", "2")
    assert code == 0
    predictions = rest.post("/classify/text", json={"text": "Great film", "top_k": 2}).json()["results"][0]
    assert out.split() == [token for p in predictions["predictions"] for token in (f"{p['score']:.4f}", p["label"])]


def test_stdin_is_read_for_dash(capsys, address, monkeypatch, rest):
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin"))
    code, out, _ = run(capsys, *address, "classify-text", "-", "--json")
    assert code == 0
    assert json.loads(out) == rest.post("/classify/text", json={"text": "from stdin"}).json()


@pytest.mark.parametrize("suffix", [".npy", ".flo", ".png"])
def test_flow_writes_the_format_its_name_asks_for(capsys, address, rest, frames, tmp_path, suffix):
    output = tmp_path / f"flow{suffix}"
    code, out, _ = run(capsys, *address, "flow", str(frames[0]), str(frames[1]), "-o", str(output), "--json")
    assert code == 0 and json.loads(out)["output"] == str(output)
    answer = rest.post("/flow", files={"frame1": frames[0].read_bytes(), "frame2": frames[1].read_bytes()},
                       data={"format": suffix[1:]})
    assert output.read_bytes() == answer.content
    assert [p.name for p in tmp_path.iterdir()] == [output.name]


def test_flow_over_grpc_equals_rest(capsys, address, rest, frames, tmp_path):
    output = tmp_path / "flow.npy"
    assert run(capsys, *address, "--grpc", "flow", str(frames[0]), str(frames[1]), "-o", str(output))[0] == 0
    answer = rest.post("/flow", files={"frame1": frames[0].read_bytes(), "frame2": frames[1].read_bytes()})
    np.testing.assert_array_equal(np.load(output), np.load(io.BytesIO(answer.content)))


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_models_carry_the_video_geometry(capsys, address, rest, transport):
    code, out, _ = run(capsys, *address, *transport, "models", "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer == rest.get("/models").json()
    geometry = {m["name"]: m for m in answer["models"]}["video-autoencoder"]["geometry"]
    assert geometry == rest.get("/models/video-autoencoder").json()["geometry"]  # gRPC's numbers are floats
    assert VideoGeometry.of(geometry) == VideoGeometry(frame_size=32, frames_per_window=4,
                                                       audio_samples_per_window=256, sample_rate=1600, fps=25.0,
                                                       max_frames=1024)


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_health(capsys, address, rest, transport):
    code, out, _ = run(capsys, *address, *transport, "health", "--json")
    assert code == 0
    assert json.loads(out) == rest.get("/health/ready").json()


# -- exit codes ---------------------------------------------------------------------------------------

def test_input_the_server_refuses_exits_2_with_its_code(capsys, address):
    code, out, err = run(capsys, *address, "classify-text", "")
    assert (code, out) == (2, "")
    assert err.startswith("perceiver-client: empty_text:") and "(request " in err and err.count("\n") == 1


def test_a_missing_file_exits_2(capsys, address, tmp_path):
    code, _, err = run(capsys, *address, "classify-image", str(tmp_path / "nope.jpg"))
    assert code == 2 and "nope.jpg: No such file" in err


def test_a_server_error_exits_1(capsys, address):
    code, _, err = run(capsys, *address, "classify-text", "hi", "--model", "no-such-model")
    assert code == 1 and "model_not_found" in err


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_an_unreachable_server_exits_1(capsys, transport):
    code, _, err = run(capsys, "--url", "http://127.0.0.1:9", "--grpc-address", "127.0.0.1:9", "--timeout", "5",
                       *transport, "models")
    assert code == 1 and "unreachable" in err


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["classify-text"])
    assert exit.value.code == 2
    assert main(["flow", "a.png", "b.png", "-o", "flow.gif"]) == 2


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_what_the_user_must_fix_exits_2_with_a_message_not_a_traceback(capsys, address, frames, tmp_path, transport):
    """An output folder that doesn't exist, arguments the request can't carry, a timeout that isn't
    positive: exit 2 with one line, on either transport."""
    first, second = frames
    cases = [("flow", str(first), str(second), "-o", str(tmp_path / "missing" / "flow.npy")),
             ("classify-text", "a", "--top-k", "-1"), ("fill-mask", "ab[MASK]", "--top-k", "-3"),
             ("--timeout", "-5", "classify-text", "a")]
    for case in cases:
        code, out, err = run(capsys, *address, *transport, *case)
        assert (code, out) == (2, ""), (case, err)
        assert err.startswith("perceiver-client: ") and "Traceback" not in err and err.count("\n") == 1, (case, err)
