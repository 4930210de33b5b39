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

from optbench.data.catalog import DATASETS
from optbench.fsutil import is_file

_DATA_DIR_HELP = "Data directory [default: $OPTBENCH_DATA or ~/.cache/optbench]."


def _data_dir_option(f: Any) -> Any:
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=_DATA_DIR_HELP)(f)


@click.group()
def data() -> None:
    """Download, verify and convert datasets (CIFAR-10, WikiText-103, C4); list what is prepared."""


@data.command()
@click.argument("name", metavar="NAME")
@_data_dir_option
@click.option("--tokens", type=click.IntRange(min=1), default=None,
              help="Text: train tokens to write (C4 downloads only the shards they need) "
                   "[default: all for wikitext103, 100M for c4].")
@click.option("--vocab-size", type=click.IntRange(min=257), default=8192, show_default=True,
              help="Text: vocabulary of the byte-level BPE trained when GPT-2's tokenizer is not available.")
@click.option("--tokenizer", type=click.Choice(["auto", "gpt2", "bpe"]), default="auto", show_default=True,
              help="Text: auto = GPT-2 via tiktoken if it loads offline, else train a BPE.")
@click.option("--mirror", metavar="URL", envvar="OPTBENCH_MIRROR", default=None,
              help="Replace the base URL (scheme+host+path) of every source file [env: OPTBENCH_MIRROR].")
@click.option("--force", is_flag=True, help="Prepare again even if an identical preparation exists.")
def prepare(name: str, data_dir: Path | None, tokens: int | None, vocab_size: int, tokenizer: str,
            mirror: str | None, force: bool) -> None:
    """Download NAME, verify its checksum and write it in the form workloads read (see docs/DATA.md)."""
    from optbench import data as datasets
    from optbench.data.text import TextOptions

    options = TextOptions(tokens=tokens, vocab_size=vocab_size, tokenizer=tokenizer)
    manifest = datasets.prepare(
        name, data_dir=data_dir, mirror=mirror, text=options, force=force, progress=sys.stderr.isatty(),
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(f"{name}: {contents(manifest)} in {datasets.dataset_dir(name, data_dir)}")


@data.command(name="list")
@_data_dir_option
def list_(data_dir: Path | None) -> None:
    """Show every dataset: prepared or not, where, counts and checksums (or the command that prepares it)."""
    from rich.console import Console
    from rich.table import Table

    from optbench import data as datasets
    from optbench import paths
    from optbench.data.catalog import MANIFEST
    from optbench.errors import DataMissingError

    table = Table(title=_text(f"datasets in {paths.data_dir(data_dir)}"), title_justify="left")
    for column in ("dataset", "status", "path", "contents", "checksums"):
        table.add_column(column, overflow="fold")
    for name in DATASETS:
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
    # Piped output has no terminal width; keep rows on one line unless COLUMNS says otherwise.
    wide = sys.stdout.isatty() or os.environ.get("COLUMNS")
    Console(highlight=False, width=None if wide else 200).print(table)


def _text(value: Any) -> str:
    """User text (paths, manifest contents) as rich prints it literally: "[red]" in a folder name stays text, and
    undecodable bytes of a path show as escapes instead of failing the print."""
    from rich.markup import escape

    from optbench.fsutil import printable

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
