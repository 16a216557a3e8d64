"""The networks: Equinox modules whose parameters start at scale `init_scale` (α)."""

from .attention import LinearAttention as LinearAttention
from .base import (
    AbstractLinearModel as AbstractLinearModel,
    AbstractModel as AbstractModel,
    AbstractNeuronModel as AbstractNeuronModel,
    parameters as parameters,
)
from .diagonal import DiagonalLinear as DiagonalLinear
from .word2vec import Embedding as Embedding
from .barlow_twins import AbstractEncoder as AbstractEncoder, KernelEncoder as KernelEncoder, LinearEncoder as LinearEncoder
from .linear import DeepLinear as DeepLinear
from .deep_relu import DeepReLU as DeepReLU
from .modular import QuadraticNetwork as QuadraticNetwork
from .richness import RichReLU as RichReLU
from .two_layer import TwoLayer as TwoLayer
