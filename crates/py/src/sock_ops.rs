//! sock_ops: the Rust half of the loop's low-level socket coroutines — `loop.sock_recv`,
//! `sock_recv_into`, `sock_recvfrom`, `sock_recvfrom_into`, `sock_sendall`, `sock_sendto`,
//! `sock_connect`, `sock_accept` — the native `sock_sendfile` loop (`os.sendfile` driven by
//! writability), and the numeric-address fast paths (`_ipaddr_info`, numeric getaddrinfo and
//! getnameinfo answered without a thread).
//!
//! The coroutines are thin `async def`s in `python/ferroloop/_sockops.py`: each calls one
//! function here, which tries the system call at once and, only when it would block, creates a
//! future of the loop and a [`SockWait`] the loop watches the fd with natively (no Handle, no
//! Python callback): on readiness the loop calls it, it retries the call and, once done, stops
//! watching and completes the future. It is also the future's done callback, so a cancelled
//! operation leaves nothing behind.
//!
//! Socket calls go through the socket object's own methods (`sock.recv`, `sock.send`, ...), as
//! asyncio does, so timeouts, subclasses and test doubles behave as they do on asyncio's loop;
//! an exact `socket.socket` in non-blocking mode gets its recv/recv_into/send made directly on
//! its fd (the same system call, without a BlockingIOError object per "would block").

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::{
    PyBlockingIOError, PyConnectionError, PyInterruptedError, PyOSError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyFloat, PyFrozenSet, PyInt, PySlice, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use ferroloop_core::net;

use crate::capi;
use crate::event_loop::{fd_as_c_int, fileobj_to_fd, os_error, LoopCore};
use crate::native_io::NativeIo;

/// `(future or None, immediate result)`: what the entry points hand to the Python coroutine.
type Started = (Option<Py<PyAny>>, Option<Py<PyAny>>);

use crate::future::{NativeFuture, State};
use crate::handle::{escapes_loop, report_unhandled};
use crate::stdlib::cached_attr;

cached_attr!(
    /// `ferroloop._loop.Loop`, the loop class whose create_future is LoopCore's
    loop_class, "ferroloop._loop", "Loop");
cached_attr!(
    /// `socket.SOL_SOCKET`
    sol_socket, "socket", "SOL_SOCKET");
cached_attr!(
    /// `socket.SO_ERROR`
    so_error, "socket", "SO_ERROR");
cached_attr!(
    /// `socket.SOCK_STREAM`
    sock_stream, "socket", "SOCK_STREAM");
cached_attr!(
    /// `socket.SOCK_DGRAM`
    sock_dgram, "socket", "SOCK_DGRAM");
cached_attr!(
    /// `socket.IPPROTO_TCP`
    ipproto_tcp, "socket", "IPPROTO_TCP");
cached_attr!(
    /// `socket.IPPROTO_UDP`
    ipproto_udp, "socket", "IPPROTO_UDP");
cached_attr!(
    /// `socket.AF_INET`
    af_inet, "socket", "AF_INET");
cached_attr!(
    /// `socket.AF_INET6`
    af_inet6, "socket", "AF_INET6");
cached_attr!(
    /// `asyncio.exceptions.SendfileNotAvailableError`
    sendfile_not_available, "asyncio.exceptions", "SendfileNotAvailableError");

/// The `socket` and `os` modules; their functions are looked up at each call (tests patch them).
fn socket_module(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CELL.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("socket")?.into_any().unbind())
    })
    .map(|o| o.bind(py))
}

fn os_module(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CELL.get_or_try_init(py, || Ok::<_, PyErr>(py.import("os")?.into_any().unbind()))
        .map(|o| o.bind(py))
}

/// `socket.socket` when the raw path may stand in for its methods: its `recv`, `recv_into`,
/// `send`, `fileno` and `gettimeout` are the `_socket` module's own (checked once; a class
/// replaced or patched before the first operation, e.g. by a green-thread library, keeps every
/// call going through its methods). None otherwise.
fn raw_socket_class(py: Python<'_>) -> PyResult<Option<&Bound<'_, PyAny>>> {
    static CELL: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();
    let cls = CELL.get_or_try_init(py, || -> PyResult<Option<Py<PyAny>>> {
        let cls = socket_module(py)?.getattr(intern!(py, "socket"))?;
        let base = py.import("_socket")?.getattr(intern!(py, "socket"))?;
        for name in ["recv", "recv_into", "send", "fileno", "gettimeout"] {
            if !cls.getattr(name)?.is(&base.getattr(name)?) {
                return Ok(None);
            }
        }
        Ok(Some(cls.unbind()))
    })?;
    Ok(cls.as_ref().map(|c| c.bind(py)))
}

/// True if `sock` is exactly the (unpatched) `socket.socket`: no subclass can override its
/// methods, and its `__slots__` leave no room for an instance attribute that would.
fn is_plain_socket(sock: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(raw_socket_class(sock.py())?.is_some_and(|cls| sock.get_type().is(cls)))
}

/// `ssl.SSLSocket`, or None when the ssl module cannot be imported (as `base_events.ssl`).
fn ssl_socket_class(py: Python<'_>) -> PyResult<Option<&Bound<'_, PyAny>>> {
    static CELL: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();
    let cls = CELL.get_or_try_init(py, || -> PyResult<Option<Py<PyAny>>> {
        match py.import("ssl") {
            Ok(m) => Ok(Some(m.getattr("SSLSocket")?.unbind())),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyImportError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    })?;
    Ok(cls.as_ref().map(|c| c.bind(py)))
}

/// The loop's debug flag (`BaseEventLoop._debug`).
fn loop_debug(loop_: &Bound<'_, PyAny>) -> PyResult<bool> {
    match loop_.cast::<LoopCore>() {
        Ok(core) => Ok(core.get().debug_enabled()),
        Err(_) => loop_
            .call_method0(intern!(loop_.py(), "get_debug"))?
            .is_truthy(),
    }
}

/// Mirrors `base_events._check_ssl_socket`.
fn check_ssl_socket(sock: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Some(cls) = ssl_socket_class(sock.py())? {
        if sock.is_instance(cls)? {
            return Err(PyTypeError::new_err("Socket cannot be of type SSLSocket"));
        }
    }
    Ok(())
}

/// In debug mode a socket with a timeout is refused (the check of every `sock_*` method of
/// `selector_events.BaseSelectorEventLoop`).
fn check_nonblocking(loop_: &Bound<'_, PyAny>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    if loop_debug(loop_)? && sock.call_method0(intern!(sock.py(), "gettimeout"))?.ne(0)? {
        return Err(PyValueError::new_err("the socket must be non-blocking"));
    }
    Ok(())
}

/// The argument checks every `sock_*` coroutine but sock_sendfile starts with: the ssl check,
/// then the debug-mode non-blocking check.
#[pyfunction]
fn _sock_check(loop_: &Bound<'_, PyAny>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    check_ssl_socket(sock)?;
    check_nonblocking(loop_, sock)
}

/// sock_sendfile's checks come in the other order (`base_events.BaseEventLoop.sock_sendfile`).
#[pyfunction]
fn _sock_sendfile_check(loop_: &Bound<'_, PyAny>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    check_nonblocking(loop_, sock)?;
    check_ssl_socket(sock)
}

/// BlockingIOError or InterruptedError: the call is retried on the next readiness.
fn would_block(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py)
}

/// `a, b = value` (ValueError/TypeError as Python's unpacking gives them).
fn unpack2<'py>(value: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(t) = value.cast::<PyTuple>() {
        if t.len() == 2 {
            return Ok((t.get_item(0)?, t.get_item(1)?));
        }
    }
    let items: Vec<Bound<'py, PyAny>> = value.try_iter()?.take(3).collect::<PyResult<_>>()?;
    let n = items.len();
    match <[Bound<'py, PyAny>; 2]>::try_from(items) {
        Ok([a, b]) => Ok((a, b)),
        Err(_) if n < 2 => Err(PyValueError::new_err(format!(
            "not enough values to unpack (expected 2, got {n})"
        ))),
        Err(_) => Err(PyValueError::new_err(
            "too many values to unpack (expected 2)",
        )),
    }
}

