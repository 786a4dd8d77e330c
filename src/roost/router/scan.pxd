# Cython declarations for scan.py (pure Python mode: scan.py stays the source;
# see native.py). The scanners index bytes with C integers.

cimport cython

cdef bytes _TOKEN, _VALUE, _TARGET, _HTTP11
cdef frozenset _NOT_PLAIN
cdef dict _NAMES


@cython.locals(n=Py_ssize_t, k=Py_ssize_t, s=Py_ssize_t, v=Py_ssize_t, url_end=Py_ssize_t,
               count=Py_ssize_t, target=bytes, token=bytes, value=bytes, names=dict,
               name=bytes)
cpdef Py_ssize_t request_head(bytes data, list headers, Py_ssize_t max_headers)


@cython.locals(end=Py_ssize_t, code=int)
cpdef (Py_ssize_t, int) response_head(bytes data)


@cython.locals(n=Py_ssize_t, k=Py_ssize_t, s=Py_ssize_t, e=Py_ssize_t, v=Py_ssize_t,
               i=Py_ssize_t, end=Py_ssize_t, size=Py_ssize_t, code=int, c=int, d=int,
               length=Py_ssize_t, cut=Py_ssize_t, stop=Py_ssize_t, token=bytes, value=bytes)
cpdef (Py_ssize_t, int, Py_ssize_t, Py_ssize_t) plain_response(bytes data)


@cython.locals(m=Py_ssize_t, c=int)
cdef bint _is(bytes data, Py_ssize_t at, bytes name)


cdef dict _LANE_NAMES, _LANE_SPECIAL
cdef frozenset _NOT_LANE
cdef int _OTHER, _HOST, _AGENT, _REFERER

cpdef int _lane_kind(bytes name)


@cython.locals(n=Py_ssize_t, k=Py_ssize_t, s=Py_ssize_t, v=Py_ssize_t, url_end=Py_ssize_t,
               count=Py_ssize_t, hosts=Py_ssize_t, hs=Py_ssize_t, he=Py_ssize_t,
               as_=Py_ssize_t, ae=Py_ssize_t, rs=Py_ssize_t, re_=Py_ssize_t, kind=int,
               size=Py_ssize_t, c=int,
               target=bytes, token=bytes, value=bytes, names=dict, name=bytes)
cpdef (Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) lane_request(bytes data, Py_ssize_t max_headers)


cpdef bytes sub(bytes data, Py_ssize_t start, Py_ssize_t stop)
@cython.locals(n=Py_ssize_t)
cpdef bint same(bytes data, Py_ssize_t start, Py_ssize_t stop, bytes other)
cpdef bytes bytes_of(bytearray buf)

cdef bytes _RID_LINE, _END

@cython.locals(head=Py_ssize_t, f=Py_ssize_t, h=Py_ssize_t, r=Py_ssize_t, n=Py_ssize_t, out=bytes,
               dst=cython.p_char)
cpdef bytes lane_head(bytes data, bytes fwd_for, bytes host, bytes rid)


@cython.locals(n=Py_ssize_t, out=bytes, dst=cython.p_char, src=cython.p_char)
cpdef bytes cut(bytes data, Py_ssize_t start, Py_ssize_t stop)
