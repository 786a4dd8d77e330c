# Cython declarations for exchange.py (pure Python mode: exchange.py stays the
# source; see native.py).

cimport cython

from roost.router.client cimport ClientConnection
from roost.router.relay cimport Relay


@cython.final
cdef class Exchange(Relay):

    @cython.locals(hosts=Py_ssize_t, kind=int, fwd=list, name=bytes, value=bytes, dropped=bint,
                    headers=list, i=Py_ssize_t)
    cpdef start(self)
    cdef void _setup(self, ClientConnection client, double now, bytes url)


cdef dict _KINDS
# (C ints: the header loop compares each header's kind against them)
cdef int _PLAIN, _DROP, _HOST, _LENGTH, _TE, _CONN, _UPG, _AUTH, _ACCEPT_ENC, _RID, _REFERER, _AGENT
cpdef int _kind(bytes name)
cdef void _add(list fwd, bytes name, bytes value)


@cython.locals(ex=Exchange)
cpdef Exchange new_exchange(ClientConnection client, double now, bytes url)