/// One pending socket operation.
enum Op {
    Recv {
        n: Py<PyAny>,
        /// `n` as a byte count, when the raw path may read it (an exact int in range).
        size: Option<usize>,
    },
    RecvInto {
        buf: Py<PyAny>,
    },
    RecvFrom {
        n: Py<PyAny>,
    },
    RecvFromInto {
        buf: Py<PyAny>,
        nbytes: Py<PyAny>,
    },
    /// `data` is the bytes object itself on the raw path, else `memoryview(data)`; the
    /// position sent so far is `SockWait::pos`.
    SendAll {
        data: Py<PyAny>,
        len: usize,
    },
    SendTo {
        data: Py<PyAny>,
        address: Py<PyAny>,
    },
    Connect {
        address: Py<PyAny>,
    },
    Accept,
}

impl Op {
    fn is_write(&self) -> bool {
        matches!(
            self,
            Op::SendAll { .. } | Op::SendTo { .. } | Op::Connect { .. }
        )
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Op::Recv { n, .. } | Op::RecvFrom { n } => visit.call(n),
            Op::RecvInto { buf } => visit.call(buf),
            Op::RecvFromInto { buf, nbytes } => {
                visit.call(buf)?;
                visit.call(nbytes)
            }
            Op::SendAll { data, .. } => visit.call(data),
            Op::SendTo { data, address } => {
                visit.call(data)?;
                visit.call(address)
            }
            Op::Connect { address } => visit.call(address),
            Op::Accept => Ok(()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Recv { .. } => "sock_recv",
            Op::RecvInto { .. } => "sock_recv_into",
            Op::RecvFrom { .. } => "sock_recvfrom",
            Op::RecvFromInto { .. } => "sock_recvfrom_into",
            Op::SendAll { .. } => "sock_sendall",
            Op::SendTo { .. } => "sock_sendto",
            Op::Connect { .. } => "sock_connect",
            Op::Accept => "sock_accept",
        }
    }
}

/// What one attempt of an operation gave.
enum Step {
    Done(Py<PyAny>),
    /// The call would block (or sock_sendall sent only part of the data): wait again.
    Again,
}

/// `sock.accept()` then `conn.setblocking(False)`: `(conn, address)`.
fn accept_once(sock: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let py = sock.py();
    let pair = sock.call_method0(intern!(py, "accept"))?;
    let (conn, address) = unpack2(&pair)?;
    conn.call_method1(intern!(py, "setblocking"), (false,))?;
    Ok(PyTuple::new(py, [conn, address])?.into_any().unbind())
}

// -- raw system calls ----------------------------------------------------------------------------
//
// A socket that is exactly `socket.socket` (no subclass can override its methods, and its
// `__slots__` leave no room for an instance attribute) in non-blocking mode gets its recv,
// recv_into and send made here on its fd: the same system call its C method makes, with the
// same EINTR retry, but "would block" costs no BlockingIOError object. Every other socket goes
// through its own methods, as asyncio's loop calls them.

/// The fd of `sock` when the raw path applies: an open, non-blocking (timeout 0.0), exact
/// `socket.socket`.
fn raw_fd(sock: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    let py = sock.py();
    if !is_plain_socket(sock)? {
        return Ok(None);
    }
    let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
    if timeout.cast::<PyFloat>().map(|t| t.value()).ok() != Some(0.0) {
        return Ok(None);
    }
    let fd: i64 = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    Ok(RawFd::try_from(fd).ok().filter(|fd| *fd >= 0))
}

/// Runs a system call as the socket module does (`sock_call_ex`): retried after EINTR once
/// Python's signal handlers have run (their exception wins); None when it would block.
fn raw_call(py: Python<'_>, mut call: impl FnMut() -> isize) -> PyResult<Option<usize>> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::Interrupted => capi::check_signals(py)?,
            std::io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(os_error(err)),
        }
    }
}

