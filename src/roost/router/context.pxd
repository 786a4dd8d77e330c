# Cython declarations for context.py (pure Python mode: context.py stays the
# source; see native.py). The request path reads the clock, the deadlines'
# limits and the table through typed fields.

cimport cython


# (before the cimports: accesslog.pxd cimports client.pxd, which cimports this
# from here while this file is still being read)
cpdef double monotonic() noexcept

from roost.router.accesslog cimport AccessLog
from roost.router.balance cimport Balancer
from roost.router.scan cimport bytes_of
from roost.router.stats cimport RequestCounts




@cython.final
cdef class Context:
    cdef public AccessLog access
    cdef public Balancer balancer
    cdef public Py_ssize_t buffer_bytes
    cdef public dict bundles
    cdef public set clients
    cdef public object clock
    cdef public RequestCounts counts
    cdef public bint draining
    cdef public double first_byte_timeout
    cdef public double header_timeout
    cdef public dict host_cache
    cdef public str host_id
    cdef public double idle_timeout
    cdef public object limits
    cdef public object loop
    cdef public Py_ssize_t max_attempts
    cdef public Py_ssize_t max_body_bytes
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t max_headers
    cdef public double now
    cdef public Py_ssize_t replay_bytes
    cdef public bytearray rid_buf
    cdef public bytes rid_prefix
    cdef public object spawn
    cdef public object stats
    cdef public object table
    cdef public Py_ssize_t table_gen

    @cython.locals(buf=bytearray, i=Py_ssize_t, c=int)
    cpdef bytes request_id(self)
