"""Presets for word2vec-like and Barlow Twins losses: `word2vec`, `qwem`, `barlow-twins`,
`barlow-twins-synthetic` (Karkada et al. 2025; Simon et al. 2023)."""

from __future__ import annotations

import os
import sys

import numpy as np

from ..clock import log_inv
from .base import load_npz, Preset, register, Setup


def synthetic_cooccurrence(vocab_size: int = 200, *, topics: int = 8, ratio: float = 0.7, seed: int = 0):
    """A synthetic joint co-occurrence distribution with planted topics and a Zipf unigram law:
    P_ij ∝ u_i u_j exp(Σ_k s_k a_ik a_jk), u_i = 1/i, random signs a_ik = ±1 and topic strengths
    s_k = 1.5·ratio^k, so that PMI ≈ Σ_k s_k a_k a_kᵀ and M* has well-separated top eigenvalues.

    **Returns:** the V×V matrix P (symmetric, non-negative, summing to 1).
    """
    rng = np.random.default_rng(seed)
    u = 1.0 / np.arange(1, vocab_size + 1)
    a = rng.choice([-1.0, 1.0], size=(vocab_size, topics))
    s = 1.5 * ratio ** np.arange(topics)
    P = np.outer(u, u) * np.exp((a * s) @ a.T / np.sqrt(topics))
    P = 0.5 * (P + P.T)
    return P / P.sum()


def _check_d(params, limit: int, what: str) -> int:
    d = params["d"]
    if d < 1:
        raise ValueError(f"overrides d: expected a positive embedding dimension, got {d}")
    if d > limit:
        raise ValueError(f"overrides d: expected at most {what} = {limit}, got {d}")
    return d


def _loss_kind(params, allowed):
    if params["loss"] not in allowed:
        raise ValueError(f"overrides loss: expected one of {', '.join(allowed)}, got {params['loss']!r}")
    return params["loss"]


def _embedding_setup(task, model, params, init_scale, extra=None):
    from ..theory.qwem import predict_qwem, qwem_aligned

    pred = predict_qwem(model, task)
    if pred.num_steps == 0:
        raise ValueError("data: M* has no positive eigenvalue among the top d; nothing is learned")
    last = float(pred.times[-1])
    lam_last = float(pred.extra["eigenvalues"][-1])
    t_max = 1.3 * last + 12.0 / lam_last
    lam = np.asarray(pred.extra["eigenvalues"])
    s0 = np.asarray(pred.extra["s0_squared"])

    def summarize(traj):
        return {"sv2": np.asarray(traj.observables["sv2"])[-1].tolist(), "d": model.d}

    def write_extra(traj, folder):
        theory = qwem_aligned(lam, s0, traj.times)
        from .. import plot

        plot.save(plot.eigenvalue_curves(traj, "sv2", theory, ylabel="squared singular values of W",
                                         title="embedding eigenvalues vs QWEM closed form"),
                  os.path.join(folder, "eigenvalues.png"))
        if extra is not None:
            extra(traj, folder)

    return Setup(model, task, t_max, predict=lambda: pred,
                 simulate_kwargs={"n_save": 1001},
                 summarize=summarize, write_extra=write_extra)


