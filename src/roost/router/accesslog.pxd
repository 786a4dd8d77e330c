# Cython declarations for accesslog.py (pure Python mode: accesslog.py stays
# the source; see native.py). An exchange is typed as its base, `Relay`, which
# declares all of an Exchange's fields (see relay.pxd).

cimport cython

from roost.router.client cimport ClientConnection
from roost.router.relay cimport Relay


@cython.final
cdef class AccessLog:
    cdef public bytearray _buf
    cdef public int _fd
    cdef public long long _second
    cdef public Py_ssize_t _size
    cdef public object path
    cdef public long long max_bytes
    cdef public int keep
    cdef public bytes stamp
    cdef public bytes _stamped

    cpdef tick(self)
    @cython.locals(tenths=long, status=int, size=Py_ssize_t, ms=long, version=bytes, timing=bytes, url=bytes, host=bytes, user=bytes, rid=bytes, referer=bytes, agent=bytes,
                   peer=bytes, stamped=bytes, method=bytes, sent=bytes, app=bytes, inst=bytes, n=Py_ssize_t, at=Py_ssize_t, buf=bytearray)
    cpdef log(self, ClientConnection client, Relay ex, double now)
    cpdef append(self, bytes line)
    @cython.locals(at=Py_ssize_t)
    cdef Py_ssize_t _reserve(self, Py_ssize_t n) except -1
    cpdef flush(self)
    cpdef int _open(self) except -1
    cpdef _follow(self)
    cpdef close(self)


cdef bytes _SAFE, _SAFE_BYTE
cdef tuple _STATUS, _DIGITS, _V11, _V10, _MS
cdef Py_ssize_t _FLUSH_BYTES, _FIXED


@cython.locals(i=Py_ssize_t, table=bytes)
cdef bint _safe(bytes value)

@cython.locals(n=Py_ssize_t)
cdef Py_ssize_t _put(bytearray buf, Py_ssize_t at, bytes piece)
