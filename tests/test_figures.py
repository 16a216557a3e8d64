import os

from saddlestep.figures import make_figures
from saddlestep.plot import features, staircase


def test_figures_regenerate_the_linear_gallery(tmp_path):
    written = make_figures(str(tmp_path), ["linear"])
    names = sorted(os.path.basename(p) for p in written)
    assert names == ["linear-flow-vs-gd.png", "linear-init-scales.png", "staircase-linear.png"]
    for p in written:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == sorted([".saddlestep", *names])  # the marker: saddlestep wrote these


def test_features_plot(tmp_path):
    import saddlestep as ss

    r = ss.run_preset("linear", init_scale=1e-4)
    fig = features(r.trajectory)
    assert len(fig.axes[0].lines) == 5
    fig = staircase([r.trajectory], labels=["flow"])
    assert fig.axes[1].get_legend().get_texts()[0].get_text() == "flow"
