"""`--help` of every command renders its texts as whole sentences, not cut mid-line."""

from __future__ import annotations

import inspect

import pytest
import typer.main
import typer.rich_utils

from djepa_bench.cli import app, unwrap_paragraphs


def _commands():
    group = typer.main.get_command(app)
    return sorted(group.commands.items())


@pytest.mark.parametrize("name", [name for name, _ in _commands()])
def test_help_texts_render_whole(name, run_cli, monkeypatch):
    # Wide enough that rich never wraps: each paragraph and each option's help must then
    # stand on one line. A docstring's own hard line breaks would still cut it.
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 2000)
    command = dict(_commands())[name]
    res = run_cli(name, "--help")
    assert res.code == 0, res.err
    lines = [" ".join(line.replace("│", " ").split()) for line in res.out.splitlines()]
    callback = next(c.callback for c in app.registered_commands if c.name == name)
    doc = inspect.getdoc(callback) or ""
    assert doc, f"{name} has no docstring"
    for paragraph in doc.split("\n\n"):
        sentence = " ".join(paragraph.split())
        assert any(sentence in line for line in lines), (name, sentence, res.out)
    for param in command.params:
        if param.name == "help" or not getattr(param, "help", None):
            continue
        text = " ".join(param.help.split())
        assert any(text in line for line in lines), (name, param.name, text)


@pytest.mark.parametrize("name", [name for name, _ in _commands()])
def test_help_at_80_columns_crops_nothing(name, run_cli, monkeypatch):
    # rich cuts a word longer than its column with an ellipsis instead of wrapping it.
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 80)
    res = run_cli(name, "--help")
    assert res.code == 0 and "…" not in res.out, res.out


def test_unwrap_keeps_paragraphs_and_click_verbatim_blocks():
    text = "First line\n  continues.\n\nSecond\nparagraph.\n\n\b\nkeep\nthese"
    assert (
        unwrap_paragraphs(text) == "First line continues.\n\nSecond paragraph.\n\n\b\nkeep\nthese"
    )
