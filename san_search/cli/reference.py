"""The manual's reference pages, generated from the code: every command and flag from the
argparse parser (`build_parser`), every candidate setting from `CandidateConfig`, and every
search-space section and key from its dataclass, each with the comment or help the code gives
it. `python -m san_search.cli.reference docs/reference` rewrites them; a test fails when the
committed pages differ from what the code generates now."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PAGES = ("cli.md", "candidate.md", "search-space.md")
_FIELD = re.compile(r"^\s{4}(\w+): [^=]+?(?:= (.+?))?(?:\s+# (.*))?$")


def _commands(parser: argparse.ArgumentParser, prefix: str
              ) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(full command, its parser, its one-line help) for every leaf command, in order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _commands(sub, full)
                else:
                    yield full, sub, helps.get(name, "")


REPO = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding us


def _default(value: Any) -> str:
    """A flag's default as the page shows it: a path inside the package relative to it, so
    the page is the same in every checkout and install."""
    if value in (None, False, argparse.SUPPRESS):
        return ""
    text = str(value)
    if text.startswith(str(REPO) + "/"):
        text = Path(text).relative_to(REPO).as_posix()
    return f"`{text}`"


def _flag_row(a: argparse.Action) -> str:
    names = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.metavar or a.dest}`"
    shown = _default(a.default)
    text = (a.help or "").replace("|", "\\|").replace("\n", " ")
    if a.choices and not isinstance(a, argparse._SubParsersAction):
        text += f" (one of: {', '.join(str(c) for c in a.choices)})"
    return f"| {names} | {shown} | {text} |"


def cli_page() -> str:
    """Every `san-search` command with its usage and each flag's default and help."""
    from san_search.cli import build_parser

    parser = build_parser()
    lines = ["# Command reference", "",
             "Generated from the parser (`python -m san_search.cli.reference docs/reference`); "
             "`san-search COMMAND --help` prints the same.", ""]
    for full, sub, help_ in _commands(parser, ""):
        usage = " ".join(sub.format_usage().split())
        lines += [f"## `san-search {full}`", "", help_ or (sub.description or ""), "",
                  "```", usage.replace("usage: ", ""), "```", "",
                  "| flag | default | what |", "|---|---|---|"]
        lines += [_flag_row(a) for a in sub._actions
                  if not isinstance(a, argparse._HelpAction)]
        lines.append("")
    return "\n".join(lines)


def field_docs(cls: type) -> list[tuple[str, str, str]]:
    """(name, default, comment) of each dataclass field, the comment being the trailing
    `# ...` on its line or the `# ...` lines just above it."""
    names = {f.name for f in dataclasses.fields(cls)}
    out, above = [], []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        m = _FIELD.match(line)
        if m and m.group(1) in names:
            comment = " ".join([*above, m.group(3) or ""]).strip()
            out.append((m.group(1), (m.group(2) or "").strip(), comment))
        above = []
    return out


def _table(cls: type) -> list[str]:
    rows = ["| key | default | what |", "|---|---|---|"]
    for name, default, comment in field_docs(cls):
        rows.append(f"| `{name}` | `{default}` | {comment.replace('|', '/')} |"
                    if default else f"| `{name}` | (required) | {comment.replace('|', '/')} |")
    return rows


def candidate_page() -> str:
    """Every candidate setting (`CandidateConfig`): a search space's `fixed:` and
    `parameters:` keys, and a candidate YAML's."""
    from san_search.config import CandidateConfig, TrainResources

    return "\n".join([
        "# Candidate settings", "",
        "Generated from `san_search.config.CandidateConfig`. Each is a key of a candidate YAML "
        "(`san-search train CANDIDATE.yaml`) and of a search space's `fixed:` or "
        "`parameters:`.", "", *_table(CandidateConfig), "",
        "## `resources:`", "", "Where a candidate trains (not part of the candidate; "
        "`san_search.config.TrainResources`).", "", *_table(TrainResources), ""])


def search_space_page() -> str:
    """A search space's top-level keys and each section's keys."""
    from san_search.search import sections
    from san_search.search.space import TOP_KEYS

    parts = ["# Search-space keys", "",
             "Generated from `san_search.search.space` and `san_search.search.sections`. Top-"
             f"level keys: {', '.join(f'`{k}`' for k in TOP_KEYS)}. `fixed:` and "
             "`parameters:` take the candidate settings ([candidate](candidate.md)); "
             "`resources:` is described there too.", ""]
    specs: list[tuple[str, Any]] = [
        ("objectives: (each)", sections.Objective), ("constraints: (each)", sections.Constraint),
        ("sampler:", sections.SamplerSpec), ("scheduler:", sections.SchedulerSpec),
        ("budget:", sections.Budget), ("parameters: (each)", sections.Parameter)]
    for title, cls in specs:
        doc = (inspect.getdoc(cls) or "").replace("\n", " ")
        doc = "" if doc.startswith(f"{cls.__name__}(") else doc  # the generated signature
        parts += [f"## `{title}`", "", doc, "", *_table(cls), ""]
    parts += ["Parameter types: " + ", ".join(f"`{t}`" for t in sections.PARAM_TYPES)
              + ". Samplers: " + ", ".join(f"`{s}`" for s in sections.SAMPLERS)
              + ". Schedulers: " + ", ".join(f"`{s}`" for s in sections.SCHEDULERS) + ".", ""]
    return "\n".join(parts)


def pages() -> dict[str, str]:
    return {"cli.md": cli_page(), "candidate.md": candidate_page(),
            "search-space.md": search_space_page()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "docs/reference")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in pages().items():
        (folder / name).write_text(text)
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
