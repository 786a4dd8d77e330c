# Cython declarations for stats.py (pure Python mode: stats.py stays the
# source; see native.py). Only the per-request counter is an extension type;
# the Prometheus collector around it stays a Python class.

cimport cython


@cython.final
cdef class RequestCounts:
    cdef public dict apps
    cdef public list latency
    cdef public double latency_sum

    @cython.locals(row=list, i=Py_ssize_t, cls=Py_ssize_t)
    cpdef record(self, bytes app, int status, double seconds)


cdef Py_ssize_t _TOP_CLASS, _FIRST_BUCKET
