"""The ``omniroute`` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape

from .router import format_validation_error
from .router.exceptions import ConfigError, OmniError
from .router.settings import Settings, default_config_dir

__all__ = ["app", "main"]

app = typer.Typer(
    name="omniroute",
    help="Event-driven omnichannel message router for customer service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate routing configuration.", no_args_is_help=True)
customers_app = typer.Typer(help="Customer data in Redis.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(topics_app, name="topics")
app.add_typer(customers_app, name="customers")
err = Console(stderr=True, soft_wrap=True, highlight=False)
SECRET_SETTINGS = ("TOKEN", "SECRET", "PASSWORD", "SALT")  # never echoed in an error

ConfigDirOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="configuration directory (default: OMNI_CONFIG_DIR "
                 "or the shipped config/)", file_okay=False),
]


def _settings(config: Path | None = None) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problem = format_validation_error(exc, hide=SECRET_SETTINGS, limit=1)
        err.print(f"[red]invalid environment setting {escape(problem)}[/red]")
        raise typer.Exit(2) from None
    except SettingsError as exc:  # a list that is not JSON: the cause names the variable
        err.print(f"[red]invalid environment setting {escape(str(exc.__cause__ or exc))}[/red]")
        raise typer.Exit(2) from None
    if config is not None:
        settings = settings.model_copy(update={"config_dir": config})
    return settings


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _fail(exc: OmniError, code: int = 2) -> typer.Exit:
    err.print(f"[red]{type(exc).__name__}:[/red] {exc}", markup=True, highlight=False)
    return typer.Exit(code)


def _usage(message: str) -> typer.BadParameter:
    """A wrong combination of options: exit 2 with the message, as click does."""
    return typer.BadParameter(message)


@config_app.command("check")
def config_check(
    directory: Annotated[Path, typer.Argument(help="configuration directory")] = Path("config"),
) -> None:
    """Validate DIR (taxonomy, skill groups, rules); print its version or every problem."""
    from .skills.config import load_config

    try:
        cfg = load_config(directory)
    except ConfigError as exc:
        raise _fail(exc) from None
    tax = cfg.taxonomy
    typer.echo(
        f"{directory}: OK version={cfg.version} categories={len(tax.categories)} "
        f"tags={len(tax.tag_ids())} keywords={tax.keyword_count()} "
        f"groups={len(cfg.groups.groups)} rules={len(cfg.routing.rules)} "
        f"model={cfg.model!r}"
    )


@app.command()
def classify(
    source: Annotated[str, typer.Argument(help="input file, or - for stdin")] = "-",
    config: ConfigDirOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto, text, csv or jsonl")] = "auto",
    with_text: Annotated[bool, typer.Option(help="wrap each decision with its input text")] = False,
) -> None:
    """Dry-run the routing on recorded traffic: one JSON decision per input line."""
    from .classify import InputError, InputFormat, classify_rows, read_rows
    from .router.pipeline import Pipeline
    from .skills.config import load_config

    try:
        input_format = InputFormat(fmt)
    except ValueError:
        err.print(f"[red]--format must be one of {[f.value for f in InputFormat]}, got {fmt!r}")
        raise typer.Exit(2) from None
    try:
        pipeline = Pipeline(load_config(config or default_config_dir()))
    except ConfigError as exc:
        raise _fail(exc) from None
    try:
        stream = sys.stdin if source == "-" else open(source, encoding="utf-8-sig")  # noqa: SIM115
    except OSError as exc:
        err.print(f"[red]cannot read {source}: {exc.strerror}[/red]")
        raise typer.Exit(2) from None
    out = sys.stdout.buffer
    try:
        for line in classify_rows(pipeline, read_rows(stream, input_format), with_text):
            out.write(line + b"\n")
    except InputError as exc:
        err.print(f"[red]{source}: {exc}[/red]")
        raise typer.Exit(2) from None
    except UnicodeDecodeError as exc:
        err.print(f"[red]{source}: not UTF-8 text ({exc.reason} at byte {exc.start})[/red]")
        raise typer.Exit(2) from None
    finally:
        out.flush()
        if stream is not sys.stdin:
            stream.close()


@topics_app.command("create")
def topics_create() -> None:
    """Create every omniroute topic (OMNI_TOPIC_PARTITIONS partitions) where missing."""
    from .admin import ensure_topics

    settings = _settings()
    try:
        created = asyncio.run(ensure_topics(settings))
    except Exception as exc:
        err.print(f"[red]cannot create topics on {settings.kafka_bootstrap}: {exc!r}[/red]")
        raise typer.Exit(1) from None
    typer.echo(f"created {created or 'nothing (all exist)'} on {settings.kafka_bootstrap}")


@customers_app.command("import")
def customers_import(
    path: Annotated[Path, typer.Argument(help="CSV with columns customer_id,tier", dir_okay=False)],
) -> None:
    """Load customer tiers into Redis (hash ``<prefix>:customers:tier``)."""
    from .customers import import_tiers

    settings = _settings()
    try:
        count = asyncio.run(import_tiers(settings, path))
    except OmniError as exc:
        raise _fail(exc) from None
    typer.echo(f"imported {count} customer tiers into {settings.redis_url}")


@app.command()
def worker(loglevel: Annotated[str, typer.Option(help="log level")] = "info") -> None:
    """Run the router worker (faust App) against KAFKA_BOOTSTRAP and REDIS_URL."""
    from .node import run_worker

    _logging(loglevel)
    try:
        run_worker(_settings(), with_http=False, loglevel=loglevel)
    except OmniError as exc:
        raise _fail(exc) from None


@app.command()
def serve(loglevel: Annotated[str, typer.Option(help="log level")] = "info") -> None:
    """Run the adapters' HTTP app (ingest, channel callbacks, /metrics)."""
    from .node import serve as serve_http

    _logging(loglevel)
    try:
        asyncio.run(serve_http(_settings()))
    except OmniError as exc:
        raise _fail(exc) from None