/// `sock.recv(size)` on the raw fd: the bytes (allocated at `size` and shrunk, as the socket
/// module does), or None when it would block.
fn raw_recv(py: Python<'_>, fd: RawFd, size: usize) -> PyResult<Option<Py<PyAny>>> {
    let data = capi::bytes_filled(py, size, |buf| {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes during the call.
        raw_call(py, || unsafe {
            libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)
        })
    })?;
    Ok(data.map(|d| d.into_any().unbind()))
}

/// `sock.recv_into(buf)` on the raw fd: Some(None) when it would block, None when `buf` is not
/// a writable contiguous byte buffer this path takes (the socket method then says why).
fn raw_recv_into(
    py: Python<'_>,
    fd: RawFd,
    buf: &Bound<'_, PyAny>,
) -> PyResult<Option<Option<Py<PyAny>>>> {
    let Ok(view) = pyo3::buffer::PyBuffer::<u8>::get(buf) else {
        return Ok(None);
    };
    if view.readonly() || !view.is_c_contiguous() {
        return Ok(None);
    }
    let len = view.len_bytes();
    let ptr = view.buf_ptr();
    // SAFETY: the buffer is writable, C-contiguous and `len` bytes long; `view` keeps it
    // exported (alive and unmoved) until it is dropped after the call, and the GIL is held.
    let n = raw_call(py, || unsafe { libc::recv(fd, ptr, len, 0) })?;
    drop(view);
    match n {
        Some(n) => Ok(Some(Some(n.into_pyobject(py)?.into_any().unbind()))),
        None => Ok(Some(None)),
    }
}

/// `sock.send(data[start:])` on the raw fd for a bytes object: the count sent (0 when it would
/// block).
fn raw_send(py: Python<'_>, fd: RawFd, data: &Bound<'_, PyBytes>, start: usize) -> PyResult<usize> {
    let rest = &data.as_bytes()[start..];
    // SAFETY: `rest` is valid for reads of `rest.len()` bytes during the call (the bytes
    // object is immutable and borrowed).
    let n = raw_call(py, || unsafe {
        libc::send(fd, rest.as_ptr().cast(), rest.len(), 0)
    })?;
    Ok(n.unwrap_or(0))
}

/// An int argument usable by the raw path as a byte count.
fn raw_size(n: &Bound<'_, PyAny>) -> Option<usize> {
    if !n.is_exact_instance_of::<PyInt>() {
        return None;
    }
    n.extract::<isize>()
        .ok()
        .and_then(|n| usize::try_from(n).ok())
}

/// A socket operation waiting for readiness. The loop watches its fd with this object as the
/// reader or writer (`Watcher::Native`: no Handle, no Python callback); on readiness it retries
/// the call and, once done, stops watching and completes the future. It is also the future's
/// done callback (`_sock_read_done` / `_sock_write_done`), which only matters when the future
/// ends otherwise (cancelled): then it removes the watch if it is still this operation's.
#[pyclass(module = "ferroloop._ferroloop", name = "_SockWait", frozen)]
pub struct SockWait {
    loop_: Py<LoopCore>,
    fut: Py<PyAny>,
    sock: Py<PyAny>,
    /// `sock.fileno()` when the operation started: the fd watched.
    fd: RawFd,
    op: Op,
    /// The raw system calls apply (see [`raw_fd`]).
    raw: bool,
    /// sock_sendall: bytes of the data sent so far.
    pos: AtomicUsize,
}

impl SockWait {
    /// One attempt of the operation on readiness (asyncio's `_sock_recv`, `_sock_sendall`,
    /// `_sock_connect_cb`, ...).
    fn attempt(&self, py: Python<'_>) -> PyResult<Step> {
        let sock = self.sock.bind(py);
        // The raw path only while the socket still has its fd (a closed socket goes through its
        // method, which raises what asyncio's loop would get).
        let raw = self.raw
            && sock
                .call_method0(intern!(py, "fileno"))?
                .extract::<i64>()
                .ok()
                == Some(i64::from(self.fd));
        let r = match &self.op {
            Op::Recv { n, size } => match size {
                Some(size) if raw => match raw_recv(py, self.fd, *size)? {
                    Some(v) => return Ok(Step::Done(v)),
                    None => return Ok(Step::Again),
                },
                _ => sock.call_method1(intern!(py, "recv"), (n,))?,
            },
            Op::RecvInto { buf } => {
                if raw {
                    match raw_recv_into(py, self.fd, buf.bind(py))? {
                        Some(Some(v)) => return Ok(Step::Done(v)),
                        Some(None) => return Ok(Step::Again),
                        None => {}
                    }
                }
                sock.call_method1(intern!(py, "recv_into"), (buf,))?
            }
            Op::RecvFrom { n } => sock.call_method1(intern!(py, "recvfrom"), (n,))?,
            Op::RecvFromInto { buf, nbytes } => {
                sock.call_method1(intern!(py, "recvfrom_into"), (buf, nbytes))?
            }
            Op::SendAll { data, len } => {
                // Mirrors selector_events.BaseSelectorEventLoop._sock_sendall.
                let start = self.pos.load(Ordering::Relaxed);
                let data = data.bind(py);
                let n = match data.cast::<PyBytes>() {
                    Ok(bytes) if raw => raw_send(py, self.fd, bytes, start)?,
                    _ => {
                        let rest =
                            data.get_item(PySlice::new(py, start as isize, *len as isize, 1))?;
                        sock.call_method1(intern!(py, "send"), (rest,))?.extract()?
                    }
                };
                let start = start + n;
                if start == *len {
                    return Ok(Step::Done(py.None()));
                }
                self.pos.store(start, Ordering::Relaxed);
                return Ok(Step::Again);
            }
            // The retry passes flags (selector_events.BaseSelectorEventLoop._sock_sendto).
            Op::SendTo { data, address } => {
                sock.call_method1(intern!(py, "sendto"), (data, 0, address))?
            }
            Op::Connect { address } => {
                // Mirrors selector_events.BaseSelectorEventLoop._sock_connect_cb.
                let err =
                    sock.call_method1(intern!(py, "getsockopt"), (sol_socket(py)?, so_error(py)?))?;
                if err.ne(0)? {
                    let msg = format!("Connect call failed {}", address.bind(py).str()?);
                    let exc = py.get_type::<PyOSError>().call1((err, msg))?;
                    return Err(PyErr::from_value(exc));
                }
                py.None().into_bound(py)
            }
            Op::Accept => accept_once(sock)?.into_bound(py),
        };
        Ok(Step::Done(r.unbind()))
    }

