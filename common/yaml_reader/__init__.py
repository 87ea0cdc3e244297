"""Reading a YAML file written by a person (``billing_apply``'s catalog as code), generically.

* :mod:`.loading` reads and parses the file safely: size limit, safe loader, duplicate keys, nesting depth,
  alias expansion, characters YAML does not allow, each a :class:`FileError` naming the file and the line.
* :class:`Problems` collects every problem as ``FILE: ENTRY.FIELD: message`` (:mod:`.problems`).
* :class:`Reader` gives typed access to the fields of one mapping, recording problems with their location
  (:mod:`.reader`); :mod:`.values` converts one value (exact decimals, RFC 3339 date-times, nested JSON).
* :mod:`.display` prints what would change (``name old -> new``) and sorts JSON for dumps.

The rules of what the file means (catalog, customers) are in ``catalog.apply`` and ``customers.apply``.
"""

from .display import change, changed_fields, changes_text, diff_values, show, sorted_json, without_empty
from .loading import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_mapping, load_yaml, read_source
from .problems import FileError, Problems
from .reader import Reader, check_duplicates, entry_label, entry_list, parse_entries
from .values import MISSING, nested_problem, parse_datetime, plain_decimal, to_decimal

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MISSING",
    "FileError",
    "Problems",
    "Reader",
    "change",
    "changed_fields",
    "changes_text",
    "check_duplicates",
    "diff_values",
    "entry_label",
    "entry_list",
    "load_mapping",
    "load_yaml",
    "nested_problem",
    "parse_datetime",
    "parse_entries",
    "plain_decimal",
    "read_source",
    "show",
    "sorted_json",
    "to_decimal",
    "without_empty",
]
