"""Test-only fault injection for the gossip driver: drop, duplicate and reorder outgoing frames."""

from __future__ import annotations

import random
from dataclasses import dataclass

from posswarm.errors import PosswarmError


@dataclass(frozen=True)
class Faults:
    """Probabilities applied to each frame a node sends; all zero in production.

    ``dup`` sends the message twice: half the time the same bytes (the replay window must
    drop the copy), half the time re-encoded with a new counter (the application must dedupe).
    ``reorder`` holds a frame back and sends it after the next one.
    """

    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.drop or self.dup or self.reorder)


NONE = Faults()


def parse(text: str) -> Faults:
    """``"drop=0.3,dup=0.1,reorder=0.2"`` (the ``store.gossip_faults`` setting); ``""`` = none."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in ("drop", "dup", "reorder"):
            raise PosswarmError(f"gossip faults {text!r}: expected drop=P,dup=P,reorder=P with P in 0..1")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0.0 <= number <= 1.0:
            raise PosswarmError(f"gossip faults {text!r}: {name} must be a probability in 0..1, got {value!r}")
        values[name] = number
    return Faults(**values)


class Dice:
    """The random choices, seeded in tests so a failing run can be replayed."""

    def __init__(self, faults: Faults, seed: int | None = None) -> None:
        self.faults = faults
        self._rng = random.Random(seed)

    def drop(self) -> bool:
        return self._rng.random() < self.faults.drop

    def dup(self) -> bool:
        return self._rng.random() < self.faults.dup

    def reorder(self) -> bool:
        return self._rng.random() < self.faults.reorder

    def coin(self) -> bool:
        return self._rng.random() < 0.5


def apply(dice: Dice, item: tuple, held: tuple | None, reencode, dropped) -> tuple[tuple | None, list[bytes]]:
    """(the frame now held back, frames to write now) for ``item`` = (message, bytes) after the dice.

    ``reencode(message)`` gives the message's bytes under a fresh counter; ``dropped`` counts injected drops.
    """
    message, data = item
    if not dice.faults.active:
        return held, [data]
    if dice.drop():
        dropped["injected_drop"] += 1
        return held, []
    out = [data]
    if dice.dup():
        out.append(data if dice.coin() else reencode(message))
    if held is None and dice.reorder():
        return (message, out[0]), out[1:]
    if held is not None:
        out.append(held[1])
    return None, out
