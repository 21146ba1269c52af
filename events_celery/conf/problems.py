"""Problems found while reading the settings: collected, never raised while parsing."""

from __future__ import annotations

import attrs


@attrs.frozen
class Problem:
    """One misconfiguration: a check id suffix (``"E001"``), what is wrong and how to fix it."""

    id: str
    message: str
    hint: str

    @property
    def is_error(self) -> bool:
        """Whether the settings cannot be used with it (``E...``); a ``W...`` only warns."""
        return not self.id.startswith("W")


@attrs.define
class Problems:
    """The problems of one reading of the settings, in the order they were found.

    Every reader adds to one of these instead of raising, so ``manage.py check`` lists every
    problem of one run.
    """

    found: list[Problem] = attrs.Factory(list)

    def add(self, check_id: str, message: str, hint: str) -> None:
        """Record a problem: its check id suffix, what is wrong and how to fix it."""
        self.found.append(Problem(check_id, message, hint))

    def __bool__(self) -> bool:
        return bool(self.found)

    def errors(self) -> list[Problem]:
        """The problems that are errors (not warnings)."""
        return [p for p in self.found if p.is_error]
