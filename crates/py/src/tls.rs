//! TLS record layer: `SSLProtocolCore`, the protocol that sits between a raw transport and the
//! application protocol and runs TLS through Python's own `ssl` module (an `ssl.SSLObject` over
//! two `ssl.MemoryBIO`s, so any `SSLContext` works unchanged and OpenSSL stays behind `ssl`).
//!
//! This module owns the state machine (handshake, wrapped, flushing, shutdown), the app-side
//! write backlog, the receive buffer handed to the raw transport, the loops that pump the BIOs
//! through the SSLObject, and flow control both ways. It mirrors `asyncio.sslproto.SSLProtocol`
//! (Python 3.11) method by method; `python/ferroloop/_tls.py` adds the Python subclass (a
//! `BufferedProtocol`) and the app transport, which are thin glue over this class.
//!
//! Borrow discipline: no `PyRef`/`PyRefMut` is held across a call into Python (every call may
//! re-enter this object: `data_received` writes, `connection_made` closes, ...), and Python
//! objects taken out of a field are dropped after the borrow ends.

use std::cell::RefCell;
use std::collections::VecDeque;

use pyo3::exceptions::{
    PyAssertionError, PyConnectionAbortedError, PyConnectionResetError, PyException, PyOSError,
    PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PySlice, PyString};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::gil_cell::{GilRefCell, HasStateCell, StateCell};
use crate::stdlib;

use crate::handle::escapes_loop;
use crate::stdlib::cached_attr;

cached_attr!(
    /// `ssl.SSLWantReadError`
    ssl_want_read_error, "ssl", "SSLWantReadError");
cached_attr!(
    /// `ssl.SSLSyscallError`
    ssl_syscall_error, "ssl", "SSLSyscallError");
cached_attr!(
    /// `ssl.SSLError`
    ssl_error, "ssl", "SSLError");
cached_attr!(
    /// `ssl.CertificateError` (`SSLCertVerificationError`)
    ssl_certificate_error, "ssl", "CertificateError");
cached_attr!(
    /// `ssl.SSLObject`
    ssl_object_class, "ssl", "SSLObject");
cached_attr!(
    /// `ssl.MemoryBIO`
    ssl_memory_bio, "ssl", "MemoryBIO");
/// `ssl.create_default_context`, looked up at each use (cold: only for `ssl=True`), so that
/// code patching it (CPython's test_events does) is honoured.
fn ssl_create_default_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("ssl")?.getattr("create_default_context")
}
cached_attr!(
    /// `asyncio.protocols.BufferedProtocol`
    buffered_protocol, "asyncio.protocols", "BufferedProtocol");
cached_attr!(
    /// `asyncio.sslproto.SSLProtocolState` (for introspection of `_state`)
    ssl_protocol_state, "asyncio.sslproto", "SSLProtocolState");
cached_attr!(
    /// `asyncio.sslproto.AppProtocolState` (for introspection of `_app_state`)
    app_protocol_state, "asyncio.sslproto", "AppProtocolState");
cached_attr!(
    /// `ferroloop._tls._SSLProtocolTransport`: the app-side transport class
    app_transport_class, "ferroloop._tls", "_SSLProtocolTransport");

/// `asyncio.constants.<name>`, read at use (cold paths only) so patched constants are seen.
fn asyncio_constant<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import(intern!(py, "asyncio.constants"))?.getattr(name)
}

/// asyncio's logger (`asyncio.log.logger`), looked up at use so patched loggers are seen.
fn logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import(intern!(py, "asyncio.log"))?
        .getattr(intern!(py, "logger"))
}

/// `except SSLAgainErrors` (`(ssl.SSLWantReadError, ssl.SSLSyscallError)`).
fn is_again(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    Ok(
        err.is_instance(py, ssl_want_read_error(py)?)
            || err.is_instance(py, ssl_syscall_error(py)?),
    )
}

/// `except Exception`.
fn is_exception(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyException>(py)
}

/// asyncio.sslproto.SSLProtocolState.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SslState {
    Unwrapped,
    DoHandshake,
    Wrapped,
    Flushing,
    Shutdown,
}

impl SslState {
    fn name(self) -> &'static str {
        match self {
            SslState::Unwrapped => "UNWRAPPED",
            SslState::DoHandshake => "DO_HANDSHAKE",
            SslState::Wrapped => "WRAPPED",
            SslState::Flushing => "FLUSHING",
            SslState::Shutdown => "SHUTDOWN",
        }
    }

    /// The transitions `SSLProtocol._set_state` allows.
    fn may_become(self, new: SslState) -> bool {
        use SslState::*;
        matches!(
            (self, new),
            (_, Unwrapped)
                | (Unwrapped, DoHandshake)
                | (DoHandshake, Wrapped)
                | (Wrapped, Flushing)
                | (Flushing, Shutdown)
        )
    }
}

/// asyncio.sslproto.AppProtocolState: INIT -cm-> CON_MADE [-er-> EOF] -cl-> CON_LOST.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AppState {
    Init,
    ConMade,
    Eof,
    ConLost,
}

impl AppState {
    fn name(self) -> &'static str {
        match self {
            AppState::Init => "STATE_INIT",
            AppState::ConMade => "STATE_CON_MADE",
            AppState::Eof => "STATE_EOF",
            AppState::ConLost => "STATE_CON_LOST",
        }
    }
}

/// A water mark: the number compared against, and the object the user gave (returned as is by
/// the `get_*_limits` methods).
struct Limit {
    value: f64,
    obj: Option<Py<PyAny>>,
}

impl Limit {
    fn zero() -> Self {
        Limit {
            value: 0.0,
            obj: None,
        }
    }

    fn object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.obj {
            Some(o) => Ok(o.bind(py).clone()),
            None => Ok(0i64.into_pyobject(py)?.into_any()),
        }
    }
}

/// Mirrors `sslproto.add_flowcontrol_defaults`: fills in the missing water mark (high defaults
/// to `kb` KiB, low to a quarter of high, high to four times an explicit low) and checks
/// `high >= low >= 0`.
fn flowcontrol_defaults<'py>(
    py: Python<'py>,
    high: Option<Bound<'py, PyAny>>,
    low: Option<Bound<'py, PyAny>>,
    kb: Bound<'py, PyAny>,
) -> PyResult<(Limit, Limit)> {
    let hi = match (high, &low) {
        (Some(h), _) => h,
        (None, None) => kb.mul(1024)?,
        (None, Some(l)) => l.mul(4)?,
    };
    let lo = match low {
        Some(l) => l,
        None => hi.floor_div(4)?,
    };
    if !(hi.ge(&lo)? && lo.ge(0)?) {
        return Err(PyValueError::new_err(format!(
            "high ({}) must be >= low ({}) must be >= 0",
            hi.repr()?,
            lo.repr()?
        )));
    }
    let limit = |o: Bound<'py, PyAny>| -> PyResult<Limit> {
        Ok(Limit {
            value: o.extract::<f64>()?,
            obj: Some(o.unbind()),
        })
    };
    let _ = py;
    Ok((limit(hi)?, limit(lo)?))
}

/// The TLS protocol's state (asyncio.sslproto.SSLProtocol). Python code uses it through the
/// subclass `ferroloop._tls.SSLProtocol`.
///
/// Frozen for PyO3: the state sits in a [`GilRefCell`] (PyO3's borrow flag is atomic: some 130
/// locked instructions per 1 KiB echoed), reached from a bound object through [`StateCell`].
#[pyclass(
    module = "ferroloop._ferroloop",
    name = "SSLProtocolCore",
    subclass,
    frozen
)]
pub struct SslProtocolCore {
    st: GilRefCell<SslCoreState>,
}

impl HasStateCell for SslProtocolCore {
    type State = SslCoreState;
    fn state_cell(&self) -> &GilRefCell<SslCoreState> {
        &self.st
    }
}

