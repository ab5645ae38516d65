"""Text on its way to a terminal. File names, URLs, ids of other tools' indexes, server messages:
much of what svdflow prints comes from files someone else wrote, and a control character in them
(ESC starts sequences that move the cursor, recolour or retitle the window, hide what came before;
a bidi override reverses what follows) would act on the terminal instead of being shown. Every
such character is written as its Python escape (\\x1b, \\u202e), so what is printed is what the
file says.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character that is not printable (line breaks apart) written as an escape."""
    if text.isprintable():
        return text
    return "\n".join(line if line.isprintable() else "".join(_escaped(char) for char in line)
                     for line in str(text).split("\n"))


def _escaped(char: str) -> str:
    return char if char.isprintable() else repr(char)[1:-1]
