//! TransportCore: the Rust core of ferroloop's transports.
//!
//! - stream sockets (TCP, Unix): mirrors `selector_events._SelectorSocketTransport` (and its
//!   base `_SelectorTransport`, flow control from `transports._FlowControlMixin`);
//! - datagram sockets (UDP, Unix datagram): mirrors `selector_events._SelectorDatagramTransport`
//!   (datagrams go through the socket object's recvfrom/sendto, for Python's address formats);
//! - read pipes: mirrors `unix_events._UnixReadPipeTransport`;
//! - write pipes: mirrors `unix_events._UnixWritePipeTransport`.
//!
//! Reads go into a reused per-thread buffer (or the protocol's own with BufferedProtocol) and
//! straight to the protocol; the loop calls [`TransportCore::on_ready`] without a Handle.
//! Writes try the system call at once when nothing is buffered; the rest waits in a
//! [`WriteBuffer`] flushed with one vectored call per writable event.
//!
//! Memory per connection is kept small: the write buffer exists only while bytes wait, what
//! few transports use sits in a boxed [`Rare`], and the constructor's deferred start
//! (`connection_made`, then reading) is one ready-queue entry, not Handles
//! ([`TransportCore::run_start`]).
//!
//! The Python classes in `python/ferroloop/_transports.py` (instances of asyncio's Transport,
//! ReadTransport, WriteTransport, DatagramTransport) hold one of these as `_core` and delegate
//! to it.
//!
//! Locking rule: `state` is only locked in Python-free sections; protocol callbacks run
//! unlocked (they may call back into the transport).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use ferroloop_core::fdio;
use ferroloop_core::net::{self, InetAddr};
use ferroloop_core::WriteBuffer;
use pyo3::exceptions::{PyAssertionError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::event_loop::{os_error, LoopCore, Ready, TransportRegistry};
use crate::gil_cell::{GilCell, GilGuard};
use crate::handle::{self, escapes_loop, report_unhandled, Handle};
use crate::native_io::NativeIo;
use crate::{capi, stdlib};

/// `_SelectorTransport.max_size` / `_UnixReadPipeTransport.max_size`: bytes per read.
const MAX_SIZE: usize = 256 * 1024;
/// `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

thread_local! {
    /// The read buffer, shared by every transport of the thread (data is copied out at once).
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_SIZE]);
    /// The same for datagrams, as a bytearray for `socket.recvfrom_into` (which turns the
    /// sender's address into Python's format).
    static DATAGRAM_BUFFER: RefCell<Option<Py<PyByteArray>>> = const { RefCell::new(None) };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Socket,
    Datagram,
    ReadPipe,
    WritePipe,
}

/// Datagrams waiting to be sent: (bytes, address).
type Datagrams = VecDeque<(Py<PyAny>, Py<PyAny>)>;

/// `_FlowControlMixin`'s default limits: (high, low).
const DEFAULT_HIGH_WATER: i64 = 64 * 1024;
const DEFAULT_LOW_WATER: i64 = 16 * 1024;

/// The unsent bytes of a stream or a write pipe: no allocation while nothing waits, and the
/// queue is let go of (not kept at its largest size) once it is flushed empty.
#[derive(Default)]
struct PendingBytes(Option<Box<WriteBuffer>>);

impl PendingBytes {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, data: &[u8]) {
        self.0.get_or_insert_with(Default::default).push(data);
    }

    fn clear(&mut self) {
        self.0 = None;
    }

    fn flush(&mut self, fd: RawFd, socket: bool) -> io::Result<usize> {
        let Some(b) = self.0.as_mut() else {
            return Ok(0);
        };
        let result = b.flush(fd, socket);
        if b.is_empty() {
            self.0 = None;
        }
        result
    }
}

/// What few transports use, allocated when first needed (datagram transports at once): kept
/// out of [`State`] so that the common case, a stream, stays small.
struct Rare {
    /// Datagrams waiting to be sent, with their address, and their total size.
    datagrams: Datagrams,
    datagram_bytes: usize,
    /// A connected datagram endpoint's remote address (`_address`).
    address: Option<Py<PyAny>>,
    /// The socket has a peer (`_extra['peername']`): send(), not sendto().
    connected: bool,
    /// AF_INET or AF_INET6 for such datagram sockets: datagrams and addresses are handled
    /// in Rust; 0 for other families (through the socket object's methods).
    inet_family: i32,
    /// sendfile's waiter for the write buffer to drain.
    empty_waiter: Option<Py<PyAny>>,
    high_water: i64,
    low_water: i64,
    /// The protocol `connection_made` is due on when set_protocol replaced it before the
    /// deferred start ran (asyncio binds `protocol.connection_made` in `__init__`).
    made_protocol: Option<Py<PyAny>>,
}

impl Default for Rare {
    fn default() -> Self {
        Rare {
            datagrams: VecDeque::new(),
            datagram_bytes: 0,
            address: None,
            connected: false,
            inet_family: 0,
            empty_waiter: None,
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_LOW_WATER,
            made_protocol: None,
        }
    }
}

struct State {
    kind: Kind,
    fd: RawFd,
    loop_: Option<Py<LoopCore>>,
    /// The Python transport object handed to the protocol.
    transport: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    /// The protocol is an asyncio.BufferedProtocol (get_buffer/buffer_updated).
    buffered: bool,
    protocol_connected: bool,
    /// The socket or pipe object, closed after connection_lost.
    sock: Option<Py<PyAny>>,
    server: Option<Py<PyAny>>,
    closing: bool,
    paused: bool,
    eof: bool,
    protocol_paused: bool,
    /// A write pipe watches its fd for readability to notice the reader closing.
    watch_pipe_eof: bool,
    reader_on: bool,
    writer_on: bool,
    /// The deferred start (connection_made, then reading) is queued and has not run yet.
    start_pending: bool,
    /// The size of the last read when it was large, else 0: the next read goes straight into
    /// a bytes object this large (`read_bytes`).
    read_guess: u32,
    conn_lost: u32,
    reader_gen: u32,
    writer_gen: u32,
    buffer: PendingBytes,
    rare: Option<Box<Rare>>,
    /// The loop registry this transport is registered in as `fd`'s owner (`_register`).
    registered_in: Option<Arc<TransportRegistry>>,
    /// An accepted connection's peer, as accept gave it (`_peername`).
    peer: Option<InetAddr>,
}

impl State {
    /// Bytes waiting to be written (`get_write_buffer_size()`).
    fn pending(&self) -> usize {
        match self.kind {
            Kind::Datagram => self.rare.as_ref().map_or(0, |r| r.datagram_bytes),
            _ => self.buffer.len(),
        }
    }

    /// The rarely used part, allocated on first use.
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    fn high_water(&self) -> i64 {
        self.rare
            .as_ref()
            .map_or(DEFAULT_HIGH_WATER, |r| r.high_water)
    }

    fn low_water(&self) -> i64 {
        self.rare
            .as_ref()
            .map_or(DEFAULT_LOW_WATER, |r| r.low_water)
    }

    fn empty_waiter(&self) -> Option<&Py<PyAny>> {
        self.rare.as_ref().and_then(|r| r.empty_waiter.as_ref())
    }

    /// (fd, inet family, connected): how a datagram is sent.
    fn datagram_target(&self) -> (RawFd, i32, bool) {
        match self.rare.as_ref() {
            Some(r) => (self.fd, r.inet_family, r.connected),
            None => (self.fd, 0, false),
        }
    }

    fn datagrams_empty(&self) -> bool {
        self.rare.as_ref().is_none_or(|r| r.datagrams.is_empty())
    }

    /// Drops what waits to be written; true if something did. The datagrams are returned
    /// so that they are released after the lock.
    fn clear_pending(&mut self) -> (bool, Datagrams) {
        let had = self.pending() > 0;
        self.buffer.clear();
        let datagrams = match self.rare.as_mut() {
            Some(r) => {
                r.datagram_bytes = 0;
                std::mem::take(&mut r.datagrams)
            }
            None => VecDeque::new(),
        };
        (had, datagrams)
    }
}