/// What an SSLProtocolCore holds.
pub(crate) struct SslCoreState {
    initialized: bool,
    loop_: Option<Py<PyAny>>,
    app_protocol: Option<Py<PyAny>>,
    app_get_buffer: Option<Py<PyAny>>,
    app_buffer_updated: Option<Py<PyAny>>,
    app_is_buffer: bool,
    sslcontext: Option<Py<PyAny>>,
    sslobj: Option<Py<PyAny>>,
    /// `sslobj._sslobj` (the `_ssl._SSLSocket`) when `sslobj` is exactly `ssl.SSLObject`,
    /// whose read/write/pending only forward to it: the hot paths call it directly.
    ssl_inner: Option<Py<PyAny>>,
    /// `ssl_inner`'s read, write and pending, bound once (a C object's methods cannot change):
    /// every message calls them, and looking a method up costs about what calling it does.
    ssl_read: Option<Py<PyAny>>,
    ssl_write: Option<Py<PyAny>>,
    ssl_pending: Option<Py<PyAny>>,
    incoming: Option<Py<PyAny>>,
    outgoing: Option<Py<PyAny>>,
    /// `incoming.write` and `outgoing.read`, bound once (the BIOs are `ssl.MemoryBIO`s, a C
    /// type, made here).
    incoming_write: Option<Py<PyAny>>,
    outgoing_read: Option<Py<PyAny>>,
    extra: Option<Py<PyDict>>,
    /// App data written before the SSLObject could take it (the handshake is running, or
    /// the SSLObject wants to read first).
    write_backlog: VecDeque<Py<PyAny>>,
    write_buffer_size: i64,
    waiter: Option<Py<PyAny>>,
    app_transport: Option<Py<PyAny>>,
    app_transport_created: bool,
    transport: Option<Py<PyAny>>,
    server_side: bool,
    server_hostname: Option<Py<PyAny>>,
    handshake_timeout: Option<Py<PyAny>>,
    shutdown_timeout: Option<Py<PyAny>>,
    handshake_start_time: Option<f64>,
    handshake_timeout_handle: Option<Py<PyAny>>,
    shutdown_timeout_handle: Option<Py<PyAny>>,
    state: SslState,
    app_state: AppState,
    conn_lost: u64,
    ssl_writing_paused: bool,
    app_reading_paused: bool,
    ssl_reading_paused: bool,
    app_writing_paused: bool,
    eof_received: bool,
    incoming_high: Limit,
    incoming_low: Limit,
    outgoing_high: Limit,
    outgoing_low: Limit,
    /// The buffer the raw transport receives into (`get_buffer`), and a memoryview of it.
    ssl_buffer: Option<Py<PyByteArray>>,
    ssl_buffer_view: Option<Py<PyAny>>,
    max_size: usize,
}

const MAX_SIZE: usize = 256 * 1024;

type Field = fn(&SslCoreState) -> &Option<Py<PyAny>>;

