"""What the engine's writes share.

Permissions: files and folders made under a temporary name (``tempfile.mkstemp``/``mkdtemp``
make them private, 0600/0700) get the permissions the user's umask gives a newly created
file or folder before they take their final name, so a group sharing results can read them.

Failures: a write that fails (a full disk, a quota, an I/O error) is reported as one line
naming the file and saying what was kept (:func:`write_error`).
"""
from __future__ import annotations

import errno
import os

from .errors import StsrError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: str) -> None:
    """``path`` (a file or a folder) as if created with ``open``/``mkdir`` under the umask."""
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~current_umask())


def write_error(what: str, exc: OSError, kept: str) -> StsrError:
    """The error for ``what`` (e.g. "'m.stsr'") that could not be written because of
    ``exc``; ``kept`` says what the user still has."""
    why = " ".join((exc.strerror or str(exc)).split())     # HDF5's messages span lines
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"the disk is full ({os.strerror(exc.errno)})"
    return StsrError(f"cannot write {what}: {why}; {kept}")