/// What a native transport method installed by `TransportCore._install_methods` works on:
/// the instance's `_core`, a TransportCore, or whatever replaced it (a test or a subclass),
/// on which the method of the same name is called instead.
fn transport_core<'py>(
    slf: &Bound<'py, PyAny>,
) -> PyResult<Result<Bound<'py, TransportCore>, Bound<'py, PyAny>>> {
    let core = slf.getattr(intern!(slf.py(), "_core"))?;
    Ok(core
        .cast_into::<TransportCore>()
        .map_err(|e| e.into_inner()))
}

/// `transport.write(data)`.
struct WriteMethod;

impl capi::MethO for WriteMethod {
    const NAME: &'static std::ffi::CStr = c"write";
    const DOC: &'static std::ffi::CStr = c"Write some data bytes to the transport.";
    fn call<'py>(slf: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        match transport_core(slf)? {
            Ok(core) => TransportCore::write_impl(&core, arg)?,
            Err(other) => drop(other.call_method1(intern!(py, "write"), (arg,))?),
        }
        Ok(py.None().into_bound(py))
    }
}

/// `transport.is_closing()` (StreamWriter.drain asks it on every call).
struct IsClosingMethod;

impl capi::MethO for IsClosingMethod {
    const NAME: &'static std::ffi::CStr = c"is_closing";
    const DOC: &'static std::ffi::CStr = c"Return True if the transport is closing or closed.";
    const NO_ARGS: bool = true;
    fn call<'py>(slf: &Bound<'py, PyAny>, _: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        match transport_core(slf)? {
            Ok(core) => {
                let closing = core.get().lock(py).closing;
                Ok(pyo3::types::PyBool::new(py, closing).to_owned().into_any())
            }
            Err(other) => other.call_method0(intern!(py, "is_closing")),
        }
    }
}

#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct TransportCore {
    state: GilCell<State>,
}

impl TransportCore {
    /// This core's key in a loop's transport registry: the address of the Rust value, known
    /// both where it registers and in its `Drop`.
    fn registry_key(&self) -> usize {
        self as *const Self as usize
    }
}

impl Drop for TransportCore {
    fn drop(&mut self) {
        let key = self.registry_key();
        let st = self.state.get_mut();
        if let Some(registry) = st.registered_in.take() {
            // Dropped by the deallocator, which runs with the GIL.
            Python::attach(|py| registry.remove_if(py, st.fd, key));
        }
    }
}

/// The Python transport of the core registered under `key` (None once a collection cleared
/// the core).
pub(crate) fn transport_of_core(py: Python<'_>, key: usize) -> Option<Py<PyAny>> {
    // SAFETY: `key` is the address of a TransportCore value in a loop's registry. A core takes
    // its entry out first thing when it is dropped (its Drop runs before its fields are
    // dropped, and nothing before it in the deallocator runs Python code), so a key found in a
    // registry is a live TransportCore, borrowed here for the lookup only.
    let core = unsafe { &*(key as *const TransportCore) };
    let st = core.state.try_lock(py)?;
    st.transport.as_ref().map(|t| t.clone_ref(py))
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// BlockingIOError or InterruptedError from the socket object: try again on readiness.
fn would_block_err(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py)
        || e.is_instance_of::<pyo3::exceptions::PyInterruptedError>(py)
}

/// The bytes of `data` (bytes, bytearray or memoryview), with `f` run on them without a copy
/// when they are a contiguous byte buffer.
fn with_bytes<R>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(f(&b.to_vec()));
    }
    let py = data.py();
    let view = PyMemoryView::from(data)?;
    let bytes = view.call_method0(intern!(py, "tobytes"))?;
    let bytes = bytes.cast::<PyBytes>()?;
    Ok(f(bytes.as_bytes()))
}

/// Reads at least this large make the next read of the transport go straight into a bytes
/// object (`read_bytes`).
const LARGE_READ: usize = 16 * 1024;