@app.command()
def run(loglevel: Annotated[str, typer.Option(help="log level")] = "info") -> None:
    """Run every component in one process: router worker, HTTP ingest, SLA worker."""
    from .admin import ensure_topics
    from .node import run_worker

    _logging(loglevel)
    settings = _settings()
    try:
        asyncio.run(ensure_topics(settings))
        run_worker(settings, with_http=True, loglevel=loglevel)
    except OmniError as exc:
        raise _fail(exc) from None


@app.command()
def sla(loglevel: Annotated[str, typer.Option(help="log level")] = "info") -> None:
    """Run the SLA worker: deadlines, warnings, breaches, escalation, surge signals."""
    from .sla import run_sla

    _logging(loglevel)
    try:
        asyncio.run(run_sla(_settings()))
    except OmniError as exc:
        raise _fail(exc) from None


@app.command("bench-tagger")
def bench_tagger(
    seconds: Annotated[float, typer.Option(min=0.2, help="seconds per method")] = 2.0,
    config: ConfigDirOpt = None,
) -> None:
    """Tagger msgs/s on the bundled messages vs a regex alternation and a per-keyword loop."""
    from .corpus import bundled_texts
    from .tagger_bench import run_tagger_bench

    path = (config or default_config_dir()) / "taxonomy.yaml"
    try:
        result = run_tagger_bench(bundled_texts(), seconds, taxonomy_path=path)
    except ConfigError as exc:
        raise _fail(exc) from None
    typer.echo(orjson.dumps(result).decode())


@app.command("bench-codec")
def bench_codec(
    messages: Annotated[int, typer.Option("--messages", "-n", min=100,
                                          help="envelopes built from the bundled messages")
                        ] = 2000,
    config: ConfigDirOpt = None,
) -> None:
    """Per-message µs, one core: decode, decide and encode (shipped config and without
    its model), and the codec candidates (msgspec vs orjson) on the same records."""
    from .codec_bench import run_codec_bench

    try:
        result = run_codec_bench(config or default_config_dir(), messages)
    except ConfigError as exc:
        raise _fail(exc) from None
    typer.echo(orjson.dumps(result).decode())


