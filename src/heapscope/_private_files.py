"""Files that name the user's code (captures, heapprof digests, snapshots) are private: mode 0600."""

import os

PRIVATE_MODE = 0o600


def open_private(path, overwrite, *, read_write=True):
    """Opens *path* for a new capture or digest, created with mode 0600; an
    existing file is truncated (``overwrite``) and made 0600 too, or refused
    with FileExistsError. Opened for reading and writing by default: a
    capture's writer maps the file (its journal). Returns the descriptor."""
    access = os.O_RDWR if read_write else os.O_WRONLY
    flags = access | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, PRIVATE_MODE)
    try:
        if overwrite:
            make_private(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private(fd):
    """Mode 0600 for a regular file opened as *fd* (an older file being
    overwritten keeps its mode otherwise); other files are left alone."""
    import stat

    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fchmod(fd, PRIVATE_MODE)
