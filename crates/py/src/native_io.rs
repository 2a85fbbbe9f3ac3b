//! NativeIo: the Rust objects the loop calls directly when a watched fd is ready (instead of a
//! Python callback wrapped in a Handle), and the dispatch to them.

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::stream_transport::StreamTransport;

pub(crate) enum NativeIo {
    Stream(Py<StreamTransport>),
}

impl NativeIo {
    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            NativeIo::Stream(t) => NativeIo::Stream(t.clone_ref(py)),
        }
    }

    /// The fd is readable (`write` false) or writable, for the registration `generation`.
    pub(crate) fn on_ready(self, py: Python<'_>, write: bool, generation: u64) -> PyResult<()> {
        match self {
            NativeIo::Stream(t) => StreamTransport::on_ready(t.bind(py), write, generation),
        }
    }

    pub(crate) fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            NativeIo::Stream(t) => visit.call(t),
        }
    }
}