impl SslProtocolCore {
    /// The object in a field, or None (so a call on a missing object fails with the
    /// AttributeError asyncio's code would raise on None).
    fn get<'py>(slf: &Bound<'py, Self>, f: Field) -> Bound<'py, PyAny> {
        let py = slf.py();
        match f(&slf.st()) {
            Some(o) => o.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    /// What read/write/pending are called on: the inner `_ssl` object when there is one
    /// (see `ssl_inner`), else the SSLObject.
    fn ssl_rw<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        let py = slf.py();
        let this = slf.st();
        match this.ssl_inner.as_ref().or(this.sslobj.as_ref()) {
            Some(o) => o.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    /// `name` of what [`Self::ssl_rw`] returns: the bound method kept for it (`cached`) when
    /// there is one, else looked up now.
    fn ssl_method<'py>(
        slf: &Bound<'py, Self>,
        cached: Field,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::kept_method(slf, cached, Self::ssl_rw, name)
    }

    /// `name` of one of the BIOs (`bio`): the bound method kept at init (`cached`), else (before
    /// init) looked up on the field, where None fails as asyncio's code would.
    fn bio_method<'py>(
        slf: &Bound<'py, Self>,
        cached: Field,
        bio: Field,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::kept_method(slf, cached, |s| Self::get(s, bio), name)
    }

    /// The bound method in `cached`, or `name` of the object `owner` gives.
    fn kept_method<'py>(
        slf: &Bound<'py, Self>,
        cached: Field,
        owner: impl FnOnce(&Bound<'py, Self>) -> Bound<'py, PyAny>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(m) = cached(&slf.st()) {
            return Ok(m.bind(slf.py()).clone());
        }
        owner(slf).getattr(name)
    }

    /// After a read that returned data: whether another read could return something without
    /// more input. It cannot when the incoming BIO is empty and the SSL object holds no
    /// decrypted bytes; asyncio's loop finds that out from an SSLWantReadError, which costs
    /// more than the two checks (the next read's outcome is the same either way).
    fn more_to_read(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        if Self::read_buffer_size(slf)? > 0 {
            return Ok(true);
        }
        let pending: i64 = Self::ssl_method(slf, |s| &s.ssl_pending, intern!(py, "pending"))?
            .call0()?
            .extract()?;
        Ok(pending > 0)
    }

    fn state(slf: &Bound<'_, Self>) -> SslState {
        slf.st().state
    }

    fn loop_obj<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.loop_)
    }

    fn debug(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        Self::loop_obj(slf)
            .call_method0(intern!(py, "get_debug"))?
            .is_truthy()
    }

    /// Mirrors `SSLProtocol._set_state`.
    fn set_state(slf: &Bound<'_, Self>, new: SslState) -> PyResult<()> {
        let mut this = slf.st_mut();
        if this.state.may_become(new) {
            this.state = new;
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(format!(
                "cannot switch state from SSLProtocolState.{} to SSLProtocolState.{}",
                this.state.name(),
                new.name()
            )))
        }
    }

    /// Sets `_closed = True` on the app transport, if there is one.
    fn mark_app_transport_closed(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let tr = slf.st().app_transport.as_ref().map(|t| t.clone_ref(py));
        if let Some(tr) = tr {
            tr.bind(py).setattr(intern!(py, "_closed"), true)?;
        }
        Ok(())
    }

    fn cancel_handle(slf: &Bound<'_, Self>, shutdown: bool) -> PyResult<()> {
        let py = slf.py();
        let handle = {
            let mut this = slf.st_mut();
            if shutdown {
                this.shutdown_timeout_handle.take()
            } else {
                this.handshake_timeout_handle.take()
            }
        };
        if let Some(h) = handle {
            h.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }

    fn call_exception_handler(
        slf: &Bound<'_, Self>,
        message: &str,
        exc: &Bound<'_, PyAny>,
        transport: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let ctx = PyDict::new(py);
        ctx.set_item(intern!(py, "message"), message)?;
        ctx.set_item(intern!(py, "exception"), exc)?;
        ctx.set_item(intern!(py, "transport"), transport)?;
        ctx.set_item(intern!(py, "protocol"), slf)?;
        Self::loop_obj(slf).call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        Ok(())
    }

    // ---- setup --------------------------------------------------------------------------

    fn set_app_protocol_impl(
        slf: &Bound<'_, Self>,
        app_protocol: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let is_buffer = app_protocol.hasattr(intern!(py, "get_buffer"))?
            && app_protocol.is_instance(buffered_protocol(py)?)?;
        let (get_buffer, buffer_updated) = if is_buffer {
            (
                Some(app_protocol.getattr(intern!(py, "get_buffer"))?.unbind()),
                Some(
                    app_protocol
                        .getattr(intern!(py, "buffer_updated"))?
                        .unbind(),
                ),
            )
        } else {
            (None, None)
        };
        let old = {
            let mut this = slf.st_mut();
            let old = (
                this.app_protocol.replace(app_protocol.clone().unbind()),
                std::mem::replace(&mut this.app_get_buffer, get_buffer),
                std::mem::replace(&mut this.app_buffer_updated, buffer_updated),
            );
            this.app_is_buffer = is_buffer;
            old
        };
        drop(old);
        Ok(())
    }

    fn wakeup_waiter_impl(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let waiter = slf.st().waiter.as_ref().map(|w| w.clone_ref(py));
        let Some(waiter) = waiter else {
            return Ok(());
        };
        let waiter = waiter.bind(py);
        if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            match exc {
                Some(e) if !e.is_none() => {
                    waiter.call_method1(intern!(py, "set_exception"), (e,))?;
                }
                _ => {
                    waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
                }
            }
        }
        let old = slf.st_mut().waiter.take();
        drop(old);
        Ok(())
    }

    fn get_app_transport_impl<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let (existing, created) = {
            let this = slf.st();
            (
                this.app_transport.as_ref().map(|t| t.clone_ref(py)),
                this.app_transport_created,
            )
        };
        if let Some(tr) = existing {
            return Ok(tr.into_bound(py));
        }
        if created {
            return Err(PyRuntimeError::new_err(
                "Creating _SSLProtocolTransport twice",
            ));
        }
        let tr = app_transport_class(py)?.call1((Self::loop_obj(slf), slf))?;
        {
            let mut this = slf.st_mut();
            this.app_transport = Some(tr.clone().unbind());
            this.app_transport_created = true;
        }
        Ok(tr)
    }

    // ---- handshake ----------------------------------------------------------------------

    /// Mirrors `SSLProtocol._start_handshake`.
    fn start_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let loop_ = Self::loop_obj(slf);
        let start = if Self::debug(slf)? {
            logger(py)?.call_method1(intern!(py, "debug"), ("%r starts SSL handshake", slf))?;
            Some(loop_.call_method0(intern!(py, "time"))?.extract::<f64>()?)
        } else {
            None
        };
        slf.st_mut().handshake_start_time = start;
        Self::set_state(slf, SslState::DoHandshake)?;
        let timeout = Self::get(slf, |s| &s.handshake_timeout);
        let cb = slf.getattr(intern!(py, "_check_handshake_timeout"))?;
        let handle = loop_.call_method1(intern!(py, "call_later"), (timeout, cb))?;
        let old = slf
            .st_mut()
            .handshake_timeout_handle
            .replace(handle.unbind());
        drop(old);
        Self::do_handshake(slf)
    }

    /// Mirrors `SSLProtocol._check_handshake_timeout`.
    fn check_handshake_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        if Self::state(slf) != SslState::DoHandshake {
            return Ok(());
        }
        let py = slf.py();
        let timeout = Self::get(slf, |s| &s.handshake_timeout);
        let msg = format!(
            "SSL handshake is taking longer than {} seconds: aborting the connection",
            timeout.str()?
        );
        let exc = PyConnectionAbortedError::new_err(msg).into_value(py);
        Self::fatal_error(slf, exc.bind(py).as_any(), "Fatal error on transport")
    }

    /// Mirrors `SSLProtocol._do_handshake`.
    fn do_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let sslobj = Self::get(slf, |s| &s.sslobj);
        match sslobj.call_method0(intern!(py, "do_handshake")) {
            Ok(_) => Self::on_handshake_complete(slf, None),
            Err(e) if is_again(py, &e)? => Self::process_outgoing(slf),
            Err(e) if e.is_instance(py, ssl_error(py)?) => {
                Self::on_handshake_complete(slf, Some(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Mirrors `SSLProtocol._on_handshake_complete`.
    fn on_handshake_complete(slf: &Bound<'_, Self>, handshake_exc: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        Self::cancel_handle(slf, false)?;
        let sslobj = Self::get(slf, |s| &s.sslobj);
        let peercert = match handshake_exc {
            Some(e) => Err(e),
            None => Self::set_state(slf, SslState::Wrapped)
                .and_then(|()| sslobj.call_method0(intern!(py, "getpeercert"))),
        };
        let peercert = match peercert {
            Ok(p) => p,
            Err(e) if is_exception(py, &e) => {
                Self::set_state(slf, SslState::Unwrapped)?;
                let msg = if e.is_instance(py, ssl_certificate_error(py)?) {
                    "SSL handshake failed on verifying the certificate"
                } else {
                    "SSL handshake failed"
                };
                let exc = e.into_value(py).into_bound(py).into_any();
                Self::fatal_error(slf, &exc, msg)?;
                return Self::wakeup_waiter_impl(slf, Some(&exc));
            }
            Err(e) => return Err(e),
        };

        if Self::debug(slf)? {
            let start = slf.st().handshake_start_time;
            let now = Self::loop_obj(slf)
                .call_method0(intern!(py, "time"))?
                .extract::<f64>()?;
            // A None start time fails here as asyncio's subtraction would.
            let Some(start) = start else {
                return Err(PyTypeError::new_err(
                    "unsupported operand type(s) for -: 'float' and 'NoneType'",
                ));
            };
            logger(py)?.call_method1(
                intern!(py, "debug"),
                ("%r: SSL handshake took %.1f ms", slf, (now - start) * 1e3),
            )?;
        }

        let extra = slf.st().extra.as_ref().map(|e| e.clone_ref(py));
        if let Some(extra) = extra {
            let extra = extra.bind(py);
            extra.set_item(intern!(py, "peercert"), peercert)?;
            extra.set_item(
                intern!(py, "cipher"),
                sslobj.call_method0(intern!(py, "cipher"))?,
            )?;
            extra.set_item(
                intern!(py, "compression"),
                sslobj.call_method0(intern!(py, "compression"))?,
            )?;
            extra.set_item(intern!(py, "ssl_object"), &sslobj)?;
        }
        let call_made = {
            let mut this = slf.st_mut();
            if this.app_state == AppState::Init {
                this.app_state = AppState::ConMade;
                true
            } else {
                false
            }
        };
        if call_made {
            let app = Self::get(slf, |s| &s.app_protocol);
            let tr = Self::get_app_transport_impl(slf)?;
            app.call_method1(intern!(py, "connection_made"), (tr,))?;
        }
        Self::wakeup_waiter_impl(slf, None)?;
        Self::do_read(slf)
    }

    // ---- shutdown -----------------------------------------------------------------------

    /// Mirrors `SSLProtocol._start_shutdown`.
    fn start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let state = Self::state(slf);
        if matches!(
            state,
            SslState::Flushing | SslState::Shutdown | SslState::Unwrapped
        ) {
            return Ok(());
        }
        Self::mark_app_transport_closed(slf)?;
        if state == SslState::DoHandshake {
            Self::abort_impl(slf, None)
        } else {
            Self::set_state(slf, SslState::Flushing)?;
            let timeout = Self::get(slf, |s| &s.shutdown_timeout);
            let cb = slf.getattr(intern!(py, "_check_shutdown_timeout"))?;
            let handle =
                Self::loop_obj(slf).call_method1(intern!(py, "call_later"), (timeout, cb))?;
            let old = slf
                .st_mut()
                .shutdown_timeout_handle
                .replace(handle.unbind());
            drop(old);
            Self::do_flush(slf)
        }
    }

    /// Mirrors `SSLProtocol._check_shutdown_timeout`.
    fn check_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if matches!(Self::state(slf), SslState::Flushing | SslState::Shutdown) {
            let exc = PyTimeoutError::new_err("SSL shutdown timed out").into_value(py);
            force_close(&Self::get(slf, |s| &s.transport), exc.bind(py).as_any())?;
        }
        Ok(())
    }

    /// Mirrors `SSLProtocol._do_flush`.
    fn do_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf)?;
        Self::set_state(slf, SslState::Shutdown)?;
        Self::do_shutdown(slf)
    }

    /// Mirrors `SSLProtocol._do_shutdown`.
    fn do_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let result = if slf.st().eof_received {
            Ok(())
        } else {
            Self::get(slf, |s| &s.sslobj)
                .call_method0(intern!(py, "unwrap"))
                .map(drop)
        };
        match result {
            Ok(()) => {
                Self::process_outgoing(slf)?;
                Self::call_eof_received(slf)?;
                Self::on_shutdown_complete(slf, None)
            }
            Err(e) if is_again(py, &e)? => Self::process_outgoing(slf),
            Err(e) if e.is_instance(py, ssl_error(py)?) => {
                let exc = e.into_value(py).into_bound(py).into_any();
                Self::on_shutdown_complete(slf, Some(&exc))
            }
            Err(e) => Err(e),
        }
    }

    /// Mirrors `SSLProtocol._on_shutdown_complete`.
    fn on_shutdown_complete(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        Self::cancel_handle(slf, true)?;
        match exc {
            Some(e) if e.is_truthy()? => Self::fatal_error(slf, e, "Fatal error on transport"),
            _ => {
                let close = Self::get(slf, |s| &s.transport).getattr(intern!(py, "close"))?;
                Self::loop_obj(slf).call_method1(intern!(py, "call_soon"), (close,))?;
                Ok(())
            }
        }
    }

    /// Mirrors `SSLProtocol._abort`. 3.11 aborts the raw transport (`transport.abort()`);
    /// 3.12+ force-closes it with `exc` (`transport._force_close(exc)`). On 3.11 an exception
    /// also force-closes (3.11's own `_abort()` takes none, so its app transport's
    /// `_force_close(exc)` raised TypeError).
    fn abort_impl(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        Self::set_state(slf, SslState::Unwrapped)?;
        let transport = slf.st().transport.as_ref().map(|t| t.clone_ref(py));
        if let Some(tr) = transport {
            let tr = tr.bind(py);
            match exc {
                Some(e) if !e.is_none() => force_close(tr, e)?,
                _ if py.version_info() >= (3, 12) => force_close(tr, &py.None().into_bound(py))?,
                _ => {
                    tr.call_method0(intern!(py, "abort"))?;
                }
            }
        }
        Ok(())
    }

    // ---- outgoing -----------------------------------------------------------------------

    /// Mirrors `SSLProtocol._write_appdata`.
    fn write_appdata<'py>(
        slf: &Bound<'py, Self>,
        items: impl IntoIterator<Item = PyResult<Bound<'py, PyAny>>>,
    ) -> PyResult<()> {
        let py = slf.py();
        if matches!(
            Self::state(slf),
            SslState::Flushing | SslState::Shutdown | SslState::Unwrapped
        ) {
            let conn_lost = slf.st().conn_lost;
            let threshold: u64 =
                asyncio_constant(py, "LOG_THRESHOLD_FOR_CONNLOST_WRITES")?.extract()?;
            if conn_lost >= threshold {
                logger(py)?.call_method1(intern!(py, "warning"), ("SSL connection is closed",))?;
            }
            slf.st_mut().conn_lost += 1;
            return Ok(());
        }
        for data in items {
            let data = data?;
            let n = data.len()? as i64;
            let mut this = slf.st_mut();
            this.write_backlog.push_back(data.unbind());
            this.write_buffer_size += n;
        }
        if Self::state(slf) == SslState::Wrapped {
            if let Err(e) = Self::do_write(slf) {
                if !is_exception(py, &e) {
                    return Err(e);
                }
                let exc = e.into_value(py).into_bound(py).into_any();
                Self::fatal_error(slf, &exc, "Fatal error on SSL protocol")?;
            }
        }
        Ok(())
    }

    /// Mirrors `SSLProtocol._do_write`: hands the backlog to the SSLObject, then sends what
    /// it produced.
    fn do_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let write = Self::ssl_method(slf, |s| &s.ssl_write, intern!(py, "write"))?;
        loop {
            let data = match slf.st().write_backlog.front() {
                Some(d) => d.clone_ref(py).into_bound(py),
                None => break,
            };
            let count = match write.call1((&data,)) {
                Ok(c) => c.extract::<i64>()?,
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            };
            let data_len = data.len()? as i64;
            if count < data_len {
                let rest = data.get_item(PySlice::new(py, count as isize, isize::MAX, 1))?;
                let mut this = slf.st_mut();
                let old = this
                    .write_backlog
                    .front_mut()
                    .map(|f| std::mem::replace(f, rest.unbind()));
                this.write_buffer_size -= count;
                drop(this);
                drop(old);
            } else {
                let mut this = slf.st_mut();
                let old = this.write_backlog.pop_front();
                this.write_buffer_size -= data_len;
                drop(this);
                drop(old);
            }
        }
        Self::process_outgoing(slf)
    }

    /// Mirrors `SSLProtocol._process_outgoing`: moves the outgoing BIO's records to the raw
    /// transport unless it asked us to pause.
    fn process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !slf.st().ssl_writing_paused {
            let data = Self::bio_method(
                slf,
                |s| &s.outgoing_read,
                |s| &s.outgoing,
                intern!(py, "read"),
            )?
            .call0()?;
            if data.len()? > 0 {
                Self::get(slf, |s| &s.transport).call_method1(intern!(py, "write"), (data,))?;
            }
        }
        Self::control_app_writing(slf)
    }

    // ---- incoming -----------------------------------------------------------------------

    /// Mirrors `SSLProtocol._do_read`.
    fn do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !matches!(Self::state(slf), SslState::Wrapped | SslState::Flushing) {
            return Ok(());
        }
        let result = (|| -> PyResult<()> {
            let (paused, is_buffer) = {
                let this = slf.st();
                (this.app_reading_paused, this.app_is_buffer)
            };
            if !paused {
                if is_buffer {
                    Self::do_read_buffered(slf)?;
                } else {
                    Self::do_read_copied(slf)?;
                }
                if slf.st().write_backlog.is_empty() {
                    Self::process_outgoing(slf)?;
                } else {
                    Self::do_write(slf)?;
                }
            }
            Self::control_ssl_reading(slf)
        })();
        match result {
            Err(e) if is_exception(py, &e) => {
                let exc = e.into_value(py).into_bound(py).into_any();
                Self::fatal_error(slf, &exc, "Fatal error on SSL protocol")
            }
            other => other,
        }
    }

    /// Mirrors `SSLProtocol._do_read__buffered`: decrypts straight into the app protocol's
    /// buffer.
    fn do_read_buffered(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let hint = Self::read_buffer_size(slf)?;
        let get_buffer = Self::get(slf, |s| &s.app_get_buffer);
        let buf = get_buffer.call1((hint,))?;
        let wants = buf.len()? as i64;
        let read = Self::ssl_method(slf, |s| &s.ssl_read, intern!(py, "read"))?;
        let mut offset: i64 = 0;
        let mut count: i64 = 1;
        let result = (|| -> PyResult<()> {
            count = read.call1((wants, &buf))?.extract()?;
            if count > 0 {
                offset = count;
                loop {
                    if offset >= wants {
                        // The buffer is full: more may be waiting in the SSLObject.
                        let cb = slf.getattr(intern!(py, "_do_read"))?;
                        Self::loop_obj(slf).call_method1(intern!(py, "call_soon"), (cb,))?;
                        break;
                    }
                    if !Self::more_to_read(slf)? {
                        break;
                    }
                    let rest = buf.get_item(PySlice::new(py, offset as isize, isize::MAX, 1))?;
                    count = read.call1((wants - offset, rest))?.extract()?;
                    if count > 0 {
                        offset += count;
                    } else {
                        break;
                    }
                }
            }
            Ok(())
        })();
        match result {
            Err(e) if !is_again(py, &e)? => return Err(e),
            _ => {}
        }
        if offset > 0 {
            Self::get(slf, |s| &s.app_buffer_updated).call1((offset,))?;
        }
        if count == 0 {
            // close_notify
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    /// Mirrors `SSLProtocol._do_read__copied`: decrypts all that is available and hands it to
    /// `data_received` in one piece. Records are decrypted into the thread's decrypt buffer
    /// (asyncio's `read(max_size)` allocates max_size bytes per read).
    fn do_read_copied(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let read = Self::ssl_method(slf, |s| &s.ssl_read, intern!(py, "read"))?;
        let max_size = slf.st().max_size.max(1);
        let buffer = decrypt_buffer(py, max_size)?;
        let (bytes, view) = (buffer.bytes.into_bound(py), buffer.view.into_bound(py));
        let mut chunks: Vec<Bound<'_, PyAny>> = Vec::new();
        let mut offset = 0usize;
        let mut close_notify = false;
        loop {
            if offset == max_size {
                chunks.push(bytes_of(&bytes, offset));
                offset = 0;
            }
            let target = if offset == 0 {
                view.clone()
            } else {
                view.get_item(PySlice::new(py, offset as isize, isize::MAX, 1))?
            };
            match read.call1((max_size - offset, target)) {
                Ok(n) => {
                    let n: usize = n.extract()?;
                    if n == 0 {
                        close_notify = true;
                        break;
                    }
                    offset += n;
                    if !Self::more_to_read(slf)? {
                        break;
                    }
                }
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            }
        }
        if offset > 0 {
            chunks.push(bytes_of(&bytes, offset));
        }
        drop(view);
        if !chunks.is_empty() {
            let data = if chunks.len() == 1 {
                chunks.pop().expect("one chunk")
            } else {
                join_chunks(py, &chunks)?
            };
            drop(chunks);
            Self::get(slf, |s| &s.app_protocol)
                .call_method1(intern!(py, "data_received"), (data,))?;
        }
        if close_notify {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    /// Mirrors `SSLProtocol._call_eof_received`.
    fn call_eof_received(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let call = {
            let mut this = slf.st_mut();
            if this.app_state == AppState::ConMade {
                this.app_state = AppState::Eof;
                true
            } else {
                false
            }
        };
        if !call {
            return Ok(());
        }
        let result = Self::get(slf, |s| &s.app_protocol)
            .call_method0(intern!(py, "eof_received"))
            .and_then(|keep_open| {
                if keep_open.is_truthy()? {
                    logger(py)?.call_method1(
                        intern!(py, "warning"),
                        ("returning true from eof_received() has no effect when using ssl",),
                    )?;
                }
                Ok(())
            });
        match result {
            Err(e) if !escapes_loop(py, &e) => {
                let exc = e.into_value(py).into_bound(py).into_any();
                Self::fatal_error(slf, &exc, "Error calling eof_received()")
            }
            other => other,
        }
    }

    // ---- flow control -------------------------------------------------------------------

    fn write_buffer_size(slf: &Bound<'_, Self>) -> PyResult<i64> {
        let py = slf.py();
        let pending: i64 = Self::get(slf, |s| &s.outgoing)
            .getattr(intern!(py, "pending"))?
            .extract()?;
        Ok(pending + slf.st().write_buffer_size)
    }

    fn read_buffer_size(slf: &Bound<'_, Self>) -> PyResult<i64> {
        let py = slf.py();
        Self::get(slf, |s| &s.incoming)
            .getattr(intern!(py, "pending"))?
            .extract()
    }

    /// Mirrors `SSLProtocol._control_app_writing`.
    fn control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let size = Self::write_buffer_size(slf)? as f64;
        let action = {
            let mut this = slf.st_mut();
            if size >= this.outgoing_high.value && !this.app_writing_paused {
                this.app_writing_paused = true;
                Some(("pause_writing", "protocol.pause_writing() failed"))
            } else if size <= this.outgoing_low.value && this.app_writing_paused {
                this.app_writing_paused = false;
                Some(("resume_writing", "protocol.resume_writing() failed"))
            } else {
                None
            }
        };
        let Some((method, message)) = action else {
            return Ok(());
        };
        match Self::get(slf, |s| &s.app_protocol).call_method0(method) {
            Ok(_) => Ok(()),
            Err(e) if escapes_loop(py, &e) => Err(e),
            Err(e) => {
                let exc = e.into_value(py).into_bound(py).into_any();
                let tr = Self::get(slf, |s| &s.app_transport);
                Self::call_exception_handler(slf, message, &exc, tr)
            }
        }
    }

    /// Mirrors `SSLProtocol._control_ssl_reading`: pauses the raw transport while the incoming
    /// BIO holds more than the high-water mark.
    fn control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let size = Self::read_buffer_size(slf)? as f64;
        let action = {
            let mut this = slf.st_mut();
            if size >= this.incoming_high.value && !this.ssl_reading_paused {
                this.ssl_reading_paused = true;
                Some(intern!(py, "pause_reading"))
            } else if size <= this.incoming_low.value && this.ssl_reading_paused {
                this.ssl_reading_paused = false;
                Some(intern!(py, "resume_reading"))
            } else {
                None
            }
        };
        if let Some(method) = action {
            Self::get(slf, |s| &s.transport).call_method0(method)?;
        }
        Ok(())
    }

    fn set_write_limits(
        slf: &Bound<'_, Self>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let kb = asyncio_constant(py, "FLOW_CONTROL_HIGH_WATER_SSL_WRITE")?;
        let (hi, lo) = flowcontrol_defaults(py, high, low, kb)?;
        let old = {
            let mut this = slf.st_mut();
            (
                std::mem::replace(&mut this.outgoing_high, hi),
                std::mem::replace(&mut this.outgoing_low, lo),
            )
        };
        drop(old);
        Ok(())
    }

    fn set_read_limits(
        slf: &Bound<'_, Self>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let kb = asyncio_constant(py, "FLOW_CONTROL_HIGH_WATER_SSL_READ")?;
        let (hi, lo) = flowcontrol_defaults(py, high, low, kb)?;
        let old = {
            let mut this = slf.st_mut();
            (
                std::mem::replace(&mut this.incoming_high, hi),
                std::mem::replace(&mut this.incoming_low, lo),
            )
        };
        drop(old);
        Ok(())
    }

    /// Mirrors `SSLProtocol._fatal_error`.
    fn fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        let py = slf.py();
        let transport = Self::get(slf, |s| &s.transport);
        if transport.is_truthy()? {
            force_close(&transport, exc)?;
        }
        if exc.is_instance_of::<PyOSError>() {
            if Self::debug(slf)? {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "exc_info"), true)?;
                logger(py)?.call_method(
                    intern!(py, "debug"),
                    ("%r: %s", slf, message),
                    Some(&kwargs),
                )?;
            }
        } else if !exc.is_instance(stdlib::cancelled_error(py)?)? {
            let transport = Self::get(slf, |s| &s.transport);
            Self::call_exception_handler(slf, message, exc, transport)?;
        }
        Ok(())
    }
}

