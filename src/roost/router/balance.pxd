# Cython declarations for balance.py (pure Python mode: balance.py stays the
# source; see native.py). Typed fields make a slot's counters C-level.

cimport cython


@cython.final
cdef class Slot:
    cdef public object backend
    cdef public double ejected_until
    cdef public Py_ssize_t fails
    cdef public list idle
    cdef public tuple key
    cdef public bytes label
    cdef public Py_ssize_t outstanding
    cdef public bint retired


cpdef bint record_failure(Slot slot, double now, Py_ssize_t max_fails, double eject_s)
cpdef record_success(Slot slot)
