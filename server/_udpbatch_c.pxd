# The C declarations of _udpbatch_c.pyx, for the native modules that queue packets without a
# Python call between (server/_link_c.pyx): the port a session's deltas leave by.

from libc.stdint cimport uint8_t


cdef class Port:
    cdef readonly object outbox  # this module's Outbox
    cdef readonly object route  # and Route

    cdef int send_parts(self, const uint8_t *head, Py_ssize_t head_size, bytes body) except -1
