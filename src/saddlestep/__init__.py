"""saddlestep: gradient flow from small initialization, and the theory of its staircase.

Public names are imported on first use, so `saddlestep --help` and `saddlestep list` answer at
once; `import saddlestep` costs nothing until you touch `simulate`, a model or a task.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from typing import Any, TYPE_CHECKING

# Float64 by default: plateaus sit at parameters O(α), far below float32's resolution of O(1)
# ones. This is global (it is JAX's switch); set before JAX loads, or flipped here if it already has.
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    os.environ["JAX_ENABLE_X64"] = "1"

try:
    __version__ = importlib.metadata.version("saddlestep")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

# name: (module, attribute in it; None: the module itself)
_PUBLIC: dict[str, tuple[str, str | None]] = {
    "AbstractCooccurrenceTask": (".tasks", 'AbstractCooccurrenceTask'),
    "AbstractEncoder": (".models", 'AbstractEncoder'),
    "AbstractLinearModel": (".models", 'AbstractLinearModel'),
    "AbstractMethod": (".methods", 'AbstractMethod'),
    "AbstractModel": (".models", 'AbstractModel'),
    "AbstractNeuronModel": (".models", 'AbstractNeuronModel'),
    "AbstractTask": (".tasks", 'AbstractTask'),
    "agf": (".agf", None),
    "analogy_accuracy": (".tasks", 'analogy_accuracy'),
    "analogy_questions": (".tasks", 'analogy_questions'),
    "AutoSwitch": (".methods", 'AutoSwitch'),
    "BarlowTwins": (".tasks", 'BarlowTwins'),
    "compare": (".steps", 'compare'),
    "converge": (".convergence", 'converge'),
    "convergence_figure": (".convergence", 'convergence_figure'),
    "corpus_statistics": (".tasks", 'corpus_statistics'),
    "CorpusStatistics": (".tasks", 'CorpusStatistics'),
    "cross_correlation_matrix": (".tasks", 'cross_correlation_matrix'),
    "DeepLinear": (".models", 'DeepLinear'),
    "DeepReLU": (".models", 'DeepReLU'),
    "detect_steps": (".steps", 'detect_steps'),
    "DiagonalLinear": (".models", 'DiagonalLinear'),
    "digit_pairs": (".tasks", 'digit_pairs'),
    "digits": (".tasks", 'digits'),
    "Discrete": (".methods", 'Discrete'),
    "Embedding": (".models", 'Embedding'),
    "Explicit": (".methods", 'Explicit'),
    "feature_change": (".steps", 'feature_change'),
    "feature_steps": (".steps", 'feature_steps'),
    "fourier_template": (".tasks", 'fourier_template'),
    "Implicit": (".methods", 'Implicit'),
    "InContextRegression": (".tasks", 'InContextRegression'),
    "kernel_features": (".tasks", 'kernel_features'),
    "KernelEncoder": (".models", 'KernelEncoder'),
    "latent_pairs": (".tasks", 'latent_pairs'),
    "LinearAttention": (".models", 'LinearAttention'),
    "LinearEncoder": (".models", 'LinearEncoder'),
    "losses": (".losses", None),
    "METHODS": (".methods", 'METHODS'),
    "models": (".models", None),
    "ModularAddition": (".tasks", 'ModularAddition'),
    "one_hot_template": (".tasks", 'one_hot_template'),
    "plot": (".plot", None),
    "PopulationRegression": (".tasks", 'PopulationRegression'),
    "Prediction": (".prediction", 'Prediction'),
    "QuadraticNetwork": (".models", 'QuadraticNetwork'),
    "QWEM": (".tasks", 'QWEM'),
    "rbf_kernel": (".tasks", 'rbf_kernel'),
    "relu_teacher": (".tasks", 'relu_teacher'),
    "RESULTS": (".flow", 'RESULTS'),
    "RichReLU": (".models", 'RichReLU'),
    "run_preset": (".runs", 'run_preset'),
    "SampleRegression": (".tasks", 'SampleRegression'),
    "SGNS": (".tasks", 'SGNS'),
    "Save": (".flow", 'Save'),
    "simulate": (".flow", 'simulate'),
    "sparse_regression": (".tasks", 'sparse_regression'),
    "Step": (".steps", 'Step'),
    "Stop": (".flow", 'Stop'),
    "tasks": (".tasks", None),
    "teacher_spectrum": (".tasks", 'teacher_spectrum'),
    "theory": (".theory", None),
    "top_words": (".tasks", 'top_words'),
    "Trajectory": (".trajectory", 'Trajectory'),
    "TwoLayer": (".models", 'TwoLayer'),
    "word2vec_reweighting": (".tasks", 'word2vec_reweighting'),
}

__all__ = sorted(_PUBLIC, key=str.lower)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'saddlestep' has no attribute {name!r}") from None
    value = importlib.import_module(module, __name__)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:
    from .convergence import (
        converge as converge,
        convergence_figure as convergence_figure,
    )
    from .flow import (
        RESULTS as RESULTS,
        Save as Save,
        simulate as simulate,
        Stop as Stop,
    )
    from .methods import (
        AbstractMethod as AbstractMethod,
        AutoSwitch as AutoSwitch,
        Discrete as Discrete,
        Explicit as Explicit,
        Implicit as Implicit,
        METHODS as METHODS,
    )
    from .models import (
        AbstractEncoder as AbstractEncoder,
        AbstractLinearModel as AbstractLinearModel,
        AbstractModel as AbstractModel,
        AbstractNeuronModel as AbstractNeuronModel,
        DeepLinear as DeepLinear,
        DeepReLU as DeepReLU,
        DiagonalLinear as DiagonalLinear,
        Embedding as Embedding,
        KernelEncoder as KernelEncoder,
        LinearAttention as LinearAttention,
        LinearEncoder as LinearEncoder,
        QuadraticNetwork as QuadraticNetwork,
        RichReLU as RichReLU,
        TwoLayer as TwoLayer,
    )
    from .prediction import (
        Prediction as Prediction,
    )
    from .runs import (
        run_preset as run_preset,
    )
    from .steps import (
        compare as compare,
        detect_steps as detect_steps,
        feature_change as feature_change,
        feature_steps as feature_steps,
        Step as Step,
    )
    from .tasks import (
        AbstractCooccurrenceTask as AbstractCooccurrenceTask,
        AbstractTask as AbstractTask,
        analogy_accuracy as analogy_accuracy,
        analogy_questions as analogy_questions,
        BarlowTwins as BarlowTwins,
        corpus_statistics as corpus_statistics,
        CorpusStatistics as CorpusStatistics,
        cross_correlation_matrix as cross_correlation_matrix,
        digit_pairs as digit_pairs,
        digits as digits,
        fourier_template as fourier_template,
        InContextRegression as InContextRegression,
        kernel_features as kernel_features,
        latent_pairs as latent_pairs,
        ModularAddition as ModularAddition,
        one_hot_template as one_hot_template,
        PopulationRegression as PopulationRegression,
        QWEM as QWEM,
        rbf_kernel as rbf_kernel,
        relu_teacher as relu_teacher,
        SampleRegression as SampleRegression,
        SGNS as SGNS,
        sparse_regression as sparse_regression,
        teacher_spectrum as teacher_spectrum,
        top_words as top_words,
        word2vec_reweighting as word2vec_reweighting,
    )
    from .trajectory import (
        Trajectory as Trajectory,
    )
    from . import agf as agf, losses as losses, models as models, plot as plot, tasks as tasks, theory as theory