/// `transport._force_close(exc)`; a transport without `_force_close` (not one of asyncio's or
/// ferroloop's) is aborted instead.
fn force_close(transport: &Bound<'_, PyAny>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = transport.py();
    if !transport.is_none() && !transport.hasattr(intern!(py, "_force_close"))? {
        transport.call_method0(intern!(py, "abort"))?;
        return Ok(());
    }
    transport.call_method1(intern!(py, "_force_close"), (exc,))?;
    Ok(())
}

/// The bound read, write and pending of the inner `_ssl` object, kept with it (see
/// `SslCoreState::ssl_read`); all None when there is no inner object.
struct InnerMethods {
    read: Option<Py<PyAny>>,
    write: Option<Py<PyAny>>,
    pending: Option<Py<PyAny>>,
}

impl InnerMethods {
    fn of(py: Python<'_>, inner: Option<&Py<PyAny>>) -> PyResult<Self> {
        let Some(inner) = inner else {
            return Ok(InnerMethods {
                read: None,
                write: None,
                pending: None,
            });
        };
        let inner = inner.bind(py);
        let bind = |name| inner.getattr(name).map(|m| Some(m.unbind()));
        Ok(InnerMethods {
            read: bind(intern!(py, "read"))?,
            write: bind(intern!(py, "write"))?,
            pending: bind(intern!(py, "pending"))?,
        })
    }

