"""The fault suite's figures: one row per scenario, printed as a table at the end of the run.

Each scenario counts event ids at the receivers: ``sent`` are the events that must arrive (each
committed, or each valid one), ``lost`` those that never did, ``duplicates`` the extra arrivals of
sent events, and ``phantom`` the events that arrived although they must not (from a rolled-back
transaction, or a hostile message that ran a receiver). Scenarios of ordered subscriptions also
count ``inversions``: runs of a key that came after a run of a later event of that key (``-``
where a scenario keeps no order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable

import attrs

COLUMNS = ("scenario", "sent", "delivered", "lost", "duplicates", "phantom", "inversions")


@attrs.frozen
class Row:
    """The counts of one scenario."""

    scenario: str
    sent: int
    delivered: int
    lost: int
    duplicates: int
    phantom: int
    inversions: int | None = None

    def cells(self) -> tuple[str, ...]:
        return tuple(
            "-" if getattr(self, column) is None else str(getattr(self, column))
            for column in COLUMNS
        )


#: The rows of this run, in the order the scenarios ran.
ROWS: list[Row] = []


def report(
    scenario: str,
    sent: Collection[str],
    counts: Counter[str],
    phantom: Iterable[str],
    *,
    inversions: int | None = None,
) -> Row:
    """Count one scenario, print its line and keep its row for the table.

    Args:
        scenario: what happened, as the table names it.
        sent: ids of the events that must arrive.
        counts: how many times each event id arrived at the receivers.
        phantom: ids of events that must not arrive; those that did are counted.
        inversions: runs out of their key's order (ordered subscriptions only).
    """
    wanted = set(sent)
    row = Row(
        scenario=scenario,
        sent=len(wanted),
        delivered=len(wanted & set(counts)),
        lost=len(wanted - set(counts)),
        duplicates=sum(c - 1 for i, c in counts.items() if i in wanted),
        phantom=len(set(phantom) & set(counts)),
        inversions=inversions,
    )
    ROWS.append(row)
    print(
        f"\n{scenario}: sent {row.sent}, delivered {row.delivered}, lost {row.lost}, "
        f"duplicates {row.duplicates}, phantom {row.phantom}"
        + ("" if inversions is None else f", inversions {inversions}")
    )
    return row


def table(rows: Iterable[Row]) -> list[str]:
    """The rows as lines of a plain-text table with a header."""
    cells = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]

    def line(values: tuple[str, ...]) -> str:
        first, *numbers = values
        return "  ".join(
            [
                first.ljust(widths[0]),
                *(v.rjust(w) for v, w in zip(numbers, widths[1:], strict=True)),
            ]
        )

    return [line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])]