/// One read of `fd` as a bytes object: `sock.recv(max_size)`, one system call.
///
/// With `guess` 0, the read lands in the thread's shared buffer and is copied out (small
/// reads). After a large read, `guess` is its size: a bytes object of that size is the first
/// part of the read and the shared buffer the rest (`readv`), so a run of same-sized large
/// messages is read with no copy and no resize; a shorter read shrinks the object in place, a
/// longer one (rare) is joined into a new object.
fn read_bytes(py: Python<'_>, fd: RawFd, guess: usize) -> PyResult<io::Result<Bound<'_, PyBytes>>> {
    READ_BUFFER.with(|b| {
        let mut shared = b.borrow_mut();
        if guess == 0 {
            return Ok(fdio::read(fd, &mut shared).map(|n| PyBytes::new(py, &shared[..n])));
        }
        let guess = guess.min(MAX_SIZE);
        let mut outcome = Ok(0);
        let head = capi::bytes_filled(py, guess, |head| {
            outcome = fdio::read_split(fd, head, &mut shared[..MAX_SIZE - guess]);
            Ok(outcome.as_ref().ok().map(|&n| n.min(guess)))
        })?;
        let n = match outcome {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        // `bytes_filled` returns the object whenever the read succeeded.
        let head = head.unwrap_or_else(|| PyBytes::new(py, b""));
        if n <= guess {
            return Ok(Ok(head));
        }
        let joined = PyBytes::new_with(py, n, |all| {
            all[..guess].copy_from_slice(head.as_bytes());
            all[guess..].copy_from_slice(&shared[..n - guess]);
            Ok(())
        })?;
        Ok(Ok(joined))
    })
}

impl TransportCore {
    fn lock<'a>(&'a self, py: Python<'_>) -> GilGuard<'a, State> {
        self.state.lock(py)
    }

    fn loop_of<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        self.lock(py).loop_.as_ref().map(|l| l.bind(py).clone())
    }

    fn name(kind: Kind) -> &'static str {
        match kind {
            Kind::Socket => "socket",
            Kind::Datagram => "datagram",
            Kind::ReadPipe | Kind::WritePipe => "pipe",
        }
    }

    // -- watching the fd ----------------------------------------------------------------------

    /// `loop._add_reader(fd, self._read_ready)`.
    fn watch(slf: &Bound<'_, Self>, write: bool) -> PyResult<()> {
        let py = slf.py();
        let (lp, fd, generation) = {
            let mut st = slf.get().lock(py);
            let Some(lp) = st.loop_.as_ref().map(|l| l.clone_ref(py)) else {
                return Ok(());
            };
            let generation = if write {
                st.writer_gen = st.writer_gen.wrapping_add(1);
                st.writer_on = true;
                st.writer_gen
            } else {
                st.reader_gen = st.reader_gen.wrapping_add(1);
                st.reader_on = true;
                st.reader_gen
            };
            (lp, st.fd, generation)
        };
        let target = NativeIo::Transport(slf.clone().unbind());
        let res = lp.get().add_native_watch(py, fd, target, generation, write);
        if res.is_err() {
            let mut st = slf.get().lock(py);
            if write {
                st.writer_on = false;
            } else {
                st.reader_on = false;
            }
        }
        res
    }

    /// `loop._remove_reader(fd)` / `loop._remove_writer(fd)`.
    fn unwatch(slf: &Bound<'_, Self>, write: bool) {
        let py = slf.py();
        let (lp, fd) = {
            let mut st = slf.get().lock(py);
            if write {
                st.writer_on = false;
            } else {
                st.reader_on = false;
            }
            (st.loop_.as_ref().map(|l| l.clone_ref(py)), st.fd)
        };
        if let Some(lp) = lp {
            lp.get().remove_native_watch(py, fd, write);
        }
    }

    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        match slf.get().loop_of(slf.py()) {
            Some(lp) => LoopCore::call_soon_args(&lp, callback, &args),
            None => Ok(()),
        }
    }

    fn debug(&self, py: Python<'_>) -> bool {
        self.lock(py)
            .loop_
            .as_ref()
            .is_some_and(|l| l.get().debug_enabled())
    }

    fn transport_obj<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self.lock(py).transport.as_ref() {
            Some(t) => t.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    fn protocol_obj<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self.lock(py).protocol.as_ref() {
            Some(p) => p.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    fn log(&self, py: Python<'_>, level: &str, msg: &str) -> PyResult<()> {
        let logger = stdlib::asyncio_logger(py)?;
        logger.call_method1(level, (msg, self.transport_obj(py)))?;
        Ok(())
    }

    /// `loop.call_exception_handler({...})` with the transport and protocol.
    fn report(
        slf: &Bound<'_, Self>,
        message: &str,
        exc: &Bound<'_, PyAny>,
        with_protocol: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let Some(lp) = slf.get().loop_of(py) else {
            return Ok(());
        };
        let ctx = PyDict::new(py);
        ctx.set_item(intern!(py, "message"), message)?;
        ctx.set_item(intern!(py, "exception"), exc)?;
        ctx.set_item(intern!(py, "transport"), slf.get().transport_obj(py))?;
        if with_protocol {
            ctx.set_item(intern!(py, "protocol"), slf.get().protocol_obj(py))?;
        }
        lp.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        Ok(())
    }

    // -- errors and closing ------------------------------------------------------------------

    /// `_fatal_error(exc, message)`: OSErrors are only logged in debug mode, anything else goes
    /// to the exception handler; then the transport is closed without flushing.
    fn fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if exc.is_instance_of::<PyOSError>() {
            if this.debug(py) {
                let logger = stdlib::asyncio_logger(py)?;
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "exc_info"), exc)?;
                logger.call_method(
                    intern!(py, "debug"),
                    ("%r: %s", this.transport_obj(py), message),
                    Some(&kwargs),
                )?;
            }
        } else {
            Self::report(slf, message, exc, true)?;
        }
        let kind = this.lock(py).kind;
        match kind {
            Kind::Socket | Kind::Datagram => Self::force_close(slf, Some(exc.clone())),
            Kind::ReadPipe | Kind::WritePipe => Self::close_pipe(slf, Some(exc.clone())),
        }
    }

    fn fatal_io_error(slf: &Bound<'_, Self>, e: io::Error, message: &str) -> PyResult<()> {
        let py = slf.py();
        let exc = os_error(e).into_value(py).into_bound(py).into_any();
        Self::fatal_error(slf, &exc, message)
    }

    /// `_SelectorTransport._force_close`.
    fn force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let (had_buffer, was_closing) = {
            let mut st = slf.get().lock(py);
            if st.conn_lost > 0 {
                return Ok(());
            }
            let (had_buffer, dropped) = st.clear_pending();
            drop(dropped);
            let was_closing = st.closing;
            st.closing = true;
            st.conn_lost += 1;
            (had_buffer, was_closing)
        };
        if had_buffer {
            Self::unwatch(slf, true);
        }
        if !was_closing {
            Self::unwatch(slf, false);
        }
        let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
        let exc = exc.unwrap_or_else(|| py.None().into_bound(py));
        Self::call_soon(slf, &cb, PyTuple::new(py, [exc])?)
    }

    /// `_UnixReadPipeTransport._close` / `_UnixWritePipeTransport._close`.
    fn close_pipe(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let had_buffer = {
            let mut st = slf.get().lock(py);
            st.closing = true;
            let had = !st.buffer.is_empty();
            st.buffer.clear();
            had && st.kind == Kind::WritePipe
        };
        if had_buffer {
            Self::unwatch(slf, true);
        }
        Self::unwatch(slf, false);
        let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
        let exc = exc.unwrap_or_else(|| py.None().into_bound(py));
        Self::call_soon(slf, &cb, PyTuple::new(py, [exc])?)
    }

    // -- flow control (transports._FlowControlMixin) -------------------------------------------

    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let protocol = {
            let mut st = slf.get().lock(py);
            if (st.pending() as i64) <= st.high_water() || st.protocol_paused {
                return Ok(());
            }
            st.protocol_paused = true;
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let Some(protocol) = protocol else {
            return Ok(());
        };
        if let Err(e) = protocol.bind(py).call_method0(intern!(py, "pause_writing")) {
            if escapes_loop(py, &e) {
                return Err(e);
            }
            let exc = stdlib::exception_value(py, &e);
            Self::report(slf, "protocol.pause_writing() failed", &exc, true)?;
        }
        Ok(())
    }

    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let protocol = {
            let mut st = slf.get().lock(py);
            if !(st.protocol_paused && (st.pending() as i64) <= st.low_water()) {
                return Ok(());
            }
            st.protocol_paused = false;
            st.protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let Some(protocol) = protocol else {
            return Ok(());
        };
        if let Err(e) = protocol
            .bind(py)
            .call_method0(intern!(py, "resume_writing"))
        {
            if escapes_loop(py, &e) {
                return Err(e);
            }
            let exc = stdlib::exception_value(py, &e);
            Self::report(slf, "protocol.resume_writing() failed", &exc, true)?;
        }
        Ok(())
    }

    // -- the deferred start ------------------------------------------------------------------

    /// Runs the start queued by `_start` (as `Ready::Start`): `protocol.connection_made(transport)`
    /// in `context`, then reading. Mirrors the callbacks `_SelectorSocketTransport.__init__`
    /// queues (`connection_made`, then `_add_reader`), each error reported as their Handle's.
    pub(crate) fn run_start(slf: &Bound<'_, Self>, context: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, transport, lp, read) = {
            let mut st = slf.get().lock(py);
            st.start_pending = false;
            let made = st.rare.as_mut().and_then(|r| r.made_protocol.take());
            (
                made.or_else(|| st.protocol.as_ref().map(|p| p.clone_ref(py))),
                st.transport.as_ref().map(|t| t.clone_ref(py)),
                st.loop_.as_ref().map(|l| l.clone_ref(py)),
                st.kind != Kind::WritePipe || st.watch_pipe_eof,
            )
        };
        let (Some(protocol), Some(transport), Some(lp)) = (protocol, transport, lp) else {
            return Ok(());
        };
        let lp = lp.into_bound(py);
        let callback = protocol.bind(py).getattr(intern!(py, "connection_made"))?;
        let args = PyTuple::new(py, [transport])?;
        if let Err(e) = capi::run_in_context(context, &callback, &args) {
            if escapes_loop(py, &e) {
                // The loop stops here; reading starts when it runs again, as the Handle
                // queued after connection_made's would.
                if read {
                    let start = slf.getattr(intern!(py, "_start_reading"))?;
                    Self::call_soon(slf, &start, PyTuple::empty(py))?;
                }
                return Err(e);
            }
            Self::report_start_error(&lp, &callback, &args, context, &e)?;
        }
        if read {
            if let Err(e) = Self::start_reading(slf) {
                if escapes_loop(py, &e) {
                    return Err(e);
                }
                let start = slf.getattr(intern!(py, "_start_reading"))?;
                Self::report_start_error(&lp, &start, &PyTuple::empty(py), context, &e)?;
            }
        }
        Ok(())
    }

    /// A failed part of the start, reported as the Handle that would have run it.
    fn report_start_error(
        lp: &Bound<'_, LoopCore>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: &Bound<'_, PyAny>,
        err: &PyErr,
    ) -> PyResult<()> {
        let py = lp.py();
        let handle = Handle::build(
            py,
            callback.clone().unbind(),
            args.clone().unbind(),
            lp.clone().into_any().unbind(),
            Some(capi::ContextSnapshot::Context(context.clone().unbind())),
            false,
        )?;
        let handle = Bound::new(py, Handle::new(handle))?;
        handle::report_callback_error(py, &handle, callback, args, context, err)
    }

    // -- readiness ---------------------------------------------------------------------------

    /// Called by the loop: the fd is ready for the registration `generation`. A registration
    /// removed (or replaced) since the poll is skipped, as a cancelled Handle would be.
    pub(crate) fn on_ready(slf: &Bound<'_, Self>, write: bool, generation: u32) -> PyResult<()> {
        let py = slf.py();
        let kind = {
            let st = slf.get().lock(py);
            let current = if write {
                st.writer_on && st.writer_gen == generation
            } else {
                st.reader_on && st.reader_gen == generation
            };
            if !current {
                return Ok(());
            }
            st.kind
        };
        let result = match (kind, write) {
            (Kind::Datagram, true) => Self::sendto_ready(slf),
            (Kind::Datagram, false) => Self::datagram_read_ready(slf),
            (_, true) => Self::write_ready(slf),
            (Kind::Socket, false) => Self::read_ready(slf),
            (Kind::ReadPipe, false) => Self::pipe_read_ready(slf),
            (Kind::WritePipe, false) => Self::pipe_closed_by_peer(slf),
        };
        // What the loop does with a callback that raised (events.Handle._run).
        let lp = match &result {
            Err(e) if !escapes_loop(py, e) => match slf.get().loop_of(py) {
                Some(lp) => lp,
                None => return Ok(()),
            },
            _ => return result,
        };
        report_unhandled(lp.as_any(), result, || {
            let what = if write { "_write_ready" } else { "_read_ready" };
            let transport = slf.get().transport_obj(py);
            let cls = transport.get_type().qualname()?;
            Ok(format!("Exception in callback {cls}.{what}()"))
        })
    }

    /// `_SelectorSocketTransport._read_ready`.
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (fd, buffered, read_guess, protocol) = {
            let st = slf.get().lock(py);
            if st.conn_lost > 0 {
                return Ok(());
            }
            let Some(p) = st.protocol.as_ref() else {
                return Ok(());
            };
            (st.fd, st.buffered, st.read_guess, p.clone_ref(py))
        };
        let protocol = protocol.into_bound(py);
        if buffered {
            return Self::read_into_protocol_buffer(slf, fd, &protocol);
        }
        let data = match read_bytes(py, fd, read_guess as usize)? {
            Ok(d) => d,
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => return Self::fatal_io_error(slf, e, "Fatal read error on socket transport"),
        };
        let got = data.as_bytes().len();
        let guess = if got >= LARGE_READ { got as u32 } else { 0 };
        if guess != read_guess {
            slf.get().lock(py).read_guess = guess;
        }
        if data.as_bytes().is_empty() {
            return Self::read_eof(slf, &protocol);
        }
        if let Err(e) = protocol.call_method1(intern!(py, "data_received"), (data,)) {
            if escapes_loop(py, &e) {
                return Err(e);
            }
            let exc = stdlib::exception_value(py, &e);
            Self::fatal_error(
                slf,
                &exc,
                "Fatal error: protocol.data_received() call failed.",
            )?;
        }
        Ok(())
    }

    /// `_SelectorSocketTransport._read_ready__get_buffer`.
    fn read_into_protocol_buffer(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let buf = protocol
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .and_then(|buf| {
                if buf.len()? == 0 {
                    Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ))
                } else {
                    Ok(buf)
                }
            });
        let buf = match buf {
            Ok(b) => b,
            Err(e) if escapes_loop(py, &e) => return Err(e),
            Err(e) => {
                let exc = stdlib::exception_value(py, &e);
                return Self::fatal_error(
                    slf,
                    &exc,
                    "Fatal error: protocol.get_buffer() call failed.",
                );
            }
        };
        let nbytes = match recv_into(&buf, fd) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if would_block(&e) => return Ok(()),
            Ok(Err(e)) => {
                return Self::fatal_io_error(slf, e, "Fatal read error on socket transport")
            }
            Err(e) => {
                let exc = stdlib::exception_value(py, &e);
                return Self::fatal_error(slf, &exc, "Fatal read error on socket transport");
            }
        };
        if nbytes == 0 {
            return Self::read_eof(slf, protocol);
        }
        if let Err(e) = protocol.call_method1(intern!(py, "buffer_updated"), (nbytes,)) {
            if escapes_loop(py, &e) {
                return Err(e);
            }
            let exc = stdlib::exception_value(py, &e);
            Self::fatal_error(
                slf,
                &exc,
                "Fatal error: protocol.buffer_updated() call failed.",
            )?;
        }
        Ok(())
    }

    /// `_SelectorSocketTransport._read_ready__on_eof`.
    fn read_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().debug(py) {
            slf.get().log(py, "debug", "%r received EOF")?;
        }
        let keep_open = match protocol
            .call_method0(intern!(py, "eof_received"))
            .and_then(|r| r.is_truthy())
        {
            Ok(k) => k,
            Err(e) if escapes_loop(py, &e) => return Err(e),
            Err(e) => {
                let exc = stdlib::exception_value(py, &e);
                return Self::fatal_error(
                    slf,
                    &exc,
                    "Fatal error: protocol.eof_received() call failed.",
                );
            }
        };
        if keep_open {
            Self::unwatch(slf, false);
            Ok(())
        } else {
            Self::close_impl(slf)
        }
    }

    /// `_UnixReadPipeTransport._read_ready`.
    fn pipe_read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (fd, protocol) = {
            let st = slf.get().lock(py);
            let Some(p) = st.protocol.as_ref() else {
                return Ok(());
            };
            (st.fd, p.clone_ref(py))
        };
        let protocol = protocol.into_bound(py);
        let data = READ_BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            fdio::read(fd, &mut b).map(|n| PyBytes::new(py, &b[..n]))
        });
        let data = match data {
            Ok(d) => d,
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => return Self::fatal_io_error(slf, e, "Fatal read error on pipe transport"),
        };
        if !data.as_bytes().is_empty() {
            protocol.call_method1(intern!(py, "data_received"), (data,))?;
            return Ok(());
        }
        if slf.get().debug(py) {
            slf.get().log(py, "info", "%r was closed by peer")?;
        }
        slf.get().lock(py).closing = true;
        Self::unwatch(slf, false);
        let eof = protocol.getattr(intern!(py, "eof_received"))?;
        Self::call_soon(slf, &eof, PyTuple::empty(py))?;
        let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
        Self::call_soon(slf, &cb, PyTuple::new(py, [py.None()])?)
    }

    /// `_UnixWritePipeTransport._read_ready`: the read end went away.
    fn pipe_closed_by_peer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().debug(py) {
            slf.get().log(py, "info", "%r was closed by peer")?;
        }
        let has_buffer = !slf.get().lock(py).buffer.is_empty();
        if has_buffer {
            let exc = py
                .get_type::<pyo3::exceptions::PyBrokenPipeError>()
                .call0()?;
            Self::close_pipe(slf, Some(exc))
        } else {
            Self::close_pipe(slf, None)
        }
    }

    /// `_SelectorSocketTransport._write_ready` / `_UnixWritePipeTransport._write_ready`.
    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (kind, result) = {
            let mut st = slf.get().lock(py);
            if st.buffer.is_empty() || (st.kind == Kind::Socket && st.conn_lost > 0) {
                return Ok(());
            }
            let fd = st.fd;
            let socket = st.kind == Kind::Socket;
            (st.kind, st.buffer.flush(fd, socket))
        };
        let written = match result {
            Ok(n) => n,
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => {
                {
                    let mut st = slf.get().lock(py);
                    st.buffer.clear();
                    if kind == Kind::WritePipe {
                        st.conn_lost += 1;
                    }
                }
                Self::unwatch(slf, true);
                let exc = os_error(e).into_value(py).into_bound(py).into_any();
                let message = format!("Fatal write error on {} transport", Self::name(kind));
                Self::fatal_error(slf, &exc, &message)?;
                let waiter = slf.get().lock(py).empty_waiter().map(|w| w.clone_ref(py));
                if let Some(w) = waiter {
                    w.bind(py)
                        .call_method1(intern!(py, "set_exception"), (exc,))?;
                }
                return Ok(());
            }
        };
        let _ = written;
        if kind == Kind::WritePipe {
            if !slf.get().lock(py).buffer.is_empty() {
                return Ok(());
            }
            Self::unwatch(slf, true);
            Self::maybe_resume_protocol(slf)?;
            if slf.get().lock(py).closing {
                Self::unwatch(slf, false);
                Self::call_connection_lost_impl(slf, None)?;
            }
            return Ok(());
        }
        Self::maybe_resume_protocol(slf)?;
        let (empty, waiter, closing, eof, fd) = {
            let st = slf.get().lock(py);
            (
                st.buffer.is_empty(),
                st.empty_waiter().map(|w| w.clone_ref(py)),
                st.closing,
                st.eof,
                st.fd,
            )
        };
        if empty {
            Self::unwatch(slf, true);
            if let Some(w) = waiter {
                w.bind(py)
                    .call_method1(intern!(py, "set_result"), (py.None(),))?;
            }
            if closing {
                Self::call_connection_lost_impl(slf, None)?;
            } else if eof {
                fdio::shutdown_write(fd).map_err(os_error)?;
            }
        }
        Ok(())
    }

    // -- datagrams ---------------------------------------------------------------------------

    /// `_SelectorDatagramTransport._read_ready`.
    fn datagram_read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (sock, protocol, fd, inet) = {
            let st = slf.get().lock(py);
            if st.conn_lost > 0 {
                return Ok(());
            }
            match (st.sock.as_ref(), st.protocol.as_ref()) {
                (Some(s), Some(p)) => (
                    s.clone_ref(py),
                    p.clone_ref(py),
                    st.fd,
                    st.datagram_target().1,
                ),
                _ => return Ok(()),
            }
        };
        let protocol = protocol.into_bound(py);
        if inet != 0 {
            let received = READ_BUFFER.with(|b| {
                let mut b = b.borrow_mut();
                fdio::recv_from(fd, &mut b).map(|(n, from)| (PyBytes::new(py, &b[..n]), from))
            });
            return match received {
                Ok((data, from)) => {
                    let addr = match from {
                        Some(a) => inet_addr_to_py(py, &a)?,
                        None => py.None().into_bound(py),
                    };
                    protocol.call_method1(intern!(py, "datagram_received"), (data, addr))?;
                    Ok(())
                }
                Err(e) => Self::datagram_error(
                    slf,
                    &protocol,
                    os_error(e),
                    "Fatal read error on datagram transport",
                ),
            };
        }
        // `sock.recvfrom(max_size)` would allocate (and mmap) 256 KiB per datagram; receiving
        // into the thread's buffer and copying the datagram out is what it returns, cheaper.
        let buffer = DATAGRAM_BUFFER.with(|cell| {
            let mut cell = cell.borrow_mut();
            match cell.as_ref() {
                Some(b) => Ok(b.clone_ref(py)),
                None => {
                    let b = PyByteArray::new(py, &vec![0u8; MAX_SIZE]).unbind();
                    *cell = Some(b.clone_ref(py));
                    Ok::<_, PyErr>(b)
                }
            }
        })?;
        let buffer = buffer.into_bound(py);
        match sock
            .bind(py)
            .call_method1(intern!(py, "recvfrom_into"), (&buffer,))
        {
            Ok(pair) => {
                let pair = pair.cast_into::<PyTuple>()?;
                let nbytes: usize = pair.get_item(0)?.extract()?;
                // SAFETY: the bytearray is only used by this thread's receives; nothing
                // resizes it, and the slice is copied before any other Python code runs.
                let data = PyBytes::new(py, unsafe { &buffer.as_bytes()[..nbytes] });
                protocol
                    .call_method1(intern!(py, "datagram_received"), (data, pair.get_item(1)?))?;
                Ok(())
            }
            Err(e) => {
                Self::datagram_error(slf, &protocol, e, "Fatal read error on datagram transport")
            }
        }
    }

    /// A send or receive failed: BlockingIOError/InterruptedError are ignored, other OSErrors
    /// go to `protocol.error_received`, anything else is fatal.
    fn datagram_error(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        e: PyErr,
        message: &str,
    ) -> PyResult<()> {
        let py = slf.py();
        if would_block_err(py, &e) {
            return Ok(());
        }
        if escapes_loop(py, &e) {
            return Err(e);
        }
        let exc = stdlib::exception_value(py, &e);
        if e.is_instance_of::<PyOSError>(py) {
            protocol.call_method1(intern!(py, "error_received"), (exc,))?;
            return Ok(());
        }
        Self::fatal_error(slf, &exc, message)
    }

    /// One datagram to the socket: `send` when connected, else `sendto`. IPv4/IPv6 sockets
    /// with a numeric address make the system call here; anything else goes through the
    /// socket object (hostnames, unusual address tuples, other families).
    fn send_datagram(
        py: Python<'_>,
        sock: &Bound<'_, PyAny>,
        (fd, inet, connected): (RawFd, i32, bool),
        data: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if inet != 0 {
            // Some(None): send() on the connected socket; Some(Some(a)): sendto(a).
            let destination = if connected {
                Some(None)
            } else {
                inet_addr_from_py(inet, addr).map(Some)
            };
            if let Some(to) = destination {
                let result = with_bytes(data, |bytes| match &to {
                    None => fdio::send(fd, bytes),
                    Some(a) => fdio::send_to(fd, bytes, a),
                })?;
                return result.map(drop).map_err(os_error);
            }
        }
        if connected {
            sock.call_method1(intern!(py, "send"), (data,))?;
        } else {
            sock.call_method1(intern!(py, "sendto"), (data, addr))?;
        }
        Ok(())
    }

    /// `_SelectorDatagramTransport.sendto`.
    fn sendto_impl(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        if data.len()? == 0 {
            return Ok(());
        }
        let mut addr = addr.unwrap_or_else(|| py.None().into_bound(py));
        let address = slf
            .get()
            .lock(py)
            .rare
            .as_ref()
            .and_then(|r| r.address.as_ref())
            .map(|a| a.clone_ref(py));
        if let Some(address) = &address {
            let address = address.bind(py);
            if address.is_truthy()? {
                if !(addr.is_none() || addr.eq(address)?) {
                    return Err(PyValueError::new_err(format!(
                        "Invalid address: must be None or {}",
                        address.str()?
                    )));
                }
                addr = address.clone();
            }
        }
        let has_address = match &address {
            Some(a) => a.bind(py).is_truthy()?,
            None => false,
        };
        let (sock, protocol, target, empty) = {
            let mut st = slf.get().lock(py);
            if st.conn_lost > 0 && has_address {
                let warn = st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                st.conn_lost += 1;
                drop(st);
                if warn {
                    stdlib::asyncio_logger(py)?.call_method1(
                        intern!(py, "warning"),
                        ("socket.send() raised exception.",),
                    )?;
                }
                return Ok(());
            }
            (
                st.sock.as_ref().map(|s| s.clone_ref(py)),
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.datagram_target(),
                st.datagrams_empty(),
            )
        };
        if empty {
            let Some(sock) = sock else {
                return Ok(());
            };
            match Self::send_datagram(py, sock.bind(py), target, data, &addr) {
                Ok(()) => return Ok(()),
                Err(e) if would_block_err(py, &e) => {
                    Self::watch(slf, true)?;
                }
                Err(e) => {
                    let protocol = match protocol {
                        Some(p) => p.into_bound(py),
                        None => py.None().into_bound(py),
                    };
                    return Self::datagram_error(
                        slf,
                        &protocol,
                        e,
                        "Fatal write error on datagram transport",
                    );
                }
            }
        }
        // What is buffered must not change: a copy as bytes.
        let copy = with_bytes(data, |b| PyBytes::new(py, b))?;
        {
            let mut st = slf.get().lock(py);
            let rare = st.rare();
            rare.datagram_bytes += copy.as_bytes().len();
            rare.datagrams
                .push_back((copy.into_any().unbind(), addr.unbind()));
        }
        Self::maybe_pause_protocol(slf)
    }

    /// `_SelectorDatagramTransport._sendto_ready`.
    fn sendto_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        loop {
            let (item, sock, protocol, target) = {
                let mut st = slf.get().lock(py);
                let Some(rare) = st.rare.as_mut() else {
                    break;
                };
                let Some(item) = rare.datagrams.pop_front() else {
                    break;
                };
                rare.datagram_bytes -= item.0.bind(py).len().unwrap_or(0);
                (
                    item,
                    st.sock.as_ref().map(|s| s.clone_ref(py)),
                    st.protocol.as_ref().map(|p| p.clone_ref(py)),
                    st.datagram_target(),
                )
            };
            let Some(sock) = sock else {
                return Ok(());
            };
            let (data, addr) = (item.0.bind(py), item.1.bind(py));
            match Self::send_datagram(py, sock.bind(py), target, data, addr) {
                Ok(()) => {}
                Err(e) if would_block_err(py, &e) => {
                    let mut st = slf.get().lock(py);
                    let rare = st.rare();
                    rare.datagram_bytes += data.len().unwrap_or(0);
                    rare.datagrams.push_front(item);
                    break;
                }
                Err(e) => {
                    drop(item);
                    let protocol = match protocol {
                        Some(p) => p.into_bound(py),
                        None => py.None().into_bound(py),
                    };
                    return Self::datagram_error(
                        slf,
                        &protocol,
                        e,
                        "Fatal write error on datagram transport",
                    );
                }
            }
        }
        Self::maybe_resume_protocol(slf)?;
        let (empty, closing) = {
            let st = slf.get().lock(py);
            (st.datagrams_empty(), st.closing)
        };
        if empty {
            Self::unwatch(slf, true);
            if closing {
                Self::call_connection_lost_impl(slf, None)?;
            }
        }
        Ok(())
    }

    // -- writing -----------------------------------------------------------------------------

    fn write_impl(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let kind = {
            let st = slf.get().lock(py);
            st.kind
        };
        let is_bytes_like = data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>();
        if kind == Kind::Socket {
            if !is_bytes_like {
                return Err(PyTypeError::new_err(format!(
                    "data argument must be a bytes-like object, not {}",
                    data.get_type().name()?.repr()?
                )));
            }
            let st = slf.get().lock(py);
            if st.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if st.empty_waiter().is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
        } else if !is_bytes_like {
            return Err(PyAssertionError::new_err(data.repr()?.to_string()));
        }
        if data.len()? == 0 {
            return Ok(());
        }
        {
            let mut st = slf.get().lock(py);
            let lost = match kind {
                Kind::Socket => st.conn_lost > 0,
                _ => st.conn_lost > 0 || st.closing,
            };
            if lost {
                let warn = st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                st.conn_lost += 1;
                drop(st);
                if warn {
                    let msg = match kind {
                        Kind::Socket => "socket.send() raised exception.",
                        _ => "pipe closed by peer or os.write(pipe, data) raised exception.",
                    };
                    stdlib::asyncio_logger(py)?.call_method1(intern!(py, "warning"), (msg,))?;
                }
                return Ok(());
            }
        }
        let outcome = with_bytes(data, |bytes| {
            let mut st = slf.get().lock(py);
            if !st.buffer.is_empty() {
                st.buffer.push(bytes);
                return Ok(false);
            }
            let res = if st.kind == Kind::Socket {
                fdio::send(st.fd, bytes)
            } else {
                fdio::write(st.fd, bytes)
            };
            match res {
                Ok(n) if n == bytes.len() => Ok(false),
                Ok(n) => {
                    st.buffer.push(&bytes[n..]);
                    Ok(true)
                }
                Err(e) if would_block(&e) => {
                    st.buffer.push(bytes);
                    Ok(true)
                }
                Err(e) => Err(e),
            }
        })?;
        match outcome {
            Ok(false) => {}
            Ok(true) => Self::watch(slf, true)?,
            Err(e) => {
                if kind == Kind::WritePipe {
                    slf.get().lock(py).conn_lost += 1;
                }
                let message = format!("Fatal write error on {} transport", Self::name(kind));
                return Self::fatal_io_error(slf, e, &message);
            }
        }
        if slf.get().lock(py).buffer.is_empty() {
            return Ok(());
        }
        Self::maybe_pause_protocol(slf)
    }

    /// `_SelectorTransport.close` / the pipes' close.
    fn close_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let kind = slf.get().lock(py).kind;
        match kind {
            Kind::Socket | Kind::Datagram => {
                let empty = {
                    let mut st = slf.get().lock(py);
                    if st.closing {
                        return Ok(());
                    }
                    st.closing = true;
                    let empty = st.pending() == 0;
                    if empty {
                        st.conn_lost += 1;
                    }
                    empty
                };
                Self::unwatch(slf, false);
                if empty {
                    Self::unwatch(slf, true);
                    let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
                    Self::call_soon(slf, &cb, PyTuple::new(py, [py.None()])?)?;
                }
                Ok(())
            }
            Kind::ReadPipe => {
                if slf.get().lock(py).closing {
                    return Ok(());
                }
                Self::close_pipe(slf, None)
            }
            Kind::WritePipe => {
                let open = {
                    let st = slf.get().lock(py);
                    st.sock.is_some() && !st.closing
                };
                if open {
                    Self::write_eof_impl(slf)?;
                }
                Ok(())
            }
        }
    }

    fn write_eof_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut st = slf.get().lock(py);
        match st.kind {
            Kind::Socket => {
                if st.closing || st.eof {
                    return Ok(());
                }
                st.eof = true;
                if st.buffer.is_empty() {
                    let fd = st.fd;
                    drop(st);
                    fdio::shutdown_write(fd).map_err(os_error)?;
                }
                Ok(())
            }
            Kind::WritePipe => {
                if st.closing {
                    return Ok(());
                }
                st.closing = true;
                let empty = st.buffer.is_empty();
                drop(st);
                if empty {
                    Self::unwatch(slf, false);
                    let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
                    Self::call_soon(slf, &cb, PyTuple::new(py, [py.None()])?)?;
                }
                Ok(())
            }
            Kind::ReadPipe | Kind::Datagram => {
                Err(pyo3::exceptions::PyNotImplementedError::new_err(()))
            }
        }
    }

    /// `_call_connection_lost`: tell the protocol, then close the socket/pipe and let go of
    /// the loop, the protocol and the server.
    fn call_connection_lost_impl(
        slf: &Bound<'_, Self>,
        exc: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let (kind, connected, protocol) = {
            let st = slf.get().lock(py);
            (
                st.kind,
                st.protocol_connected,
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        let exc_obj = exc.clone().unwrap_or_else(|| py.None().into_bound(py));
        let result = match protocol {
            Some(p) if connected || matches!(kind, Kind::ReadPipe | Kind::WritePipe) => p
                .bind(py)
                .call_method1(intern!(py, "connection_lost"), (exc_obj,))
                .map(drop),
            _ => Ok(()),
        };
        // A transport of a server's accepted connection defers its socket extra info (see
        // `SocketTransport` in _transports.py): reading `_extra` fills it in while the socket
        // is still open.
        let lazy_extra = {
            let st = slf.get().lock(py);
            match (&st.transport, &st.server, st.kind) {
                (Some(t), Some(_), Kind::Socket) => Some(t.clone_ref(py)),
                _ => None,
            }
        };
        let fill_result = match lazy_extra {
            Some(t) => t.bind(py).getattr(intern!(py, "_extra")).map(drop),
            None => Ok(()),
        };
        let (sock, protocol, lp, server, transport) = {
            let mut st = slf.get().lock(py);
            st.reader_on = false;
            st.writer_on = false;
            (
                st.sock.take(),
                st.protocol.take(),
                st.loop_.take(),
                st.server.take(),
                st.transport.take(),
            )
        };
        let close_result = match &sock {
            Some(s) => s.bind(py).call_method0(intern!(py, "close")).map(drop),
            None => Ok(()),
        };
        let detach_result = match &server {
            Some(s) => s.bind(py).call_method0(intern!(py, "_detach")).map(drop),
            None => Ok(()),
        };
        drop((sock, protocol, lp, server, transport));
        if kind == Kind::Socket {
            let waiter = slf.get().lock(py).empty_waiter().map(|w| w.clone_ref(py));
            if let Some(w) = waiter {
                let err = py
                    .get_type::<pyo3::exceptions::PyConnectionError>()
                    .call1(("Connection is closed by peer",))?;
                w.bind(py)
                    .call_method1(intern!(py, "set_exception"), (err,))?;
            }
        }
        result.and(fill_result).and(close_result).and(detach_result)
    }
}

/// The peer of a connection accepted by [`_accept_inet`], kept in Rust (no address tuple,
/// host string and port int per connection) until someone asks for it.
#[pyclass(module = "ferroloop._ferroloop", frozen)]
pub struct PeerAddr(InetAddr);

#[pymethods]
impl PeerAddr {
    /// The address as `socket.accept` gives it: `(host, port)` or
    /// `(host, port, flowinfo, scope_id)`.
    fn address<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        inet_addr_to_py(py, &self.0)
    }
}

