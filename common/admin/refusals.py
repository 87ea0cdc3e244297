"""A service's refusal in an admin save or delete: a form error (or an error message), never a 500.

Admin forms run the services' own checks, so a refusal at save time is a race (a plan published between the
form's check and the save, a subject taken meanwhile). ``save_model``, ``save_formset`` and ``delete_model``
overrides call their service inside :func:`refusals`; :class:`ServiceErrorsMixin` then

- on an add or change page: rolls the whole save back (the admin's transaction, its log entry included) and
  shows the same page again with the refusal as form errors — on the fields the service names
  (``exc.errors = {field: message}``), otherwise at the top of the form — and no success message;
- on a delete page or the "delete selected" action: rolls the deletion back and shows the refusal as the
  only message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import unquote
from django.db import router, transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import reverse

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    _AdminBase = ModelAdmin[Any]
else:
    _AdminBase = object

SERVICE_ERRORS = (ValueError,)  # what services raise when they refuse (InvoiceTransitionError, PlanError, …)


class ServiceRefused(Exception):  # noqa: N818 - a refusal, not a programming error
    """A service refused an admin write; carries its message and, where the service names them, field errors."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        errors = getattr(error, "errors", None)
        self.field_errors: dict[str, str] = dict(errors) if isinstance(errors, dict) else {}


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """Around a service call in ``save_model``/``save_formset``/``delete_model``: its refusal becomes
    :class:`ServiceRefused`, which :class:`ServiceErrorsMixin` shows as form errors or an error message."""
    try:
        yield
    except SERVICE_ERRORS as exc:
        raise ServiceRefused(exc) from exc


def add_refusal_errors(form: forms.BaseForm, refused: ServiceRefused) -> None:
    """Put a refusal on a form: each named field's message on that field, the rest at the top."""
    placed = False
    for field, message in refused.field_errors.items():
        if field in form.fields and field not in form.errors:
            form.add_error(field, message)
            placed = True
        elif field not in form.fields:
            form.add_error(None, f"{field}: {message}")
            placed = True
    if not placed:
        form.add_error(None, str(refused))


class ServiceErrorsMixin(_AdminBase):
    """For model admins whose saves and deletes go through services (see the module's docstring)."""

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRefused as refused:  # the admin's transaction rolled the save back: show the page again
            request._service_refusal = refused  # type: ignore[attr-defined]  # read back by get_form below
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request: HttpRequest, obj: Model | None = None, change: bool = False,
                 **kwargs: Any) -> type[forms.ModelForm[Any]]:
        form = super().get_form(request, obj, change, **kwargs)
        refused: ServiceRefused | None = getattr(request, "_service_refusal", None)
        if refused is None:
            return form
        refusal = refused

        class RefusedForm(form):  # type: ignore[valid-type,misc]  # a subclass of the class get_form built
            """The form of the refused save, shown again with the refusal as its errors (so nothing is saved)."""

            def clean(self) -> dict[str, Any]:
                data = super().clean()
                add_refusal_errors(self, refusal)
                return data

        RefusedForm.__name__ = form.__name__
        return RefusedForm

    def delete_view(self, request: HttpRequest, object_id: str,
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ServiceRefused as refused:  # rolled back with the deletion's log entry
            self.message_user(request, str(refused), messages.ERROR)
            opts = self.model._meta
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change",
                                                args=[unquote(object_id)], current_app=self.admin_site.name))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)
        if actions.get("delete_selected") is not None:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (type(self)._delete_selected_or_nothing, name, description)
        return actions

    def _delete_selected_or_nothing(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponseBase | None:
        """Django's "delete selected", all or nothing: a refused row undoes the others and their log entries."""
        try:
            with transaction.atomic(using=router.db_for_write(self.model)):
                return delete_selected(self, request, queryset)
        except ServiceRefused as refused:
            self.message_user(request, str(refused), messages.ERROR)
            return None

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