def _build_word2vec(params, *, init_scale, seed, data):
    import jax
    from ..models.embedding import Embedding
    from ..tasks.corpus import analogy_accuracy, analogy_questions, corpus_statistics, QWEM, SGNS, top_words
    from ..trajectory import atomic_write_text

    if data is not None and not str(data).lower().endswith(".txt"):
        raise ValueError(f"data: the word2vec preset reads a .txt corpus, got {data!r}")
    if params["vocab_size"] < 2:
        raise ValueError(f"overrides vocab_size: expected an integer ≥ 2, got {params['vocab_size']}")
    d = _check_d(params, params["vocab_size"], "vocab_size")
    kind = _loss_kind(params, ("sgns", "qwem"))
    stats = corpus_statistics(data, vocab_size=params["vocab_size"], window=params["window"])
    if data is not None:
        print(f"word2vec: read {stats.n_tokens:,} tokens, {stats.n_distinct:,} distinct words from {data}; "
              f"keeping the {stats.vocab_size:,} most frequent", file=sys.stderr, flush=True)
    cls = SGNS if kind == "sgns" else QWEM.from_cooccurrence
    task = cls(stats.P, negatives=params["negatives"])
    model = Embedding(stats.vocab_size, d, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    questions, _ = analogy_questions(stats.words)

    def extra(traj, folder):
        lines = [f"# top words along each eigen-direction of M* (V = {stats.vocab_size}, "
                 f"{stats.n_tokens} tokens, window {stats.window})"]
        lam = np.asarray(task.eigenvalues)
        for k, (hi, lo) in enumerate(top_words(np.asarray(task.eigenvectors)[:, :d], stats.words)):
            lines.append(f"mode {k + 1} (λ = {lam[k]:.4g}):  + {' '.join(hi)}  |  − {' '.join(lo)}")
        atomic_write_text(os.path.join(folder, "top_words.txt"), "\n".join(lines) + "\n")
        times, acc = _analogy_curve(traj, questions)
        lines = ["time,analogy_accuracy"] + [f"{t:.8g},{a:.6g}" for t, a in zip(times, acc)]
        atomic_write_text(os.path.join(folder, "analogy.csv"), "\n".join(lines) + "\n")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(times, acc, "o-")
        ax.set_xlabel("time t")
        ax.set_ylabel(f"analogy accuracy ({len(questions)} questions)")
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "analogy.png"), dpi=120)
        plt.close(fig)

    setup = _embedding_setup(task, model, params, init_scale, extra)
    base = setup.summarize

    def summarize(traj):
        out = base(traj)
        out["analogy_accuracy"] = analogy_accuracy(np.asarray(traj.final.W), questions)
        out["analogy_questions"] = int(len(questions))
        return out

    setup.summarize = summarize
    return setup


def _analogy_curve(traj, questions):
    from ..tasks.corpus import analogy_accuracy

    W = np.asarray(traj.snapshots.W)
    times = np.asarray(traj.snapshot_times)
    keep = np.isfinite(times)
    return times[keep], [analogy_accuracy(w, questions) for w in W[keep]]


