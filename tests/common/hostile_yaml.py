"""Hostile YAML texts shared by the tests of the reader and of ``billing_apply``."""

from __future__ import annotations


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level lists the previous one ``width`` times (9^9 strings from ~1 KB; the
    line of a5, 9^6 = 531,441 values, is the first over the limit)."""
    lines = ['a0: &a0 ["lol"' + ', "lol"' * (width - 1) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"
