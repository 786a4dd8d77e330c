# Cython declarations for relay.py (pure Python mode: relay.py stays the
# source; see native.py).

from roost.router.balance cimport Slot
from roost.router.table cimport AppEntry
from roost.router.client cimport ClientConnection
from roost.router.upstream cimport Upstream

cimport cython


cdef class Relay:
    # Every field of an Exchange is declared here, on its base, even those that
    # exchange.py declares in Exchange.__slots__: upstream.py and client.py can
    # then reach them at C speed through the `Relay` type without cimporting
    # exchange (a cimport cycle through a base class is something Cython
    # cannot compile).
    cdef public bint aborted
    cdef public Py_ssize_t attempts
    cdef public bint body_done
    cdef public ClientConnection client
    cdef public double connect_deadline
    cdef public object connect_task
    cdef public bint done
    cdef public AppEntry entry
    cdef public object failed
    cdef public bint keep_alive
    cdef public bint local
    cdef public bytes method
    cdef public list pending
    cdef public Py_ssize_t pending_size
    cdef public list replay
    cdef public bytes replay_head
    cdef public Py_ssize_t replay_size
    cdef public bint replayable
    cdef public bint req_chunked
    cdef public bytes rid
    cdef public Slot slot
    cdef public bint slot_held
    cdef public Upstream up
    # (exchange.py's fields)
    cdef public bint accept_gzip
    cdef public bytes agent
    cdef public Py_ssize_t bytes_in
    cdef public Py_ssize_t bytes_out
    cdef public list early
    cdef public object expires
    cdef public bint head_done
    cdef public list headers
    cdef public bytes host
    cdef public bint http10
    cdef public bytes referer
    cdef public int status
    cdef public double t0
    cdef public bint upgrade
    cdef public bytes url
    cdef public bytes user
    cdef public bint version_known

    @cython.locals(slot=Slot, up=Upstream, slots=list)
    cpdef proxy(self)
    cpdef attach(self, Upstream up)
    cpdef send_body(self, bytes data)
    cpdef end_body(self)
    cpdef _send(self, bytes data)
    cpdef _release_slot(self)
    cpdef _bad_gateway(self)
    @cython.locals(slot=Slot)
    cpdef connect_timeout(self)
    @cython.locals(slot=Slot)
    cpdef response_complete(self, Upstream up)
    cpdef upstream_lost(self, Upstream up, exc)
    cpdef upstream_broken(self, Upstream up, str why)
    cpdef upstream_timeout(self, Upstream up)
    cpdef start_tunnel(self, Upstream up, bytes rest)
    cpdef tunnel_closed(self)
    cpdef abort(self)
