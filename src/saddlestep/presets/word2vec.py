"""Presets of word2vec-like embeddings: `word2vec` (exact SGNS, or its quartic approximation, on a
corpus) and `qwem` (QWEM on given co-occurrence probabilities; Karkada et al. 2025)."""

from __future__ import annotations

import os
import sys

import numpy as np

from ._checks import check_choice, check_dimension
from .base import load_npz, Preset, register, Setup, stretched_save


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


def _embedding_setup(task, model, params, init_scale, extra=None, simulate_kwargs=None):
    from ..theory.word2vec import predict_qwem, qwem_aligned

    pred = predict_qwem(model, task)
    if pred.num_steps == 0:
        raise ValueError("data: no mode of M* among the top d is left to learn (no eigenvalue positive beyond "
                         "rounding, or the init already covers each): nothing is learned")
    last = float(pred.times[-1])
    lam_last = float(pred.extra["eigenvalues"][-1])
    t_max = 1.3 * last + 12.0 / lam_last
    simulate_kwargs = {**stretched_save(pred.times, t_max), **(simulate_kwargs or {"n_save": 1001})}
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
                 simulate_kwargs=simulate_kwargs,
                 summarize=summarize, write_extra=write_extra)


def _build_word2vec(params, *, init_scale, seed, data):
    import jax
    from ..models.word2vec import Embedding
    from ..tasks.word2vec import analogy_accuracy, analogy_questions, corpus_statistics, QWEM, SGNS, top_words
    from ..trajectory import atomic_write_text

    if data is not None and not str(data).lower().endswith(".txt"):
        raise ValueError(f"data: the word2vec preset reads a .txt corpus, got {data!r}")
    if params["vocab_size"] < 2:
        raise ValueError(f"overrides vocab_size: expected an integer ≥ 2, got {params['vocab_size']}")
    d = check_dimension(params, params["vocab_size"], f"vocab_size = {params['vocab_size']}")
    kind = check_choice(params, ("sgns", "qwem"))
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

    setup = _embedding_setup(task, model, params, init_scale, extra,
                             _sgns_simulate_kwargs(params) if kind == "sgns" else None)
    base = setup.summarize

    def summarize(traj):
        out = base(traj)
        out["analogy_accuracy"] = analogy_accuracy(np.asarray(traj.final.W), questions)
        out["analogy_questions"] = int(len(questions))
        return out

    setup.summarize = summarize
    return setup


def _sgns_simulate_kwargs(params):
    """How the exact SGNS flow is integrated. It is accuracy-bound, not stiff: λ_max(∇²L)·h ≈ 2
    along the run at V = 1000, under Dopri8's stability limit ≈ 5 (`auto` never switched at V = 500). So
    `explicit` means Dopri8: at rtol 1e-8 it takes 28–45% of Tsit5's steps (V = 300 … 2000; 13
    gradients a step against 6, and half the per-step loss evaluations), its drop times within
    1e-9 of a tighter reference. 401 saves, not 1001: each costs a loss evaluation as dear as a
    gradient, and the solver-step record still resolves the drops: at V = 500 the detected drop
    times are 4e-4 off a 20001-save reference, against 2e-4 with 1001 saves (1.6e-4 with Tsit5),
    the detection's resolution, not the flow's (docs/performance.md, "Exact SGNS")."""
    import diffrax as dfx
    from ..methods import Explicit

    kwargs = {"n_save": 401}
    if params["solver"] == "explicit":
        kwargs["method"] = Explicit(dfx.Dopri8())
    return kwargs


def _analogy_curve(traj, questions):
    from ..tasks.word2vec import analogy_accuracy

    W = np.asarray(traj.snapshots.W)
    times = np.asarray(traj.snapshot_times)
    keep = np.isfinite(times)
    return times[keep], [analogy_accuracy(w, questions) for w in W[keep]]


def _build_qwem(params, *, init_scale, seed, data):
    import jax
    from ..models.word2vec import Embedding
    from ..tasks.word2vec import QWEM

    if not params["negatives"] > 0:  # checked here, so a bad value is not blamed on the data
        raise ValueError(f"overrides negatives: expected a positive number, got {params['negatives']:g}")
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
    d = check_dimension(params, min(V, 64), f"{min(V, 64)} (the vocabulary size {V}, and at most 64 for the "
                                             f"dense closed form)" if V > 64 else f"the vocabulary size {V}")
    model = Embedding(V, d, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    return _embedding_setup(task, model, params, init_scale)



register(
    Preset(
        name="word2vec",
        runtime_s=40,
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
        data_sets=("vocab_size", "corpus_seed"),
    )
)
