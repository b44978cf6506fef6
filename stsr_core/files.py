"""Permissions of what the engine writes: files and folders made under a temporary name
(``tempfile.mkstemp``/``mkdtemp`` make them private, 0600/0700) get the permissions the
user's umask gives a newly created file or folder before they take their final name, so a
group sharing results can read them."""
from __future__ import annotations

import os


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: str) -> None:
    """``path`` (a file or a folder) as if created with ``open``/``mkdir`` under the umask."""
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~current_umask())
