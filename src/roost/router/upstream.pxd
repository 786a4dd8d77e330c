# Cython declarations for upstream.py (pure Python mode: upstream.py stays the
# source; see native.py).

cimport cython

from roost.router.context cimport Context

from roost.router.balance cimport Slot
from roost.router.relay cimport Relay
from roost.router.scan cimport cut, plain_response
from roost.router.sockwrite cimport put, stream_fd


@cython.final
cdef class Upstream:
    cdef public bint broken
    cdef public bint chunk_out
    cdef public bint closed
    cdef public bint complete
    cdef public Context ctx
    cdef public double deadline
    cdef public Relay ex
    cdef public int fd
    cdef public bytes hbuf
    cdef public bint head_only
    cdef public Py_ssize_t hpos
    cdef public double idle_since
    cdef public object is_closing
    cdef public list out
    cdef public object parser
    cdef public bint queued
    cdef public bint reading_paused
    cdef public bint received
    cdef public object reframer
    cdef public bint reusable
    cdef public bint reused
    cdef public Slot slot
    cdef public bint started
    cdef public object transport
    cdef public bint tunnel
    cdef public bint until_close

    @cython.locals(end=Py_ssize_t, code=int, i=Py_ssize_t, j=Py_ssize_t)
    cpdef write(self, object data)
    cpdef bint _plain_response(self, Relay ex, bytes data)
    cpdef _flush(self, Relay ex)
    cpdef _body(self, bytes data)
    cpdef begin(self, Relay ex)
    cpdef release(self, bint reusable)
    cpdef close(self)
    cpdef abort(self)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    @cython.locals(i=Py_ssize_t, j=Py_ssize_t)
    cpdef bint _pass_through(self, bytes hbuf, Py_ssize_t end, Relay ex)
    @cython.locals(i=Py_ssize_t, j=Py_ssize_t, te=Py_ssize_t, lh=bytes, extra=bytes, tokens=list)
    cpdef bytes _edit_head(self, bytes head, int code, Relay ex)


@cython.locals(i=Py_ssize_t, j=Py_ssize_t)
cdef tuple _cut(bytes head, bytes lh, bytes marker)


@cython.locals(i=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t, e=Py_ssize_t, seen=int, plain=bint,
               keep_alive=bint, c=int)
cdef (Py_ssize_t, Py_ssize_t) _connection_line(bytes head, Py_ssize_t end)


@cython.locals(n=Py_ssize_t, m=Py_ssize_t, c=int)
cdef bint _named(bytes head, Py_ssize_t at, Py_ssize_t end, bytes name)


cdef bint _value_is(bytes head, Py_ssize_t start, Py_ssize_t stop, bytes want)