@app.command()
def coverage(
    csv_path: Annotated[Path, typer.Argument(help="labelled CSV (see docs/taxonomy.md)",
                                             dir_okay=False)],
    config: ConfigDirOpt = None,
    split: Annotated[str | None, typer.Option(help="only rows of this split")] = None,
) -> None:
    """Share of labelled complaints that get a category, and of praise that gets one."""
    from .tagger_bench import coverage_report

    path = (config or default_config_dir()) / "taxonomy.yaml"
    try:
        result = coverage_report(csv_path, taxonomy_path=path, split=split)
    except (ConfigError, OSError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    typer.echo(orjson.dumps(result).decode())


@app.command()
def demo(
    messages: Annotated[int, typer.Option(min=1, max=5000, help="messages to replay")] = 400,
    keep_running: Annotated[bool, typer.Option(help="leave the stack up until Ctrl-C")] = False,
) -> None:
    """Embedded broker + Redis, router + ingest; replay real messages; print a summary."""
    from .demo import run_demo

    try:
        run_demo(messages, _settings(), keep_running)
    except OmniError as exc:
        raise _fail(exc, 1) from None


@app.command()
def bench(
    messages: Annotated[int, typer.Option("-n", "--messages", min=1000, help="messages")] = 50_000,
    external: Annotated[bool, typer.Option(help="use KAFKA_BOOTSTRAP/REDIS_URL, not embedded")]
    = False,
    workers: Annotated[int, typer.Option(
        "--workers", min=0, help="also run 1 and N router worker processes in one group")] = 0,
    partitions: Annotated[int, typer.Option(
        "--partitions", min=0, help="partitions of the scaling phases (0: max(4, workers))")] = 0,
) -> None:
    """Router pipeline vs a raw aiokafka loop, same broker, same messages; prints one JSON line."""
    from .bench import run_bench

    try:
        result = run_bench(messages, _settings(), external=external, workers=workers,
                           partitions=partitions)
    except OmniError as exc:
        raise _fail(exc, 1) from None
    typer.echo(orjson.dumps(result).decode())


@app.command()
def schema(
    which: Annotated[str, typer.Argument(
        help="record: envelope, decision, sla-alert, surge-signal, agent-event, chatter, signal"
    )] = "envelope",
) -> None:
    """Print the JSON schema of a topic record (docs/schema/<record>.schema.json)."""
    from .router.schema import RECORDS, json_schema

    try:
        typer.echo(orjson.dumps(json_schema(which), option=orjson.OPT_INDENT_2).decode())
    except KeyError:
        err.print(f"[red]unknown schema {which!r}; use one of: {', '.join(RECORDS)}[/red]")
        raise typer.Exit(2) from None


_LABELLED = Path("tests/data/labelled")


@app.command("eval")
def eval_(
    files: Annotated[list[Path], typer.Argument(help="labelled JSON-lines files")],
    split: Annotated[str | None, typer.Option(help="train, dev or test (default: all)")] = None,
    config: ConfigDirOpt = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="one JSON report per file, one per line")] = False,
    worst: Annotated[int, typer.Option(help="how many worst examples to show", min=0)] = 10,
    keywords_only: Annotated[bool, typer.Option(
        "--keywords-only", help="leave the learned model out")] = False,
    model: Annotated[Path | None, typer.Option(
        help="score with this model file instead of the configuration's")] = None,
    held_out: Annotated[bool, typer.Option(
        "--held-out", help="per FILE, fit a model on its train split alone (the "
        "configuration's keyword margins) and score it on the OTHER files: how the "
        "recipe does on a source it never saw; needs the train extra")] = False,
) -> None:
    """Tagging accuracy per category on labelled messages (see docs/labelling.md)."""
    from .evaluate import Report, evaluate, read_labelled, render
    from .skills.config import load_config
    from .skills.model import load_tag_model
    from .skills.tagger import Tagger

    def emit(report: Report) -> None:
        if as_json:
            sys.stdout.buffer.write(report.to_json() + b"\n")
        else:
            for line in render(report):
                typer.echo(line)

    if sum((keywords_only, model is not None, held_out)) > 1:
        raise _usage("--keywords-only, --model and --held-out exclude each other")
    try:
        cfg = load_config(config or default_config_dir())
        chosen = None if keywords_only else cfg.model
        version = cfg.version + (" keywords only" if keywords_only else "")
        if model is not None:
            chosen = load_tag_model(model)
            version = f"{cfg.version} with model sha256:{chosen.digest}"
        if held_out:
            if len(files) < 2:
                raise _usage("--held-out needs two or more files (one to fit, others to score)")
            from .train import held_out_models

            fitted = held_out_models(files, cfg.taxonomy, cfg.model)
            for source, fitted_model in fitted.items():
                tagger = Tagger(cfg.taxonomy, fitted_model)
                for path in files:
                    if path == source:
                        continue
                    report = evaluate(tagger, read_labelled(path, split),
                                      file=f"{path} (model fitted on {source.name} alone)",
                                      split=split, worst=worst,
                                      config_version=f"model sha256:{fitted_model.digest}")
                    emit(report)
            return
        tagger = Tagger(cfg.taxonomy, chosen)
        for path in files:
            examples = read_labelled(path, split)
            emit(evaluate(tagger, examples, file=str(path), split=split,
                          config_version=version, worst=worst))
    except ConfigError as exc:
        raise _fail(exc) from None
    except ImportError as exc:
        err.print(f"[red]--held-out trains models: pip install 'omniroute[train]' ({exc})")
        raise typer.Exit(2) from None


