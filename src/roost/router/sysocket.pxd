# send(2) for sockwrite.py's compiled build (Cython ships no posix/socket.pxd).
# Declarations only: nothing is compiled from this file.

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void *buf, size_t n, int flags)