def _build_qwem(params, *, init_scale, seed, data):
    import jax
    from ..models.embedding import Embedding
    from ..tasks.corpus import QWEM

    if data is not None:
        P = load_npz(data, required=("P",))["P"]
        try:
            task = QWEM.from_cooccurrence(P, negatives=params["negatives"])
        except ValueError as err:
            raise ValueError(f"data: {err}") from None
    else:
        P = synthetic_cooccurrence(params["vocab_size"], seed=params["corpus_seed"])
        task = QWEM.from_cooccurrence(P, negatives=params["negatives"])
    V = task.vocab_size
    d = _check_d(params, min(V, 64), "vocab_size (at most 64)")
    model = Embedding(V, d, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    return _embedding_setup(task, model, params, init_scale)


def _bt_setup(task, model, params):
    from ..theory.barlow_twins import barlow_twins_aligned, predict_barlow_twins

    d = model.W.shape[0]
    simplified = task.kind == "simplified"
    pred = predict_barlow_twins(model, task) if simplified else None
    gam = np.asarray(task.gamma_eigenvalues)
    pos = gam[gam > 0]
    if pos.size == 0:
        raise ValueError("Γ has no positive eigenvalue: the pairs are not positively correlated; nothing is learned")
    if pred is not None and pred.num_steps:
        t_auto = 1.3 * float(pred.times[-1]) + 3.0 / pred.extra["gamma"][-1]
    else:
        g = pos[: d].min()
        t_auto = 2.0 * log_inv(float(model.init_scale)) / (4 * g) + 3.0 / g
    t_max = t_auto

    def summarize(traj):
        return {"eigs_C": np.asarray(traj.observables["eigs_C"])[-1].tolist(), "d": d}

    def write_extra(traj, folder):
        theory = None
        if pred is not None and pred.num_steps:
            theory = barlow_twins_aligned(pred.extra["gamma"], pred.extra["c0"], traj.times)
        from .. import plot

        plot.save(plot.eigenvalue_curves(traj, "eigs_C", theory, ylabel="eigenvalues of C",
                                         title="embedding eigenvalues vs closed form"),
                  os.path.join(folder, "eigenvalues.png"))

    return Setup(model, task, t_max, predict=(lambda: pred) if pred is not None else None,
                 simulate_kwargs={"n_save": 1001},
                 summarize=summarize, write_extra=write_extra)


def _bt_task(xa, xb, params):
    from ..tasks.views import BarlowTwins

    kind = _loss_kind(params, ("simplified", "original"))
    return BarlowTwins(xa, xb, loss=kind, off_diagonal=params["off_diagonal"], scale=params["scale"])


def _build_barlow_twins(params, *, init_scale, seed, data):
    import jax
    from ..models.encoder import LinearEncoder
    from ..tasks.views import digit_pairs

    xa, xb, _ = digit_pairs(params["n"], shift=params["shift"], noise=params["noise"], seed=params["data_seed"])
    d = _check_d(params, xa.shape[1], "the input dimension")
    task = _bt_task(xa, xb, params)
    model = LinearEncoder(xa.shape[1], d, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    return _bt_setup(task, model, params)


def _build_barlow_twins_synthetic(params, *, init_scale, seed, data):
    import jax
    from ..models.encoder import LinearEncoder
    from ..tasks.views import latent_pairs

    spectrum = params["spectrum"]
    if params["m"] < len(spectrum):
        raise ValueError(f"overrides m: expected an input dimension ≥ len(spectrum) = {len(spectrum)}, got {params['m']}")
    xa, xb, _ = latent_pairs(spectrum, params["n"], params["m"], noise=params["noise"], seed=params["data_seed"])
    d = _check_d(params, params["m"], "m")
    task = _bt_task(xa, xb, params)
    model = LinearEncoder(params["m"], d, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    return _bt_setup(task, model, params)


_BT_LOSS = {"loss": "simplified", "off_diagonal": 0.0051, "scale": 1.0}

register(
    Preset(
        name="word2vec",
        runtime_s=90,
        predictor="closed form (QWEM, Karkada et al.)",
        description="tied word2vec (exact SGNS, or loss=qwem) on the Wikipedia sample shipped with gensim; QWEM theory",
        defaults={"vocab_size": 1000, "d": 10, "window": 8, "loss": "sgns", "negatives": 1.0},
        rtol=1e-8,
        build=_build_word2vec,
        init_scale=1e-6,
        data_help="a .txt corpus (blank lines separate documents)",
    )
)

register(
    Preset(
        name="qwem",
        runtime_s=7,
        predictor="closed form (QWEM, Karkada et al.)",
        description="quartic word2vec loss on a co-occurrence matrix (synthetic topics, or --data); closed form",
        defaults={"vocab_size": 200, "d": 5, "negatives": 1.0, "corpus_seed": 0},
        rtol=1e-9,
        build=_build_qwem,
        init_scale=1e-6,
        data_help="an .npz with P, the V×V joint co-occurrence probabilities",
    )
)

register(
    Preset(
        name="barlow-twins",
        runtime_s=7,
        predictor="closed form (Simon et al.; loss=simplified only)",
        description="linear Barlow Twins on scikit-learn digits, views = shifts + noise; eigenmodes of Γ in order",
        defaults={"n": 500, "d": 8, "shift": 1, "noise": 0.1, "data_seed": 0, **_BT_LOSS},
        rtol=1e-8,
        build=_build_barlow_twins,
        init_scale=1e-6,
    )
)

register(
    Preset(
        name="barlow-twins-synthetic",
        runtime_s=7,
        predictor="closed form (Simon et al.; loss=simplified only)",
        description="linear Barlow Twins on pairs from a latent model with Γ spectrum (1, .5, .25, .1, −.2)",
        defaults={"spectrum": (1.0, 0.5, 0.25, 0.1, -0.2), "m": 8, "n": 2000, "noise": 0.1, "d": 3,
                  "data_seed": 0, **_BT_LOSS},
        rtol=1e-8,
        build=_build_barlow_twins_synthetic,
        init_scale=1e-6,
    )
)
