"""saddlestep: gradient flow from small initialization, and the theory of its staircase."""

import jax

# Float64 by default: plateaus sit at parameters O(α), far below float32's resolution of O(1) ones.
jax.config.update("jax_enable_x64", True)

from . import models as models, tasks as tasks  # noqa: E402
from . import agf as agf, theory as theory  # noqa: E402
from .convergence import converge as converge, convergence_figure as convergence_figure  # noqa: E402
from .flow import RESULTS as RESULTS, simulate as simulate  # noqa: E402
from .methods import (  # noqa: E402
    AbstractMethod as AbstractMethod,
    AutoSwitch as AutoSwitch,
    Discrete as Discrete,
    Explicit as Explicit,
    Implicit as Implicit,
    METHODS as METHODS,
)
from .models import (  # noqa: E402
    AbstractLinearModel as AbstractLinearModel,
    AbstractModel as AbstractModel,
    AbstractNeuronModel as AbstractNeuronModel,
    DeepLinear as DeepLinear,
    DeepReLU as DeepReLU,
    DiagonalLinear as DiagonalLinear,
    RichReLU as RichReLU,
    TwoLayer as TwoLayer,
)
from . import plot as plot  # noqa: E402
from .prediction import Prediction as Prediction  # noqa: E402
from .runs import run_preset as run_preset  # noqa: E402
from .steps import compare as compare, detect_steps as detect_steps, feature_steps as feature_steps, Step as Step  # noqa: E402
from .tasks import (  # noqa: E402
    AbstractTask as AbstractTask,
    digits as digits,
    PopulationRegression as PopulationRegression,
    relu_teacher as relu_teacher,
    SampleRegression as SampleRegression,
    sparse_regression as sparse_regression,
    teacher_spectrum as teacher_spectrum,
)
from .trajectory import Trajectory as Trajectory  # noqa: E402
from .models import LinearAttention as LinearAttention, QuadraticNetwork as QuadraticNetwork  # noqa: E402
from .tasks import (  # noqa: E402
    fourier_template as fourier_template,
    InContextRegression as InContextRegression,
    ModularAddition as ModularAddition,
    one_hot_template as one_hot_template,
)
from . import losses as losses  # noqa: E402
from .models.embedding import Embedding as Embedding  # noqa: E402
from .models.encoder import (  # noqa: E402
    AbstractEncoder as AbstractEncoder,
    KernelEncoder as KernelEncoder,
    LinearEncoder as LinearEncoder,
)
from .tasks.corpus import (  # noqa: E402
    AbstractCooccurrenceTask as AbstractCooccurrenceTask,
    analogy_accuracy as analogy_accuracy,
    analogy_questions as analogy_questions,
    corpus_statistics as corpus_statistics,
    CorpusStatistics as CorpusStatistics,
    QWEM as QWEM,
    SGNS as SGNS,
    top_words as top_words,
    word2vec_reweighting as word2vec_reweighting,
)
from .tasks.views import (  # noqa: E402
    BarlowTwins as BarlowTwins,
    cross_correlation_matrix as cross_correlation_matrix,
    digit_pairs as digit_pairs,
    kernel_features as kernel_features,
    latent_pairs as latent_pairs,
    rbf_kernel as rbf_kernel,
)

__version__ = "0.1.0"
