"""Hardware templates (``configs/templates/*.yaml``) and ``invoicelab init``, which writes an experiment from one.

A template is a complete experiment config for one kind of machine (2-core CPU, one 24 GB GPU, one 80 GB
GPU, 8 x 80 GB) whose header comment states the measurements and assumptions its numbers come from.
``write_from_template`` copies one, comments kept, with the experiment's name and dataset replaced, and
checks that the result validates. Configuration layer: never imports Ray, a backend or a model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from invoicelab.config import ConfigError, is_uri, load_experiment


def templates_dir() -> Path:
    """The repo's ``configs/templates/`` (beside the package), else ``./configs/templates``."""
    beside = Path(__file__).resolve().parents[1] / "configs" / "templates"
    return beside if beside.is_dir() else Path("configs") / "templates"


def available() -> list[str]:
    """Names of the shipped templates (file names without ``.yaml``), sorted."""
    return sorted(p.stem for p in templates_dir().glob("*.yaml"))


def template_path(name: str) -> Path:
    """The file of template ``name``.

    Raises:
        ConfigError: no such template; the message lists those that exist.
    """
    path = templates_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown template {name!r}; available: {', '.join(available()) or 'none'}")
    return path


def render(name: str, out: Path, dataset: str | None = None, experiment_name: str | None = None) -> str:
    """The text of template ``name`` as it will be written to ``out``: comments kept, name and dataset replaced.

    Args:
        name: The template.
        out: Where the file will be written (a relative dataset path is made relative to its folder,
            as experiment configs read relative paths from their own folder; an absolute one is kept).
        dataset: A folder of documents with gt.jsonl, or a URI; None keeps the template's synthetic invoices.
        experiment_name: The experiment's name; None keeps the template's.
    """
    text = template_path(name).read_text(encoding="utf-8")
    schema = Path(__file__).resolve().parents[1] / "configs" / "experiment.schema.json"
    head = f"# yaml-language-server: $schema={schema}\n" if schema.is_file() else ""
    text = re.sub(r"^# yaml-language-server:.*\n", head, text, count=1)
    text = text.replace("\n", f"\n# Written by `invoicelab init --template {name}` from configs/templates/{name}.yaml.\n", 1)
    if experiment_name is not None:
        text = _replace_line(text, "name", _quote(experiment_name))
    if dataset is not None:
        relative = not is_uri(dataset) and not Path(dataset).is_absolute()
        where = os.path.relpath(Path(dataset).resolve(), Path(out).resolve().parent) if relative else dataset
        text = _replace_line(text, "dataset", f"{{source: folder, path: {_quote(where)}}}")
    return text


def write_from_template(name: str, out: Path, dataset: str | None = None, experiment_name: str | None = None,
                        force: bool = False) -> Path:
    """Write a starting experiment from template ``name`` to ``out`` and check that it validates.

    Args:
        name: The template (``available()``).
        out: The file to write.
        dataset: See ``render``.
        experiment_name: See ``render``.
        force: Overwrite ``out`` when it exists.

    Returns:
        The path written.

    Raises:
        ConfigError: unknown template, ``out`` exists without ``force``, or the written config does not
            validate (the file is then removed).
    """
    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; give --force to overwrite it, or another --out")
    text = render(name, out, dataset, experiment_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    try:
        load_experiment(out)
    except ConfigError:
        out.unlink()
        raise
    return out


def _replace_line(text: str, key: str, value: str) -> str:
    """Replace the top-level ``key: ...`` line (templates keep name and dataset on one line each)."""
    new, count = re.subn(rf"^{key}:.*$", lambda _: f"{key}: {value}", text, count=1, flags=re.MULTILINE)
    if not count:
        raise ConfigError(f"the template has no top-level '{key}:' line to replace")
    return new


def _quote(value: str) -> str:
    """A YAML double-quoted scalar."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
