"""Every problem of a file as one line ``FILE: ENTRY.FIELD: message``, collected before anything is written."""

from __future__ import annotations


class FileError(ValueError):
    """The file cannot be used; ``problems`` are complete lines naming the file, the entry and the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Problems:
    """The problems found so far in one file, e.g.
    ``catalog.yaml: plans[0] (token) rate_cards[2] (ai-quota).entitlement.limit: must be a decimal number``."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{self.filename}: {where}: {message}" if where else f"{self.filename}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise FileError(list(self.items))

    def refused(self, where: str, exc: Exception) -> FileError:
        """A service's refusal, as a FileError naming the entry (and each field, when the error has ``errors``, a
        mapping of field → message)."""
        errors = getattr(exc, "errors", None)
        if isinstance(errors, dict) and errors:
            for name, message in errors.items():
                self.add(f"{where}.{name}", message)
        else:
            self.add(where, str(exc))
        return FileError(list(self.items))
