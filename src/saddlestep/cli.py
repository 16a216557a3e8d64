"""The `saddlestep` command line (DESIGN.md: the commands and the files they write are a contract)."""

from __future__ import annotations

import argparse
import contextvars
import json
import math
import os
import re
import signal
import sys
import threading
import warnings


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # So that `--init-scale -1e-3` reaches our validation instead of reading as an option.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message):  # one readable line, status 2
        self.exit(2, f"saddlestep: error: {message}\n")


def _parse_sets(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set: expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="a preset name (see `saddlestep list`)")
    p.add_argument("--init-scale", dest="init_scale", default=None, help="init scale α (default: the preset's)")
    p.add_argument("--seed", default="0", help="seed of the model's initialization (default 0)")
    p.add_argument("--data", default=None, help="your data file (see `saddlestep list` for what each preset takes)")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE", help="override a preset parameter")


def _writer(p: argparse.ArgumentParser, help: str, **kwargs) -> None:
    p.add_argument("--out", help=help, **kwargs)
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace an earlier saddlestep output at --out (files saddlestep did not write are never touched)",
    )


def _debug_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error (also SADDLESTEP_DEBUG=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="saddlestep", description="Gradient flow from small initialization, beside its theory.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also SADDLESTEP_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="the presets, one line each; with a name, one preset in full")
    p.add_argument("preset", nargs="?", default=None, help="a preset to show with its --set parameters")

    p = sub.add_parser("run", help="simulate the flow; predict too where the preset has a predictor")
    _common(p)
    _writer(p, "run folder (default runs/PRESET-aALPHA-sSEED)", default=None)

    p = sub.add_parser("predict", help="the prediction only (AGF or closed form), no simulation")
    _common(p)
    _writer(p, "folder for prediction.json (default: print only)", default=None)

    p = sub.add_parser("converge", help="the flow at several α against the prediction")
    _common(p)
    p.add_argument("--init-scales", dest="init_scales", required=True, help="comma-separated α values")
    _writer(p, "output folder (default runs/PRESET-converge)", default=None)

    p = sub.add_parser("sweep", help="many runs over a grid; resumable")
    _common(p)
    # None until given: a --seed beside a seed axis is refused, and only a value the user typed is one.
    p.set_defaults(seed=None)
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2|A:B", help="a grid axis")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    _writer(p, "sweep folder (an earlier sweep there is resumed; with --overwrite, replaced)", required=True)

    p = sub.add_parser("bench", help="speed and accuracy against discrete GD")
    p.add_argument("--quick", action="store_true", help="a reduced run (10–15 minutes on 2 CPU cores)")
    _writer(p, "folder for bench.json and bench.md", required=True)

    p = sub.add_parser("figures", help="regenerate the gallery")
    _writer(p, "folder (default figures/; its own files are regenerated in place)", default="figures")
    for action in sub.choices.values():
        _debug_flag(action)
    return parser


def _cmd_list(args) -> int:
    from .presets import all_presets, get_preset

    if args.preset is not None:
        _describe(get_preset(args.preset))
        return 0
    presets = all_presets()
    width = max(len(n) for n in presets)
    for name in sorted(presets):
        p = presets[name]
        predicts = f"  [predicts: {p.predictor}]" if p.predictor else "  [no predictor]"
        keys = f"  [--set {', '.join(p.all_defaults)}]"
        took = f"  [≈ {p.runtime_s:.0f} s]" if p.runtime_s else ""
        data = f"  [--data: {p.data_help}]" if p.data_help else ""
        print(f"{name:<{width}}  α={p.init_scale:g}{took}  {p.description}{predicts}{keys}{data}")
    print("\n`saddlestep list PRESET` shows a preset's --set parameters and their defaults; times are the"
          " default run on 2 CPU cores.")
    return 0


def _describe(preset) -> None:
    print(f"{preset.name}: {preset.description}")
    print(f"  default α (--init-scale): {preset.init_scale:g}")
    if preset.runtime_s:
        print(f"  default run: ≈ {preset.runtime_s:.0f} s on 2 CPU cores")
    print(f"  prediction: {preset.predictor or 'none (simulation only)'}")
    print(f"  --data: {preset.data_help or 'not accepted'}")
    print("  --set parameters (defaults):")
    width = max(len(k) for k in preset.all_defaults)
    for key, value in preset.all_defaults.items():
        shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, tuple) else value
        print(f"    {key:<{width}} = {shown}" + ("   (set by --data when given)" if key in preset.data_sets else ""))
    print("  discrete training instead of the flow: --set optimizer=gd|sgd|adam --set learning_rate=…")


