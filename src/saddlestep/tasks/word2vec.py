"""Word2vec-like tasks from co-occurrence statistics of real text (Karkada et al. 2025).

Text, offline: the English Wikipedia sample and the Google analogy questions that ship inside
the gensim wheel (`gensim.test.utils.datapath`), or a user's own `.txt` file. The pipeline:
tokens (for a user's text: lower-case runs of letters of any script, as gensim's tokenizer reads
them; for the English Wikipedia sample: runs of a–z, as in Karkada et al., App. A.1; every other
character separates words) → the `vocab_size` most frequent words (other words are deleted from the stream) →
window-weighted co-occurrence counts, weight (L + 1 − δ) at separation δ ≤ L, which reproduces
word2vec's dynamic window → the joint distribution P → the target M* (`losses.qwem_target`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .. import losses
from ..models.word2vec import Embedding
from .base import AbstractTask, check_finite

# Letters of any script (gensim.utils.tokenize's PAT_ALPHABETIC): "garçon" and "Straße" stay whole.
_WORD = re.compile(r"[^\W\d_]+")
_ENGLISH_WORD = re.compile(r"[a-z]+")  # the paper's rule for its English corpus
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_ANALOGY_FILE = "questions-words.txt"
MIN_TOKENS = 100


def tokenize(text: str) -> list[str]:
    """Lower-case runs of letters (any script); digits, punctuation and spaces separate words."""
    return _WORD.findall(text.lower())


def _gensim_datapath(name: str) -> str:
    try:
        from gensim.test.utils import datapath
    except ImportError:  # pragma: no cover - gensim is a dependency
        raise ValueError(
            "data: the built-in Wikipedia sample ships with gensim; install it (pip install gensim) "
            "or pass your own .txt corpus"
        ) from None
    return datapath(name)


@functools.lru_cache(maxsize=2)
def wikipedia_sample() -> tuple[tuple[str, ...], ...]:
    """The tokenised articles of the English Wikipedia sample shipped with gensim (CC BY-SA).

    Redirects and pages with fewer than 50 tokens are skipped: 106 articles, about 470k tokens.
    """
    import bz2

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    articles = []
    with bz2.open(_gensim_datapath(_WIKI_FILE), "rt", encoding="utf-8") as f:
        for _title, text, _pageid in extract_pages(f):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            words = _ENGLISH_WORD.findall(filter_wiki(text).lower())
            if len(words) >= 50:
                articles.append(tuple(words))
    return tuple(articles)


def read_text(path: str | os.PathLike) -> tuple[tuple[str, ...], ...]:
    """Tokenise a user's text file; blank lines separate documents (windows do not cross them)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"data: no such file {path!r}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ValueError(f"data: cannot read {path!r} ({err.strerror or err})") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"data: {path!r} is UTF-16 text; save it as UTF-8")
    if b"\x00" in raw[:65536]:
        raise ValueError(f"data: {path!r} is a binary file, not text; expected a UTF-8 .txt corpus")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"data: {path!r} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None
    docs = tuple(tuple(tokenize(block)) for block in re.split(r"\n\s*\n", text))
    return tuple(d for d in docs if d)


