"""Errors that say where bad input is: file, line, and what is wrong."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Malformed or inconsistent input data, located as ``file:line: message``."""

    def __init__(self, path: str | Path | None, line: int | None, message: str):
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}" if path is not None else message)


class CorruptImageError(DataError):
    """An image file that exists but cannot be decoded."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(path, None, f"cannot decode image ({reason})")


class MissingImagesError(DataError):
    """Images named by the annotations that are not on disk."""

    def __init__(self, source: str | Path | None, missing: list[str], root: Path | None):
        self.missing = missing
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        super().__init__(
            source,
            None,
            f"{len(missing)} image(s) missing under {root}: {shown} "
            "(pass missing='skip' / --skip-missing to drop them explicitly)",
        )
