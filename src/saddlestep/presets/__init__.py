"""Named experiments from the papers; each family registers its presets on import."""

from .base import (
    all_presets as all_presets,
    get_preset as get_preset,
    load_npz as load_npz,
    Preset as Preset,
    register as register,
    Setup as Setup,
)

# One import per family module (each registers its presets).
from . import regression as regression  # noqa: E402
from . import word2vec as word2vec  # noqa: E402
from . import barlow_twins as barlow_twins  # noqa: E402
from . import modular as modular  # noqa: E402
from . import attention as attention  # noqa: E402
from . import deep_relu as deep_relu  # noqa: E402
