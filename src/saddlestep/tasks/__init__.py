"""The losses a flow descends: regression, modular addition, in-context regression, word
co-occurrences (SGNS, QWEM) and paired views (Barlow Twins)."""

from .base import AbstractTask as AbstractTask
from .word2vec import (
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
from .images import digits as digits
from .attention import InContextRegression as InContextRegression
from .modular import (
    fourier_template as fourier_template,
    frequency_power as frequency_power,
    ModularAddition as ModularAddition,
    one_hot_template as one_hot_template,
)
from .regression import (
    PopulationRegression as PopulationRegression,
    relu_teacher as relu_teacher,
    SampleRegression as SampleRegression,
    sparse_regression as sparse_regression,
    teacher_spectrum as teacher_spectrum,
)
from .barlow_twins import (
    BarlowTwins as BarlowTwins,
    cross_correlation_matrix as cross_correlation_matrix,
    digit_pairs as digit_pairs,
    kernel_features as kernel_features,
    latent_pairs as latent_pairs,
    rbf_kernel as rbf_kernel,
)
