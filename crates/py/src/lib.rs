//! `ferroloop._ferroloop`: the PyO3 extension module. One module per concept:
//! - [`event_loop`]: LoopCore, the run loop and scheduling;
//! - [`handle`]: Handle and TimerHandle;
//! - [`future`]: Future and the iterator `await` drives;
//! - [`stdlib`]: cached references into asyncio and sys;
//! - [`capi`]: the raw CPython C-API calls, behind safe wrappers.

use pyo3::prelude::*;

mod capi;
mod event_loop;
mod future;
mod handle;
mod stdlib;

#[pymodule]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    m.add_class::<future::Future>()?;
    m.add_class::<future::FutureIter>()?;
    capi::install_finalizer::<future::Future>(&m.py().get_type::<future::Future>());
    Ok(())
}
