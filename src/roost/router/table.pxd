# Cython declarations for table.py (pure Python mode: table.py stays the
# source; see native.py). Only `AppEntry`, which the request path reads per
# request, is an extension type; tables stay Python objects (weakly referenced).

cimport cython


@cython.final
cdef class AppEntry:
    cdef public frozenset auth_tokens
    cdef public tuple backends
    cdef public tuple expires
    cdef public bint gzip
    cdef public tuple hostnames
    cdef public bytes label
    cdef public str name
    cdef public bint plain
    cdef public str realm
    cdef public object route
    cdef public Py_ssize_t rr
    cdef public object slots
    cdef public tuple static
    cdef public bint suspended

    cpdef expires_for(self, bytes path)


cdef object _ABSENT


cpdef object _get(dict base, dict top, str key)