    /// Called by the loop: the fd is ready. Skipped when this operation's watch was removed or
    /// replaced since the poll (as asyncio skips a cancelled Handle). An error other than
    /// SystemExit/KeyboardInterrupt goes to the exception handler, as a callback's would.
    pub(crate) fn on_ready(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lp = this.loop_.bind(py);
        if !lp.get().is_native_watch(py, this.fd, write, slf.as_ptr()) {
            return Ok(());
        }
        let result = Self::ready(slf, write);
        if result.is_err() {
            // Still waiting: the poller must report the fd again.
            lp.get()
                .rearm_native_watch(py, this.fd, write, slf.as_ptr())
                .ok();
        }
        report_unhandled(lp.as_any(), result, || {
            Ok(format!("Exception in callback {}", slf.repr()?))
        })
    }

    /// The readiness callback: retry unless the future is already done (cancelled since the
    /// fd became ready: its done callback removes the watch). The report disarmed the fd's
    /// one-shot registration: an operation that must wait again re-arms it; a finished one
    /// leaves it disarmed for the next operation on the socket.
    fn ready(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let fut = this.fut.bind(py);
        // The loop's own Future is driven natively; another through its methods.
        let native = NativeFuture::exact(fut).filter(|n| matches!(n, NativeFuture::Plain(_)));
        let done = match &native {
            Some(n) => n.borrow().state != State::Pending,
            None => fut.call_method0(intern!(py, "done"))?.is_truthy()?,
        };
        if done {
            return Ok(());
        }
        let outcome = match this.attempt(py) {
            Ok(Step::Done(v)) => Ok(v),
            Ok(Step::Again) => {
                return this.loop_.bind(py).get().rearm_native_watch(
                    py,
                    this.fd,
                    write,
                    slf.as_ptr(),
                )
            }
            Err(e) if would_block(py, &e) => {
                return this.loop_.bind(py).get().rearm_native_watch(
                    py,
                    this.fd,
                    write,
                    slf.as_ptr(),
                )
            }
            Err(e) if escapes_loop(py, &e) => return Err(e),
            Err(e) => Err(e),
        };
        // Done: stop watching now (asyncio's done callback would, one turn later), so the done
        // callback has nothing left to do and is taken off the future.
        this.loop_
            .bind(py)
            .get()
            .remove_native_watch_if(py, this.fd, write, slf.as_ptr());
        if let Some(n) = native {
            n.remove_done_callback(slf.as_any())?;
            return match outcome {
                Ok(v) => n.set_result(v.into_any()),
                Err(e) => n.set_exception(e.into_value(py).bind(py).as_any()),
            };
        }
        fut.call_method1(intern!(py, "remove_done_callback"), (slf,))?;
        match outcome {
            Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,))?,
            Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
        };
        Ok(())
    }

    /// Creates the future, watches the fd and adds the done callback that stops watching
    /// (`self._ensure_fd_no_transport(fd)`, `self._add_reader(...)`,
    /// `fut.add_done_callback(...)` in asyncio's methods).
    fn wait(
        loop_: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        raw: Option<RawFd>,
        op: Op,
        pos: usize,
    ) -> PyResult<Py<PyAny>> {
        let py = loop_.py();
        let lp = loop_.cast::<LoopCore>()?;
        // `self.create_future()`: called directly unless a subclass may have replaced it.
        let fut = if loop_.get_type().is(loop_class(py)?) {
            LoopCore::create_future(lp)?.into_bound(py)
        } else {
            loop_.call_method0(intern!(py, "create_future"))?
        };
        // The raw path read the fd just before (`sock.fileno()`, as asyncio reads it here).
        let fd_obj = match raw {
            Some(fd) => fd.into_pyobject(py)?.into_any(),
            None => sock.call_method0(intern!(py, "fileno"))?,
        };
        LoopCore::ensure_fd_no_transport_for(lp, &fd_obj)?;
        let fd = match raw {
            Some(fd) => fd,
            // What `_add_reader(fd, ...)` accepts (selectors' `_fileobj_to_fd`).
            None => fd_as_c_int(&fileobj_to_fd(&fd_obj)?)?,
        };
        let write = op.is_write();
        let this = Bound::new(
            py,
            SockWait {
                loop_: lp.clone().unbind(),
                fut: fut.clone().unbind(),
                sock: sock.clone().unbind(),
                fd,
                op,
                raw: raw.is_some(),
                pos: AtomicUsize::new(pos),
            },
        )?;
        lp.get()
            .add_native_watch(py, fd, NativeIo::Sock(this.clone().unbind()), 0, write)?;
        fut.call_method1(intern!(py, "add_done_callback"), (&this,))?;
        Ok(fut.unbind())
    }
}

#[pymethods]
impl SockWait {
    /// The done callback (`_sock_read_done` / `_sock_write_done`).
    fn __call__(slf: &Bound<'_, Self>, _fut: &Bound<'_, PyAny>) {
        let this = slf.get();
        let py = slf.py();
        let write = this.op.is_write();
        this.loop_
            .bind(py)
            .get()
            .remove_native_watch_if(py, this.fd, write, slf.as_ptr());
    }

    fn __repr__(&self) -> String {
        format!("<{} waiter fd={}>", self.op.name(), self.fd)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.fut)?;
        visit.call(&self.sock)?;
        self.op.traverse(&visit)
    }
}

