"""``edge-compile``: quantize, check and compile models for the Edge TPU.

``edge-compile MODEL...`` (no subcommand) compiles, so ``make compile MODEL=...`` works;
``edge-compile quantize`` and ``edge-compile inspect`` are subcommands.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, List, Optional, Tuple

import click

from compiler import calibration
from compiler.errors import CalibrationError, CompilerError
from release_contract.exits import MappedErrorsGroup

DEFAULT_OUT = Path("models")


class DefaultGroup(MappedErrorsGroup):
    """A group that runs ``compile`` when the first argument is not a subcommand; the package's
    errors become one line and their exit code (see :mod:`release_contract.exits`)."""

    default_command = "compile"
    roots = (CompilerError,)

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        """Insert the default command unless a subcommand or a group option comes first."""
        i = 0
        while i < len(args) and args[i] in ("-v", "-vv", "-vvv", "--verbose"):
            i += 1
        rest = args[i:]
        if rest and rest[0] not in self.commands and rest[0] not in ("--help", "-h", "--version"):
            args = [*args[:i], self.default_command, *rest]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgetpu-fleet", prog_name="edge-compile")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Quantize, check and compile image classifiers for the Coral Edge TPU.

    \b
    Examples:
      edge-compile models/mobilenet_int8.tflite            # compile into models/
      edge-compile a.tflite b.tflite -o out/ -m 13         # co-compile, runtime 13
      edge-compile inspect model.tflite --json             # pre-flight, no compiler needed
      edge-compile quantize model.keras --calib photos/ --range [-1,1]
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


@main.command("compile")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder for *_edgetpu.tflite, the log and the JSON report.",
)
@click.option("-m", "--min-runtime-version", type=int, help="Oldest Edge TPU runtime to support (compiler -m).")
@click.option("-a", "--enable-multiple-subgraphs", is_flag=True, help="Compile each subgraph (compiler -a).")
@click.option("-d", "--search-delegate", is_flag=True, help="Search for a delegate that compiles (compiler -d).")
@click.option("-k", "--delegate-search-step", type=int, help="Step of the -d search (compiler -k).")
@click.option("-n", "--num-segments", type=int, help="Split into N segments for pipelining (compiler -n).")
@click.option("-i", "--intermediate-tensors", help="Comma-separated tensors to end the graph at (compiler -i).")
@click.option("-t", "--timeout-sec", type=int, help="Compiler timeout in seconds (compiler -t, default 180).")
@click.option(
    "-s",
    "--show-operations",
    is_flag=True,
    help="Accepted for the compiler's habit; the operation table is always shown.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "local", "docker"]),
    default="auto",
    show_default=True,
    help="Where the compiler runs: the local binary, the compiler image, or local first.",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    envvar="EDGE_COMPILE_CACHE_DIR",
    help="Compile cache [default: $XDG_CACHE_HOME/edgetpu-fleet/compile].",
)
@click.option("--no-cache", is_flag=True, help="Always run the compiler.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compile_cmd(
    models: Tuple[Path, ...],
    out_dir: Path,
    min_runtime_version: Optional[int],
    enable_multiple_subgraphs: bool,
    search_delegate: bool,
    delegate_search_step: Optional[int],
    num_segments: Optional[int],
    intermediate_tensors: Optional[str],
    timeout_sec: Optional[int],
    show_operations: bool,
    backend: str,
    cache_dir: Optional[Path],
    no_cache: bool,
    as_json: bool,
) -> None:
    """Compile MODELS (int8 .tflite) with edgetpu_compiler; several = co-compilation.

    \b
    Runs edgetpu_compiler from PATH, else in the image built from Dockerfile.compiler.
    Writes <name>_edgetpu.tflite, <name>_edgetpu.log and <name>_edgetpu.json (report
    with the inputs' digests) to --out. The same inputs, compiler and options are
    compiled once: later runs come from the cache.

    \b
    Examples:
      edge-compile model_int8.tflite
      edge-compile model_int8.tflite -o build/ -m 13 -t 600
      edge-compile cam_a.tflite cam_b.tflite --backend docker
    """
    from compiler import crosscheck, edgetpu, report, run
    from compiler.cache import CompileCache

    predictions = crosscheck.preflight(models)
    for model, pre in predictions.items():
        for line in crosscheck.summary(model, pre, min_runtime_version):
            click.echo(line, err=True)
    options = edgetpu.CompileOptions(
        min_runtime_version=min_runtime_version,
        enable_multiple_subgraphs=enable_multiple_subgraphs,
        search_delegate=search_delegate,
        delegate_search_step=delegate_search_step,
        num_segments=num_segments,
        intermediate_tensors=intermediate_tensors,
        timeout_sec=timeout_sec,
    )
    run.check_models(models)
    cache = None if no_cache else CompileCache(cache_dir or _default_cache_dir())
    outcome = run.compile_models(models, out_dir, options, edgetpu.find_backend(backend), cache)
    checks = {}
    for model, compiled, model_report in zip(models, outcome.outputs, outcome.report.models):
        if model in predictions:
            diffs = crosscheck.differences(predictions[model], model, compiled, model_report.operations)
            checks[str(model)] = diffs
            verdict = "differs from the compiler:" if diffs else "agrees with the compiler"
            click.echo(f"prediction for {model} {verdict}", err=True)
            for line in diffs:
                click.echo(f"  {line}", err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **outcome.report.to_dict(),
                    "cached": outcome.cached,
                    "report_files": [str(p) for p in outcome.report_files],
                    "prediction_differences": checks,
                },
                indent=2,
            )
        )
        return
    click.echo(report.render(outcome.report))
    where = "from the cache" if outcome.cached else f"with the {outcome.backend} compiler"
    for out, rep in zip(outcome.outputs, outcome.report_files):
        click.echo(f"wrote {out} and {rep.name} ({where})")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgetpu-fleet" / "compile"


@main.command("inspect")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
def inspect_cmd(models: Tuple[Path, ...], as_json: bool) -> None:
    """Predict what runs on the Edge TPU, without the compiler (any OS).

    \b
    Shows whether the model is quantized, each operator's version and predicted status
    in the compiler's words, where the graph is cut, and whether the parameters fit the
    ~8 MiB on-chip cache. Exit status 0 when every model is compilable, 1 otherwise.

    \b
    Examples:
      edge-compile inspect models/digits_int8.tflite
      edge-compile inspect model.tflite --json | jq .cut
    """
    from compiler import inspect

    reports = [inspect.inspect_file(m) for m in models]
    if as_json:
        payload: Any = [r.to_dict() for r in reports]
        click.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        click.echo("\n\n".join(inspect.render(r) for r in reports))
    if not all(r.compilable for r in reports):
        sys.exit(1)


def _parse_size(value: Optional[str]) -> Optional[Tuple[int, int]]:
    if not value:
        return None
    parts = value.replace("x", ",").split(",")
    try:
        h, w = (int(parts[0]), int(parts[-1]))
    except ValueError as exc:
        raise CalibrationError(f"--input-size must be H,W (e.g. 224,224), not {value!r}") from exc
    return h, w


@main.command("quantize")
@click.argument("source")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output .tflite [default: models/<name>_int8.tflite].",
)
@click.option("--calib", required=False, help="Folder of calibration images, or 'random' (noise).")
@click.option(
    "--calib-count",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Use at most N calibration images.",
)
@click.option(
    "--eval",
    "eval_dir",
    type=click.Path(path_type=Path),
    help="Images for the fidelity check [default: a held-back fifth of --calib].",
)
@click.option(
    "--range",
    "preset",
    type=click.Choice(sorted(calibration.PRESETS)),
    help="The model's input range: [-1,1], [0,1] or [0,255].",
)
@click.option("--mean", type=float, help="Input normalization: (pixel - mean) / std.")
@click.option("--std", type=float, help="Input normalization: (pixel - mean) / std.")
@click.option(
    "--io-type",
    type=click.Choice(["uint8", "int8"]),
    default="uint8",
    show_default=True,
    help="Type of the quantized model's input and output.",
)
@click.option("--input-size", help="H,W when the model's input size is not fixed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def quantize_cmd(
    source: str,
    output: Optional[Path],
    calib: Optional[str],
    calib_count: int,
    eval_dir: Optional[Path],
    preset: Optional[str],
    mean: Optional[float],
    std: Optional[float],
    io_type: str,
    input_size: Optional[str],
    as_json: bool,
) -> None:
    """Full-integer quantize SOURCE with TensorFlow: a .keras or .h5 file, a SavedModel folder
    (a TF Hub one included), or a TF Hub URL / Kaggle Models handle (downloaded once, then cached).

    \b
    Calibrates on --calib images resized to the model's input, then compares the float
    and the int8 model on --eval images (top-1 agreement, mean score difference).

    \b
    Examples:
      edge-compile quantize flowers.keras --calib photos/ --range [-1,1]
      edge-compile quantize saved_model/ --calib photos/ --eval test/ --io-type int8
      edge-compile quantize tiny.keras --calib random   # smoke test: accuracy meaningless
      edge-compile quantize google/mobilenet-v2/tensorFlow2/100-224-classification/2 --calib photos/ --range [0,1]
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from compiler import hub, quantize

    model = Path(source)
    name = model.name.split(".")[0]
    if not model.exists() and hub.is_hub_reference(source):
        model = hub.resolve(source)
        name = next((p for p in reversed(source.rstrip("/").split("/")) if not p.isdigit()), "model")

    norm = calibration.Normalization.from_options(preset, mean, std)
    calib_images, eval_images, random_count = _calibration_sets(calib, calib_count, eval_dir)
    if calib_images is None:
        click.echo(
            "warning: calibrating on random noise: the model's accuracy after quantization "
            "is meaningless; use --calib DIR for a real model",
            err=True,
        )
    output = output or DEFAULT_OUT / f"{name or 'model'}_int8.tflite"
    result = quantize.quantize(
        model,
        output,
        calib_images,
        eval_images,
        norm,
        io_type,
        _parse_size(input_size),
        random_count,
        progress=_progress,
        calib_root=Path(calib) if calib and calib_images else None,
    )
    if as_json:
        click.echo(
            json.dumps({**asdict(result), "output": str(result.output), "lineage": str(result.lineage)}, indent=2)
        )
        return
    click.echo(
        f"wrote {result.output} (input {'x'.join(map(str, result.input_shape))} {io_type}, "
        f"calibrated on {result.calibration_images} {'random' if result.random_calibration else ''}"
        " images)".replace("  ", " ")
    )
    fid = result.fidelity
    if fid is None:
        click.echo("fidelity: not measured (no evaluation images)")
    else:
        click.echo(
            f"fidelity on {fid.images} images: top-1 agreement {fid.top1_agreement:.1%}, "
            f"mean |score difference| {fid.mean_abs_diff:.4f}"
        )
        if fid.top1_agreement < 0.9:
            click.echo(
                "warning: quantization changed many predictions; check --range/--mean/--std "
                "and use more, representative calibration images",
                err=True,
            )
    click.echo(f"lineage (calibration set digest, fidelity; read by edge-registry push): {result.lineage}")
    click.echo(f"next: edge-compile inspect {result.output} && edge-compile {result.output}")


def _calibration_sets(
    calib: Optional[str], count: int, eval_dir: Optional[Path]
) -> Tuple[Optional[List[Path]], List[Path], int]:
    """(calibration images or None for random, evaluation images, random count)."""
    if calib is None:
        raise CalibrationError(
            "give --calib DIR with images like the ones the model will see "
            "(or --calib random for a smoke test whose accuracy is meaningless)"
        )
    if calib == "random":
        evals = calibration.list_images(eval_dir) if eval_dir else []
        return None, evals, min(count, 100)
    images = calibration.list_images(Path(calib))
    if not images:
        raise CalibrationError(f"no images in {calib} (looked for {', '.join(sorted(calibration.IMAGE_SUFFIXES))})")
    if eval_dir is not None:
        evals = calibration.list_images(eval_dir)
        if not evals:
            raise CalibrationError(f"no images in {eval_dir}")
        return images[:count], evals, 0
    calib_part, held = calibration.split_holdout(images)
    return calib_part[:count], held, 0


def _progress(items: Iterable[Any], total: int) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(items, total=total, desc="calibrating", unit="img", file=sys.stderr, leave=False)
