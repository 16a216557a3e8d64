"""Preset horizons: from the prediction when the user leaves `t_max` on auto."""

import math

import numpy as np
import pytest

from saddlestep import Prediction
from saddlestep.models import TwoLayer
from saddlestep.presets.base import HORIZON_FACTOR, predicted_horizon, Setup
from saddlestep.runs import prepare
from saddlestep.tasks import PopulationRegression

import jax


def _setup(times, *, settle=5.0, t_max=10.0, method="agf", calls=None):
    model = TwoLayer(2, 2, 1, "linear", key=jax.random.PRNGKey(0), init_scale=1e-3)
    task = PopulationRegression(np.eye(2), np.array([[1.0, 0.5]]))
    losses = np.linspace(0.5, 0.0, len(times))

    def predict():
        if calls is not None:
            calls.append(1)
        return Prediction(method, times, np.asarray(times) / math.log(1e3), losses, list(range(len(times))),
                          initial_loss=0.625, init_scale=1e-3)

    return Setup(model, task, t_max, predict=predict, settle=settle)


def test_the_horizon_covers_the_last_predicted_jump_and_its_settling():
    setup = _setup([3.0, 40.0])
    assert predicted_horizon(setup, {"t_max": "auto"}) == pytest.approx(HORIZON_FACTOR * 40.0 + 5.0)


def test_a_longer_preset_horizon_is_kept():
    setup = _setup([1.0, 2.0], t_max=100.0)
    assert predicted_horizon(setup, {"t_max": "auto"}) == 100.0


def test_a_user_horizon_and_a_lower_bound_are_left_alone():
    assert predicted_horizon(_setup([3.0, 40.0]), {"t_max": 7.0}) == 10.0
    bound = _setup([3.0, 40.0], method="closed-form:lower-bound")
    assert predicted_horizon(bound, {"t_max": "auto"}) == 10.0


def test_the_prediction_is_computed_once():
    calls = []
    setup = _setup([3.0, 40.0], calls=calls)
    predicted_horizon(setup, {"t_max": "auto"})
    setup.predict()
    setup.predict()
    assert len(calls) == 1


def test_linear_preset_on_user_data_ends_after_its_last_predicted_jump(tmp_path):
    # A weak second mode: jump times ln(1/α)/σ_k with σ = (3, 0.05) — the preset's heuristic and
    # the prediction must both leave room for the slow mode.
    path = tmp_path / "moments.npz"
    np.savez(path, Sxx=np.diag([4.0, 1.0]), Syx=np.diag([3.0, 0.05]))
    _, params, setup, alpha, _ = prepare("linear", init_scale=1e-4, data=str(path))
    pred = setup.predict()
    assert params["t_max"] == setup.t_max
    assert setup.t_max >= HORIZON_FACTOR * float(np.max(pred.times))
    # The oracle: the commuting modes decouple, mode k jumps at ln(1/α)/σ_k(Σyx) to leading order
    # (the prediction's times add the init's O(1/σ_k) offset, large for the weak mode).
    np.testing.assert_allclose(pred.extra["limit_rescaled_times"], [1 / 3, 1 / 0.05], rtol=1e-9)


@pytest.mark.parametrize("loss", ["original", "simplified"])
def test_barlow_twins_presets_build_with_either_loss(loss):
    # The original loss has no closed form: its horizon comes from Γ's spectrum and α alone.
    _, params, setup, alpha, _ = prepare("barlow-twins-synthetic", overrides={"loss": loss, "n": "200"})
    assert (setup.predict is None) == (loss == "original")
    assert math.isfinite(setup.t_max) and setup.t_max > math.log(1 / alpha)


@pytest.mark.parametrize("name", ["linear", "diagonal", "modular", "word2vec", "deep-relu-escape"])
def test_every_preset_shares_solver_rtol_and_horizon(name):
    """`Preset.setup` applies the shared parameters the same way for every family: the preset's
    defaults, then a user's `solver`, `rtol` and fixed `t_max`, then discrete training."""
    from saddlestep.methods import Discrete, Explicit
    from saddlestep.presets import get_preset

    preset = get_preset(name)
    small = {"linear": {"d": "4", "width": "4", "singular_values": "2,1"}, "diagonal": {"d": "6", "n": "10"},
             "modular": {"p": "7", "width": "4", "magnitudes": "2,1", "frequencies": "1,2"},
             "word2vec": {"vocab_size": "20", "d": "2"}, "deep-relu-escape": {}}[name]
    small = {k: v for k, v in small.items() if k in preset.defaults}
    default = preset.setup(preset.parameters(small), init_scale=1e-3, seed=0)
    assert default.simulate_kwargs["rtol"] == preset.rtol
    method = default.simulate_kwargs.get("method", preset.solver)
    # A preset may name the explicit solver that suits it (word2vec's exact SGNS: Dopri8).
    assert method == preset.solver or (preset.solver == "explicit" and isinstance(method, Explicit))
    params = preset.parameters({**small, "solver": "implicit", "rtol": "1e-5", "t_max": "7.5"})
    mine = preset.setup(params, init_scale=1e-3, seed=0)
    assert (mine.t_max, mine.simulate_kwargs["rtol"], mine.simulate_kwargs["method"]) == (7.5, 1e-5, "implicit")
    trained = preset.setup(preset.parameters({**small, "optimizer": "adam", "learning_rate": "0.1"}),
                           init_scale=1e-3, seed=0)
    assert trained.simulate_kwargs["method"] == Discrete(0.1, "adam")
    with pytest.raises(ValueError, match="solver: expected one of explicit, implicit, auto"):
        preset.parameters({"solver": "rk4"})


