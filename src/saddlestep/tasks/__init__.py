from .base import AbstractTask as AbstractTask
from .images import digits as digits
from .regression import (
    PopulationRegression as PopulationRegression,
    relu_teacher as relu_teacher,
    SampleRegression as SampleRegression,
    sparse_regression as sparse_regression,
    teacher_spectrum as teacher_spectrum,
)
from .in_context import InContextRegression as InContextRegression
from .modular import (
    fourier_template as fourier_template,
    frequency_power as frequency_power,
    ModularAddition as ModularAddition,
    one_hot_template as one_hot_template,
)
