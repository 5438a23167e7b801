"""The prompt commands: ``invoicelab prompts list | show | render | diff | new | edit | log``.

Part of the command line (``cli`` registers ``COMMANDS``): parses arguments, calls ``prompt_tools`` (plain
files: git stays the source of truth) and ``prompt_versions`` (hashes and the history's versions), prints,
and exits 2 on a bad argument, prompt or config. ``edit`` writes nothing without ``--yes``. Heavy libraries
(a tokenizer, DuckDB, OCR) are imported inside the commands that need them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from invoicelab.config import ConfigError

DIR = click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
                   help="The prompts folder (default: the repo's prompts/).")
STORE = click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                     show_default=True, help="The results store (the folder holding history.duckdb).")
CONFIG = click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                      help="Hash and render for this experiment's fields (default: the quickstart's four fields).")


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _folder(folder: Path | None) -> Path:
    from invoicelab.prompts import default_prompts_dir

    folder = folder or default_prompts_dir()
    if not folder.is_dir():
        _fail(f"no prompts folder {folder}")
    return folder


def _fields(config: Path | None):
    from invoicelab.config import load_experiment
    from invoicelab.prompt_tools import DEFAULT_FIELDS

    if config is None:
        return DEFAULT_FIELDS
    try:
        return load_experiment(config).fields
    except ConfigError as err:
        _fail(str(err))


@click.group("prompts")
def prompts_group() -> None:
    """Prompt files: list, show, render, diff, copy and bulk-edit them; each version's results (log)."""


@prompts_group.command("list")
@DIR
@CONFIG
@STORE
def list_cmd(folder: Path | None, config: Path | None, store: Path) -> None:
    """Every prompt: id, version, hash (for the config's fields) and description; warns of unbumped versions."""
    from invoicelab.prompt_tools import listing
    from invoicelab.prompt_versions import check_versions
    from invoicelab.prompts import load_prompt

    folder, fields = _folder(folder), _fields(config)
    rows = listing(folder, fields)
    width = max([len(r["id"]) for r in rows] + [2])
    click.echo(f"{'id':<{width}}  version  hash              description")
    for r in rows:
        if r["error"]:
            click.echo(f"{r['id']:<{width}}  {'-':>7}  {'-':<16}  error: {r['error']}")
        else:
            click.echo(f"{r['id']:<{width}}  {r['version']:>7}  {r['hash']}  {r['description']}")
    prompts = [load_prompt(r["id"], folder) for r in rows if not r["error"]]
    for line in check_versions(store, prompts, fields if config else None):
        click.echo(f"warning: {line}", err=True)


@prompts_group.command("show")
@click.argument("prompt_id")
@DIR
@CONFIG
def show_cmd(prompt_id: str, folder: Path | None, config: Path | None) -> None:
    """A prompt's file as it is, with its hash."""
    from invoicelab.prompt_tools import prompt_path
    from invoicelab.prompt_versions import prompt_hash
    from invoicelab.prompts import load_prompt

    folder = _folder(folder)
    try:
        path, prompt = prompt_path(folder, prompt_id), load_prompt(prompt_id, folder)
    except ConfigError as err:
        _fail(str(err))
    click.echo(f"# {path}  (hash {prompt_hash(prompt, _fields(config))})")
    click.echo(path.read_text(encoding="utf-8").rstrip("\n"))


@prompts_group.command("render")
@click.argument("prompt_id")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The experiment whose dataset, fields and variant to render for.")
@click.option("--doc", "doc_id", default=None, help="The document's id (default: the dataset's first).")
@click.option("--variant", "variant_name", default=None, help="The variant (default: the first that takes a prompt).")
@click.option("--messages", is_flag=True, help="Show the chat messages instead of loading the tokenizer's template.")
def render_cmd(prompt_id: str, config: Path, doc_id: str | None, variant_name: str | None, messages: bool) -> None:
    """The prompt (a file, or a variant of the config's prompt_set) as a variant's model receives it for a
    document of the config's dataset."""
    from invoicelab.backends import backend_class
    from invoicelab.config import load_experiment
    from invoicelab.data.documents import DatasetError
    from invoicelab.prompt_tools import document_text, experiment_prompt, render_for_model
    from invoicelab.prompt_versions import prompt_hash

    try:
        exp = load_experiment(config)
        prompt = experiment_prompt(exp, prompt_id)
        takes = [v for v in exp.variants if backend_class(v.backend).uses_prompt]
        chosen = [v for v in exp.variants if v.name == variant_name] if variant_name else takes[:1]
        if not chosen:
            raise ConfigError(f"no variant {variant_name!r} that takes a prompt; variants: "
                              f"{', '.join(v.name for v in takes) or '(none)'}")
        doc, text = document_text(exp, chosen[0], doc_id)
        how, rendered = render_for_model(prompt, exp.fields, text, chosen[0], template=not messages)
    except (ConfigError, DatasetError) as err:
        _fail(str(err))
    v = chosen[0]
    model = f"{v.backend} {v.model_source}" if v.model_source else v.backend
    click.echo(f"# prompt {prompt.id} version {prompt.version} hash {prompt_hash(prompt, exp.fields)}; variant "
               f"{v.name} ({model}); document {doc}\n# format: {how}")
    click.echo(rendered)