/// A first attempt made before any waiting: the result, or the error if it is not "would
/// block".
fn first_try(py: Python<'_>, r: PyResult<Bound<'_, PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    match r {
        Ok(v) => Ok(Some(v.unbind())),
        Err(e) if would_block(py, &e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The checks of every sock_* coroutine but sock_sendfile (see [`_sock_check`]), and the raw
/// fd when the raw path applies. An exact `socket.socket` is no SSLSocket.
fn check_and_raw_fd(loop_: &Bound<'_, PyAny>, sock: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    if !is_plain_socket(sock)? {
        check_ssl_socket(sock)?;
    }
    check_nonblocking(loop_, sock)?;
    raw_fd(sock)
}

/// Mirrors selector_events.BaseSelectorEventLoop.sock_recv.
#[pyfunction]
fn _sock_recv(
    loop_: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    n: &Bound<'_, PyAny>,
) -> PyResult<Started> {
    let py = loop_.py();
    let raw = check_and_raw_fd(loop_, sock)?;
    let size = raw_size(n);
    match (raw, size) {
        (Some(fd), Some(size)) => {
            if let Some(v) = raw_recv(py, fd, size)? {
                return Ok((None, Some(v)));
            }
        }
        _ => {
            if let Some(v) = first_try(py, sock.call_method1(intern!(py, "recv"), (n,)))? {
                return Ok((None, Some(v)));
            }
        }
    }
    let op = Op::Recv {
        n: n.clone().unbind(),
        size,
    };
    Ok((Some(SockWait::wait(loop_, sock, raw, op, 0)?), None))
}

/// Mirrors selector_events.BaseSelectorEventLoop.sock_recv_into.
#[pyfunction]
fn _sock_recv_into(
    loop_: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    buf: &Bound<'_, PyAny>,
) -> PyResult<Started> {
    let py = loop_.py();
    let raw = check_and_raw_fd(loop_, sock)?;
    let first = match raw {
        Some(fd) => raw_recv_into(py, fd, buf)?,
        None => None,
    };
    match first {
        Some(Some(v)) => return Ok((None, Some(v))),
        Some(None) => {}
        None => {
            if let Some(v) = first_try(py, sock.call_method1(intern!(py, "recv_into"), (buf,)))? {
                return Ok((None, Some(v)));
            }
        }
    }
    let op = Op::RecvInto {
        buf: buf.clone().unbind(),
    };
    Ok((Some(SockWait::wait(loop_, sock, raw, op, 0)?), None))
}

/// Mirrors selector_events.BaseSelectorEventLoop.sock_recvfrom.
#[pyfunction]
fn _sock_recvfrom(
    loop_: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    bufsize: &Bound<'_, PyAny>,
) -> PyResult<Started> {
    let py = loop_.py();
    _sock_check(loop_, sock)?;
    if let Some(v) = first_try(py, sock.call_method1(intern!(py, "recvfrom"), (bufsize,)))? {
        return Ok((None, Some(v)));
    }
    let op = Op::RecvFrom {
        n: bufsize.clone().unbind(),
    };
    Ok((Some(SockWait::wait(loop_, sock, None, op, 0)?), None))
}

/// Mirrors selector_events.BaseSelectorEventLoop.sock_recvfrom_into (a false `nbytes` means
/// the whole buffer).
#[pyfunction]
fn _sock_recvfrom_into(
    loop_: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    buf: &Bound<'_, PyAny>,
    nbytes: &Bound<'_, PyAny>,
) -> PyResult<Started> {
    let py = loop_.py();
    _sock_check(loop_, sock)?;
    let nbytes = if nbytes.is_truthy()? {
        nbytes.clone()
    } else {
        buf.len()?.into_pyobject(py)?.into_any()
    };
    let r = sock.call_method1(intern!(py, "recvfrom_into"), (buf, &nbytes));
    if let Some(v) = first_try(py, r)? {
        return Ok((None, Some(v)));
    }
    let op = Op::RecvFromInto {
        buf: buf.clone().unbind(),
        nbytes: nbytes.unbind(),
    };
    Ok((Some(SockWait::wait(loop_, sock, None, op, 0)?), None))
}

/// Mirrors selector_events.BaseSelectorEventLoop.sock_sendall: one send at once; the rest is
/// sent as the socket becomes writable (from a memoryview of the data, or straight from a
/// bytes object on the raw path).
#[pyfunction]
fn _sock_sendall(
    loop_: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
) -> PyResult<Started> {
    let py = loop_.py();
    let raw = check_and_raw_fd(loop_, sock)?;
    if let (Some(fd), Ok(bytes)) = (raw, data.cast_exact::<PyBytes>()) {
        let total = bytes.as_bytes().len();
        let sent = raw_send(py, fd, bytes, 0)?;
        if sent == total {
            return Ok((None, Some(py.None())));
        }
        let op = Op::SendAll {
            data: data.clone().unbind(),
            len: total,
        };
        return Ok((Some(SockWait::wait(loop_, sock, raw, op, sent)?), None));
    }
    let sent = match first_try(py, sock.call_method1(intern!(py, "send"), (data,)))? {
        Some(n) => n.into_bound(py),
        None => 0usize.into_pyobject(py)?.into_any(),
    };
    let total = data.len()?;
    if sent.eq(total)? {
        return Ok((None, Some(py.None())));
    }
    let sent: usize = sent.extract()?;
    let view = py.get_type::<pyo3::types::PyMemoryView>().call1((data,))?;
    let len = view.len()?;
    let op = Op::SendAll {
        data: view.unbind(),
        len,
    };
    // The memoryview is sliced and sent through `sock.send` (raw=None).
    Ok((Some(SockWait::wait(loop_, sock, None, op, sent)?), None))
}

/// Mirrors selector_events.BaseSelectorEventLoop.sock_sendto.
#[pyfunction]
fn _sock_sendto(
    loop_: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
) -> PyResult<Started> {
    let py = loop_.py();
    _sock_check(loop_, sock)?;
    let r = sock.call_method1(intern!(py, "sendto"), (data, address));
    if let Some(v) = first_try(py, r)? {
        return Ok((None, Some(v)));
    }
    let op = Op::SendTo {
        data: data.clone().unbind(),
        address: address.clone().unbind(),
    };
    Ok((Some(SockWait::wait(loop_, sock, None, op, 0)?), None))
}

/// The connect step of selector_events.BaseSelectorEventLoop.sock_connect (`_sock_connect`),
/// after the checks and the address resolution done by the coroutine. An error of the first
/// `connect` is raised directly (asyncio sets it on a future it awaits at once).
#[pyfunction]
fn _sock_connect(
    loop_: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
) -> PyResult<Started> {
    let py = loop_.py();
    // asyncio reads the fd before connecting.
    let _fd = sock.call_method0(intern!(py, "fileno"))?;
    if first_try(py, sock.call_method1(intern!(py, "connect"), (address,)))?.is_some() {
        return Ok((None, Some(py.None())));
    }
    let op = Op::Connect {
        address: address.clone().unbind(),
    };
    Ok((Some(SockWait::wait(loop_, sock, None, op, 0)?), None))
}

/// Mirrors selector_events.BaseSelectorEventLoop.sock_accept: `(conn, address)` with `conn`
/// non-blocking.
#[pyfunction]
fn _sock_accept(loop_: &Bound<'_, PyAny>, sock: &Bound<'_, PyAny>) -> PyResult<Started> {
    let py = loop_.py();
    _sock_check(loop_, sock)?;
    let _fd = sock.call_method0(intern!(py, "fileno"))?;
    match accept_once(sock) {
        Ok(v) => Ok((None, Some(v))),
        Err(e) if would_block(py, &e) => Ok((
            Some(SockWait::wait(loop_, sock, None, Op::Accept, 0)?),
            None,
        )),
        Err(e) => Err(e),
    }
}

// -- sock_sendfile, native path ------------------------------------------------------------------

struct SendfileState {
    offset: i64,
    blocksize: i64,
    total_sent: i64,
    /// The fd the writer is registered for, after the first call.
    registered_fd: Option<Py<PyAny>>,
}

/// `os.sendfile` from `fileno` to the socket, retried when the socket is writable. Mirrors
/// unix_events._UnixSelectorEventLoop._sock_sendfile_native_impl: each readiness removes the
/// writer, sends one block, and registers the writer again; the file position is set to the
/// end of what was sent when the operation ends.
#[pyclass(module = "ferroloop._ferroloop", name = "_SendfileOp", frozen)]
pub struct SendfileOp {
    loop_: Py<PyAny>,
    fut: Py<PyAny>,
    sock: Py<PyAny>,
    fileno: Py<PyAny>,
    count: Option<i64>,
    state: Mutex<SendfileState>,
}

impl SendfileOp {
    fn state(&self) -> std::sync::MutexGuard<'_, SendfileState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `_sock_sendfile_update_filepos`
    fn update_filepos(&self, py: Python<'_>, offset: i64, total_sent: i64) -> PyResult<()> {
        if total_sent > 0 {
            let os = os_module(py)?;
            let seek_set = os.getattr(intern!(py, "SEEK_SET"))?;
            os.getattr(intern!(py, "lseek"))?
                .call1((&self.fileno, offset, seek_set))?;
        }
        Ok(())
    }

    fn step(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let loop_ = this.loop_.bind(py);
        let fut = this.fut.bind(py);
        let sock = this.sock.bind(py);
        let fd = sock.call_method0(intern!(py, "fileno"))?;
        let registered = this.state().registered_fd.as_ref().map(|f| f.clone_ref(py));
        if let Some(rfd) = &registered {
            // Removed early: a ready fd whose sendfile still says EAGAIN is rare.
            loop_.call_method1(intern!(py, "remove_writer"), (rfd,))?;
        }
        let (offset, total_sent) = {
            let s = this.state();
            (s.offset, s.total_sent)
        };
        if fut.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            return this.update_filepos(py, offset, total_sent);
        }
        let blocksize = match this.count {
            Some(count) if count != 0 => {
                let blocksize = count - total_sent;
                if blocksize <= 0 {
                    this.update_filepos(py, offset, total_sent)?;
                    fut.call_method1(intern!(py, "set_result"), (total_sent,))?;
                    return Ok(());
                }
                this.state().blocksize = blocksize;
                blocksize
            }
            _ => this.state().blocksize,
        };
        let sent = os_module(py)?.getattr(intern!(py, "sendfile"))?.call1((
            &fd,
            &this.fileno,
            offset,
            blocksize,
        ));
        match sent {
            Err(e) if would_block(py, &e) => {
                if registered.is_none() {
                    Self::add_cancellation_callback(slf)?;
                }
                this.state().registered_fd = Some(fd.clone().unbind());
                loop_.call_method1(intern!(py, "add_writer"), (&fd, slf))?;
            }
            Err(e) if e.is_instance_of::<PyOSError>(py) => {
                let mut exc = e.into_value(py).into_bound(py).into_any();
                let enotconn = libc::ENOTCONN;
                if registered.is_some()
                    && exc.getattr(intern!(py, "errno"))?.eq(enotconn)?
                    && !exc.get_type().is(py.get_type::<PyConnectionError>())
                {
                    // The connection was closed in the middle of the operation: report it as
                    // ConnectionError whatever the platform's errno mapping.
                    let new_exc = py
                        .get_type::<PyConnectionError>()
                        .call1(("socket is not connected", enotconn))?;
                    new_exc.setattr(intern!(py, "__cause__"), &exc)?;
                    exc = new_exc;
                }
                this.update_filepos(py, offset, total_sent)?;
                if total_sent == 0 {
                    // Most likely not a file sendfile(2) can read (not mmap-able): the caller
                    // falls back to read/send.
                    let err = sendfile_not_available(py)?.call1(("os.sendfile call failed",))?;
                    fut.call_method1(intern!(py, "set_exception"), (err,))?;
                } else {
                    fut.call_method1(intern!(py, "set_exception"), (exc,))?;
                }
            }
            Err(e) if escapes_loop(py, &e) => return Err(e),
            Err(e) => {
                this.update_filepos(py, offset, total_sent)?;
                fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?;
            }
            Ok(sent) => {
                let sent: i64 = sent.extract()?;
                if sent == 0 {
                    // End of file.
                    this.update_filepos(py, offset, total_sent)?;
                    fut.call_method1(intern!(py, "set_result"), (total_sent,))?;
                } else {
                    {
                        let mut s = this.state();
                        s.offset = offset + sent;
                        s.total_sent = total_sent + sent;
                    }
                    if registered.is_none() {
                        Self::add_cancellation_callback(slf)?;
                    }
                    this.state().registered_fd = Some(fd.clone().unbind());
                    loop_.call_method1(intern!(py, "add_writer"), (&fd, slf))?;
                }
            }
        }
        Ok(())
    }

    /// `_sock_add_cancellation_callback`
    fn add_cancellation_callback(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let cb = slf.getattr(intern!(py, "_cancelled_cb"))?;
        slf.get()
            .fut
            .bind(py)
            .call_method1(intern!(py, "add_done_callback"), (cb,))?;
        Ok(())
    }
}

#[pymethods]
impl SendfileOp {
    /// The writer callback.
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::step(slf)
    }

    /// On cancellation, stop watching the socket (if it is still open).
    fn _cancelled_cb(&self, py: Python<'_>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            let fd = self.sock.bind(py).call_method0(intern!(py, "fileno"))?;
            if fd.ne(-1)? {
                self.loop_
                    .bind(py)
                    .call_method1(intern!(py, "remove_writer"), (fd,))?;
            }
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.fut)?;
        visit.call(&self.sock)?;
        visit.call(&self.fileno)?;
        if let Ok(s) = self.state.try_lock() {
            visit.call(&s.registered_fd)?;
        }
        Ok(())
    }
}

