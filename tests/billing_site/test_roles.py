"""The staff roles: after a migrate (and a flush) each group holds exactly its role's permissions."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission

from billing_site import roles
from billing_site.roles import role_permissions, sync_roles

pytestmark = pytest.mark.django_db


def _held(name: str) -> set[tuple[str, str]]:
    return set(Group.objects.get(name=name).permissions.values_list("content_type__app_label", "codename"))


def test_each_group_holds_exactly_its_roles_permissions():
    for name, wanted in role_permissions().items():
        assert _held(name) == set(wanted), name
    assert _held("Finance viewer") < _held("Billing operator") < _held("Billing admin")


def test_a_sync_takes_away_what_a_role_no_longer_has_and_gives_back_what_it_lost():
    viewer = Group.objects.get(name="Finance viewer")
    viewer.permissions.add(Permission.objects.get(content_type__app_label="metering", codename="delete_meter"))
    viewer.permissions.remove(Permission.objects.get(content_type__app_label="invoicing", codename="view_invoice"))
    Group.objects.filter(name="Billing admin").delete()
    sync_roles(apps)
    for name, wanted in role_permissions().items():
        assert _held(name) == set(wanted), name


def test_a_role_naming_a_permission_that_does_not_exist_is_refused(monkeypatch):
    monkeypatch.setattr(roles, "role_permissions", lambda: {"Finance viewer": [("invoicing", "view_nothing")]})
    with pytest.raises(LookupError, match=r"role Finance viewer: permission invoicing.view_nothing does not exist"):
        sync_roles(apps)
