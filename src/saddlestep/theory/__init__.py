"""Closed-form predictions of the staircase: Saxe modes, fully connected linear networks,
Pesme–Flammarion, QWEM, Barlow Twins, the degree-3 lower bounds and the deep escape.

Every predictor is `predict_…(model, task, **options) -> Prediction` (like `agf.predict`); the
formulas beside them take the problem's data.
"""

from .linear import (
    commuting_times as commuting_times,
    conjecture_jump_times as conjecture_jump_times,
    linear_network as linear_network,
    reduced_rank_regression as reduced_rank_regression,
)
from .diagonal import pesme_flammarion as pesme_flammarion
from .deep_relu import (
    basin_direction as basin_direction,
    correlation as correlation,
    direction_cosine as direction_cosine,
    function_cosine as function_cosine,
    escape_direction as escape_direction,
    escape_time as escape_time,
    EscapeDirection as EscapeDirection,
    gap_ratio as gap_ratio,
    predict_escape as predict_escape,
)
from .saxe import saxe as saxe, saxe_mode as saxe_mode, saxe_time as saxe_time
from .barlow_twins import (
    barlow_twins_aligned as barlow_twins_aligned,
    barlow_twins_final as barlow_twins_final,
    predict_barlow_twins as predict_barlow_twins,
)
from .word2vec import (
    predict_qwem as predict_qwem,
    qwem_aligned as qwem_aligned,
    qwem_closed_form as qwem_closed_form,
    qwem_final as qwem_final,
)
from ._common import alignment_time as alignment_time
from .attention import (
    attention_coefficients as attention_coefficients,
    attention_levels as attention_levels,
    attention_utility_maxima as attention_utility_maxima,
    attention_prediction as attention_prediction,
)
from .modular import (
    modular_levels as modular_levels,
    modular_lower_bounds as modular_lower_bounds,
    modular_utility_max as modular_utility_max,
    modular_utility_maxima as modular_utility_maxima,
    modular_prediction as modular_prediction,
)
from .predictors import (
    predict_attention as predict_attention,
    predict_linear as predict_linear,
    predict_modular as predict_modular,
    predict_pesme_flammarion as predict_pesme_flammarion,
    predict_saxe as predict_saxe,
)