/// `sock.accept()` on a listening IPv4/IPv6 socket's fd without building the peer's address:
/// `(fd, PeerAddr or None)`, or None when no connection waits. The caller makes the socket
/// object (`socket.socket(family, type, proto, fileno=fd)`, what `socket.accept` does). Errors
/// are the socket module's (ConnectionAbortedError, OSError(EMFILE), ...); EINTR is retried
/// once Python's signal handlers have run, as `socket.accept` does.
#[pyfunction]
fn _accept_inet(py: Python<'_>, fd: RawFd) -> PyResult<Option<(RawFd, Option<PeerAddr>)>> {
    loop {
        match fdio::accept(fd) {
            Ok((conn, peer)) => return Ok(Some((conn, peer.map(PeerAddr)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => capi::check_signals(py)?,
            Err(e) => return Err(os_error(e)),
        }
    }
}

/// Adds the accept function and the peer address class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TransportCore>()?;
    m.add_class::<PeerAddr>()?;
    m.add_function(wrap_pyfunction!(_accept_inet, m)?)?;
    Ok(())
}

/// A received IPv4/IPv6 address as Python's socket module gives it: `(host, port)` or
/// `(host, port, flowinfo, scope_id)`.
fn inet_addr_to_py<'py>(py: Python<'py>, addr: &InetAddr) -> PyResult<Bound<'py, PyAny>> {
    Ok(match *addr {
        InetAddr::V4 { ip, port } => (net::format_numeric(&ip), port)
            .into_pyobject(py)?
            .into_any(),
        InetAddr::V6 {
            ip,
            port,
            flowinfo,
            scope_id,
        } => (net::format_numeric(&ip), port, flowinfo, scope_id)
            .into_pyobject(py)?
            .into_any(),
    })
}

