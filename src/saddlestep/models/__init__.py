from .base import (
    AbstractLinearModel as AbstractLinearModel,
    AbstractModel as AbstractModel,
    AbstractNeuronModel as AbstractNeuronModel,
    parameters as parameters,
)
from .diagonal import DiagonalLinear as DiagonalLinear
from .linear import DeepLinear as DeepLinear
from .mlp import DeepReLU as DeepReLU
from .richness import RichReLU as RichReLU
from .two_layer import TwoLayer as TwoLayer
from .attention import LinearAttention as LinearAttention
from .quadratic import QuadraticNetwork as QuadraticNetwork
