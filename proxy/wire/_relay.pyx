# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled steady-state relay of a session (pgkeep's hot path; see proxy/session.py).

While nothing a client sends may be pgkeep's, a session hands both of its sockets to a
`FastRelay` (dups of them, the transports paused). All relays of the process share one epoll
set, which the event loop watches as a single reader: one wake-up of the loop serves every
socket that became readable, each with one recv and one send, with no Python call and no Python
object per read or per message. A relay does the same bookkeeping as the Python hot path
(FrameScanner.pass_all): every client message that expects an answer is appended to the
session's `_inflight` deque, every answer pops it, and ReadyForQuery's status becomes
`txn_status`.

It gives the session back (`session._fast_handback(client, unsent, rest)`) at the first byte it
may not decide on: a Query or Parse that `may_intercept_bytes` would flag (the same words, the
same test on the same bytes), a Terminate, an inspected frame split across reads or longer than
`stream_over`, a bad length word, an upstream ErrorResponse (the batch's failure is the
interceptor's business), a send the socket did not take whole, or EOF and errors (the
transports, resumed, see them themselves). Nothing is lost or reordered: `unsent` are bytes
already walked and due to the other side, `rest` the bytes from the first undecided frame on.

The pure-Python path (FrameScanner + transports) is what runs without this module, or with
PGKEEP_PURE_PYTHON=1; both must behave the same on the wire.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Realloc
from libc.stdint cimport uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy, memset
from libc.errno cimport errno, EAGAIN, EINTR

cdef extern from "<sys/socket.h>" nogil:
    int MSG_NOSIGNAL
    int MSG_DONTWAIT

# recv and send as bare system calls: libc's wrappers are cancellation points, which costs two
# calls (pthread cancel state) around each; this thread is never cancelled.
cdef extern from "<sys/syscall.h>" nogil:
    long SYS_recvfrom, SYS_sendto

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)

cdef inline ssize_t recv(int fd, void *buf, size_t n, int flags) nogil:
    return syscall(SYS_recvfrom, fd, buf, n, flags, NULL, NULL)

cdef inline ssize_t send(int fd, const void *buf, size_t n, int flags) nogil:
    return syscall(SYS_sendto, fd, buf, n, flags, NULL, 0)

cdef extern from "<unistd.h>" nogil:
    int dup(int fd)
    int close(int fd)

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLIN, EPOLL_CLOEXEC

cdef extern from "<string.h>" nogil:
    void *memmem(const void *haystack, size_t hlen, const void *needle, size_t nlen)

cdef enum:
    BUFSIZE = 262144
    HEADROOM = 8           # room before the read to put back a held partial header
    MAXEVENTS = 128

cdef unsigned char _buf[HEADROOM + BUFSIZE]   # one loop thread: every callback finishes with it
cdef unsigned char *_lower = NULL             # scratch for the lowercased frame of may_intercept
cdef size_t _lower_size = 0
cdef list _words = []                         # the intercept words, lowercase bytes
cdef object _STATUS = {73: b"I", 84: b"T", 69: b"E"}
# The protocol tables of proxy/session.py, given by configure(): client message types that
# expect an answer, those answered by ReadyForQuery, and the upstream types that end the
# answer to each other one.
cdef unsigned char _EXPECTS[256]
cdef unsigned char _SYNCING[256]
cdef unsigned char _TERMINAL[256][256]


def configure(words, terminals, syncing, expects):
    """`words`: those of proxy.sql.may_intercept_bytes (lowercase bytes); `terminals`: client
    type -> upstream types ending its answer; `syncing`, `expects`: sets of client types."""
    global _words
    _words = [bytes(w) for w in words]
    memset(_EXPECTS, 0, sizeof(_EXPECTS))
    memset(_SYNCING, 0, sizeof(_SYNCING))
    memset(_TERMINAL, 0, sizeof(_TERMINAL))
    for c in expects:
        _EXPECTS[c] = 1
    for c in syncing:
        _SYNCING[c] = 1
    for c, ends in terminals.items():
        for t in ends:
            _TERMINAL[c][t] = 1


cdef class _Poller:
    """The epoll set of every active relay, one reader of the event loop."""
    cdef int epfd
    cdef object loop
    cdef set live      # the registered relays (an epoll event holds a borrowed pointer)
    cdef list retired  # relays stopped during a dispatch: kept alive until it ends
    cdef epoll_event events[MAXEVENTS]

    def __cinit__(self, loop):
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1")
        self.loop = loop
        self.live = set()
        self.retired = []
        loop.add_reader(self.epfd, self.dispatch)

    cdef int add(self, FastRelay relay) except -1:
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.u64 = <uint64_t><uintptr_t><void *>relay
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, relay.cfd, &ev) < 0:
            raise OSError(errno, "epoll_ctl")
        ev.data.u64 |= 1   # the upstream side: objects are aligned, the low bit is free
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, relay.ufd, &ev) < 0:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, relay.cfd, NULL)
            raise OSError(errno, "epoll_ctl")
        self.live.add(relay)
        return 0

    cdef void remove(self, FastRelay relay):
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, relay.cfd, NULL)
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, relay.ufd, NULL)
        self.live.discard(relay)
        self.retired.append(relay)

    def dispatch(self):
        cdef int n, i
        cdef uint64_t u
        cdef FastRelay relay
        while True:
            n = epoll_wait(self.epfd, self.events, MAXEVENTS, 0)
            for i in range(n):
                u = self.events[i].data.u64
                relay = <FastRelay><void *><uintptr_t>(u & ~(<uint64_t>1))
                if not relay.active:
                    continue
                try:
                    if u & 1:
                        relay.upstream_readable()
                    else:
                        relay.client_readable()
                except BaseException as e:  # a bug in the session's Python path: report it, go on
                    self.loop.call_exception_handler({"message": "pgkeep relay", "exception": e})
            if n < MAXEVENTS:
                break
        self.retired.clear()