/// A destination address the socket module would accept without a name lookup, for a socket
/// of `family`: `(numeric host, port)` (IPv6: optionally flowinfo and scope_id), each in
/// range. None for anything else (the socket object then handles it, errors included).
fn inet_addr_from_py(family: i32, addr: &Bound<'_, PyAny>) -> Option<InetAddr> {
    let tuple = addr.cast::<PyTuple>().ok()?;
    let n = tuple.len();
    let host = tuple.get_item(0).ok()?;
    let host = host.cast::<pyo3::types::PyString>().ok()?;
    let host = host.to_str().ok()?;
    let port: u16 = tuple.get_item(1).ok()?.extract().ok()?;
    if family == libc::AF_INET {
        if n != 2 {
            return None;
        }
        let ip = net::parse_numeric(net::AF_INET, host)?;
        return Some(InetAddr::V4 {
            ip: [ip[0], ip[1], ip[2], ip[3]],
            port,
        });
    }
    if !(2..=4).contains(&n) || host.contains('%') {
        return None;
    }
    let flowinfo: u32 = match tuple.get_item(2) {
        Ok(v) => v.extract().ok().filter(|f| *f <= 0xfffff)?,
        Err(_) => 0,
    };
    let scope_id: u32 = match tuple.get_item(3) {
        Ok(v) => v.extract().ok()?,
        Err(_) => 0,
    };
    let ip = net::parse_numeric(net::AF_INET6, host)?;
    Some(InetAddr::V6 {
        ip,
        port,
        flowinfo,
        scope_id,
    })
}

