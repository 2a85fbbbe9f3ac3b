//! `ferroloop._ferroloop`: the PyO3 extension module. One module per concept:
//! - [`event_loop`]: LoopCore, the run loop and scheduling;
//! - [`handle`]: Handle and TimerHandle;
//! - [`future`]: Future and the iterator `await` drives;
//! - [`task`]: Task, driving a coroutine;
//! - [`stream_transport`]: the Rust core of socket and pipe transports;
//! - [`native_io`]: readiness dispatch from the loop to Rust transports;
//! - [`stdlib`]: cached references into asyncio and sys;
//! - [`tls`]: SSLProtocolCore, TLS through the ssl module's SSLObject over MemoryBIOs;
//! - [`capi`]: the raw CPython C-API calls, behind safe wrappers.

use pyo3::prelude::*;

mod capi;
mod event_loop;
mod future;
mod handle;
mod native_io;
mod stdlib;
mod stream_transport;
mod task;
mod tls;

#[pymodule]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    m.add_class::<future::Future>()?;
    m.add_class::<future::FutureIter>()?;
    m.add_class::<task::Task>()?;
    m.add_class::<stream_transport::StreamTransport>()?;
    m.add_class::<tls::SslProtocolCore>()?;
    capi::install_finalizer::<future::Future>(&m.py().get_type::<future::Future>());
    capi::install_finalizer::<task::Task>(&m.py().get_type::<task::Task>());
    capi::install_am_send::<future::FutureIter>(&m.py().get_type::<future::FutureIter>());
    Ok(())
}
