"""One confirmation mechanism for every dangerous admin action: issue, void, publish, revoke, rebuild, close…

An action is a :class:`ConfirmAction`: its name and label, the permission it needs, what it will do, an optional
form (a reason, a plan, a date), and the ONE service that does it for one row. A model admin lists its actions
in ``confirm_actions`` and mixes in :class:`ConfirmActionMixin`, which gives it:

- one page per action, from the one template ``admin/confirm_action.html``: what will happen, to which rows,
  the form, "Yes, …" (``id="confirm-<name>"``) and "No, go back";
- the single-row page on the admin's URLs (``confirm_route``, e.g. ``<pk>/do/<action>/``, or the action's own
  ``route``), model-level pages without a row (e.g. "close due cycles"), and changelist (bulk) actions
  declared with :func:`confirm_bulk_action` — the same page and the same service for one row and for many;
- the permission check (``permission``, and viewing the row); a user without it is sent back with "You may
  not do that." (:meth:`ConfirmActionMixin.confirm_denied`);
- the service's refusal (a ``ValueError`` such as ``InvoiceTransitionError`` or ``PlanError``) as a form error
  on the page (one row) or an error message per refused row (bulk) — never a 500, never beside a success;
- ``message_user`` after success, then the object's page (or where ``redirect`` says).

A single-row or model-level page is one GET (the page) and one POST (do it); an action with ``review`` takes
two POSTs: the first shows what the form's values would do (e.g. the proration of a plan change), the second,
with ``confirmed=yes``, does it. A bulk action's page posts back to the change list with ``confirmed=yes``
(or, for an action with a form, with the form's fields).

Modelled on dj-stripe's ``CustomActionMixin`` and ``confirm_action.html``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import router, transaction
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from .refusals import SERVICE_ERRORS, ServiceRefused, add_refusal_errors

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    _AdminBase = ModelAdmin[Any]
else:
    _AdminBase = object

ROWS_LISTED = 100  # a bulk page lists this many rows (all of them are acted on)


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    element_id: str = ""


@dataclass(frozen=True)
class Review:
    """What the first POST of a two-step action shows before "Yes" (the form's values, worked out)."""

    heading: str = ""
    notes: Sequence[str] = ()
    table: Table | None = None
    warning: str = ""
    warning_id: str = ""


@dataclass
class Outcome:
    """What an action did: each row done with what its service returned, and the form's data."""

    done: list[tuple[Any, Any]]
    data: dict[str, Any]
    bulk: bool

    @property
    def obj(self) -> Any:
        return self.done[0][0] if self.done else None

    @property
    def result(self) -> Any:
        return self.done[0][1] if self.done else None


@dataclass(frozen=True)
class ConfirmAction:
    """A dangerous action. ``service(request, row, data)`` calls the one service that does it for ``row`` (None
    for a model-level action) with the form's cleaned ``data`` and returns what the service returned."""

    name: str  # in URLs, bulk forms and element ids: confirm-<name>, review-<name>, <name>-form
    label: str  # "Issue": the page says "Yes, issue" and "Issue: INV-2026-000001 — done."
    service: Callable[[Any, Any, dict[str, Any]], Any]
    explanation: str | Callable[[Any], str | Sequence[str]] = ""  # what will happen: of the row, or None (bulk)
    permission: str | None = None  # "invoicing.issue_invoice"; viewing the row is needed as well
    scope: str = "row"  # "row": one row (and bulk, if declared); "bulk": change list only; "model": no row
    route: tuple[str, str] | None = None  # (route, URL name) of its own page; else the admin's confirm_route
    title: str | Callable[[Any], str] | None = None  # the page's (of the row); default "<label> <row>?"
    bulk_title: str = ""  # the bulk page's; default "<label> <n> <rows>(s)?"
    form_class: type[forms.Form] | None = None
    form_kwargs: Callable[[Any, Any], dict[str, Any]] | None = None  # (request, row) → extra form arguments
    review: Callable[[Any, Any, dict[str, Any]], Review] | None = None  # (request, row, data): a two-step action
    problems: Callable[[Any], list[str]] | None = None  # what prevents it now (the page has no "Yes" then)
    problems_title: str = "This cannot be done yet:"
    available: Callable[[Any], bool] | None = None  # whether the row's change page offers it
    submit: str = ""  # the "Yes" button's text; default "Yes, <label>"
    button_id: str = ""  # the change page's button; default the admin's confirm_button_id
    button_label: str = ""  # its text; default the label
    done: Callable[[Outcome], str] | None = None  # the success message
    redirect: Callable[[Outcome], str] | None = None  # where to go after success


def confirm_bulk_action(name: str, description: str) -> Callable[..., HttpResponseBase | None]:
    """A change-list action running the model admin's confirm action ``name`` on the selected rows, e.g.
    ``void_invoices = confirm_bulk_action("void", "Void selected invoices")`` with ``"void_invoices"`` in
    ``actions``. Offered only to users with the action's permission."""

    @admin.action(description=description)
    def bulk(model_admin: ConfirmActionMixin, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponseBase | None:
        return model_admin.confirm_bulk(request, queryset, name)

    bulk.confirm_action = name  # type: ignore[attr-defined]
    return bulk


class ConfirmActionMixin(_AdminBase):
    confirm_actions: Sequence[ConfirmAction] = ()
    confirm_route: tuple[str, str] | None = None  # e.g. ("<int:pk>/do/<str:action>/", "invoicing_invoice_do")
    confirm_button_id = "{model}-{name}"  # the change page's buttons (confirm_buttons in the context)
    confirm_template = "admin/confirm_action.html"

    # --- wiring ------------------------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        urls: list[URLPattern] = []
        for action in self.confirm_actions:
            if action.route:
                route, name = action.route
                urls.append(path(route, self.admin_site.admin_view(self._confirm_view_of(action.name)), name=name))
        if self.confirm_route:
            route, name = self.confirm_route
            urls.append(path(route, self.admin_site.admin_view(self._confirm_view_of(None)), name=name))
        return [*urls, *super().get_urls()]

    def _confirm_view_of(self, fixed: str | None) -> Callable[..., HttpResponseBase]:
        def view(request: HttpRequest, pk: int | str | None = None, action: str | None = None) -> HttpResponseBase:
            if fixed is None and self.get_confirm_action(action).route:  # it has a page of its own
                raise Http404(f"no action {action!r} here")
            return self.confirm_view(request, fixed or action, pk)

        return view

    def get_confirm_action(self, name: str | None, scope: str | None = None) -> ConfirmAction:
        for action in self.confirm_actions:
            if action.name == name and (scope is None or action.scope == scope):
                return action
        raise Http404(f"no action {name!r}")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        for key, entry in list(actions.items()):
            name = getattr(entry[0], "confirm_action", None) if entry is not None else None
            if name is not None and not self.may_confirm(request, self.get_confirm_action(name)):
                del actions[key]
        return actions

    # --- permissions -------------------------------------------------------------------------------------------

    def may_confirm(self, request: HttpRequest, action: ConfirmAction, obj: Model | None = None) -> bool:
        if action.permission and not request.user.has_perm(action.permission):
            return False
        return self.has_view_permission(request, obj)

    def confirm_denied(self, request: HttpRequest, action: ConfirmAction, obj: Model | None = None) -> HttpResponse:
        """Without the permission: back to the row (or the list) with an error. Admins that answer 403 instead
        override this."""
        self.message_user(request, "You may not do that.", messages.ERROR)
        return HttpResponseRedirect(self._back_url(obj))

    # --- the change page's buttons -----------------------------------------------------------------------------

    def confirm_url(self, action: ConfirmAction, obj: Model | None) -> str:
        if action.route:
            return reverse(f"admin:{action.route[1]}", args=[obj.pk] if obj is not None else [],
                           current_app=self.admin_site.name)
        assert self.confirm_route is not None and obj is not None, f"{action.name} needs a route and a row"
        return reverse(f"admin:{self.confirm_route[1]}", args=[obj.pk, action.name], current_app=self.admin_site.name)

    def confirm_buttons(self, request: HttpRequest, obj: Model) -> list[dict[str, str]]:
        """The row actions the user may run on ``obj`` now, for its change page."""
        return [
            {"url": self.confirm_url(action, obj), "label": action.button_label or action.label,
             "id": action.button_id or self.confirm_button_id.format(model=self.model._meta.model_name,
                                                                     name=action.name)}
            for action in self.confirm_actions
            if action.scope == "row" and (action.route or self.confirm_route)
            and (action.available is None or action.available(obj)) and self.may_confirm(request, action, obj)
        ]

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: Model | None = None) -> HttpResponse:
        context["confirm_buttons"] = self.confirm_buttons(request, obj) if obj is not None else []
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- one row, or none --------------------------------------------------------------------------------------

    def confirm_view(self, request: HttpRequest, name: str | None, pk: int | str | None = None) -> HttpResponse:
        action = self.get_confirm_action(name, "row" if pk is not None else "model")
        obj = None
        if pk is not None:
            obj = self.get_object(request, str(pk))
            if obj is None:
                raise Http404(f"no {self.model._meta.verbose_name} {pk}")
        if not self.may_confirm(request, action, obj):
            return self.confirm_denied(request, action, obj)
        form = self._confirm_form(request, action, obj, bound=request.method == "POST")
        problems = action.problems(obj) if action.problems and obj is not None else []
        review = None
        if request.method == "POST" and form.is_valid():
            if action.review and request.POST.get("confirmed") != "yes":
                review = action.review(request, obj, form.cleaned_data)
            else:
                try:
                    result = self._run(action, request, obj, form.cleaned_data)
                except ServiceRefused as refused:
                    add_refusal_errors(form, refused)
                else:
                    outcome = Outcome([(obj, result)], form.cleaned_data, bulk=False)
                    self.message_user(request, self._done_message(action, outcome), messages.SUCCESS)
                    return HttpResponseRedirect(action.redirect(outcome) if action.redirect else
                                                self._back_url(result if isinstance(result, self.model) else obj))
        return self.render_confirm(request, action, form=form, obj=obj, problems=problems, review=review)

    # --- bulk --------------------------------------------------------------------------------------------------

    def confirm_bulk(self, request: HttpRequest, queryset: QuerySet[Any], name: str) -> HttpResponse | None:
        action = self.get_confirm_action(name)
        if not self.may_confirm(request, action):
            return self.confirm_denied(request, action)
        form_class = action.form_class or forms.Form
        submitted = request.POST.get("confirmed") == "yes" or any(f in request.POST for f in form_class.base_fields)
        form = self._confirm_form(request, action, None, bound=submitted)
        if not (submitted and form.is_valid()):
            return self.render_confirm(request, action, form=form, rows=queryset)
        done: list[tuple[Any, Any]] = []
        refused = 0
        for obj in queryset:
            try:
                done.append((obj, self._run(action, request, obj, form.cleaned_data)))
            except ServiceRefused as exc:
                refused += 1
                self.message_user(request, f"{obj}: {exc}", messages.ERROR)
        if not done:
            return None
        outcome = Outcome(done, form.cleaned_data, bulk=True)
        message = self._done_message(action, outcome)
        if refused:  # never a success beside an error: what was done, as a warning
            self.message_user(request, f"{message} {refused} refused (above).", messages.WARNING)
        else:
            self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(action.redirect(outcome)) if action.redirect else None

    # --- shared ------------------------------------------------------------------------------------------------

    def _run(self, action: ConfirmAction, request: HttpRequest, obj: Model | None, data: dict[str, Any]) -> Any:
        """The action's service, in a transaction of its own; its refusal rolls back everything it did."""
        try:
            with transaction.atomic(using=router.db_for_write(self.model)):
                return action.service(request, obj, data)
        except SERVICE_ERRORS as exc:
            raise ServiceRefused(exc) from exc

    def _confirm_form(self, request: HttpRequest, action: ConfirmAction, obj: Model | None, *,
                      bound: bool) -> forms.Form:
        form_class = action.form_class or forms.Form
        kwargs = action.form_kwargs(request, obj) if action.form_kwargs else {}
        return form_class(request.POST if bound else None, **kwargs)

    def _done_message(self, action: ConfirmAction, outcome: Outcome) -> str:
        if action.done:
            return action.done(outcome)
        if outcome.bulk:
            return f"{action.label}: {len(outcome.done)} {self.model._meta.verbose_name}(s)."
        shown = outcome.result if isinstance(outcome.result, self.model) else outcome.obj
        return f"{action.label}: {shown} — done." if shown is not None else f"{action.label} — done."

    def _back_url(self, obj: Model | None = None) -> str:
        opts = self.model._meta
        if obj is not None:
            return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk],
                           current_app=self.admin_site.name)
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist", current_app=self.admin_site.name)

    def confirm_row(self, obj: Any) -> str:
        """What the page says about a row beside its name (e.g. an invoice's customer, period and status)."""
        return ""

    def _title(self, action: ConfirmAction, obj: Model | None, rows: QuerySet[Any] | None) -> str:
        if rows is not None:
            return action.bulk_title or f"{action.label} {rows.count()} {self.model._meta.verbose_name}(s)?"
        if callable(action.title):
            return action.title(obj)
        if action.title:
            return action.title
        return f"{action.label} {obj}?" if obj is not None else f"{action.label}?"

    def render_confirm(self, request: HttpRequest, action: ConfirmAction, *, form: forms.Form, obj: Model | None = None,
                       rows: QuerySet[Any] | None = None, problems: Sequence[str] = (),
                       review: Review | None = None) -> TemplateResponse:
        opts = self.model._meta
        shown = list(rows[:ROWS_LISTED]) if rows is not None else ([obj] if obj is not None else [])
        explanation = action.explanation(obj) if callable(action.explanation) else action.explanation
        needs_review = action.review is not None and review is None and rows is None
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "app_label": opts.app_label,
            "title": self._title(action, obj, rows),
            "action": action,
            "object": obj,
            "object_url": self._back_url(obj) if obj is not None else "",
            "explanation": [explanation] if isinstance(explanation, str) and explanation else list(explanation or []),
            "problems": problems,
            "rows": [{"name": str(row), "detail": self.confirm_row(row),
                      "url": self._back_url(row) if self.has_view_permission(request, row) else ""} for row in shown],
            "more": rows.count() - len(shown) if rows is not None and len(shown) == ROWS_LISTED else 0,
            "form": form,
            "review": review,
            "bulk_action": request.POST.get("action", "") if rows is not None else "",
            "selected": [row.pk for row in rows] if rows is not None else [],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "can_confirm": not problems and not needs_review,
            "needs_review": needs_review,
            "submit": action.submit or f"Yes, {action.label.lower()}",
            "form_id": f"{action.name}-form",
            "cancel_url": self._back_url(obj),
            "media": self.media + form.media,
        }
        return TemplateResponse(request, self.confirm_template, context)

