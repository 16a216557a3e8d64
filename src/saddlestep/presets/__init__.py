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
from . import ssl as ssl  # noqa: E402
from . import degree3 as degree3  # noqa: E402
from . import deep_relu as deep_relu  # noqa: E402