    /// Puts these in `state`; returns the ones they replace, for the caller to drop once the
    /// borrow is released.
    fn put_in(self, state: &mut SslCoreState) -> InnerMethods {
        InnerMethods {
            read: std::mem::replace(&mut state.ssl_read, self.read),
            write: std::mem::replace(&mut state.ssl_write, self.write),
            pending: std::mem::replace(&mut state.ssl_pending, self.pending),
        }
    }
}

/// `sslobj._sslobj` when `sslobj` is exactly `ssl.SSLObject` (not a subclass, not a stand-in).
fn inner_sslobj(sslobj: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let py = sslobj.py();
    if !sslobj.get_type().is(ssl_object_class(py)?) {
        return Ok(None);
    }
    Ok(Some(sslobj.getattr(intern!(py, "_sslobj"))?.unbind()))
}

thread_local! {
    /// Where `_do_read__copied` decrypts to: a bytearray and a memoryview of it, shared by the
    /// thread's connections. What a read puts there is copied out to bytes before any callback
    /// runs, so one buffer serves every connection of the thread.
    static DECRYPT_BUFFER: RefCell<Option<DecryptBuffer>> = const { RefCell::new(None) };
}

/// The thread's decrypt buffer: a bytearray and a memoryview of all of it.
struct DecryptBuffer {
    bytes: Py<PyByteArray>,
    view: Py<PyAny>,
}

impl DecryptBuffer {
    fn clone_ref(&self, py: Python<'_>) -> Self {
        DecryptBuffer {
            bytes: self.bytes.clone_ref(py),
            view: self.view.clone_ref(py),
        }
    }
}

/// The thread's decrypt buffer, at least `size` bytes long.
fn decrypt_buffer(py: Python<'_>, size: usize) -> PyResult<DecryptBuffer> {
    let cached = DECRYPT_BUFFER.with(|b| {
        b.borrow()
            .as_ref()
            .filter(|d| d.bytes.bind(py).len() >= size)
            .map(|d| d.clone_ref(py))
    });
    if let Some(buffer) = cached {
        return Ok(buffer);
    }
    let bytes = PyByteArray::new_with(py, size, |_| Ok(()))?;
    let view = PyMemoryView::from(bytes.as_any())?.into_any();
    let made = DecryptBuffer {
        bytes: bytes.unbind(),
        view: view.unbind(),
    };
    let old = DECRYPT_BUFFER.with(|b| b.borrow_mut().replace(made.clone_ref(py)));
    drop(old);
    Ok(made)
}

/// `bytes(view[:n])` of the decrypt buffer: its first `n` bytes (at most all of it) copied
/// into a new bytes object.
fn bytes_of<'py>(buffer: &Bound<'py, PyByteArray>, n: usize) -> Bound<'py, PyAny> {
    // SAFETY: no Python code runs while the slice is alive (PyBytes::new only allocates), so
    // nothing can resize or write the bytearray meanwhile (its memoryview also pins its size).
    let data = unsafe { buffer.as_bytes() };
    PyBytes::new(buffer.py(), &data[..n.min(data.len())]).into_any()
}

