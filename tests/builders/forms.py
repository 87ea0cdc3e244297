"""Reading admin pages the way a browser does: which form an input belongs to, and what a form would submit."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

__all__ = ["Form", "parse_forms", "form_by_id", "form_with_input", "admin_form_data", "admin_form_post"]


@dataclass
class Form:
    attrs: dict[str, str]
    depth: int  # how many <form> elements enclose this one (a browser drops nested forms: 0 is the only sane value)
    inputs: list[dict[str, str]] = field(default_factory=list)

    def data(self) -> dict[str, str]:
        """What submitting the form would send (checked boxes, selected options, text; no file inputs)."""
        out: dict[str, str] = {}
        for element in self.inputs:
            name, kind = element.get("name"), element.get("type", "text")
            if not name or kind in ("submit", "button", "file", "image", "reset"):
                continue
            if kind in ("checkbox", "radio") and "checked" not in element:
                continue
            out[name] = element.get("value", "on" if kind == "checkbox" else "")
        return out


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.inputs: list[dict[str, str]] = []
        self._open: list[Form] = []
        self._select: dict[str, str] | None = None
        self._textarea: dict[str, str] | None = None

    def _add(self, element: dict[str, str]) -> None:
        self.inputs.append(element)
        if self._open:
            self._open[-1].inputs.append(element)

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            form = Form(a, depth=len(self._open))
            self.forms.append(form)
            self._open.append(form)
        elif tag == "input":
            self._add({"tag": "input", **a})
        elif tag == "select":
            self._select = {"tag": "select", **a, "type": "select"}
            self._add(self._select)
        elif tag == "option" and self._select is not None:
            if "selected" in a and not self._select.get("_chosen"):
                self._select["value"], self._select["_chosen"] = a.get("value", ""), "1"
            elif "value" not in self._select:
                self._select["value"] = a.get("value", "")  # a browser submits the first option by default
        elif tag == "textarea":
            self._textarea = {"tag": "textarea", **a, "type": "textarea", "value": ""}
            self._add(self._textarea)

    def handle_endtag(self, tag):
        if tag == "form" and self._open:
            self._open.pop()
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea["value"] += data.removeprefix("\n") if not self._textarea["value"] else data


def parse_forms(html: str) -> _Parser:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser


def form_by_id(html: str, form_id: str) -> Form:
    return next(f for f in parse_forms(html).forms if f.attrs.get("id") == form_id)


def admin_form_data(client: Any, url: str, form_id: str, **changes: str) -> dict[str, str]:
    """What the admin page at ``url`` submits from its form ``form_id`` with ``changes`` typed in, saved with
    "Save"."""
    data = form_by_id(client.get(url).content.decode(), form_id).data()
    data.update(changes)
    data["_save"] = "Save"
    return data


def admin_form_post(client: Any, url: str, form_id: str, **changes: str) -> Any:
    """Submit the admin page's form ``form_id`` as rendered, with ``changes`` typed in ("Save"); the response."""
    return client.post(url, admin_form_data(client, url, form_id, **changes))


def form_with_input(html: str, name: str) -> Form:
    return next(f for f in parse_forms(html).forms if any(i.get("name") == name for i in f.inputs))
