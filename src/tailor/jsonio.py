"""Files written atomically with the permissions any new file gets, and JSON read with errors naming the file.

Outputs are written to a temporary file next to the target and renamed into place, so a reader never
sees half a file. `tempfile.mkstemp` would create that file private to its owner (mode 0600), and the
rename would keep the mode; `temporary_sibling` creates it as `open()` creates files (0666 less the umask,
0644 under the usual 022), so a profile, a front or an ONNX model can be read by whoever may read the
folder. Shared by profiles, fronts, the demo's report and exports.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def default_file_mode() -> int:
    """The mode `open()` gives a new file in this process: 0o666 less the umask (read without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):  # not Linux: read the umask by setting it, then restore it
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temporary_sibling(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """Create an empty, uniquely named hidden file next to `path` (mode as `open()` gives) and return its path.

    Write into it, then `os.replace` it onto `path`; delete it if anything fails.
    """
    target = Path(path)
    for _ in range(100):
        candidate = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"cannot create a temporary file next to {str(target)!r}")


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write `data` as JSON to a temporary file in the target folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_json(path: str | os.PathLike[str], what: str, error: type[Exception]) -> Any:
    """Parse the JSON file at `path`; an unreadable or malformed file raises `error` naming `what` and the path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
