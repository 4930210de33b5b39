"""``optbench data prepare|list``: a click group the main CLI attaches with ``main.add_command(data)``.

Module import stays cheap (click and the dataset catalog only): numpy, rich and the download code load inside the
commands, so ``optbench --help`` is instant. Errors are :class:`optbench.errors.UsageError` (exit 2 in the main CLI).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from optbench.cli.options import config_options
from optbench.data.catalog import DATASETS, USER_SOURCE
from optbench.data.text import TextOptions
from optbench.data.user import OwnText
from optbench.store.fsutil import is_file

_DATA_DIR_HELP = "Data directory [default: $OPTBENCH_DATA or ~/.cache/optbench]."


def _data_dir_option(f: Any) -> Any:
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=_DATA_DIR_HELP)(f)


@click.group()
def data() -> None:
    """Download, verify and convert datasets (CIFAR-10, WikiText-103, C4) or your own text; list what is
    prepared."""



@data.command()
@click.argument("name", metavar="NAME")
@_data_dir_option
@config_options(TextOptions, param="text")
@click.option("--mirror", metavar="URL", envvar="OPTBENCH_MIRROR", default=None,
              help="Replace the base URL (scheme+host+path) of every source file [env: OPTBENCH_MIRROR].")
@click.option("--force", is_flag=True, help="Prepare again even if an identical preparation exists (text: replace "
                                          "your corpus prepared from other files).")
@config_options(OwnText, param="own")
def prepare(name: str, data_dir: Path | None, text: TextOptions, mirror: str | None, force: bool,
            own: OwnText) -> None:
    """Download NAME, verify its checksum and write it in the form workloads read (see docs/DATA.md).

    \b
    NAME 'text' prepares your own corpus instead, tokenized like the published text, and the lm workload
    trains on it (uncalibrated targets):
      optbench data prepare text --name mycorpus --train train.txt --valid valid.txt
      optbench run -w optbench_workloads.lm:lm --size tiny@mycorpus
    NAME 'synthetic' writes a synthetic token corpus (no download) standing in for wikitext103 and c4 in a
    --data-dir of its own, for the LM recipes of docs/RESEARCH.md:
      optbench data prepare synthetic --data-dir data-synthetic
    """
    from optbench import data as datasets
    from optbench.errors import UsageError

    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    if name == "synthetic":
        _only_data_dir(name, text=text, mirror=mirror, force=force, own=own)
        from optbench.data.synthetic import prepare_synthetic

        click.echo(prepare_synthetic(data_dir, log=log))
        return
    if name == "text":
        if own.dataset is None:
            raise UsageError("optbench data prepare text needs --name NAME (what workloads call your corpus)")
        if mirror and os.environ.get("OPTBENCH_MIRROR") != mirror:
            raise UsageError("--mirror applies to published datasets; your own text is read from its files")
        manifest = datasets.prepare_user_text(
            own.dataset, train=own.train, valid=own.valid, test=own.test, archive=own.archive, sha256=own.sha256,
            data_dir=data_dir, text=text, documents=own.documents, force=force, log=log)
        name = own.dataset
    else:
        given = own.given()
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UsageError(f"{', '.join(given)} {verb} to 'optbench data prepare text' (your own corpus), not to "
                             f"{name}")
        manifest = datasets.prepare(name, data_dir=data_dir, mirror=mirror, text=text, force=force,
                                    progress=sys.stderr.isatty(), log=log)
    click.echo(f"{name}: {contents(manifest)} in {datasets.dataset_dir(name, data_dir)}")


def _only_data_dir(name: str, *, text: TextOptions, mirror: str | None, force: bool, own: OwnText) -> None:
    """A usage error naming the options that do not apply to ``name`` (whose only option is --data-dir)."""
    from optbench.errors import UsageError

    given = [*own.given(), *(["--tokens/--vocab-size/--tokenizer"] if text != TextOptions() else []),
             *(["--mirror"] if mirror and os.environ.get("OPTBENCH_MIRROR") != mirror else []),
             *(["--force"] if force else [])]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise UsageError(f"{', '.join(given)} {verb} not to 'optbench data prepare {name}' (its only option is "
                         "--data-dir; delete a dataset folder to write it again)")


@data.command(name="list")
@_data_dir_option
def list_(data_dir: Path | None) -> None:
    """Show every dataset: prepared or not, where, counts and checksums (or the command that prepares it)."""
    from optbench.console import console
    from rich.table import Table

    from optbench import data as datasets
    from optbench.store import paths
    from optbench.data.catalog import MANIFEST
    from optbench.errors import DataMissingError

    table = Table(title=_text(f"datasets in {paths.data_dir(data_dir)}"), title_justify="left")
    for column in ("dataset", "status", "path", "contents", "checksums"):
        table.add_column(column, overflow="fold")
    from optbench.data.user import user_datasets

    for name in [*DATASETS, *user_datasets(paths.data_dir(data_dir))]:
        folder = _text(datasets.dataset_dir(name, data_dir))
        try:
            manifest = datasets.read_manifest(name, data_dir)
        except DataMissingError as exc:
            if is_file(datasets.dataset_dir(name, data_dir) / MANIFEST):  # damaged or incomplete: say why
                table.add_row(name, "[yellow]incomplete[/yellow]", folder, _text(exc), "-")
            else:
                table.add_row(name, "[yellow]not prepared[/yellow]", folder,
                              _text(f"run: {datasets.prepare_command(name, data_dir)}"), "-")
            continue
        table.add_row(name, "[green]prepared[/green]", folder, _text(contents(manifest)),
                      _text(checksums(manifest)))
    console(pipe_width=200).print(table)  # piped: rows kept on one line


def _text(value: Any) -> str:
    """User text (paths, manifest contents) as rich prints it literally: "[red]" in a folder name stays text, and
    undecodable bytes of a path show as escapes instead of failing the print."""
    from rich.markup import escape

    from optbench.store.fsutil import printable

    return escape(printable(str(value)))


def contents(manifest: dict[str, Any]) -> str:
    """One line of counts: images per split, or tokens per split with the tokenizer."""
    if manifest.get("kind") == "images":
        return " · ".join(f"{k} {v:,}" for k, v in manifest.get("counts", {}).items()) + " images"
    splits = " · ".join(f"{k} {v['tokens']:,}" for k, v in manifest.get("splits", {}).items())
    tok = manifest.get("tokenizer", {})
    return f"{splits} tokens ({manifest.get('dtype')}, {tok.get('kind')} vocab {tok.get('vocab_size')})"


def checksums(manifest: dict[str, Any], *, show: int = 2) -> str:
    """The downloads' checksums (first 16 hex digits; manifest.json has them whole): the published one where it was
    verified, else the sha256 recorded at download time."""
    lines = []
    for s in manifest.get("sources", []) if manifest.get("source") == USER_SOURCE else []:  # three at most
        lines.append(f"{s['file']}: sha256 {s['sha256'][:16]}… user-supplied, not verified")
    downloads = manifest.get("downloads", [])
    for d in downloads[:show]:
        if d.get("published_checksum"):
            algo, _, hexdigest = d["published_checksum"].partition(":")
            lines.append(f"{d['file']}: {algo} {hexdigest[:16]}… published, verified")
        else:
            lines.append(f"{d['file']}: sha256 {d['sha256'][:16]}… recorded")
    if len(downloads) > show:
        lines.append(f"+{len(downloads) - show} more in manifest.json")
    return "\n".join(lines) or "-"
