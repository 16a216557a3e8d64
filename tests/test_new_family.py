"""A family nobody registered: a two-layer network with a cubic activation (κ = 4) is one
`TwoLayer` call; the flow, step detection, AGF and the comparison need nothing else."""

import jax
import numpy as np

import saddlestep as ss


def test_cubic_two_layer_network_follows_agf_with_no_registration():
    task = ss.relu_teacher(jax.random.PRNGKey(0), 4, (2.0, -1.0), n=256, inputs="gaussian")
    model = ss.TwoLayer(4, 6, 1, lambda z: z**3, kappa=4, key=jax.random.PRNGKey(1), init_scale=1e-2)
    prediction = ss.agf.predict(model, task)
    assert prediction.num_steps >= 3
    # κ = 4: a dormant neuron's escape time grows like α^{−(κ−2)}, so times sit near 1/α².
    assert 1e3 < prediction.times[0] < 1e5
    flow = ss.simulate(model, task, t_max=3.0 * float(prediction.times[-1]), method="auto")
    table = ss.compare(ss.detect_steps(flow), prediction)
    matched = table[table["kind"] == "prediction"]
    # Every predicted step happens; AGF is the α → 0 limit, and at α = 1e-2 the flow's jumps land
    # within 1% of it. The flow takes the last step in two sub-steps 1% apart (`merged`); the
    # one that crosses the step's midpoint level times it, within 2%.
    assert len(matched) == prediction.num_steps
    assert (matched["time_rel_error"].abs()[:-1] < 0.01).all() and abs(matched["time_rel_error"].iloc[-1]) < 0.02
    np.testing.assert_allclose(matched["loss_simulated"], matched["loss_predicted"], rtol=0.02)
