"""Alternating Gradient Flows (Kunin et al. 2025): the AGF engine over a model's neuron view.

One problem per model family (`diagonal`, `linear`, `embedding`), registered with
`problem.register`; `neuron` is the generic fallback.
"""

from . import diagonal as diagonal, word2vec as word2vec, linear as linear, neuron as neuron  # registers
from .diagonal import DiagonalProblem as DiagonalProblem
from .word2vec import EmbeddingProblem as EmbeddingProblem
from .engine import predict as predict, thresholds as thresholds
from .linear import LinearProblem as LinearProblem
from .neuron import NeuronProblem as NeuronProblem
from .problem import (
    AbstractAGFProblem as AbstractAGFProblem,
    make_problem as make_problem,
    register as register,
)
