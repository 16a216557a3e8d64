"""`saddlestep bench`: the flow against discrete gradient descent, side by side, on `linear`.

What it measures (engineering.md §2 has the method):

- accuracy and cost: the flow (Tsit5, rtol 1e-6) against GD (plain update, and `optax.sgd`) at
  learning rates where GD's drop times are off by 1e-3 and 1e-4 (GD's error is an O(η) bias, so
  η is calibrated from one coarse run); wall time, vector-field evaluations, errors, ratios;
- solver steps against ln(1/α);
- ensemble throughput (members/s) against batch size, and compile times.

Drop times are the crossings of each mode strength u_k through half its final value s_k/2,
interpolated by a local cubic, measured against a Dopri8 reference at rtol 1e-12. Runs are timed
on a coarse save grid (saving costs the flow more than its steps do); their accuracy is read from
a second run of the same method on a fine grid (the save grid changes no iterate or step).

The package: `common` (setup, drop times, timing), `linear` (the main sections and the writer),
`stiff_section` (the stiff cases), `agf` (AGF against the flow), `word2vec` (the exact SGNS flow
of the `word2vec` preset), `relu` (a ReLU teacher–student against GD at equal drop-time accuracy).
"""

from .common import drop_times as drop_times, PRESET as PRESET
from .linear import run_bench as run_bench, to_markdown as to_markdown
from .stiff_section import (run_stiff_bench as run_stiff_bench, run_stiff_large as run_stiff_large,
                            stiff_large_markdown as stiff_large_markdown, stiff_markdown as stiff_markdown)
