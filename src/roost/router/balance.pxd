# Cython declarations for balance.py (pure Python mode: balance.py stays the
# source; see native.py). Typed fields make a slot's counters C-level.

cimport cython

from roost.router.table cimport AppEntry


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


@cython.final
cdef class Balancer:
    cdef public Py_ssize_t max_fails
    cdef public double eject_s
    cdef public dict slots

    @cython.locals(s=Slot)
    cpdef list slots_for(self, AppEntry entry)
    @cython.locals(slots=list, start=Py_ssize_t)
    cpdef Slot choose(self, AppEntry entry, double now, exclude=*)
    cpdef bint failed(self, Slot slot, double now)


@cython.locals(n=Py_ssize_t, i=Py_ssize_t, s=Slot, best=Slot, fallback=Slot)
cpdef Slot pick(list slots, Py_ssize_t start, double now, exclude=*)