/// `sock.recv_into(buf)` on the raw fd: Err(PyErr) if `buf` is not a writable buffer.
fn recv_into(buf: &Bound<'_, PyAny>, fd: RawFd) -> PyResult<io::Result<usize>> {
    let view = pyo3::buffer::PyBuffer::<u8>::get(buf)?;
    if view.readonly() {
        return Err(PyTypeError::new_err("buffer is read-only"));
    }
    if !view.is_c_contiguous() {
        return Err(PyTypeError::new_err("buffer is not contiguous"));
    }
    let len = view.len_bytes();
    // SAFETY: the buffer is writable, C-contiguous and `len` bytes long; `view` keeps it
    // exported (and so alive and unmoved) until it is dropped after the call. The GIL is
    // held, so no Python code touches it meanwhile.
    let slice = unsafe { std::slice::from_raw_parts_mut(view.buf_ptr() as *mut u8, len) };
    Ok(fdio::read(fd, slice))
}

#[pymethods]
impl TransportCore {
    /// `TransportCore(loop, transport, sock, fd, kind, server=None)`; kind is "socket",
    /// "read_pipe" or "write_pipe". The protocol is set with set_protocol, reading starts
    /// with `_start`.
    #[new]
    #[pyo3(signature = (
        r#loop, transport, sock, fd, kind, server=None, watch_pipe_eof=false, address=None,
        connected=false, family=0, peer=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        r#loop: &Bound<'_, PyAny>,
        transport: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        fd: RawFd,
        kind: &str,
        server: Option<&Bound<'_, PyAny>>,
        watch_pipe_eof: bool,
        address: Option<&Bound<'_, PyAny>>,
        connected: bool,
        family: i32,
        peer: Option<PyRef<'_, PeerAddr>>,
    ) -> PyResult<Self> {
        let kind = match kind {
            "socket" => Kind::Socket,
            "datagram" => Kind::Datagram,
            "read_pipe" => Kind::ReadPipe,
            "write_pipe" => Kind::WritePipe,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown transport kind {kind:?}"
                )))
            }
        };
        let lp = r#loop.cast::<LoopCore>()?.clone().unbind();
        let rare = (kind == Kind::Datagram).then(|| {
            Box::new(Rare {
                address: address.filter(|a| !a.is_none()).map(|a| a.clone().unbind()),
                connected,
                inet_family: if family == libc::AF_INET || family == libc::AF_INET6 {
                    family
                } else {
                    0
                },
                ..Default::default()
            })
        });
        Ok(Self {
            state: GilCell::new(State {
                kind,
                fd,
                loop_: Some(lp),
                transport: Some(transport.clone().unbind()),
                protocol: None,
                buffered: false,
                protocol_connected: false,
                sock: Some(sock.clone().unbind()),
                server: server.filter(|s| !s.is_none()).map(|s| s.clone().unbind()),
                closing: false,
                paused: false,
                eof: false,
                protocol_paused: false,
                watch_pipe_eof,
                reader_on: false,
                writer_on: false,
                start_pending: false,
                read_guess: 0,
                conn_lost: 0,
                reader_gen: 0,
                writer_gen: 0,
                buffer: PendingBytes::default(),
                rare,
                registered_in: None,
                peer: peer.map(|p| p.0),
            }),
        })
    }

    /// Registers this transport as its fd's owner with its loop (`loop._transports[fd] =
    /// transport` in asyncio): add_reader and the sock_* methods then refuse the fd while the
    /// transport is open.
    fn _register(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let key = slf.get().registry_key();
        let mut st = slf.get().lock(py);
        let Some(registry) = st.loop_.as_ref().map(|l| l.get().transports.clone()) else {
            return;
        };
        // A core's loop and fd never change: registering again (after sendfile) puts back
        // the same entry.
        registry.insert(py, st.fd, key);
        st.registered_in = Some(registry);
    }

    /// What `__init__` schedules: `protocol.connection_made(transport)`, then reading (or, for
    /// a write pipe, watching for the reader to go away), then the waiter's result.
    #[pyo3(signature = (waiter=None))]
    fn _start(slf: &Bound<'_, Self>, waiter: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let (protocol, transport, kind, watch_eof) = {
            let st = slf.get().lock(py);
            (
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.transport.as_ref().map(|t| t.clone_ref(py)),
                st.kind,
                st.watch_pipe_eof,
            )
        };
        let (Some(protocol), Some(transport)) = (protocol, transport) else {
            return Err(PyRuntimeError::new_err("transport has no protocol"));
        };
        let made = protocol.bind(py).getattr(intern!(py, "connection_made"))?;
        let no_waiter = waiter.is_none_or(|w| w.is_none());
        if no_waiter && !slf.get().debug(py) {
            // One queue entry instead of two Handles (their bound methods, argument tuples
            // and contexts): what a burst of accepted connections leaves behind stays small.
            // Debug mode keeps the Handles (slow-callback reports, creation tracebacks).
            drop(made);
            let Some(lp) = slf.get().loop_of(py) else {
                return Ok(());
            };
            let context = capi::copy_context(py)?;
            slf.get().lock(py).start_pending = true;
            let queued = lp
                .get()
                .schedule_ready(slf.py(), Ready::Start(slf.clone().unbind(), context));
            if queued.is_err() {
                slf.get().lock(py).start_pending = false;
            }
            return queued;
        }
        Self::call_soon(slf, &made, PyTuple::new(py, [transport])?)?;
        if kind != Kind::WritePipe || watch_eof {
            let start = slf.getattr(intern!(py, "_start_reading"))?;
            Self::call_soon(slf, &start, PyTuple::empty(py))?;
        }
        if let Some(w) = waiter.filter(|w| !w.is_none()) {
            let set = py
                .import(intern!(py, "asyncio.futures"))?
                .getattr(intern!(py, "_set_result_unless_cancelled"))?;
            Self::call_soon(
                slf,
                &set,
                PyTuple::new(py, [w.clone(), py.None().into_bound(py)])?,
            )?;
        }
        Ok(())
    }

    /// The deferred `_add_reader(fd, _read_ready)`: only if still reading.
    #[pyo3(name = "_start_reading")]
    fn start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let st = slf.get().lock(py);
            if st.loop_.is_none() || st.closing || (st.paused && st.kind != Kind::WritePipe) {
                return Ok(());
            }
        }
        Self::watch(slf, false)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_impl(slf, data)
    }

    /// Gives the Python transport classes (whose instances hold their core as `_core`) native
    /// methods: `is_closing` to `base` (every transport), `write` to `writing` (the writable
    /// ones; None: not writable). A protocol's `transport.write(data)` then reaches the core
    /// without a Python frame in between. Called for the mixins that define them, then for
    /// each concrete class: CPython specialises a method call only when the instance is
    /// exactly of the descriptor's class (the generic call costs about 185 instructions more).
    #[staticmethod]
    #[pyo3(signature = (base, writing))]
    fn _install_methods(
        base: &Bound<'_, pyo3::types::PyType>,
        writing: Option<&Bound<'_, pyo3::types::PyType>>,
    ) -> PyResult<()> {
        capi::install_meth_o::<IsClosingMethod>(base, base)?;
        if let Some(writing) = writing {
            capi::install_meth_o::<WriteMethod>(writing, writing)?;
        }
        Ok(())
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Self::sendto_impl(slf, data, addr)
    }

    /// `WriteTransport.writelines`: the chunks joined, then one write.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write_impl(slf, &joined)
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::write_eof_impl(slf)
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_impl(slf)
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let kind = slf.get().lock(py).kind;
        match kind {
            Kind::Socket | Kind::Datagram => Self::force_close(slf, None),
            _ => Self::close_pipe(slf, None),
        }
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.lock(py).closing
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        let st = self.lock(py);
        !st.closing && !st.paused
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut st = slf.get().lock(py);
            if st.closing || st.paused {
                return Ok(());
            }
            st.paused = true;
        }
        Self::unwatch(slf, false);
        if slf.get().debug(py) {
            slf.get().log(py, "debug", "%r pauses reading")?;
        }
        Ok(())
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut st = slf.get().lock(py);
            if st.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
        }
        Self::watch(slf, false)?;
        if slf.get().debug(py) {
            slf.get().log(py, "debug", "%r resumes reading")?;
        }
        Ok(())
    }

    /// `_FlowControlMixin.set_write_buffer_limits`.
    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        let py = slf.py();
        let high = match (high, low) {
            (Some(h), _) => h,
            (None, None) => 64 * 1024,
            (None, Some(l)) => 4 * l,
        };
        let low = low.unwrap_or(high.div_euclid(4));
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        {
            let mut st = slf.get().lock(py);
            let rare = st.rare();
            rare.high_water = high;
            rare.low_water = low;
        }
        Self::maybe_pause_protocol(slf)
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> (i64, i64) {
        let st = self.lock(py);
        (st.low_water(), st.high_water())
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.lock(py).pending()
    }

    fn set_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        let buffered_cls = py
            .import(intern!(py, "asyncio.protocols"))?
            .getattr(intern!(py, "BufferedProtocol"))?;
        let buffered = protocol.is_instance(&buffered_cls)?;
        let old = {
            let mut st = self.lock(py);
            st.buffered = buffered;
            st.protocol_connected = true;
            let old = st.protocol.replace(protocol.clone().unbind());
            // The queued start still calls connection_made on the protocol it was made with.
            if st.start_pending && st.rare.as_ref().is_none_or(|r| r.made_protocol.is_none()) {
                st.rare().made_protocol = old;
                None
            } else {
                old
            }
        };
        drop(old);
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.protocol_obj(py).unbind()
    }

    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if slf.get().lock(py).empty_waiter().is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let Some(lp) = slf.get().loop_of(py) else {
            return Err(PyRuntimeError::new_err("transport is closed"));
        };
        let waiter = lp.call_method0(intern!(py, "create_future"))?;
        let empty = {
            let mut st = slf.get().lock(py);
            st.rare().empty_waiter = Some(waiter.clone().unbind());
            st.buffer.is_empty()
        };
        if empty {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter.unbind())
    }

    fn _reset_empty_waiter(&self, py: Python<'_>) {
        let old = self
            .lock(py)
            .rare
            .as_mut()
            .and_then(|r| r.empty_waiter.take());
        drop(old);
    }

    #[pyo3(signature = (exc=None))]
    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        Self::call_connection_lost_impl(slf, exc.filter(|e| !e.is_none()))
    }

    #[pyo3(signature = (exc=None))]
    fn _force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let kind = slf.get().lock(py).kind;
        let exc = exc.filter(|e| !e.is_none());
        match kind {
            Kind::Socket | Kind::Datagram => Self::force_close(slf, exc),
            _ => Self::close_pipe(slf, exc),
        }
    }

    #[pyo3(signature = (exc, message="Fatal error on transport"))]
    fn _fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        Self::fatal_error(slf, exc, message)
    }

    /// For the transport's repr: (socket/pipe closed, closing, fd, reading polled, writing
    /// polled, buffered bytes).
    fn _state(&self, py: Python<'_>) -> (bool, bool, RawFd, bool, bool, usize) {
        let st = self.lock(py);
        (
            st.sock.is_none(),
            st.closing,
            st.fd,
            st.reader_on,
            st.writer_on,
            st.buffer.len(),
        )
    }

    #[getter]
    fn _conn_lost(&self, py: Python<'_>) -> u32 {
        self.lock(py).conn_lost
    }

    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.lock(py).protocol_paused
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.lock(py).sock.as_ref().map(|s| s.clone_ref(py))
    }

    /// Replacing the socket/pipe object (tests set `transport._pipe = None` to silence the
    /// unclosed-transport warning).
    #[setter(_sock)]
    fn set_sock(&self, py: Python<'_>, sock: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.lock(py).sock, sock);
        drop(old);
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.lock(py)
            .loop_
            .as_ref()
            .map(|l| l.clone_ref(py).into_any())
    }

    /// The peer address accept gave (`extra['peername']` of a server's connection), or None
    /// when it was not kept here.
    fn _peername<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let peer = self.lock(py).peer;
        peer.map(|p| inet_addr_to_py(py, &p)).transpose()
    }

    #[getter]
    fn _server(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.lock(py).server.as_ref().map(|s| s.clone_ref(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The collector runs with the GIL held; a None from try_lock means this thread is
        // inside a borrow (the collector started from an allocation there): visit nothing.
        let st = crate::capi::in_traverse(|py| self.state.try_lock(py));
        if let Some(st) = st {
            visit.call(&st.loop_)?;
            visit.call(&st.transport)?;
            visit.call(&st.protocol)?;
            visit.call(&st.sock)?;
            visit.call(&st.server)?;
            if let Some(rare) = st.rare.as_ref() {
                visit.call(&rare.empty_waiter)?;
                visit.call(&rare.address)?;
                visit.call(&rare.made_protocol)?;
                for (data, addr) in &rare.datagrams {
                    visit.call(data)?;
                    visit.call(addr)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = Python::attach(|py| self.state.try_lock(py)).map(|mut st| {
            (
                st.loop_.take(),
                st.transport.take(),
                st.protocol.take(),
                st.sock.take(),
                st.server.take(),
                st.rare.take(),
            )
        });
        drop(taken);
    }
}
