"""Catalog-as-code files and the commands that read and write them (``billing_apply``, ``billing_dump``). The
files are written in the current directory: tests chdir to their ``tmp_path`` first, so messages start with the
bare file name."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

__all__ = ["CATALOG_EXAMPLE", "catalog_example", "write", "apply", "apply_error", "dump"]

# The example catalog: meters, features, plans, customers and subscriptions.
CATALOG_EXAMPLE = Path(__file__).resolve().parents[1] / "customers" / "fixtures" / "catalog.yaml"


def catalog_example() -> dict:
    return copy.deepcopy(yaml.safe_load(CATALOG_EXAMPLE.read_text()))


def write(doc_or_text: dict | str, name: str = "catalog.yaml") -> str:
    text = doc_or_text if isinstance(doc_or_text, str) else yaml.safe_dump(doc_or_text, sort_keys=False)
    Path(name).write_text(text)
    return name


def apply(name: str = "catalog.yaml", *args: str) -> str:
    out = io.StringIO()
    call_command("billing_apply", name, *args, stdout=out)
    return out.getvalue()


def apply_error(name: str = "catalog.yaml", *args: str) -> str:
    with pytest.raises(CommandError) as info:
        apply(name, *args)
    return str(info.value)


def dump(*args: str) -> str:
    out = io.StringIO()
    call_command("billing_dump", *args, stdout=out)
    return out.getvalue()
