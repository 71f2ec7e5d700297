"""Warnings about a file that was accepted: things a user should be told (NUL characters
removed, NaN or infinite numbers, integers kept as text, very long lines, no text column),
counted per kind with the first place each was seen, so a million of them make one line."""

from __future__ import annotations

from dataclasses import dataclass, field

LONG_LINE_BYTES = 1024 * 1024  # a line (a CSV row, a JSON Lines record) this long is worth a word


@dataclass
class _Seen:
    count: int
    first: str
    detail: str


@dataclass
class Findings:
    """Collects warnings while a file is read; :meth:`messages` renders them."""

    seen: dict[str, _Seen] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)

    def add(self, kind: str, where: str, count: int = 1, detail: str = "") -> None:
        """Count ``count`` occurrences of ``kind`` (e.g. ``"nul"``, ``"non_finite:price"``);
        ``where`` and ``detail`` are kept from the first one."""
        if count <= 0:
            return
        if kind in self.seen:
            self.seen[kind].count += count
        else:
            self.seen[kind] = _Seen(count, where, detail)

    def note(self, message: str) -> None:
        """A warning that is already a sentence."""
        self.extra.append(message)

    def messages(self) -> list[str]:
        out = []
        for kind, seen in self.seen.items():
            name, _, column = kind.partition(":")
            out.append(_MESSAGES[name](seen, column))
        return out + self.extra


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


_NUL_ONE = "NUL character (\\u0000) was"
_NUL_MANY = "NUL characters (\\u0000) were"

_MESSAGES = {
    "nul": lambda s, _c: (
        f"{_plural(s.count, _NUL_ONE, _NUL_MANY)} removed from the text, the first at "
        f"{s.first}: databases such as PostgreSQL cannot store them in text, and they are "
        "almost always debris from a binary export."
    ),
    "non_finite": lambda s, c: (
        f"{'Column ' + repr(c) if c else 'The file'} holds "
        f"{_plural(s.count, 'NaN or infinite number', 'NaN or infinite numbers')} (the first "
        f"at {s.first}): they are kept as such, but statistics and metrics skip them; remove "
        "them if they stand for missing values."
    ),
    "huge_int": lambda s, c: (
        f"Column {c!r} holds integers too large for 64 bits (the first at {s.first}, "
        f"{s.detail}): the column is stored as text, so nothing is rounded; convert it "
        "yourself if it is a number."
    ),
    "long_line": lambda s, _c: (
        f"{_plural(s.count, 'line is', 'lines are')} longer than "
        f"{LONG_LINE_BYTES // 2**20} MiB (the first is {s.first}, {s.detail}): check that the "
        "file has line breaks where it should; training and previews cut such rows."
    ),
}