/// One step of the native sendfile loop, as unix_events._UnixSelectorEventLoop.
/// _sock_sendfile_native_impl (same arguments): the first call comes from the coroutine with
/// `registered_fd=None`; the following ones run as the socket's writer.
#[pyfunction]
#[pyo3(signature = (loop_, fut, registered_fd, sock, fileno, offset, count, blocksize, total_sent))]
#[allow(clippy::too_many_arguments)]
fn _sock_sendfile_native_impl(
    loop_: &Bound<'_, PyAny>,
    fut: &Bound<'_, PyAny>,
    registered_fd: Option<&Bound<'_, PyAny>>,
    sock: &Bound<'_, PyAny>,
    fileno: &Bound<'_, PyAny>,
    offset: i64,
    count: Option<i64>,
    blocksize: i64,
    total_sent: i64,
) -> PyResult<()> {
    let py = loop_.py();
    let op = Bound::new(
        py,
        SendfileOp {
            loop_: loop_.clone().unbind(),
            fut: fut.clone().unbind(),
            sock: sock.clone().unbind(),
            fileno: fileno.clone().unbind(),
            count,
            state: Mutex::new(SendfileState {
                offset,
                blocksize,
                total_sent,
                registered_fd: registered_fd.map(|f| f.clone().unbind()),
            }),
        },
    )?;
    SendfileOp::step(&op)
}

