"""The README's code runs as printed, and asserts what it claims."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _python_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_your_own_model_example_runs_and_agf_matches_the_flow():
    blocks = _python_blocks(_section("Your own model"))
    assert len(blocks) == 2
    namespace: dict = {}
    exec(compile(blocks[1], "README.md (Your own model)", "exec"), namespace)  # asserts inside
    table = namespace["table"]
    assert len(table) == 2  # two teacher neurons: two steps, both matched
    # The one-line activations build networks of the stated degree.
    import jax

    import saddlestep as ss
    exec(compile(blocks[0], "README.md (activations)", "exec"), {"ss": ss, "jax": jax})


def test_using_it_from_python_runs_as_printed():
    import matplotlib

    matplotlib.use("Agg")
    block = _python_blocks(_section("Using it"))[0]
    namespace: dict = {}
    exec(compile(block, "README.md (Using it)", "exec"), namespace)
    assert len(namespace["steps"]) == 5 == namespace["prediction"].num_steps
    assert "norms" in namespace["norms"].observables
    assert {"t", "loss"} <= set(namespace["table"].columns)
    assert namespace["gd"].label.startswith("gd")
