"""saddlestep: gradient flow from small initialization, and the theory of its staircase."""

import jax

# Float64 by default: plateaus sit at parameters O(α), far below float32's resolution of O(1) ones.
jax.config.update("jax_enable_x64", True)

from . import models as models, tasks as tasks  # noqa: E402
from .flow import simulate as simulate  # noqa: E402
from .models import (  # noqa: E402
    AbstractLinearModel as AbstractLinearModel,
    AbstractModel as AbstractModel,
    AbstractNeuronModel as AbstractNeuronModel,
    DeepLinear as DeepLinear,
    DeepReLU as DeepReLU,
    DiagonalLinear as DiagonalLinear,
    TwoLayer as TwoLayer,
)
from . import plot as plot  # noqa: E402
from .prediction import Prediction as Prediction  # noqa: E402
from .runs import run_preset as run_preset  # noqa: E402
from .steps import compare as compare, detect_steps as detect_steps, Step as Step  # noqa: E402
from .tasks import (  # noqa: E402
    AbstractTask as AbstractTask,
    PopulationRegression as PopulationRegression,
    relu_teacher as relu_teacher,
    SampleRegression as SampleRegression,
    sparse_regression as sparse_regression,
    teacher_spectrum as teacher_spectrum,
)
from .trajectory import Trajectory as Trajectory  # noqa: E402

__version__ = "0.1.0"