@prompts_group.command("diff")
@click.argument("id_a")
@click.argument("id_b")
@DIR
@click.option("--rendered", is_flag=True, help="Diff the rendered templates (for --config's fields), not the files.")
@CONFIG
def diff_cmd(id_a: str, id_b: str, folder: Path | None, rendered: bool, config: Path | None) -> None:
    """A unified diff of two prompts' files (or of their renderings)."""
    from invoicelab.prompt_tools import prompt_path
    from invoicelab.prompt_versions import rendered_text, unified_diff
    from invoicelab.prompts import load_prompt

    folder = _folder(folder)
    try:
        if rendered:
            fields = _fields(config)
            a, b = (rendered_text(load_prompt(i, folder), fields) for i in (id_a, id_b))
        else:
            a, b = (prompt_path(folder, i).read_text(encoding="utf-8") for i in (id_a, id_b))
    except ConfigError as err:
        _fail(str(err))
    lines = unified_diff(a, b, id_a, id_b)
    click.echo("\n".join(lines) if lines else "no differences")


@prompts_group.command("new")
@click.argument("new_id")
@click.option("--from", "from_id", required=True, help="The prompt to copy.")
@DIR
def new_cmd(new_id: str, from_id: str, folder: Path | None) -> None:
    """Copy prompt --from as NEW_ID, at version 1."""
    from invoicelab.prompt_tools import new_from

    try:
        path = new_from(_folder(folder), new_id, from_id)
    except ConfigError as err:
        _fail(str(err))
    click.echo(f"wrote {path}")


@prompts_group.command("edit")
@DIR
@click.option("--ids", default=None, help="Comma-separated prompt ids to edit.")
@click.option("--all", "every", is_flag=True, help="Edit every prompt file of the folder.")
@click.option("--append-system", default=None, metavar="SENTENCE", help="Add a sentence to each system message.")
@click.option("--replace", nargs=2, default=None, metavar="OLD NEW", help="Replace text in the messages.")
@click.option("--rename-field", nargs=2, default=None, metavar="OLD NEW", help="Rename a field name (whole word).")
@click.option("--yes", is_flag=True, help="Write the changes (and bump each changed file's version); "
              "without it, only preview them.")
def edit_cmd(folder: Path | None, ids: str | None, every: bool, append_system: str | None,
             replace: tuple[str, str] | None, rename_field: tuple[str, str] | None, yes: bool) -> None:
    """Apply one change across many prompt files: a preview of every change, written only with --yes."""
    from invoicelab.prompt_tools import Edit, plan_edits, write_changes

    if bool(ids) == every:
        _fail("give --ids a,b or --all")
    if not (append_system or replace or rename_field):
        _fail("give a change: --append-system, --replace or --rename-field")
    chosen = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
    try:
        changes = plan_edits(_folder(folder), chosen, Edit(append_system, replace or None, rename_field or None))
    except ConfigError as err:
        _fail(str(err))
    for change in changes:
        click.echo("\n".join(change.diff()))
    if not changes:
        click.echo("no prompt file changes")
    elif yes:
        write_changes(changes)
        click.echo(f"wrote {len(changes)} file(s), each version bumped by 1")
    else:
        click.echo(f"preview: {len(changes)} file(s) would change; nothing written (add --yes to write)")


@prompts_group.command("log")
@click.argument("prompt_id")
@STORE
@click.option("--diff", "pair", nargs=2, default=None, metavar="HASH_A HASH_B",
              help="Diff these two versions' rendered texts (hash prefixes; default: the last two).")
def log_cmd(prompt_id: str, store: Path, pair: tuple[str, str] | None) -> None:
    """Each version (hash) of a prompt that produced results: when, in which runs, and a diff."""
    from invoicelab.prompt_versions import unified_diff, version_warnings, versions

    if not (store / "history.duckdb").is_file():
        _fail(f"no history in {store} (history.duckdb is written at the end of each run)")
    found = versions(store, prompt_id)
    if not found:
        click.echo(f"no recorded results of prompt {prompt_id} in {store}")
        return
    click.echo(f"prompt {prompt_id}: {len(found)} version(s) that produced results, oldest first")
    for v in found:
        click.echo(f"  {v.hash}  version {', '.join(map(str, v.versions))}  first {v.first:%Y-%m-%d %H:%M}  last "
                   f"{v.last:%Y-%m-%d %H:%M} UTC  {v.rows} rows  fields {', '.join(n for n, _ in v.fields)}")
        click.echo(f"    runs: {', '.join(v.runs)}")
    for line in version_warnings(prompt_id, found):
        click.echo(f"warning: {line}", err=True)
    if pair is None and len(found) < 2:
        return
    try:
        a, b = (_version(found, h) for h in pair) if pair else found[-2:]
    except ValueError as err:
        _fail(str(err))
    if a.rendered is None or b.rendered is None:
        click.echo(f"\nno diff: the text of {a.hash if a.rendered is None else b.hash} was not recorded")
        return
    lines = unified_diff(a.rendered, b.rendered, f"{prompt_id} {a.hash} (version {a.versions[-1]})",
                         f"{prompt_id} {b.hash} (version {b.versions[-1]})")
    click.echo("\n" + ("\n".join(lines) if lines else f"{a.hash} and {b.hash} render the same text"))


def _version(found, prefix: str):
    hits = [v for v in found if v.hash.startswith(prefix)]
    if len(hits) != 1:
        raise ValueError(f"hash {prefix!r} matches {len(hits)} versions; recorded: {', '.join(v.hash for v in found)}")
    return hits[0]


COMMANDS = [prompts_group]
