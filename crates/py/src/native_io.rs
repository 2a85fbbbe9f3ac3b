//! NativeIo: the Rust objects the loop calls directly when a watched fd is ready (instead of a
//! Python callback wrapped in a Handle), and the dispatch to them.

use pyo3::prelude::*;
use pyo3::{ffi, PyTraverseError, PyVisit};

use crate::sock_ops::SockWait;
use crate::transport::TransportCore;

pub(crate) enum NativeIo {
    Transport(Py<TransportCore>),
    /// A `loop.sock_*` operation waiting for readiness.
    Sock(Py<SockWait>),
}

impl NativeIo {
    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            NativeIo::Transport(t) => NativeIo::Transport(t.clone_ref(py)),
            NativeIo::Sock(s) => NativeIo::Sock(s.clone_ref(py)),
        }
    }

    /// The target object (identity of a registration).
    pub(crate) fn as_ptr(&self) -> *mut ffi::PyObject {
        match self {
            NativeIo::Transport(t) => t.as_ptr(),
            NativeIo::Sock(s) => s.as_ptr(),
        }
    }

    /// The fd is readable (`write` false) or writable, for the registration `generation`.
    pub(crate) fn on_ready(self, py: Python<'_>, write: bool, generation: u32) -> PyResult<()> {
        match self {
            NativeIo::Transport(t) => TransportCore::on_ready(t.bind(py), write, generation),
            NativeIo::Sock(s) => SockWait::on_ready(s.bind(py), write),
        }
    }

    pub(crate) fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            NativeIo::Transport(t) => visit.call(t),
            NativeIo::Sock(s) => visit.call(s),
        }
    }
}