def _check_arguments(args, overrides: dict[str, str]) -> None:
    """Refuse a bad preset name, --set, --init-scale or --seed before JAX is imported (instant)."""
    from .presets import get_preset
    from .validate import check_init_scale, check_seed

    preset = get_preset(args.preset)
    preset.parameters(overrides, data=args.data)
    if args.init_scale is not None:
        check_init_scale(args.init_scale, "--init-scale")
    check_seed(args.seed, "--seed")
    if args.data is not None and preset.data_help is None:
        raise ValueError(f"--data: preset {args.preset!r} takes no data file")


def _default_out(args, suffix: str = "") -> str:
    from .presets import get_preset

    alpha = args.init_scale if args.init_scale is not None else f"{get_preset(args.preset).init_scale:g}"
    return os.path.join("runs", f"{args.preset}-a{alpha}-s{args.seed}{suffix}")


def _cmd_run(args) -> int:
    overrides = _parse_sets(args.sets)
    _check_arguments(args, overrides)
    from .runs import run_preset

    out = args.out or _default_out(args)
    result = run_preset(
        args.preset, init_scale=args.init_scale, seed=args.seed, data=args.data, overrides=overrides,
        out=out, overwrite=args.overwrite, progress=None,
    )
    _print_result(result)
    return 0


