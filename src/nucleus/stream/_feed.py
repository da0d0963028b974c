"""
One node's view of a room's publications arriving from a broker: in order,
once each, or repaired from history.

Pub/sub delivers in order but at most once: a dropped broker link loses what
was published meanwhile. A :class:`RoomFeed` remembers the last publication
this node delivered (epoch and offset) and judges each arriving one: deliver,
drop (a duplicate), or hold it while the hole before it is filled from the
room's history. If history cannot fill the hole, the room's members are told
(a ``gap``) and the feed goes on from the room's current position. Pure logic,
no I/O: the backend does the reading.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._history import Publication, Recovery

__all__ = ["Arrival", "FeedVerdict", "RoomFeed"]

#: Publications held during one repair before the feed gives up and resets.
MAX_HELD = 10_000


class FeedVerdict(enum.Enum):
    DELIVER = "deliver"
    DROP = "drop"
    HOLD = "hold"
    REPAIR = "repair"  # held; the caller must read history and call repaired()


@dataclass(frozen=True, slots=True)
class Arrival:
    """A publication as the broker delivered it, with its epoch and exclusions."""

    epoch: str
    publication: Publication
    exclude: frozenset[str] | None = None


class RoomFeed:
    """The last position delivered on this node for one room, and what waits for a repair."""

    __slots__ = ("epoch", "held", "offset")

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.offset = 0
        # Not None while a repair is in flight: arrivals wait here, in order.
        self.held: list[Arrival] | None = None

    @property
    def repairing(self) -> bool:
        return self.held is not None

    def baseline(self, epoch: str, offset: int) -> None:
        """The room's position when this node began listening, if nothing arrived yet."""
        if self.epoch is None and self.held is None:
            self.epoch, self.offset = epoch, offset

    def accept(self, arrival: Arrival) -> FeedVerdict:
        """Judge one arrival, in broker order."""
        if self.held is not None:
            if len(self.held) >= MAX_HELD:
                return FeedVerdict.DROP  # the repair resets the room: a gap is reported
            self.held.append(arrival)
            return FeedVerdict.HOLD
        offset = arrival.publication.offset
        if self.epoch is None:
            self.epoch, self.offset = arrival.epoch, offset
            return FeedVerdict.DELIVER
        if arrival.epoch == self.epoch:
            if offset <= self.offset:
                return FeedVerdict.DROP
            if offset == self.offset + 1:
                self.offset = offset
                return FeedVerdict.DELIVER
        self.held = [arrival]
        return FeedVerdict.REPAIR

    def begin_repair(self) -> tuple[str, int] | None:
        """
        Start a repair (after a broker reconnect): the position to recover
        from, or None when there is nothing to repair from (no baseline) or a
        repair is already in flight.
        """
        if self.epoch is None or self.held is not None:
            return None
        self.held = []
        return self.epoch, self.offset

    def position(self) -> tuple[str, int] | None:
        """Where the repair in flight recovers from."""
        return None if self.epoch is None else (self.epoch, self.offset)

    def repaired(self, recovery: Recovery) -> tuple[list[Arrival], bool, bool]:
        """
        Apply what history answered for :meth:`position`.

        Returns ``(to_deliver, reset, again)``: the arrivals to deliver now in
        order; ``reset`` when the hole could not be filled (the caller tells
        the room's members, then delivers); ``again`` when another hole shows
        among the held arrivals and a new repair must start.
        """
        held = self.held or []
        self.held = None
        out: list[Arrival] = []
        reset = not recovery.recovered or len(held) >= MAX_HELD
        if reset:
            self.epoch, self.offset = recovery.epoch, recovery.offset
        else:
            for publication in recovery.publications:
                if publication.offset > self.offset:
                    out.append(Arrival(recovery.epoch, publication))
            # Recovered: the replay reaches the room's position exactly.
            self.offset = max(self.offset, recovery.offset)
        for index, arrival in enumerate(held):
            verdict = self.accept(arrival)
            if verdict is FeedVerdict.DELIVER:
                out.append(arrival)
            elif verdict is FeedVerdict.REPAIR:
                assert self.held is not None
                self.held.extend(held[index + 1 :])
                return out, reset, True
        return out, reset, False