@app.command()
def train(
    files: Annotated[list[Path] | None, typer.Argument(
        help="labelled JSON-lines files (default: tests/data/labelled/*.jsonl)")] = None,
    config: ConfigDirOpt = None,
    out: Annotated[Path | None, typer.Option(
        help="model file to write (default: CONFIG/tag_model.json)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 20261130,
) -> None:
    """Rebuild the tagger's learned model from the train split; print the dev eval."""
    from .evaluate import evaluate, read_labelled, render
    from .skills.config import load_config
    from .skills.model import MODEL_FILE
    from .skills.tagger import Tagger
    from .train import TrainOptions, check_format
    from .train import train as fit

    directory = config or default_config_dir()
    paths = files or sorted(_LABELLED.glob("*.jsonl"))
    if not paths:
        err.print("[red]no labelled files given and none in tests/data/labelled/[/red]")
        raise typer.Exit(2)
    try:
        cfg = load_config(directory)
        model, figures = fit(paths, cfg.taxonomy, TrainOptions(seed=seed))
    except ConfigError as exc:
        raise _fail(exc) from None
    except ImportError as exc:
        err.print(f"[red]training needs scikit-learn: pip install 'omniroute[train]' ({exc})")
        raise typer.Exit(2) from None
    text = model.dumps()
    check_format(text)
    target = out or directory / MODEL_FILE
    target.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {target}: {figures['ngrams']} n-grams, sha256:{model.digest}")
    tagger = Tagger(cfg.taxonomy, model)
    for path in paths:
        report = evaluate(tagger, read_labelled(path, "dev"), file=str(path), split="dev",
                          config_version=f"model sha256:{model.digest}", worst=0)
        for line in render(report):
            typer.echo(line)


@app.command()
def rehearse(
    scenario: Annotated[str, typer.Argument(
        help="SCENARIO.yaml, or a shipped scenario: livestream-ramp, flash-step, "
             "double11-midnight, payment-outage")],
    out: Annotated[Path, typer.Option(help="directory for timeline.jsonl, chart.png, "
                                           "summary.json")] = Path("rehearsal"),
    chart: Annotated[bool, typer.Option(help="draw chart.png (needs matplotlib)")] = True,
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    config: ConfigDirOpt = None,
) -> None:
    """Rehearse a peak on a virtual clock (pipeline, SLA timers, forecast, simulated agents);
    prints one summary JSON line."""
    from .rehearse import load_scenario, scenario_path
    from .rehearse import rehearse as run_rehearsal

    try:
        sc = load_scenario(scenario_path(scenario))
        if seed is not None:
            sc = sc.model_copy(update={"seed": seed})
        summary = run_rehearsal(sc, out, chart=chart, config_dir=config)
    except ConfigError as exc:
        raise _fail(exc) from None
    except ImportError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    typer.echo(orjson.dumps(summary).decode())


def main() -> None:
    """Console-script entry point."""
    app()