/// `b''.join(chunks)` for the chunks `SSLObject.read` returned.
fn join_chunks<'py>(py: Python<'py>, chunks: &[Bound<'py, PyAny>]) -> PyResult<Bound<'py, PyAny>> {
    let mut total = 0usize;
    let mut all_bytes = true;
    for c in chunks {
        match c.cast::<PyBytes>() {
            Ok(b) => total += b.as_bytes().len(),
            Err(_) => {
                all_bytes = false;
                break;
            }
        }
    }
    if !all_bytes {
        // An SSLObject subclass returning another bytes-like type: let Python join them.
        return PyBytes::new(py, b"").call_method1(intern!(py, "join"), (chunks.to_vec(),));
    }
    let joined = PyBytes::new_with(py, total, |out| {
        let mut at = 0;
        for c in chunks {
            if let Ok(b) = c.cast::<PyBytes>() {
                let src = b.as_bytes();
                out[at..at + src.len()].copy_from_slice(src);
                at += src.len();
            }
        }
        Ok(())
    })?;
    Ok(joined.into_any())
}

#[pymethods]
impl SslProtocolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyAny>, _kwargs: Option<&Bound<'_, PyAny>>) -> Self {
        SslProtocolCore {
            st: GilRefCell::new(SslCoreState {
                initialized: false,
                loop_: None,
                app_protocol: None,
                app_get_buffer: None,
                app_buffer_updated: None,
                app_is_buffer: false,
                sslcontext: None,
                sslobj: None,
                ssl_inner: None,
                ssl_read: None,
                ssl_write: None,
                ssl_pending: None,
                incoming: None,
                incoming_write: None,
                outgoing_read: None,
                outgoing: None,
                extra: None,
                write_backlog: VecDeque::new(),
                write_buffer_size: 0,
                waiter: None,
                app_transport: None,
                app_transport_created: false,
                transport: None,
                server_side: false,
                server_hostname: None,
                handshake_timeout: None,
                shutdown_timeout: None,
                handshake_start_time: None,
                handshake_timeout_handle: None,
                shutdown_timeout_handle: None,
                state: SslState::Unwrapped,
                app_state: AppState::Init,
                conn_lost: 0,
                ssl_writing_paused: false,
                app_reading_paused: false,
                ssl_reading_paused: false,
                app_writing_paused: false,
                eof_received: false,
                incoming_high: Limit::zero(),
                incoming_low: Limit::zero(),
                outgoing_high: Limit::zero(),
                outgoing_low: Limit::zero(),
                ssl_buffer: None,
                ssl_buffer_view: None,
                max_size: MAX_SIZE,
            }),
        }
    }

    /// Size of the buffer `get_buffer` hands out and of each `SSLObject.read`.
    #[classattr]
    fn max_size() -> usize {
        MAX_SIZE
    }

    /// The constructor's work (mirrors `SSLProtocol.__init__`, argument checks and messages
    /// included); the Python subclass's `__init__` calls it.
    /// Every argument is given (the Python `__init__` owns the defaults).
    #[allow(clippy::too_many_arguments)]
    fn _init(
        slf: &Bound<'_, Self>,
        loop_: &Bound<'_, PyAny>,
        app_protocol: &Bound<'_, PyAny>,
        sslcontext: &Bound<'_, PyAny>,
        waiter: &Bound<'_, PyAny>,
        server_side: &Bound<'_, PyAny>,
        server_hostname: Option<&Bound<'_, PyAny>>,
        call_connection_made: &Bound<'_, PyAny>,
        ssl_handshake_timeout: Option<&Bound<'_, PyAny>>,
        ssl_shutdown_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        if slf.st().initialized {
            return Err(PyRuntimeError::new_err(
                "SSLProtocol is already initialized",
            ));
        }
        let max_size: usize = slf.getattr(intern!(py, "max_size"))?.extract()?;
        let buffer = PyByteArray::new_with(py, max_size, |_| Ok(()))?;
        let view = PyMemoryView::from(buffer.as_any())?;

        let handshake_timeout = match ssl_handshake_timeout {
            None => asyncio_constant(py, "SSL_HANDSHAKE_TIMEOUT")?,
            Some(t) if t.le(0)? => {
                return Err(PyValueError::new_err(format!(
                    "ssl_handshake_timeout should be a positive number, got {}",
                    t.str()?
                )))
            }
            Some(t) => t.clone(),
        };
        let shutdown_timeout = match ssl_shutdown_timeout {
            None => asyncio_constant(py, "SSL_SHUTDOWN_TIMEOUT")?,
            Some(t) if t.le(0)? => {
                return Err(PyValueError::new_err(format!(
                    "ssl_shutdown_timeout should be a positive number, got {}",
                    t.str()?
                )))
            }
            Some(t) => t.clone(),
        };
        let server_side = server_side.is_truthy()?;
        let hostname_given = match server_hostname {
            Some(h) => h.is_truthy()?,
            None => false,
        };
        // Mirrors sslproto._create_transport_context: no context means a default client one.
        let sslcontext = if sslcontext.is_truthy()? {
            sslcontext.clone()
        } else {
            if server_side {
                return Err(PyValueError::new_err(
                    "Server side SSL needs a valid SSLContext",
                ));
            }
            let ctx = ssl_create_default_context(py)?.call0()?;
            if !hostname_given {
                ctx.setattr(intern!(py, "check_hostname"), false)?;
            }
            ctx
        };
        let server_hostname = if hostname_given && !server_side {
            server_hostname.map(|h| h.clone().unbind())
        } else {
            None
        };
        let extra = PyDict::new(py);
        extra.set_item(intern!(py, "sslcontext"), &sslcontext)?;
        {
            let mut this = slf.st_mut();
            this.max_size = max_size;
            this.ssl_buffer = Some(buffer.unbind());
            this.ssl_buffer_view = Some(view.into_any().unbind());
            this.server_side = server_side;
            this.server_hostname = server_hostname.as_ref().map(|h| h.clone_ref(py));
            this.sslcontext = Some(sslcontext.clone().unbind());
            this.extra = Some(extra.unbind());
            this.waiter = if waiter.is_none() {
                None
            } else {
                Some(waiter.clone().unbind())
            };
            this.loop_ = Some(loop_.clone().unbind());
        }
        Self::set_app_protocol_impl(slf, app_protocol)?;
        let bio = ssl_memory_bio(py)?;
        let incoming = bio.call0()?;
        let outgoing = bio.call0()?;
        let incoming_write = incoming.getattr(intern!(py, "write"))?.unbind();
        let outgoing_read = outgoing.getattr(intern!(py, "read"))?.unbind();
        let call_connection_made = call_connection_made.is_truthy()?;
        {
            let mut this = slf.st_mut();
            this.handshake_timeout = Some(handshake_timeout.unbind());
            this.shutdown_timeout = Some(shutdown_timeout.unbind());
            this.incoming = Some(incoming.clone().unbind());
            this.outgoing = Some(outgoing.clone().unbind());
            this.incoming_write = Some(incoming_write);
            this.outgoing_read = Some(outgoing_read);
            this.state = SslState::Unwrapped;
            this.conn_lost = 0;
            this.app_state = if call_connection_made {
                AppState::Init
            } else {
                AppState::ConMade
            };
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "server_side"), server_side)?;
        kwargs.set_item(intern!(py, "server_hostname"), server_hostname)?;
        let sslobj =
            sslcontext.call_method(intern!(py, "wrap_bio"), (incoming, outgoing), Some(&kwargs))?;
        let inner = inner_sslobj(&sslobj)?;
        let bound = InnerMethods::of(py, inner.as_ref())?;
        let old = {
            let mut this = slf.st_mut();
            this.sslobj = Some(sslobj.unbind());
            this.ssl_inner = inner;
            this.ssl_writing_paused = false;
            this.app_reading_paused = false;
            this.ssl_reading_paused = false;
            this.eof_received = false;
            this.app_writing_paused = false;
            bound.put_in(&mut this)
        };
        drop(old);
        Self::set_read_limits(slf, None, None)?;
        Self::set_write_limits(slf, None, None)?;
        slf.st_mut().initialized = true;
        Self::get_app_transport_impl(slf)?;
        Ok(())
    }

    fn _set_app_protocol(slf: &Bound<'_, Self>, app_protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::set_app_protocol_impl(slf, app_protocol)
    }

    #[pyo3(signature = (exc=None))]
    fn _wakeup_waiter(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Self::wakeup_waiter_impl(slf, exc)
    }

    fn _get_app_transport<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::get_app_transport_impl(slf)
    }

    /// Called when the raw connection is made: starts the handshake.
    fn connection_made(slf: &Bound<'_, Self>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let old = slf.st_mut().transport.replace(transport.clone().unbind());
        drop(old);
        Self::start_handshake(slf)
    }

    /// Called when the raw connection is lost (mirrors `SSLProtocol.connection_lost`): the
    /// app protocol's connection_lost is scheduled once, unless the handshake never finished.
    fn connection_lost(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let backlog = std::mem::take(&mut slf.st_mut().write_backlog);
        drop(backlog);
        Self::get(slf, |s| &s.outgoing).call_method0(intern!(py, "read"))?;
        slf.st_mut().conn_lost += 1;
        Self::mark_app_transport_closed(slf)?;
        let notify = {
            let mut this = slf.st_mut();
            if this.state != SslState::DoHandshake
                && matches!(this.app_state, AppState::ConMade | AppState::Eof)
            {
                this.app_state = AppState::ConLost;
                true
            } else {
                false
            }
        };
        if notify {
            let cb = Self::get(slf, |s| &s.app_protocol).getattr(intern!(py, "connection_lost"))?;
            Self::loop_obj(slf).call_method1(intern!(py, "call_soon"), (cb, exc))?;
        }
        Self::set_state(slf, SslState::Unwrapped)?;
        let old = {
            let mut this = slf.st_mut();
            (
                this.transport.take(),
                this.app_transport.take(),
                this.app_protocol.take(),
                this.app_get_buffer.take(),
                this.app_buffer_updated.take(),
            )
        };
        drop(old);
        Self::wakeup_waiter_impl(slf, Some(exc))?;
        Self::cancel_handle(slf, true)?;
        Self::cancel_handle(slf, false)?;
        Ok(())
    }

    /// The buffer the raw transport receives into (mirrors `SSLProtocol.get_buffer`).
    fn get_buffer<'py>(slf: &Bound<'py, Self>, n: i64) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let max_size = slf.st().max_size;
        let want = if n <= 0 || n as u64 > max_size as u64 {
            max_size
        } else {
            n as usize
        };
        let (buffer, view) = {
            let this = slf.st();
            (
                this.ssl_buffer.as_ref().map(|b| b.clone_ref(py)),
                this.ssl_buffer_view.as_ref().map(|v| v.clone_ref(py)),
            )
        };
        match (buffer, view) {
            (Some(b), Some(v)) if b.bind(py).len() >= want => Ok(v.into_bound(py)),
            _ => {
                let buffer = PyByteArray::new_with(py, want, |_| Ok(()))?;
                let view = PyMemoryView::from(buffer.as_any())?.into_any();
                let old = {
                    let mut this = slf.st_mut();
                    (
                        this.ssl_buffer.replace(buffer.unbind()),
                        this.ssl_buffer_view.replace(view.clone().unbind()),
                    )
                };
                drop(old);
                Ok(view)
            }
        }
    }

    /// `nbytes` arrived in the buffer from `get_buffer`: feed them to the SSLObject and move
    /// the state machine (mirrors `SSLProtocol.buffer_updated`).
    fn buffer_updated(slf: &Bound<'_, Self>, nbytes: isize) -> PyResult<()> {
        let py = slf.py();
        let view = Self::get(slf, |s| &s.ssl_buffer_view);
        let chunk = view.get_item(PySlice::new(py, 0, nbytes, 1))?;
        Self::feed_incoming(slf, &chunk)
    }

    /// Plain-protocol entry point for raw transports that do not use get_buffer: the same as
    /// buffer_updated with the bytes given.
    fn data_received(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::feed_incoming(slf, data)
    }

    /// The raw stream got EOF (mirrors `SSLProtocol.eof_received`).
    fn eof_received(slf: &Bound<'_, Self>) -> PyResult<Option<bool>> {
        let py = slf.py();
        slf.st_mut().eof_received = true;
        let result = (|| -> PyResult<Option<bool>> {
            if Self::debug(slf)? {
                logger(py)?.call_method1(intern!(py, "debug"), ("%r received EOF", slf))?;
            }
            match Self::state(slf) {
                SslState::DoHandshake => {
                    let err = PyErr::from_value(py.get_type::<PyConnectionResetError>().into_any());
                    Self::on_handshake_complete(slf, Some(err))?;
                }
                SslState::Wrapped => {
                    Self::set_state(slf, SslState::Flushing)?;
                    if slf.st().app_reading_paused {
                        return Ok(Some(true));
                    }
                    Self::do_flush(slf)?;
                }
                SslState::Flushing => {
                    Self::do_write(slf)?;
                    Self::set_state(slf, SslState::Shutdown)?;
                    Self::do_shutdown(slf)?;
                }
                SslState::Shutdown => Self::do_shutdown(slf)?,
                SslState::Unwrapped => {}
            }
            Ok(None)
        })();
        if let Err(e) = &result {
            if is_exception(py, e) {
                Self::get(slf, |s| &s.transport).call_method0(intern!(py, "close"))?;
            }
        }
        result
    }

    #[pyo3(signature = (name, default=None))]
    fn _get_extra_info<'py>(
        slf: &Bound<'py, Self>,
        name: &Bound<'py, PyAny>,
        default: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let default = default.cloned().unwrap_or_else(|| py.None().into_bound(py));
        let extra = slf.st().extra.as_ref().map(|e| e.clone_ref(py));
        if let Some(extra) = extra {
            if let Some(v) = extra.bind(py).get_item(name)? {
                return Ok(v);
            }
        }
        let transport = slf.st().transport.as_ref().map(|t| t.clone_ref(py));
        match transport {
            Some(t) => t
                .bind(py)
                .call_method1(intern!(py, "get_extra_info"), (name, default)),
            None => Ok(default),
        }
    }

    fn _start_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::start_handshake(slf)
    }

    fn _check_handshake_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::check_handshake_timeout(slf)
    }

    fn _do_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_handshake(slf)
    }

    fn _on_handshake_complete(
        slf: &Bound<'_, Self>,
        handshake_exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let err = if handshake_exc.is_none() {
            None
        } else {
            Some(PyErr::from_value(handshake_exc.clone()))
        };
        Self::on_handshake_complete(slf, err)
    }

    fn _start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::start_shutdown(slf)
    }

    fn _check_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::check_shutdown_timeout(slf)
    }

    fn _do_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_flush(slf)
    }

    fn _do_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_shutdown(slf)
    }

    fn _on_shutdown_complete(
        slf: &Bound<'_, Self>,
        shutdown_exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        Self::on_shutdown_complete(slf, Some(shutdown_exc))
    }

    #[pyo3(signature = (exc=None))]
    fn _abort(slf: &Bound<'_, Self>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Self::abort_impl(slf, exc)
    }

    /// `_SSLProtocolTransport.write`: type check, then `_write_appdata((data,))`.
    fn _write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            let type_name = data.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {type_name}"
            )));
        }
        if !data.is_truthy()? {
            return Ok(());
        }
        let _ = py;
        Self::write_appdata(slf, std::iter::once(Ok(data.clone())))
    }

    fn _write_appdata(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        if matches!(
            Self::state(slf),
            SslState::Flushing | SslState::Shutdown | SslState::Unwrapped
        ) {
            return Self::write_appdata(slf, std::iter::empty());
        }
        Self::write_appdata(slf, list_of_data.try_iter()?)
    }

    fn _do_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_write(slf)
    }

    fn _process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::process_outgoing(slf)
    }

    fn _do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf)
    }

    fn _call_eof_received(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::call_eof_received(slf)
    }

    fn _control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::control_app_writing(slf)
    }

    fn _get_write_buffer_size(slf: &Bound<'_, Self>) -> PyResult<i64> {
        Self::write_buffer_size(slf)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn _set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Self::set_write_limits(slf, high, low)
    }

    fn _pause_reading(slf: &Bound<'_, Self>) {
        slf.st_mut().app_reading_paused = true;
    }

    /// Mirrors `SSLProtocol._resume_reading`: the reading restarts from the next loop turn.
    fn _resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let was_paused = std::mem::replace(&mut slf.st_mut().app_reading_paused, false);
        if was_paused {
            let cb = slf.getattr(intern!(py, "_resume_after_pause"))?;
            Self::loop_obj(slf).call_method1(intern!(py, "call_soon"), (cb,))?;
        }
        Ok(())
    }

    /// The callback `_resume_reading` schedules (asyncio's local `resume`).
    fn _resume_after_pause(slf: &Bound<'_, Self>) -> PyResult<()> {
        match Self::state(slf) {
            SslState::Wrapped => Self::do_read(slf),
            SslState::Flushing => Self::do_flush(slf),
            SslState::Shutdown => Self::do_shutdown(slf),
            _ => Ok(()),
        }
    }

    fn _control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::control_ssl_reading(slf)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn _set_read_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Self::set_read_limits(slf, high, low)
    }

    fn _get_read_buffer_size(slf: &Bound<'_, Self>) -> PyResult<i64> {
        Self::read_buffer_size(slf)
    }

    /// The raw transport's buffer went over its high-water mark.
    fn pause_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut this = slf.st_mut();
        if this.ssl_writing_paused {
            return Err(PyAssertionError::new_err(()));
        }
        this.ssl_writing_paused = true;
        Ok(())
    }

    /// The raw transport's buffer drained below its low-water mark.
    fn resume_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut this = slf.st_mut();
            if !this.ssl_writing_paused {
                return Err(PyAssertionError::new_err(()));
            }
            this.ssl_writing_paused = false;
        }
        Self::process_outgoing(slf)
    }

    #[pyo3(signature = (exc, message="Fatal error on transport"))]
    fn _fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        Self::fatal_error(slf, exc, message)
    }

    /// `_SSLProtocolTransport._test__append_write_backlog` (asyncio's tests fill the backlog
    /// with it).
    #[pyo3(name = "_test__append_write_backlog")]
    fn test_append_write_backlog(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = data.len()? as i64;
        let mut this = slf.st_mut();
        this.write_backlog.push_back(data.clone().unbind());
        this.write_buffer_size += n;
        Ok(())
    }

    // ---- attributes asyncio's SSLProtocol has -------------------------------------------

    #[getter(_app_transport)]
    fn app_transport_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.app_transport)
    }

    #[getter(_app_protocol)]
    fn app_protocol_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.app_protocol)
    }

    #[getter(_app_protocol_is_buffer)]
    fn app_protocol_is_buffer_attr(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).app_is_buffer
    }

    #[getter(_transport)]
    fn transport_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.transport)
    }

    #[getter(_sslobj)]
    fn sslobj_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.sslobj)
    }

    #[setter(_sslobj)]
    fn set_sslobj_attr(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let inner = inner_sslobj(value)?;
        let bound = InnerMethods::of(slf.py(), inner.as_ref())?;
        let old = {
            let mut this = slf.st_mut();
            (
                this.sslobj.replace(value.clone().unbind()),
                std::mem::replace(&mut this.ssl_inner, inner),
                bound.put_in(&mut this),
            )
        };
        drop(old);
        Ok(())
    }

    #[getter(_sslcontext)]
    fn sslcontext_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.sslcontext)
    }

    #[getter(_incoming)]
    fn incoming_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.incoming)
    }

    #[getter(_outgoing)]
    fn outgoing_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.outgoing)
    }

    #[getter(_loop)]
    fn loop_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::loop_obj(slf)
    }

    #[getter(_waiter)]
    fn waiter_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.waiter)
    }

    #[getter(_extra)]
    fn extra_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        let py = slf.py();
        match &slf.st().extra {
            Some(e) => e.bind(py).clone().into_any(),
            None => py.None().into_bound(py),
        }
    }

    #[getter(_server_side)]
    fn server_side_attr(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).server_side
    }

    #[getter(_server_hostname)]
    fn server_hostname_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.server_hostname)
    }

    #[getter(_ssl_handshake_timeout)]
    fn ssl_handshake_timeout_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.handshake_timeout)
    }

    #[getter(_ssl_shutdown_timeout)]
    fn ssl_shutdown_timeout_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.shutdown_timeout)
    }

    #[getter(_handshake_timeout_handle)]
    fn handshake_timeout_handle_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.handshake_timeout_handle)
    }

    #[getter(_shutdown_timeout_handle)]
    fn shutdown_timeout_handle_attr<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        Self::get(slf, |s| &s.shutdown_timeout_handle)
    }

    #[getter(_handshake_start_time)]
    fn handshake_start_time_attr(&self, py: Python<'_>) -> Option<f64> {
        self.st.borrow(py).handshake_start_time
    }

    /// The state as asyncio's `SSLProtocolState` member.
    #[getter(_state)]
    fn state_attr<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let name = Self::state(slf).name();
        ssl_protocol_state(py)?.getattr(PyString::new(py, name))
    }

    /// The app protocol's state as asyncio's `AppProtocolState` member.
    #[getter(_app_state)]
    fn app_state_attr<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let name = slf.st().app_state.name();
        app_protocol_state(py)?.getattr(PyString::new(py, name))
    }

    #[getter(_conn_lost)]
    fn conn_lost_attr(&self, py: Python<'_>) -> u64 {
        self.st.borrow(py).conn_lost
    }

    #[getter(_eof_received)]
    fn eof_received_attr(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).eof_received
    }

    #[getter(_write_buffer_size)]
    fn write_buffer_size_attr(&self, py: Python<'_>) -> i64 {
        self.st.borrow(py).write_buffer_size
    }

    #[getter(_app_reading_paused)]
    fn app_reading_paused_attr(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).app_reading_paused
    }

    #[getter(_app_writing_paused)]
    fn app_writing_paused_attr(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).app_writing_paused
    }

    #[getter(_ssl_reading_paused)]
    fn ssl_reading_paused_attr(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).ssl_reading_paused
    }

    #[getter(_ssl_writing_paused)]
    fn ssl_writing_paused_attr(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).ssl_writing_paused
    }

    #[getter(_incoming_high_water)]
    fn incoming_high_water_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.st.borrow(py).incoming_high.object(py)
    }

    #[getter(_incoming_low_water)]
    fn incoming_low_water_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.st.borrow(py).incoming_low.object(py)
    }

    #[getter(_outgoing_high_water)]
    fn outgoing_high_water_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.st.borrow(py).outgoing_high.object(py)
    }

    #[getter(_outgoing_low_water)]
    fn outgoing_low_water_attr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.st.borrow(py).outgoing_low.object(py)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(this) = self.st.for_traverse() else {
            return Ok(());
        };
        for obj in this.references() {
            visit.call(obj)?;
        }
        for d in &this.write_backlog {
            visit.call(d)?;
        }
        visit.call(&this.extra)?;
        visit.call(&this.ssl_buffer)?;
        Ok(())
    }

    fn __clear__(&self) {
        self.st.clear_with(|this| {
            let mut taken: Vec<Py<PyAny>> = Vec::new();
            taken.extend(this.references_mut().into_iter().filter_map(Option::take));
            taken.extend(this.write_backlog.drain(..));
            taken.extend(this.extra.take().map(Py::into_any));
            taken.extend(this.ssl_buffer.take().map(Py::into_any));
            taken
        });
    }
}

