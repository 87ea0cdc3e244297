"""The credits admin: grants (list, grant, adjust and void with confirmation), the ledger (read-only, filtered),
auto top-ups, and the balance on the customer page (:mod:`.extensions`)."""

from . import grants, ledger  # noqa: F401 - registers the admins
