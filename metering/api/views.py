"""Base classes for the API's most common kinds of view, so that each view only names what it acts on.

What a view declares is read by :class:`metering.authentication.HasScope` (see that module for the rule): the token
scope each method needs (``required_scopes``), the model it acts on (``permission_model``), and where a write is not
a plain add, the Django permission a staff session needs (``required_permissions``).

The classes have comments, not docstrings: drf-spectacular describes an operation with the first docstring in its
view's bases, so a docstring here would become the description of every subclass's operations."""

from __future__ import annotations

from rest_framework.views import APIView


# A view that only reads (GET): an API token needs the `read` scope, a staff session `view_<permission_model>`.
# Subclasses name `permission_model`.
class ReadView(APIView):
    required_scopes = {"GET": "read"}


# A view whose POST changes something: an API token needs the `manage` scope, a staff session the permission in
# `required_permissions` (else `add_<permission_model>`). Subclasses name `permission_model`.
class WriteView(APIView):
    required_scopes = {"POST": "manage"}
