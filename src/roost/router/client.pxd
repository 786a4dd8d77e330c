# Cython declarations for client.py (pure Python mode: client.py stays the
# source; see native.py).

cimport cython

from roost.router.context cimport Context, monotonic

from roost.router.relay cimport Relay
from roost.router.upstream cimport Upstream
from roost.router.scan cimport lane_head, lane_request, request_head, same, sub
from roost.router.sockwrite cimport put, stream_fd
from roost.router.table cimport AppEntry


@cython.final
cdef class ClientConnection:
    cdef public list _drain
    cdef public Relay active
    cdef public bint closed
    cdef public Context ctx
    cdef public Relay cur
    cdef public double deadline
    cdef public int fd
    cdef public bytes fwd_for
    cdef public Py_ssize_t head_bytes
    cdef public double idle_since
    cdef public object is_closing
    cdef public bint lingering
    cdef public AppEntry memo_entry
    cdef public Py_ssize_t memo_gen
    cdef public bytes memo_host
    cdef public object parser
    cdef public int paused
    cdef public bytes peer
    cdef public bint plain
    cdef public object queue
    cdef public bint queued
    cdef public Py_ssize_t read_size
    cdef public bytes scheme
    cdef public object transport
    cdef public Upstream tunnel
    cdef public Relay upgrading
    cdef public bint write_paused
    cdef public double write_deadline

    @cython.locals(url_end=Py_ssize_t, ex=Relay, headers=list, hs=Py_ssize_t, he=Py_ssize_t,
                   as_=Py_ssize_t, ae=Py_ssize_t, rs=Py_ssize_t, re_=Py_ssize_t, host=bytes,
                   ctx=Context)
    cpdef bint _plain_request(self, bytes data)
    cpdef _begin(self, Relay ex, bint routed)
    @cython.locals(ex=Relay, rid=bytes)
    cpdef bint _lane(self, bytes data, Py_ssize_t url_end, bytes host, AppEntry entry,
                     Py_ssize_t as_, Py_ssize_t ae, Py_ssize_t rs, Py_ssize_t re_)
    cpdef write(self, object data)
    cpdef pause(self, int reason)
    cpdef resume(self, int reason)
    cpdef exchange_done(self, Relay ex)
    cpdef _finish(self, bint linger)
    @cython.locals(now=double)
    cpdef _log(self, Relay ex)
    cpdef check(self, double now)