impl SslCoreState {
    /// The optional object fields (all but `extra`, `ssl_buffer` and the write backlog).
    fn references(&self) -> [&Option<Py<PyAny>>; 27] {
        [
            &self.loop_,
            &self.app_protocol,
            &self.app_get_buffer,
            &self.app_buffer_updated,
            &self.sslcontext,
            &self.sslobj,
            &self.ssl_inner,
            &self.ssl_read,
            &self.ssl_write,
            &self.ssl_pending,
            &self.incoming,
            &self.outgoing,
            &self.incoming_write,
            &self.outgoing_read,
            &self.waiter,
            &self.app_transport,
            &self.transport,
            &self.server_hostname,
            &self.handshake_timeout,
            &self.shutdown_timeout,
            &self.handshake_timeout_handle,
            &self.shutdown_timeout_handle,
            &self.incoming_high.obj,
            &self.incoming_low.obj,
            &self.outgoing_high.obj,
            &self.outgoing_low.obj,
            &self.ssl_buffer_view,
        ]
    }

    /// `references`, to take from.
    fn references_mut(&mut self) -> [&mut Option<Py<PyAny>>; 27] {
        [
            &mut self.loop_,
            &mut self.app_protocol,
            &mut self.app_get_buffer,
            &mut self.app_buffer_updated,
            &mut self.sslcontext,
            &mut self.sslobj,
            &mut self.ssl_inner,
            &mut self.ssl_read,
            &mut self.ssl_write,
            &mut self.ssl_pending,
            &mut self.incoming,
            &mut self.outgoing,
            &mut self.incoming_write,
            &mut self.outgoing_read,
            &mut self.waiter,
            &mut self.app_transport,
            &mut self.transport,
            &mut self.server_hostname,
            &mut self.handshake_timeout,
            &mut self.shutdown_timeout,
            &mut self.handshake_timeout_handle,
            &mut self.shutdown_timeout_handle,
            &mut self.incoming_high.obj,
            &mut self.incoming_low.obj,
            &mut self.outgoing_high.obj,
            &mut self.outgoing_low.obj,
            &mut self.ssl_buffer_view,
        ]
    }
}

impl SslProtocolCore {
    /// Writes `data` (the raw transport's bytes) to the incoming BIO, then moves the state
    /// machine on (`buffer_updated`'s and `data_received`'s common part).
    fn feed_incoming(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        Self::bio_method(
            slf,
            |s| &s.incoming_write,
            |s| &s.incoming,
            intern!(py, "write"),
        )?
        .call1((data,))?;
        Self::dispatch_incoming(slf)
    }

    /// What `buffer_updated` does once the bytes are in the incoming BIO.
    fn dispatch_incoming(slf: &Bound<'_, Self>) -> PyResult<()> {
        match Self::state(slf) {
            SslState::DoHandshake => Self::do_handshake(slf),
            SslState::Wrapped => Self::do_read(slf),
            SslState::Flushing => Self::do_flush(slf),
            SslState::Shutdown => Self::do_shutdown(slf),
            SslState::Unwrapped => Ok(()),
        }
    }
}
