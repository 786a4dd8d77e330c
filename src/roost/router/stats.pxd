# Cython declarations for stats.py (pure Python mode: stats.py stays the
# source; see native.py). Only the per-request counter and its rows are
# extension types; the Prometheus collector around them stays a Python class.

cimport cython


@cython.final
cdef class Row:
    # ROW counts (stats.ROW: 10 status classes + 12 latency buckets; a C array
    # needs its size here, and test_stats checks the two agree)
    cdef long long n[22]

    @cython.locals(i=Py_ssize_t)
    cpdef list values(self)


@cython.final
cdef class RequestCounts:
    cdef public dict apps
    cdef public Row every
    cdef public double latency_sum

    @cython.locals(row=Row, every=Row, i=Py_ssize_t, cls=Py_ssize_t)
    cpdef record(self, bytes app, int status, double seconds)
    cpdef list latency(self)


cdef Py_ssize_t _TOP_CLASS, _FIRST_BUCKET
