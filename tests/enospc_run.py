"""``python tests/enospc_run.py N ARGS...``: ``stsr ARGS...`` in a process whose disk fills
up after N flushes: every ``os.fsync`` after the N-th fails with ENOSPC, as a full disk
reports delayed writes (ext4's delayed allocation, NFS, quotas). The stsr code runs
unchanged; the disk-full tests (tests/test_disk_full.py) check what it leaves."""
import errno
import os
import sys

_allowed = int(sys.argv[1])
_real_fsync = os.fsync


def _fsync(fd: int) -> None:
    global _allowed
    if _allowed <= 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _allowed -= 1
    _real_fsync(fd)


os.fsync = _fsync

from stsr_core.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
