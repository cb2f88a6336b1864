"""Whether a file that torch's weights-only reader refused asks to run code: a pickle that imports
or calls something (a hostile file) rather than bytes that are no pickle at all (junk). Read with
:func:`pickletools.genops`, which runs nothing."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CODE_OPCODES", "asks_for_code"]

#: pickle instructions that import or call something
CODE_OPCODES = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "EXT1",
     "EXT2", "EXT4"}
)


def asks_for_code(path: Path) -> bool:
    """Whether ``path`` is a whole pickle with an instruction that imports or calls something.

    Read with :func:`pickletools.genops`, which runs nothing; bytes that are no pickle (a text
    file, an image) are not code, even when one of them looks like such an instruction.
    """
    import pickletools

    found = False
    try:
        with open(path, "rb") as file:
            for opcode, _arg, _pos in pickletools.genops(file):
                found = found or opcode.name in CODE_OPCODES
    except Exception:  # pickletools raises ValueError and others on junk
        return False
    return found