cdef _Poller _poller = None


cdef _Poller _poller_for(loop):
    global _poller
    if _poller is None or _poller.loop is not loop:
        _poller = _Poller(loop)
    return _poller


cdef bint _may_intercept(const unsigned char *p, Py_ssize_t n):
    """may_intercept_bytes(p[:n]): does the ASCII-lowercased frame contain an intercept word?"""
    global _lower, _lower_size
    cdef Py_ssize_t i
    cdef unsigned char c
    cdef bytes w
    if <size_t>n > _lower_size:
        newp = <unsigned char *>PyMem_Realloc(_lower, n)
        if newp == NULL:
            return True   # cannot decide: let Python do it
        _lower, _lower_size = newp, n
    for i in range(n):
        c = p[i]
        _lower[i] = c + 32 if 65 <= c <= 90 else c
    for w in _words:
        if memmem(_lower, n, <const char *>w, len(w)) != NULL:
            return True
    return False


cdef inline unsigned int _be32(const unsigned char *p):
    return (<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) | (<unsigned int>p[2] << 8) | p[3]


cdef class FastRelay:
    """One session's two sockets while the session is in steady state (see the module doc)."""

    cdef object session, loop, inflight, append, popleft
    cdef _Poller poller
    cdef int cfd, ufd
    cdef public bint active
    # client -> upstream: bytes left of a frame being passed, its type, a held partial header
    cdef public long long cpass
    cdef public int cptype
    cdef unsigned char chdr[5]
    cdef int chl
    # upstream -> client
    cdef public long long upass
    cdef public int uptype
    cdef unsigned char uhdr[5]
    cdef int uhl
    cdef long long max_size, stream_over
    cdef int status, last_type

    def __cinit__(self):
        self.cfd = -1
        self.ufd = -1

    def __init__(self, session):
        self.session = session
        self.loop = session.loop

    def start(self, int client_fd, int upstream_fd, long long max_size, long long stream_over,
              long long cpass, int cptype, long long upass, int uptype, int status, int last_type):
        """Take over both sockets (the caller has paused their transports)."""
        self.cfd = dup(client_fd)
        if self.cfd < 0:
            raise OSError(errno, "dup")
        self.ufd = dup(upstream_fd)
        if self.ufd < 0:
            close(self.cfd)
            self.cfd = -1
            raise OSError(errno, "dup")
        self.max_size, self.stream_over = max_size, stream_over
        self.cpass, self.cptype, self.upass, self.uptype = cpass, cptype, upass, uptype
        self.chl = self.uhl = 0
        self.status, self.last_type = status, last_type
        self.inflight = self.session._inflight
        self.append = self.inflight.append
        self.popleft = self.inflight.popleft
        self.poller = _poller_for(self.loop)
        try:
            self.poller.add(self)
        except OSError:
            close(self.cfd)
            close(self.ufd)
            self.cfd = self.ufd = -1
            raise
        self.active = True

    def stop(self):
        """Give the sockets back. Returns the held partial headers (client, upstream): bytes
        read but not yet forwarded, which the session's scanners must start from."""
        if not self.active:
            return b"", b""
        self.active = False
        self.poller.remove(self)
        close(self.cfd)
        close(self.ufd)
        self.cfd = self.ufd = -1
        self.inflight = self.append = self.popleft = None
        held = (PyBytes_FromStringAndSize(<char *>self.chdr, self.chl),
                PyBytes_FromStringAndSize(<char *>self.uhdr, self.uhl))
        self.chl = self.uhl = 0
        return held

    def __dealloc__(self):
        if self.cfd >= 0:
            close(self.cfd)
        if self.ufd >= 0:
            close(self.ufd)

    @property
    def txn_status(self):
        return _STATUS.get(self.status, b"I")

    # ---- the two directions ----------------------------------------------------------------

    cdef Py_ssize_t _read(self, int fd, unsigned char *hdr, int *hl):
        """recv after the held header bytes: the chunk starts at _buf + HEADROOM - held."""
        cdef ssize_t n = recv(fd, _buf + HEADROOM, BUFSIZE, MSG_DONTWAIT)
        if n <= 0:
            return n
        if hl[0]:
            memcpy(_buf + HEADROOM - hl[0], hdr, hl[0])
            n += hl[0]
        return n

    cdef client_readable(self):
        cdef Py_ssize_t n = self._read(self.cfd, self.chdr, &self.chl)
        if n < 0 and (errno == EAGAIN or errno == EINTR):
            return
        if n <= 0:
            self.session._fast_handback(True, b"", b"")
            return
        cdef unsigned char *data = _buf + HEADROOM - self.chl
        self.chl = 0
        cdef Py_ssize_t pos = 0, end
        cdef long long take, length
        cdef int t
        while pos < n:
            if self.cpass:
                take = self.cpass if self.cpass < n - pos else n - pos
                self.cpass -= take
                pos += take
                if not self.cpass and _EXPECTS[self.cptype]:
                    self.append(self.cptype)
                continue
            if n - pos < 5:
                self.chl = <int>(n - pos)
                memcpy(self.chdr, data + pos, self.chl)
                break
            t = data[pos]
            length = _be32(data + pos + 1)
            if length < 4 or length > self.max_size:
                return self._handback(True, data, pos, n)
            end = pos + 1 + length
            if t == 81 or t == 80 or t == 88:  # Q, P, X
                if t == 88 or length > self.stream_over or end > n or _may_intercept(data + pos, end - pos):
                    return self._handback(True, data, pos, n)
            if end > n:
                self.cpass, self.cptype = end - n, t
                pos = n
                break
            if _EXPECTS[t]:
                self.append(t)
            pos = end
        self._send(True, data, n - self.chl, n)

    cdef upstream_readable(self):
        cdef Py_ssize_t n = self._read(self.ufd, self.uhdr, &self.uhl)
        if n < 0 and (errno == EAGAIN or errno == EINTR):
            return
        if n <= 0:
            self.session._fast_handback(False, b"", b"")
            return
        cdef unsigned char *data = _buf + HEADROOM - self.uhl
        self.uhl = 0
        cdef Py_ssize_t pos = 0, end
        cdef long long take, length
        cdef int t
        cdef int status0 = self.status, last0 = self.last_type
        while pos < n:
            if self.upass:
                take = self.upass if self.upass < n - pos else n - pos
                self.upass -= take
                pos += take
                if not self.upass:
                    if self.uptype == 90:
                        self.status = data[pos - 1]
                    self._answered(self.uptype)
                continue
            if n - pos < 5:
                self.uhl = <int>(n - pos)
                memcpy(self.uhdr, data + pos, self.uhl)
                break
            t = data[pos]
            length = _be32(data + pos + 1)
            if length < 4 or t == 69:  # a bad length (Python raises it) or an ErrorResponse
                self._publish(status0, last0)
                return self._handback(False, data, pos, n)
            end = pos + 1 + length
            if end > n:
                self.upass, self.uptype = end - n, t
                pos = n
                break
            if t == 90:
                self.status = data[end - 1]
            self._answered(t)
            pos = end
        self._publish(status0, last0)
        self._send(False, data, n - self.uhl, n)

    cdef inline void _answered(self, int t) except *:
        """Session._account for an upstream message that ended (ErrorResponse never gets here)."""
        self.last_type = t
        if not self.inflight:
            return
        cdef object head
        if t == 90:  # ReadyForQuery: the batch up to the first Sync/Query/FunctionCall is done
            while self.inflight:
                head = self.popleft()
                if type(head) is int and _SYNCING[<unsigned char>(<long>head & 255)]:
                    break
            return
        head = self.inflight[0]
        if type(head) is int and _TERMINAL[<unsigned char>(<long>head & 255)][t]:
            self.popleft()

    cdef inline void _publish(self, int status0, int last0) except *:
        if self.status != status0:
            self.session.txn_status = _STATUS.get(self.status, b"I")
        if self.last_type != last0:
            self.session._last_upstream_type = self.last_type

    cdef object _send(self, bint to_upstream, unsigned char *data, Py_ssize_t stop, Py_ssize_t n):
        """Send data[:stop]; what the socket does not take goes back to the session."""
        cdef ssize_t sent = 0
        if stop <= 0:
            return None
        sent = send(self.ufd if to_upstream else self.cfd, data, stop, MSG_NOSIGNAL | MSG_DONTWAIT)
        if sent == stop:
            return None
        if sent < 0:
            sent = 0
        # Partial (the peer's buffer is full) or failed: the transport buffers the rest (and
        # applies backpressure) or reports the error; the held header stays in the scanner.
        self.session._fast_handback(to_upstream, PyBytes_FromStringAndSize(<char *>data + sent, stop - sent), b"")
        return None

    cdef object _handback(self, bint from_client, unsigned char *data, Py_ssize_t pos, Py_ssize_t n):
        """Forward data[:pos], then hand data[pos:n] (from a frame start) to the session."""
        cdef ssize_t sent = 0
        cdef int fd = self.ufd if from_client else self.cfd
        if pos > 0:
            sent = send(fd, data, pos, MSG_NOSIGNAL | MSG_DONTWAIT)
            if sent < 0:
                sent = 0
        self.session._fast_handback(from_client, PyBytes_FromStringAndSize(<char *>data + sent, pos - sent),
                                    PyBytes_FromStringAndSize(<char *>data + pos, n - pos))
        return None
