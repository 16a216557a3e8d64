"""`Prediction`'s file: `prediction.json` written and read back."""

import json

import jax
import numpy as np
import pytest

import saddlestep as ss
from saddlestep import theory

from _agf_cases import r3_task


def test_prediction_json_round_trip_recovers_the_steps_and_alpha(tmp_path):
    task = r3_task()
    model = ss.TwoLayer(4, 4, 4, "linear", key=jax.random.PRNGKey(1), init_scale=1e-6)
    for pred in (theory.predict_linear(model, task), ss.agf.predict(model, task)):
        path = tmp_path / "prediction.json"
        path.write_text(pred.dumps() + "\n")
        back = ss.Prediction.load(str(path))
        assert back.method == pred.method and back.order == pred.order
        np.testing.assert_array_equal(back.times, pred.times)
        np.testing.assert_array_equal(back.rescaled_times, pred.rescaled_times)
        np.testing.assert_array_equal(back.losses, pred.losses)
        # α is not in the file: t_k / τ_k = ln(1/α) gives it back.
        np.testing.assert_allclose(back.init_scale, 1e-6, rtol=1e-10)
        assert back.to_json() == pred.to_json()
        assert ss.Prediction.load(str(tmp_path)).to_json() == pred.to_json()  # the run's folder
    with pytest.raises(ValueError, match="no such file"):
        ss.Prediction.load(str(tmp_path / "elsewhere"))
    # Compared with a flow, the file's prediction pairs the same steps at the same times.
    traj = ss.simulate(model, task, t_max=2.3 * np.log(1e6) + 10, rtol=1e-8)
    a, b = ss.compare(traj, pred), ss.compare(traj, back)
    assert list(a["kind"]) == list(b["kind"])
    np.testing.assert_allclose(a["time_rel_error"], b["time_rel_error"], rtol=0, atol=0)


def test_reading_something_else_says_what_was_expected(tmp_path):
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ValueError, match="is not a JSON file"):
        ss.Prediction.load(str(tmp_path / "text.json"))
    (tmp_path / "binary.npz").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="is a binary file"):
        ss.Prediction.load(str(tmp_path / "binary.npz"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        ss.Prediction.load(str(tmp_path / "list.json"))
    (tmp_path / "other.json").write_text(json.dumps({"method": "agf", "times": [1.0]}))
    with pytest.raises(ValueError, match="missing key"):
        ss.Prediction.load(str(tmp_path / "other.json"))


def test_the_file_keeps_the_activations_agf_dropped_as_minor(tmp_path):
    """A CLI user sees only prediction.json: AGF's dropped activations (7 of 10 on a noisy sparse
    regression) and its split cost phases are listed there, and read back."""
    minor = [{"time": 5.0, "loss": 0.1, "activated": [3], "deactivated": []}]
    split = [{"time": 1.0, "loss": 0.5, "neurons": 4, "directions": 2}]
    pred = ss.Prediction("agf", np.array([1.0]), np.array([0.1]), np.array([0.5]), ["x"], init_scale=1e-4,
                         extra={"activated": [[0]], "deactivated": [[]], "minor": minor, "split": split, "events": []})
    (tmp_path / "prediction.json").write_text(pred.dumps())
    doc = json.loads((tmp_path / "prediction.json").read_text())
    assert doc["extra"]["minor"] == minor and doc["extra"]["split"] == split and "events" not in doc["extra"]
    assert ss.Prediction.load(str(tmp_path)).extra["minor"] == minor