def _print_result(result) -> None:
    from .steps import compare, steps_table

    s = result.summary
    solver = s["solver"]
    print(
        f"{s['preset']}: α={s['init_scale']:g} seed={s['seed']}  {solver['name']}: {solver['steps']} steps, "
        f"status {solver['status']}, t_final={solver['t_final']:.6g}, {s['wall_time_s']:.2f} s"
    )
    table = steps_table(result.steps)
    print(f"{len(result.steps)} steps:" if len(result.steps) else "no steps detected")
    if len(result.steps):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    if result.prediction is not None:
        cols = ["step", "kind", "feature_predicted", "feature_simulated", "rescaled_predicted", "rescaled_simulated",
                "time_rel_error", "loss_predicted", "loss_simulated"]
        rows = compare(result.steps, result.prediction)[cols]
        if len(rows):
            print(f"\nprediction ({result.prediction.method}) vs simulation:")
            print(rows.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
        else:
            print(f"\nprediction ({result.prediction.method}): no step predicted or simulated to compare")
    for line in s.get("warnings", []):
        print(f"warning: {line}")
    if result.folder:
        print(f"\nwrote {result.folder}")


def _cmd_predict(args) -> int:
    overrides = _parse_sets(args.sets)
    _check_arguments(args, overrides)
    from .presets import get_preset

    if not get_preset(args.preset).predictor:
        raise ValueError(f"preset: {args.preset!r} has no predictor (see `saddlestep list` for those that do)")
    from .outputs import atomic_write_text, check_out, output_folder
    from .runs import prepare

    if args.out:
        check_out(args.out, kind="predict", overwrite=args.overwrite)
    from .progress import phase

    preset, params, setup, init_scale, seed = prepare(
        args.preset, init_scale=args.init_scale, seed=args.seed, data=args.data, overrides=overrides, progress=True
    )
    if setup.predict is None:
        # The preset predicts, but not with these settings (e.g. a closed form for one loss only).
        given = " ".join(f"--set {k}={v}" for k, v in overrides.items())
        raise ValueError(f"preset: {args.preset!r} predicts {preset.predictor}, which does not cover "
                         f"{given or 'these settings'} (see `saddlestep list {args.preset}`)")
    with phase(f"{preset.name}: predicting", enabled=not setup.predict.done):
        pred = setup.predict()
    print(f"{preset.name}: α={init_scale:g} seed={seed}  prediction ({pred.method}):")
    print(f"  plateau 0: loss {pred.initial_loss:.6g}")
    for k in range(pred.num_steps):
        print(
            f"  step {k + 1}: t={pred.times[k]:.6g}  t/ln(1/α)={pred.rescaled_times[k]:.6g}  "
            f"loss after {pred.losses[k]:.6g}  feature {pred.order[k]}"
        )
    if args.out:
        with output_folder(args.out, kind="predict", overwrite=args.overwrite) as tmp:
            atomic_write_text(os.path.join(tmp, "prediction.json"), pred.dumps() + "\n")
        print(f"wrote {os.path.join(os.path.abspath(args.out), 'prediction.json')}")
    return 0


def _cmd_converge(args) -> int:
    from .presets import get_preset

    if args.init_scale is not None:
        raise ValueError("--init-scale: converge takes its scales from --init-scales; give one of them")
    overrides = _parse_sets(args.sets)
    _check_arguments(args, overrides)
    if not get_preset(args.preset).predictor:
        # Converging needs a limit to converge to (AGF's own fallback needs a neuron view these lack).
        raise ValueError(f"converge: preset {args.preset!r} has no prediction to converge to (its predictor: none); "
                         f"use saddlestep run or sweep")
    from .runs import converge_preset

    alphas = []
    for text in args.init_scales.split(","):
        try:
            alphas.append(float(text))
        except ValueError:
            raise ValueError(f"--init-scales: expected comma-separated numbers, got {text!r}") from None
    out = args.out or os.path.join("runs", f"{args.preset}-converge")
    df = converge_preset(args.preset, alphas, seed=args.seed, data=args.data, overrides=overrides, out=out,
                         overwrite=args.overwrite)
    per_step = df.groupby("step").first()[["feature", "predicted", "slope", "slope_error"]]
    bound = " (the predicted slopes are lower bounds)" if "kind" in df and (df["kind"] == "lower-bound").all() else ""
    print(f"{args.preset}: slopes dt_k/d{_clock_name(df)} over α = {', '.join(f'{a:g}' for a in sorted(set(df['init_scale'])))}"
          f"{bound}")
    print(per_step.to_string(float_format=lambda v: f"{v:.5g}"))
    print(f"\nwrote {os.path.abspath(out)}")
    return 0


def _clock_name(df) -> str:
    """The clock `converge` took its slopes against: ln(1/α), or α^{2−κ} for degree κ > 2 (1/α at κ = 3)."""
    alpha, clock = float(df["init_scale"].iloc[0]), float(df["clock"].iloc[0])
    if math.isclose(clock, math.log(1.0 / alpha), rel_tol=1e-9):
        return "ln(1/α)"
    power = round(math.log(clock) / math.log(alpha))  # 2 − κ
    return "(1/α)" if power == -1 else f"(α^{power})"


def _cmd_sweep(args) -> int:
    try:
        from .sweep import parse_grid, sweep
    except ImportError:
        raise ValueError("sweep: sweeps are not available in this version") from None
    overrides = _parse_sets(args.sets)
    grid = parse_grid(args.grid, args.preset)
    sweep(args.preset, grid, overrides=overrides, executor=args.executor, out=args.out, data=args.data,
          init_scale=args.init_scale, seed=args.seed, overwrite=args.overwrite)
    return 0


def _cmd_bench(args) -> int:
    try:
        from .bench import run_bench
    except ImportError:
        raise ValueError("bench: benchmarks are not available in this version") from None
    run_bench(args.out, quick=args.quick, overwrite=args.overwrite)
    return 0


def _cmd_figures(args) -> int:
    try:
        from .figures import make_figures
    except ImportError:
        raise ValueError("figures: the gallery is not available in this version") from None
    make_figures(args.out)
    return 0


_COMMANDS = {
    "list": _cmd_list, "run": _cmd_run, "predict": _cmd_predict, "converge": _cmd_converge,
    "sweep": _cmd_sweep, "bench": _cmd_bench, "figures": _cmd_figures,
}


# The signal that ended the command (SIGTERM raises KeyboardInterrupt too): the exit status is
# 128 + its number, as a shell reports a process it ends (130 for Ctrl-C, 143 for SIGTERM).
_ENDED_BY = [signal.SIGINT]


def _terminate(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so half-written temporaries are removed on the way out.
    _ENDED_BY[0] = signum
    raise KeyboardInterrupt


def _off_the_main_thread(fn):
    """`fn()` in a worker thread while the main thread waits in short naps: Python runs signal
    handlers only on the main thread, between bytecodes, and a compiled solve holds its thread
    inside XLA until it returns, so Ctrl-C or SIGTERM would otherwise wait for the whole solve."""
    context = contextvars.copy_context()  # the `reporting` block the command runs in
    box: dict = {}

    def work():
        try:
            box["value"] = context.run(fn)
        except BaseException as err:  # noqa: BLE001 - re-raised on the main thread below
            box["error"] = err

    worker = threading.Thread(target=work, name="saddlestep-command", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if "error" in box:
        raise box["error"]
    return box["value"]


# Where compiled XLA programs persist between runs of the command line, unless
# SADDLESTEP_CACHE_DIR names another folder (or "off") or JAX_COMPILATION_CACHE_DIR is set.
_CACHE_ENV = "SADDLESTEP_CACHE_DIR"
_CACHE_MAX_BYTES = 512 * 2**20


def compilation_cache_dir() -> str | None:
    """The folder the command line keeps compiled programs in, or None for none.

    Every run compiles the flow, the predictor and the plots' helpers again (seconds each on a
    laptop); JAX's persistent compilation cache keeps them on disk, keyed by the program and the
    JAX version, so a second run of the same shapes skips compilation. The library itself never
    turns it on: that is a process-wide setting for whoever imports JAX.

    **Returns:** the folder `jax` in `$SADDLESTEP_CACHE_DIR`, else in `$XDG_CACHE_HOME/saddlestep`
    (default `~/.cache/saddlestep/jax`); None when `SADDLESTEP_CACHE_DIR` is `off` (or empty, `0`,
    `none`) or JAX's own `JAX_COMPILATION_CACHE_DIR` is set (JAX then uses that).
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    path = os.environ.get(_CACHE_ENV)
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "saddlestep")
    if path.strip().lower() in ("", "off", "0", "none", "false"):
        return None
    # A folder of its own: JAX evicts the oldest `*-cache` files of the folder it is given.
    return os.path.join(path, "jax")


def _use_compilation_cache() -> None:
    path = compilation_cache_dir()
    if path is None:
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return  # an unwritable cache only costs compilation time
    if not os.access(path, os.W_OK):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    # Small programs too: a run compiles dozens of 0.05–0.2 s programs (the predictor's phases).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", _CACHE_MAX_BYTES)  # least recently used go


def main(argv: list[str] | None = None) -> int:
    from .progress import reporting

    args = build_parser().parse_args(argv)
    if argv is None and args.command not in ("list", "bench"):
        # `bench` times compilation as part of each measurement, so it compiles afresh.
        _use_compilation_cache()
    debug = getattr(args, "debug", False) or os.environ.get("SADDLESTEP_DEBUG", "") not in ("", "0")
    if argv is None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    command = lambda: _COMMANDS[args.command](args)
    if argv is None:
        # A warning is one line, as the run's own are (not Python's file:line and source echo).
        warnings.formatwarning = lambda message, *rest, **kw: warning_line(args.command, str(message))
    # Ray sets its own SIGTERM handler, and only from the main thread.
    threaded = argv is None and args.command != "list" and getattr(args, "executor", "local") != "ray"
    if threaded:
        # The command draws off the main thread, where GUI backends may not: it only writes files.
        import matplotlib

        matplotlib.use("Agg")
    try:
        with reporting(args.command != "list"):
            return _off_the_main_thread(command) if threaded else command()
    except BrokenPipeError:
        # The reader went away (`saddlestep list | head`): nothing more to say, and no error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        status = 128 + int(_ENDED_BY[0])
        print("saddlestep: interrupted" if _ENDED_BY[0] == signal.SIGINT else "saddlestep: interrupted (terminated)",
              file=sys.stderr)
        if argv is None:
            # The command's thread cannot be unwound: remove what its writers had half-written, and
            # skip the interpreter's teardown, which can crash while XLA's threads are mid-computation.
            from .outputs import remove_temporaries

            remove_temporaries()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        return status
    except Exception as err:  # noqa: BLE001 - every error a user can cause ends in one line
        if debug:
            raise
        print(f"saddlestep: error: {_one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, (ValueError, OSError, json.JSONDecodeError, UnicodeError)) else 1


# The library's errors name its Python arguments; here they become the flags a user typed.
FLAGS = {"overrides": "--set", "data": "--data", "init_scale": "--init-scale", "init_scales": "--init-scales",
         "seed": "--seed", "grid": "--grid", "out": "--out", "executor": "--executor"}


def warning_line(command: str, message: str) -> str:
    """A library warning as the command line shows it: one line, its argument named by the flag
    that command takes (`converge` and `sweep` take α from --init-scales and --grid init_scale=…)."""
    alphas = {"converge": "init_scales", "sweep": "grid init_scale"}.get(command)
    if alphas and message.startswith("init_scale:"):
        message = f"{alphas}:{message.partition(':')[2]}"
    return f"saddlestep: warning: {in_flags(message)}\n"


def in_flags(message: str) -> str:
    """`message` with its leading argument named by its flag: `overrides p: …` → `--set p: …`,
    `init_scale: …` → `--init-scale: …`; `overwrite=True` → `--overwrite`."""
    head, colon, rest = message.partition(":")
    first, space, more = head.partition(" ")
    if colon and first in FLAGS:
        message = f"{FLAGS[first]}{space}{more}{colon}{rest}"
        # "… choose a new out" names the same argument again.
        message = re.sub(rf"(new|another) {re.escape(first)}$", rf"\1 {FLAGS[first]}", message)
    return message.replace("overwrite=True", "--overwrite")


def _one_line(err: Exception) -> str:
    from .outputs import errno_message

    if isinstance(err, OSError):
        text = errno_message(err)
    elif isinstance(err, ValueError):
        text = in_flags(str(err))
    else:
        text = f"{type(err).__name__}: {err} (an internal error: rerun with --debug for the traceback and report it)"
    return " ".join(text.split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