@dataclasses.dataclass(frozen=True)
class CorpusStatistics:
    """Co-occurrence statistics of a corpus over its most frequent words.

    **Fields:**

    - `words`: the vocabulary, most frequent first.
    - `counts`: each word's number of occurrences.
    - `P`: V×V joint co-occurrence probabilities (symmetric, summing to 1).
    - `n_tokens`: tokens in the corpus before out-of-vocabulary words were deleted.
    - `n_distinct`: distinct words in the corpus (before the vocabulary was cut to V).
    - `window`: L, the one-sided window length.
    """

    words: tuple[str, ...]
    counts: np.ndarray
    P: np.ndarray
    n_tokens: int
    window: int
    n_distinct: int = 0

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def corpus_statistics(
    data: str | os.PathLike | None = None, *, vocab_size: int = 1000, window: int = 8
) -> CorpusStatistics:
    """Tokenise a corpus and count window-weighted co-occurrences among its `vocab_size` most
    frequent words (Karkada et al. 2025, App. A).

    **Arguments:**

    - `data`: a `.txt` file, or None for the gensim Wikipedia sample.
    - `vocab_size`: V, the number of most frequent words kept.
    - `window`: L ≥ 1; a pair at separation δ ≤ L counts with weight L + 1 − δ, both ways.

    **Returns:** a `CorpusStatistics`.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
        raise ValueError(f"vocab_size: expected an integer ≥ 2, got {vocab_size!r}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window: expected a positive integer, got {window!r}")
    docs = wikipedia_sample() if data is None else read_text(data)
    source = "the built-in Wikipedia sample" if data is None else repr(os.fspath(data))
    n_tokens = sum(len(d) for d in docs)
    if n_tokens < MIN_TOKENS:
        raise ValueError(
            f"data: {source} has {n_tokens} tokens; expected a corpus of at least {MIN_TOKENS} words"
        )
    freq = collections.Counter(w for d in docs for w in d)
    if len(freq) < vocab_size:
        raise ValueError(
            f"vocab_size: {source} has only {len(freq)} distinct words (words are runs of letters; digits and "
            f"punctuation split them), fewer than vocab_size = {vocab_size}; pass vocab_size={len(freq)} or less"
        )
    # Most frequent first; ties broken alphabetically so the vocabulary is reproducible.
    top = sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]
    words = tuple(w for w, _ in top)
    index = {w: i for i, w in enumerate(words)}
    V = vocab_size
    ids, doc_of = [], []
    for j, d in enumerate(docs):
        kept = [index[w] for w in d if w in index]  # OOV words are deleted, not masked
        ids.extend(kept)
        doc_of.extend([j] * len(kept))
    ids = np.asarray(ids, dtype=np.int64)
    doc_of = np.asarray(doc_of, dtype=np.int64)
    C = np.zeros(V * V)
    for delta in range(1, window + 1):
        same = doc_of[:-delta] == doc_of[delta:]
        a, b = ids[:-delta][same], ids[delta:][same]
        w = float(window + 1 - delta)
        C += np.bincount(a * V + b, minlength=V * V) * w
        C += np.bincount(b * V + a, minlength=V * V) * w
    C = C.reshape(V, V)
    if C.sum() <= 0:
        raise ValueError(f"data: {source} has no two in-vocabulary words within a window of each other")
    P = C / C.sum()
    if np.any(P.sum(axis=1) <= 0):
        raise ValueError(f"data: {source} is too small: some vocabulary words never co-occur with any other")
    counts = np.asarray([c for _, c in top], dtype=np.int64)
    return CorpusStatistics(words, counts, P, n_tokens, int(window), len(freq))


# ------------------------------------------------------------------------- analogies
@functools.lru_cache(maxsize=1)
def _analogy_lines() -> tuple[tuple[str, tuple[str, str, str, str]], ...]:
    out, section = [], ""
    with open(_gensim_datapath(_ANALOGY_FILE), encoding="utf-8") as f:
        for line in f:
            if line.startswith(":"):
                section = line[1:].strip()
                continue
            parts = line.lower().split()
            if len(parts) == 4:
                out.append((section, tuple(parts)))
    return tuple(out)


def analogy_questions(words) -> tuple[Int[np.ndarray, "q 4"], list[str]]:
    """The Google analogy questions (a : b :: c : d, shipped with gensim) whose four words are
    all in `words`.

    **Arguments:**

    - `words`: the vocabulary (a sequence of lower-case words).

    **Returns:** `(questions, sections)`: word indices, (q, 4), and each question's section.
    """
    index = {w: i for i, w in enumerate(words)}
    rows, sections = [], []
    for section, quad in _analogy_lines():
        if all(w in index for w in quad):
            rows.append([index[w] for w in quad])
            sections.append(section)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4), sections


def analogy_accuracy(W, questions) -> float:
    """Fraction of analogies a : b :: c : d answered by argmax_w cos(w, ŵ_b − ŵ_a + ŵ_c), the
    three query words excluded (Mikolov et al. 2013; rows of W normalised).

    **Arguments:**

    - `W`: V×d embeddings.
    - `questions`: (q, 4) word indices from `analogy_questions`.

    **Returns:** the accuracy in [0, 1] (NaN if there are no questions).
    """
    W = np.asarray(W, dtype=np.float64)
    q = np.asarray(questions, dtype=np.int64).reshape(-1, 4)
    if len(q) == 0:
        return float("nan")
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    Wn = W / np.where(norms > 0, norms, 1.0)
    target = Wn[q[:, 1]] - Wn[q[:, 0]] + Wn[q[:, 2]]
    scores = target @ Wn.T
    rows = np.arange(len(q))[:, None]
    scores[rows, q[:, :3]] = -np.inf
    return float(np.mean(np.argmax(scores, axis=1) == q[:, 3]))


def top_words(directions, words, k: int = 8) -> list[tuple[list[str], list[str]]]:
    """For each column of `directions` (V×r), the k words with the largest and the k with the
    smallest coordinates: what each eigen-direction separates.

    **Arguments:** `directions` (V, r); `words`, the vocabulary; `k` words per end.

    **Returns:** per direction, (the k most positive words, the k most negative words).
    """
    D = np.asarray(directions, dtype=np.float64)
    out = []
    for col in D.T:
        order = np.argsort(col)
        out.append(([words[i] for i in order[::-1][:k]], [words[i] for i in order[:k]]))
    return out


def word2vec_reweighting(P, threshold: float = 1e-5, power: float = 0.75):
    """The reweighting Ψ± that word2vec's subsampling and smoothed negative distribution induce
    (Karkada et al. 2025, App. A.3): with acceptance a_i = min(1, √(t/P_i) + t/P_i) and
    n_j = P_j^{power}/(Σ P^{power} · P_j), Ψ⁺_ij = a_i a_j and Ψ⁻_ij = ½(a_i n_j + a_j n_i).

    **Arguments:**

    - `P`: V×V joint co-occurrence probabilities.
    - `threshold`: the subsampling threshold t.
    - `power`: the exponent of the negative-sampling distribution.

    **Returns:** `(psi_pos, psi_neg)`.
    """
    P = losses.check_cooccurrence(P)
    Pi = P.sum(axis=1)
    a = np.minimum(1.0, np.sqrt(threshold / Pi) + threshold / Pi)
    n = Pi**power / np.sum(Pi**power) / Pi
    return np.outer(a, a), 0.5 * (np.outer(a, n) + np.outer(n, a))


# ------------------------------------------------------------------------- tasks
class AbstractCooccurrenceTask(AbstractTask):
    """A word2vec-like loss on tied embeddings W (an `Embedding`), built from a target M*.

    Observables: `sv2`, the squared singular values of W (descending), and `features`, the
    strength ‖Wᵀv_k‖² of W along each of the top-d eigenvectors v_k of M* (λ_k when learned).
    """

    target: eqx.AbstractVar[Float[Array, "V V"]]
    eigenvalues: eqx.AbstractVar[Float[Array, " V"]]
    eigenvectors: eqx.AbstractVar[Float[Array, "V r"]]

    @property
    def vocab_size(self) -> int:
        return self.target.shape[0]

    def observables(self, model):
        d = model.W.shape[1]
        proj = model.W.T @ self.eigenvectors[:, :d]
        return {"sv2": model.sv2(), "features": jnp.sum(proj * proj, axis=0)}

    def feature_labels(self, model):
        return [f"mode {k + 1}" for k in range(min(model.W.shape[1], self.eigenvectors.shape[1]))]

    def validate(self, model):
        if not isinstance(model, Embedding):
            raise ValueError(f"model: a word2vec-like task needs an Embedding, got {type(model).__name__}")
        V, d = model.W.shape
        if V != self.vocab_size:
            raise ValueError(f"model: has vocab_size {V}, but the task's co-occurrence matrix is {self.vocab_size}×{self.vocab_size}")
        if d > self.eigenvectors.shape[1]:
            raise ValueError(f"d: expected at most {self.eigenvectors.shape[1]}, got {d}")


def _eig(M, n_keep):
    lam, vec = np.linalg.eigh(M)
    lam, vec = lam[::-1], vec[:, ::-1]
    return jnp.asarray(lam), jnp.asarray(vec[:, :n_keep])


def _check_target(M):
    M = check_finite("target", M, 2)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"target: expected a square V×V matrix, got shape {M.shape}")
    if not np.allclose(M, M.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(M).max())):
        raise ValueError("target: expected a symmetric matrix M*")
    return 0.5 * (M + M.T)


_MODES_KEPT = 64  # eigenvectors of M* kept for observables: d ≤ this


class QWEM(AbstractCooccurrenceTask):
    """The quartic word2vec loss L = ⅛ Σ_ij G_ij ((WWᵀ)_ij − M*_ij)² (Karkada et al. 2025),
    in the normalisation of the SGNS loss (see `saddlestep.losses`): under Setting 3.1 (G ≡ 1)
    the flow is dW/dt = ½(M* − WWᵀ)W, the paper's time axis.

    Build it from a target (`QWEM(M)`) or from co-occurrence probabilities
    (`QWEM.from_cooccurrence(P)`).
    """

    target: Float[Array, "V V"]
    weights: Float[Array, "V V"] | None
    eigenvalues: Float[Array, " V"]
    eigenvectors: Float[Array, "V r"]

    def __init__(self, target, weights=None):
        """**Arguments:**

        - `target`: M*, a symmetric V×V matrix.
        - `weights`: G, non-negative V×V (None: Setting 3.1, G ≡ 1).
        """
        M = _check_target(target)
        if weights is not None:
            G = check_finite("weights", weights, 2)
            if G.shape != M.shape:
                raise ValueError(f"weights: expected shape {M.shape} to match target, got {G.shape}")
            if G.min() < 0:
                raise ValueError("weights: expected non-negative weights G")
            self.weights = None if np.all(G == 1.0) else jnp.asarray(G)
        else:
            self.weights = None
        self.target = jnp.asarray(M)
        self.eigenvalues, self.eigenvectors = _eig(M, min(M.shape[0], _MODES_KEPT))

    @classmethod
    def from_cooccurrence(cls, P, psi_pos=None, psi_neg=None, negatives: float = 1.0) -> QWEM:
        """QWEM on co-occurrence probabilities P with reweighting Ψ± (default Setting 3.1)
        and negative weight k; see `losses.qwem_target`."""
        M, G = losses.qwem_target(P, psi_pos, psi_neg, negatives)
        return cls(M, None if psi_pos is None else G)

    def loss(self, model):
        return losses.qwem(model.gram(), self.target, self.weights)

    def loss_floor(self, model):
        if self.weights is not None:
            return None  # weighted factorisation: no closed-form minimum (Prop. 2)
        # Eckart–Young: the best PSD rank-d approximation keeps the top-d non-negative modes.
        lam = np.asarray(self.eigenvalues)
        d = model.W.shape[1]
        kept = np.clip(lam[:d], 0.0, None)
        return 0.125 * float(np.sum(lam**2) - np.sum(kept**2))


class SGNS(AbstractCooccurrenceTask):
    """The exact skip-gram negative-sampling (logistic) loss on tied embeddings,
    L = Σ_ij Ψ⁺_ij P_ij log(1 + e^{−x_ij}) + kΨ⁻_ij P_iP_j log(1 + e^{x_ij}) − const, x = WWᵀ
    (Mikolov et al. 2013; Karkada et al. 2025, §2). Its quartic expansion is `QWEM` on the same
    P, Ψ±, k; the target M* is kept for the observables and the theory overlay.

    The loss is evaluated as `losses.sgns_tiled`: with a = Ψ⁺P and b = kΨ⁻P_iP_j, the weights
    h = (b − a)/2 and s = a + b are stored as upper-triangular tiles (s not at all under
    Setting 3.1, where it is 1), and the gradient costs one tanh per pair of words.
    """

    odd_weight: Float[Array, "pairs b b"]
    even_weight: Float[Array, "pairs b b"] | None
    target: Float[Array, "V V"]
    eigenvalues: Float[Array, " V"]
    eigenvectors: Float[Array, "V r"]

    def __init__(self, P, psi_pos=None, psi_neg=None, negatives: float = 1.0):
        """**Arguments:**

        - `P`: V×V joint co-occurrence probabilities (symmetric, non-negative, summing to 1).
        - `psi_pos`, `psi_neg`: reweighting Ψ± (None: Setting 3.1, Ψ± = (P + kP_iP_j)⁻¹).
        - `negatives`: the negative weight k > 0.
        """
        M, G = losses.qwem_target(P, psi_pos, psi_neg, negatives)
        P = np.asarray(P, dtype=np.float64)
        Pi = P.sum(axis=1)
        k = float(negatives)
        setting31 = psi_pos is None
        if setting31:
            psi_pos = psi_neg = 1.0 / (P + k * np.outer(Pi, Pi))
        a = np.asarray(psi_pos) * P
        b = k * np.asarray(psi_neg) * np.outer(Pi, Pi)
        self.odd_weight = jnp.asarray(losses.symmetric_tiles(0.5 * (b - a)))
        # Under Setting 3.1 a + b = 1 (up to rounding in a and b): no tiles to read.
        self.even_weight = None if setting31 else jnp.asarray(losses.symmetric_tiles(a + b))
        self.target = jnp.asarray(M)
        self.eigenvalues, self.eigenvectors = _eig(M, min(M.shape[0], _MODES_KEPT))

    def loss(self, model):
        return losses.sgns_tiled(model.W, self.odd_weight, self.even_weight)