def test_deep_relu_escape_on_one_output_data(tmp_path):
    """A one-output last layer has a single singular value, so its s₁/s₂ is undefined: escape.json
    records null there (the run crashed on it, after the flow, writing nothing)."""
    import json

    from saddlestep.runs import run_preset

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    Y = np.maximum(X @ np.array([1.0, -0.5, 0.3]), 0.0)[:, None]
    np.savez(tmp_path / "data.npz", X=X, Y=Y - Y.mean(axis=0))
    run_preset("deep-relu-escape", init_scale=0.05, data=str(tmp_path / "data.npz"),
               overrides={"width": "4", "restarts": "2"}, out=str(tmp_path / "run"), progress=False)
    report = json.loads((tmp_path / "run" / "escape.json").read_text())
    for key in ("flow_singular_value_ratios", "escape_singular_value_ratios"):
        assert report[key][-1] is None
        assert all(r >= 1.0 for r in report[key][:-1])
    assert (tmp_path / "run" / "singular_values.png").exists()


def test_relu_on_a_constant_target_learns_it_and_its_horizon_follows_the_data_units(tmp_path):
    # The student has no bias, yet y ≡ 2.5 is learnable in part (relu(wᵀx) ≥ 0 on half the
    # inputs): it used to be refused as "Y is constant". And a neuron's growth rate scales like
    # |x|·|y|, so the same data in units 100× smaller needs a horizon 10⁴× longer.
    from saddlestep.presets import get_preset

    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 4))
    preset = get_preset("relu")
    horizons = []
    for scale in (1.0, 0.01):
        path = tmp_path / f"c{scale}.npz"
        np.savez(path, X=scale * X, Y=np.full((60, 1), 2.5 * scale))
        params = preset.parameters({"width": "4"}, data=str(path))
        setup = preset.setup(params, init_scale=1e-6, seed=0, data=str(path))
        horizons.append(setup.t_max)
    np.testing.assert_allclose(horizons[1], 1e4 * horizons[0], rtol=1e-9)
    pred = setup.predict()
    assert pred.num_steps >= 1 and pred.losses[-1] < 0.5 * 0.5 * (2.5 * 0.01) ** 2


def test_relu_data_with_its_teacher_names_each_step_by_the_teacher_neuron(tmp_path):
    # Teacher neurons of opposite signs (2, −1) on Gaussian inputs: each is learned in a step of
    # its own, in the flow and in AGF, and with the teacher in the file both name it.
    from saddlestep import compare
    from saddlestep.runs import run_preset

    rng = np.random.default_rng(12)
    X = rng.standard_normal((120, 4))
    W = np.linalg.qr(rng.standard_normal((4, 4)))[0][:2]
    A = np.array([[2.0], [-1.0]])
    path = tmp_path / "teacher.npz"
    np.savez(path, X=X, Y=np.maximum(X @ W.T, 0) @ A, teacher_w=W, teacher_a=A)
    result = run_preset("relu", init_scale=1e-6, data=str(path), overrides={"width": "6"}, progress=False)
    assert [s.feature for s in result.steps] == ["teacher 1", "teacher 2"]
    assert list(result.prediction.order) == ["teacher 1", "teacher 2"]
    table = compare(result.steps, result.prediction)
    assert list(table["kind"]) == ["prediction", "prediction"]
    bad = tmp_path / "half.npz"
    np.savez(bad, X=X, Y=np.maximum(X @ W.T, 0) @ A, teacher_w=W)
    with pytest.raises(ValueError, match=r"^data: teacher_w, teacher_a: give both or neither"):
        run_preset("relu", init_scale=1e-6, data=str(bad), progress=False)
