# Cython declarations for sockwrite.py (pure Python mode: sockwrite.py stays
# the source; see native.py).

cimport cython

cdef tuple _PLAIN
cdef int _FLAGS

cpdef int stream_fd(transport) except? -2

@cython.locals(n=Py_ssize_t)
cpdef Py_ssize_t send(int fd, bytes data)

@cython.locals(n=Py_ssize_t)
cpdef bint put(transport, is_closing, int fd, bint queued, object data) except -1