// -- numeric addresses ---------------------------------------------------------------------------

/// `inet_pton(af, host)` succeeds: `host` is a numeric address of family `af`. Plain str hosts
/// and int families are checked here; anything else asks `socket.inet_pton` (its errors
/// propagate, as in asyncio).
fn is_numeric(af: &Bound<'_, PyAny>, host: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = af.py();
    if let (Ok(s), Ok(family)) = (host.cast::<PyString>(), af.extract::<libc::c_int>()) {
        let text = s.to_str()?;
        if !text.contains('\0') && (family == libc::AF_INET || family == libc::AF_INET6) {
            return Ok(net::is_numeric_host(family, text));
        }
    }
    match socket_module(py)?
        .getattr(intern!(py, "inet_pton"))?
        .call1((af, host))
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_instance_of::<PyOSError>(py) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Mirrors `base_events._ipaddr_info`: the getaddrinfo entry for a host that is already a
/// numeric IP address, or None when resolution is needed.
#[pyfunction]
#[pyo3(signature = (host, port, family, r#type, proto, flowinfo=None, scopeid=None))]
#[allow(clippy::too_many_arguments)]
fn _ipaddr_info<'py>(
    py: Python<'py>,
    host: &Bound<'py, PyAny>,
    port: &Bound<'py, PyAny>,
    family: &Bound<'py, PyAny>,
    r#type: &Bound<'py, PyAny>,
    proto: &Bound<'py, PyAny>,
    flowinfo: Option<&Bound<'py, PyAny>>,
    scopeid: Option<&Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    static PROTOS: PyOnceLock<Py<PyFrozenSet>> = PyOnceLock::new();
    let protos = PROTOS.get_or_try_init(py, || -> PyResult<Py<PyFrozenSet>> {
        let items = [
            0i32.into_pyobject(py)?.into_any(),
            ipproto_tcp(py)?.clone(),
            ipproto_udp(py)?.clone(),
        ];
        Ok(PyFrozenSet::new(py, &items)?.unbind())
    })?;
    if !protos.bind(py).contains(proto)? || host.is_none() {
        return Ok(None);
    }
    let proto = if r#type.eq(sock_stream(py)?)? {
        ipproto_tcp(py)?
    } else if r#type.eq(sock_dgram(py)?)? {
        ipproto_udp(py)?
    } else {
        return Ok(None);
    };
    let zero = || 0i32.into_pyobject(py).map(|z| z.into_any());
    let port = if port.is_none()
        || (port.is_instance_of::<PyBytes>() && port.eq(PyBytes::new(py, b""))?)
        || (port.is_instance_of::<PyString>() && port.eq("")?)
    {
        zero()?
    } else {
        // A service name like "http" needs getaddrinfo.
        match py.get_type::<PyInt>().call1((port,)) {
            Ok(p) => p,
            Err(e)
                if e.is_instance_of::<PyTypeError>(py) || e.is_instance_of::<PyValueError>(py) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    };
    let afs: Vec<Bound<'py, PyAny>> = if family.eq(libc::AF_UNSPEC)? {
        vec![af_inet(py)?.clone(), af_inet6(py)?.clone()]
    } else {
        vec![family.clone()]
    };
    let host = if host.is_instance_of::<PyBytes>() {
        host.call_method1(intern!(py, "decode"), ("idna",))?
    } else {
        host.clone()
    };
    // Linux's inet_pton does not take an IPv6 zone index ('::1%lo0').
    if host.contains("%")? {
        return Ok(None);
    }
    let empty = PyString::new(py, "");
    for af in afs {
        if !is_numeric(&af, &host)? {
            continue;
        }
        let address = if af.eq(af_inet6(py)?)? {
            let flowinfo = match flowinfo {
                Some(f) => f.clone(),
                None => zero()?,
            };
            let scopeid = match scopeid {
                Some(s) => s.clone(),
                None => zero()?,
            };
            PyTuple::new(py, [host.clone(), port.clone(), flowinfo, scopeid])?
        } else {
            PyTuple::new(py, [host.clone(), port.clone()])?
        };
        let info = PyTuple::new(
            py,
            [
                af,
                r#type.clone(),
                proto.clone(),
                empty.clone().into_any(),
                address.into_any(),
            ],
        )?;
        return Ok(Some(info));
    }
    Ok(None)
}

