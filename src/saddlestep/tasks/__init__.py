from .base import AbstractTask as AbstractTask
from .regression import (
    PopulationRegression as PopulationRegression,
    relu_teacher as relu_teacher,
    SampleRegression as SampleRegression,
    sparse_regression as sparse_regression,
    teacher_spectrum as teacher_spectrum,
)
