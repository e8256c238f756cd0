"""Named extension points: built-in entries registered in code, third-party ones found through entry points."""

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from emprobe.errors import EmprobeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name; a name not registered in code is looked up in the package entry-point `group`."""

    def __init__(self, group: str, kind: str):
        self.group, self.kind = group, kind
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def get(self, name: str) -> T | None:
        if name not in self._entries:
            self.discover()
        return self._entries.get(name)

    def require(self, name: str, shown: str | None = None, where: str = "") -> T:
        """The entry `name`, or one error line naming what the user wrote (`shown`, `where`) and the known names."""
        entry = self.get(name)
        if entry is None:
            raise EmprobeError(f"unknown {self.kind} {shown or repr(name)}{where}: known are {', '.join(self)}")
        return entry

    def discover(self) -> None:
        """Load the entry points of `group` once; entries registered in code win over plugins of the same name."""
        if self._discovered:
            return
        self._discovered = True
        for point in entry_points(group=self.group):
            if point.name in self._entries:
                continue
            try:
                self._entries[point.name] = point.load()
            except Exception as err:  # a broken plugin must not take the whole tool down
                raise EmprobeError(f"{self.kind} plugin {point.name!r} ({point.value}) failed to load: "
                                   f"{type(err).__name__}: {err}") from None

    def __iter__(self) -> Iterator[str]:
        self.discover()
        return iter(sorted(self._entries))
