"""Admin extension points: what a higher app adds to a lower app's admin page, without registering it again.

The event explorer belongs to ``metering``, which knows subjects but not customers; the customer page belongs
to ``customers``, which knows nothing of invoices. Rather than unregistering their admins and registering
subclasses (each model would then be registered two or three times, by apps that must not import each other),
the lower admin mixes in :class:`ExtensibleAdminMixin` and the higher app registers what it contributes from
its ``AppConfig.ready()``::

    register_admin_extension(Event, "customers", columns=[ListColumn(customer_of_event, after="subject")])

Contributions, each optionally limited to users with a permission:

- :class:`ListColumn` — a column of the change list (a function of the row, as Django's ``list_display``
  takes it; its ``__name__`` is the column's CSS class ``column-<name>``), placed after a named column;
- :class:`Panel` — a fieldset of read-only fields (:class:`PanelField`, functions of the object) on the change
  page, after the admin's own fieldsets;
- :class:`ObjectTool` — a button on the change page (``extension_tools`` in the change form's context).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    _AdminBase = ModelAdmin[Any]
else:
    _AdminBase = object

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class ListColumn:
    render: Callable[[Any], Any]  # decorated with @admin.display(description=...)
    after: str | None = None  # the column it follows (a field or column name); None: last
    permission: str | None = None


@dataclass(frozen=True)
class PanelField:
    render: Callable[[Any], Any]  # a read-only field: a function of the object, with @admin.display(description=…)
    permission: str | None = None


@dataclass(frozen=True)
class Panel:
    title: str
    fields: Sequence[PanelField]
    description: str = ""


@dataclass(frozen=True)
class ObjectTool:
    label: str
    url: Callable[[Any], str]  # the object → where the button goes
    element_id: str = ""
    permission: str | None = None


@dataclass(frozen=True)
class AdminExtension:
    name: str
    columns: Sequence[ListColumn] = ()
    panels: Sequence[Panel] = ()
    object_tools: Sequence[ObjectTool] = ()


_extensions: dict[type[Model], list[AdminExtension]] = {}


def register_admin_extension(model: type[Model], name: str, *, columns: Sequence[ListColumn] = (),
                             panels: Sequence[Panel] = (), object_tools: Sequence[ObjectTool] = ()) -> None:
    """Add (or replace, by ``name``) what an app contributes to ``model``'s admin; in registration order."""
    extension = AdminExtension(name, tuple(columns), tuple(panels), tuple(object_tools))
    registered = [item for item in _extensions.get(model, []) if item.name != name]
    _extensions[model] = [*registered, extension]


def row_and_admin_url(model: type[M], owner: str, obj: Model) -> tuple[M | None, str]:
    """For a panel field showing the row of ``model`` that belongs to ``obj`` (its ``owner`` field, e.g. a
    customer's settings): that row or None, and the admin URL that changes it, or adds it with ``owner`` filled in."""
    row = model._default_manager.filter(**{owner: obj}).first()
    admin_name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
    if row is None:
        return None, f"{reverse(f'{admin_name}_add')}?{urlencode({owner: obj.pk})}"
    return row, reverse(f"{admin_name}_change", args=[row.pk])


def admin_extensions(model: type[Model]) -> list[AdminExtension]:
    return list(_extensions.get(model, []))


def _allowed(request: HttpRequest, permission: str | None) -> bool:
    return permission is None or request.user.has_perm(permission)


def _name(column: object) -> str:
    return column if isinstance(column, str) else getattr(column, "__name__", "")


class ExtensibleAdminMixin(_AdminBase):
    """For a model admin that higher apps extend: adds their columns, panels and buttons for each request."""

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        columns = list(super().get_list_display(request))
        for extension in admin_extensions(self.model):
            for column in extension.columns:
                if not _allowed(request, column.permission):
                    continue
                names = [_name(c) for c in columns]
                at = names.index(column.after) + 1 if column.after in names else len(columns)
                columns.insert(at, column.render)
        return columns

    def _panels(self, request: HttpRequest) -> list[tuple[Panel, list[Callable[[Any], Any]]]]:
        panels: list[tuple[Panel, list[Callable[[Any], Any]]]] = []
        for extension in admin_extensions(self.model):
            for panel in extension.panels:
                fields = [field.render for field in panel.fields if _allowed(request, field.permission)]
                if fields:
                    panels.append((panel, fields))
        return panels

    def get_fieldsets(self, request: HttpRequest, obj: Model | None = None) -> list[Any]:
        # A panel's fields are functions (read-only fields), which Django takes; the stubs' fieldsets name strings.
        fieldsets: list[Any] = list(super().get_fieldsets(request, obj))
        for panel, fields in self._panels(request):
            options: dict[str, Any] = {"fields": tuple(fields)}
            if panel.description:
                options["description"] = panel.description
            fieldsets.append((panel.title, options))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> tuple[Any, ...]:
        extra = tuple(field for _, fields in self._panels(request) for field in fields)
        return (*super().get_readonly_fields(request, obj), *extra)

    def extension_tools(self, request: HttpRequest, obj: Model) -> list[dict[str, str]]:
        return [
            {"label": tool.label, "url": tool.url(obj), "id": tool.element_id}
            for extension in admin_extensions(self.model)
            for tool in extension.object_tools
            if _allowed(request, tool.permission)
        ]

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: Model | None = None) -> HttpResponse:
        context["extension_tools"] = self.extension_tools(request, obj) if obj is not None else []
        return super().render_change_form(request, context, add, change, form_url, obj)
