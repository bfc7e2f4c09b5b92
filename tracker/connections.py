"""Who holds the tracker's HTTP connection slots: caps in all and per address, and who gives one up when they run out."""

from __future__ import annotations

from collections.abc import Hashable


class ConnectionTable:
    """Admission of connections, by address; a connection is *waiting* until its request head is complete.

    A slowloris holds slots by never finishing a head, a flood by opening many: per address at most
    ``per_address`` slots, and when all ``total`` are taken the connection that has waited longest
    for a head gives its slot to the newcomer. An announce (a whole head in one packet, answered in
    under a millisecond) is never the one waiting longest.
    """

    def __init__(self, total: int, per_address: int) -> None:
        self.total, self.per_address = total, per_address
        self._address: dict[Hashable, str] = {}  # every admitted connection -> its address
        self._count: dict[str, int] = {}
        self._waiting: dict[Hashable, None] = {}  # insertion order = oldest wait first

    def __len__(self) -> int:
        return len(self._address)

    def admit(self, handle: Hashable, address: str) -> tuple[bool, Hashable | None]:
        """(admitted?, the connection to close to make room, if any); an admitted one starts waiting."""
        if self._count.get(address, 0) >= self.per_address:
            return False, None
        evicted = None
        if len(self._address) >= self.total:
            if not self._waiting:
                return False, None
            evicted = next(iter(self._waiting))
            self.close(evicted)
        self._address[handle] = address
        self._count[address] = self._count.get(address, 0) + 1
        self._waiting[handle] = None
        return True, evicted

    def waiting(self, handle: Hashable) -> None:
        """``handle`` waits for its next request head (again): it goes to the back of the queue."""
        if handle in self._address:
            self._waiting.pop(handle, None)
            self._waiting[handle] = None

    def busy(self, handle: Hashable) -> None:
        """``handle`` has a whole request head and is being answered: it is not the one to give up its slot."""
        self._waiting.pop(handle, None)

    def close(self, handle: Hashable) -> None:
        address = self._address.pop(handle, None)
        if address is None:
            return
        self._waiting.pop(handle, None)
        left = self._count[address] - 1
        if left:
            self._count[address] = left
        else:
            del self._count[address]