/// A numeric host (or None) whose getaddrinfo answer needs no lookup: checked so strictly that
/// calling getaddrinfo on the loop thread cannot block. Anything uncertain returns False and
/// goes to the executor.
fn numeric_lookup(
    host: &Bound<'_, PyAny>,
    port: &Bound<'_, PyAny>,
    family: &Bound<'_, PyAny>,
    flags: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    // Flags that never cause a lookup (AI_CANONNAME is left out).
    const SAFE_FLAGS: libc::c_int = libc::AI_PASSIVE
        | libc::AI_NUMERICHOST
        | libc::AI_NUMERICSERV
        | libc::AI_ADDRCONFIG
        | libc::AI_V4MAPPED
        | libc::AI_ALL;
    if !port.is_none() {
        if !port.is_exact_instance_of::<PyInt>() {
            return Ok(false);
        }
        match port.extract::<i64>() {
            Ok(p) if (0..=65535).contains(&p) => {}
            _ => return Ok(false),
        }
    }
    if !family.is_instance_of::<PyInt>() {
        return Ok(false);
    }
    let Ok(family) = family.extract::<libc::c_int>() else {
        return Ok(false);
    };
    if !matches!(family, libc::AF_UNSPEC | libc::AF_INET | libc::AF_INET6) {
        return Ok(false);
    }
    let Ok(flags) = flags.extract::<libc::c_int>() else {
        return Ok(false);
    };
    if flags & !SAFE_FLAGS != 0 {
        return Ok(false);
    }
    if host.is_none() {
        return Ok(true);
    }
    let Ok(s) = host.cast::<PyString>() else {
        return Ok(false);
    };
    if !host.is_exact_instance_of::<PyString>() {
        return Ok(false);
    }
    let text = s.to_str()?;
    if text.contains('%') || text.contains('\0') {
        return Ok(false);
    }
    Ok(net::is_numeric_any(text))
}

/// getaddrinfo answered on the loop thread for numeric hosts: `socket.getaddrinfo(...)`'s
/// own result (the same call asyncio makes in a thread), or None when the executor is needed.
#[pyfunction]
#[pyo3(signature = (host, port, family, r#type, proto, flags))]
fn _getaddrinfo_numeric(
    py: Python<'_>,
    host: &Bound<'_, PyAny>,
    port: &Bound<'_, PyAny>,
    family: &Bound<'_, PyAny>,
    r#type: &Bound<'_, PyAny>,
    proto: &Bound<'_, PyAny>,
    flags: &Bound<'_, PyAny>,
) -> PyResult<Option<Py<PyAny>>> {
    let ints = [r#type, proto]
        .iter()
        .all(|v| v.is_instance_of::<PyInt>() && v.extract::<libc::c_int>().is_ok());
    if !ints || !numeric_lookup(host, port, family, flags)? {
        return Ok(None);
    }
    let r = socket_module(py)?
        .getattr(intern!(py, "getaddrinfo"))?
        .call1((host, port, family, r#type, proto, flags))?;
    Ok(Some(r.unbind()))
}

/// getnameinfo answered on the loop thread when the flags ask for numeric host and service
/// (no reverse lookup) and the address is numeric; None when the executor is needed.
#[pyfunction]
fn _getnameinfo_numeric(
    py: Python<'_>,
    sockaddr: &Bound<'_, PyAny>,
    flags: &Bound<'_, PyAny>,
) -> PyResult<Option<Py<PyAny>>> {
    const NUMERIC: libc::c_int = libc::NI_NUMERICHOST | libc::NI_NUMERICSERV;
    const SAFE_FLAGS: libc::c_int = NUMERIC | libc::NI_DGRAM;
    let Ok(f) = flags.extract::<libc::c_int>() else {
        return Ok(None);
    };
    if !flags.is_instance_of::<PyInt>() || f & NUMERIC != NUMERIC || f & !SAFE_FLAGS != 0 {
        return Ok(None);
    }
    let Ok(t) = sockaddr.cast::<PyTuple>() else {
        return Ok(None);
    };
    if !sockaddr.is_exact_instance_of::<PyTuple>() || !(2..=4).contains(&t.len()) {
        return Ok(None);
    }
    let host = t.get_item(0)?;
    let Ok(s) = host.cast::<PyString>() else {
        return Ok(None);
    };
    let text = s.to_str()?;
    if text.contains('%') || text.contains('\0') || !net::is_numeric_any(text) {
        return Ok(None);
    }
    let r = socket_module(py)?
        .getattr(intern!(py, "getnameinfo"))?
        .call1((sockaddr, flags))?;
    Ok(Some(r.unbind()))
}

/// Adds this module's functions and classes to `ferroloop._ferroloop`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SockWait>()?;
    m.add_class::<SendfileOp>()?;
    m.add_function(wrap_pyfunction!(_sock_check, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_sendfile_check, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_recv, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_recv_into, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_recvfrom, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_recvfrom_into, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_sendall, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_sendto, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_connect, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_accept, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_sendfile_native_impl, m)?)?;
    m.add_function(wrap_pyfunction!(_ipaddr_info, m)?)?;
    m.add_function(wrap_pyfunction!(_getaddrinfo_numeric, m)?)?;
    m.add_function(wrap_pyfunction!(_getnameinfo_numeric, m)?)?;
    Ok(())
}
