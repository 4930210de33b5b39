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

from optbench.data.catalog import DATASETS, USER_SOURCE
from optbench.store.fsutil import is_file

_DATA_DIR_HELP = "Data directory [default: $OPTBENCH_DATA or ~/.cache/optbench]."


def _data_dir_option(f: Any) -> Any:
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=_DATA_DIR_HELP)(f)


@click.group()
def data() -> None:
    """Download, verify and convert datasets (CIFAR-10, WikiText-103, C4) or your own text; list what is
    prepared."""


_FILE = click.Path(dir_okay=False, path_type=Path)


@data.command()
@click.argument("name", metavar="NAME")
@_data_dir_option
@click.option("--tokens", type=click.IntRange(min=1), default=None,
              help="Text: train tokens to write (C4 downloads only the shards they need) "
                   "[default: all for wikitext103 and your own text, 100M for c4].")
@click.option("--vocab-size", type=click.IntRange(min=257), default=8192, show_default=True,
              help="Text: vocabulary of the byte-level BPE trained when GPT-2's tokenizer is not available.")
@click.option("--tokenizer", type=click.Choice(["auto", "gpt2", "bpe"]), default="auto", show_default=True,
              help="Text: auto = GPT-2 via tiktoken if it loads offline, else train a BPE.")
@click.option("--mirror", metavar="URL", envvar="OPTBENCH_MIRROR", default=None,
              help="Replace the base URL (scheme+host+path) of every source file [env: OPTBENCH_MIRROR].")
@click.option("--force", is_flag=True, help="Prepare again even if an identical preparation exists (text: replace "
                                          "your corpus prepared from other files).")
@click.option("--name", "text_name", default=None, help="NAME 'text': the name of your dataset.")
@click.option("--train", type=_FILE, default=None, help="NAME 'text': the training text (UTF-8).")
@click.option("--valid", type=_FILE, default=None, help="NAME 'text': the validation text (UTF-8).")
@click.option("--test", type=_FILE, default=None, help="NAME 'text': the test text (optional).")
@click.option("--archive", type=_FILE, default=None,
              help="NAME 'text': a zip or tar with train.txt, valid.txt [, test.txt] instead of the files.")
@click.option("--sha256", metavar="HEX", default=None, help="NAME 'text': the sha256 the --archive must have.")
@click.option("--documents", type=click.Choice(["headings", "paragraphs", "lines", "file"]), default="headings",
              show_default=True,
              help="NAME 'text': documents are WikiText '= Title =' articles, blank-line-separated paragraphs, "
                   "non-blank lines, or whole files.")
def prepare(name: str, data_dir: Path | None, tokens: int | None, vocab_size: int, tokenizer: str,
            mirror: str | None, force: bool, text_name: str | None, train: Path | None, valid: Path | None,
            test: Path | None, archive: Path | None, sha256: str | None, documents: str) -> None:
    """Download NAME, verify its checksum and write it in the form workloads read (see docs/DATA.md).

    \b
    NAME 'text' prepares your own corpus instead, tokenized like the published text, and the lm workload
    trains on it (uncalibrated targets):
      optbench data prepare text --name mycorpus --train train.txt --valid valid.txt
      optbench run -w optbench_workloads.lm:lm --size tiny@mycorpus
    """
    from optbench import data as datasets
    from optbench.data.text import TextOptions
    from optbench.errors import UsageError

    options = TextOptions(tokens=tokens, vocab_size=vocab_size, tokenizer=tokenizer)
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    own = {"--name": text_name, "--train": train, "--valid": valid, "--test": test, "--archive": archive,
           "--sha256": sha256, "--documents": None if documents == "headings" else documents}
    if name == "text":
        if text_name is None:
            raise UsageError("optbench data prepare text needs --name NAME (what workloads call your corpus)")
        if mirror and os.environ.get("OPTBENCH_MIRROR") != mirror:
            raise UsageError("--mirror applies to published datasets; your own text is read from its files")
        manifest = datasets.prepare_user_text(
            text_name, train=train, valid=valid, test=test, archive=archive, sha256=sha256, data_dir=data_dir,
            text=options, documents=documents, force=force, log=log)
        name = text_name
    else:
        given = [flag for flag, value in own.items() if value is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UsageError(f"{', '.join(given)} {verb} to 'optbench data prepare text' (your own corpus), not to "
                             f"{name}")
        manifest = datasets.prepare(name, data_dir=data_dir, mirror=mirror, text=options, force=force,
                                    progress=sys.stderr.isatty(), log=log)
    click.echo(f"{name}: {contents(manifest)} in {datasets.dataset_dir(name, data_dir)}")


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
