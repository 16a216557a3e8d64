"""Alternating Gradient Flows (Kunin et al. 2025): the AGF engine over a model's neuron view."""

from .engine import predict as predict, thresholds as thresholds
from .problems import (
    AbstractAGFProblem as AbstractAGFProblem,
    DiagonalProblem as DiagonalProblem,
    EmbeddingProblem as EmbeddingProblem,
    LinearProblem as LinearProblem,
    make_problem as make_problem,
    NeuronProblem as NeuronProblem,
)
