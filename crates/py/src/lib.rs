//! `ferroloop._ferroloop`: the PyO3 extension module. One module per concept:
//! - [`event_loop`]: LoopCore, the run loop and scheduling;
//! - [`schedule_methods`]: the loop's call_soon/call_later/call_at as fastcall methods;
//! - [`handle`]: Handle and TimerHandle;
//! - [`asyncio_base`]: asyncio's C Future and Task as base types of ferroloop's;
//! - [`future`]: Future, the future state Task shares, and the iterator `await` drives;
//! - [`task`]: Task, driving a coroutine;
//! - [`task_registry`]: ferroloop's Tasks in asyncio's task set (what `all_tasks()` reads);
//! - [`gather`]: gather(), asyncio.gather natively;
//! - [`taskgroup`]: the native part of TaskGroup;
//! - [`sleep`]: sleep(), asyncio.sleep natively;
//! - [`transport`]: TransportCore, the Rust core of socket, datagram and pipe transports;
//! - [`native_io`]: readiness dispatch from the loop to Rust transports;
//! - [`sock_ops`]: the loop's sock_* operations, native sock_sendfile, numeric resolution;
//! - [`stdlib`]: cached references into asyncio and sys;
//! - [`tls`]: SSLProtocolCore, TLS through the ssl module's SSLObject over MemoryBIOs;
//! - [`capi`]: the raw CPython C-API calls, behind safe wrappers.

use pyo3::prelude::*;

mod asyncio_base;
mod capi;
mod coro_support;
mod event_loop;
mod future;
mod gather;
mod gil_cell;
mod handle;
mod native_io;
mod schedule_methods;
mod sleep;
mod sock_ops;
mod stdlib;
mod task;
mod task_registry;
mod taskgroup;
mod timeout;
mod tls;
mod transport;
mod wait;
mod wait_for;

#[pymodule]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    asyncio_base::check_layouts(m.py())?;
    capi::check_context_layout(m.py())?;
    m.add_class::<event_loop::LoopCore>()?;
    schedule_methods::install(m.py())?;
    m.add_function(wrap_pyfunction!(
        schedule_methods::_specialize_loop_methods,
        m
    )?)?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    m.add_class::<future::Future>()?;
    m.add_class::<future::FutureIter>()?;
    m.add_class::<task::Task>()?;
    m.add_class::<taskgroup::TaskGroupCore>()?;
    transport::register(m)?;
    sock_ops::register(m)?;
    gather::register(m)?;
    sleep::register(m)?;
    timeout::register(m)?;
    wait_for::register(m)?;
    wait::register(m)?;
    m.add_class::<tls::SslProtocolCore>()?;
    capi::install_finalizer::<future::Future>(&m.py().get_type::<future::Future>());
    future::install_base_methods(m.py())?;
    capi::install_finalizer::<task::Task>(&m.py().get_type::<task::Task>());
    capi::install_am_send::<future::FutureIter>(&m.py().get_type::<future::FutureIter>());
    capi::install_uncounted_alloc::<handle::Handle, false>(m.py());
    capi::install_uncounted_alloc::<handle::TimerHandle, false>(m.py());
    capi::install_uncounted_alloc::<future::FutureIter, false>(m.py());
    capi::install_uncounted_alloc::<future::Future, true>(m.py());
    capi::install_uncounted_alloc::<task::Task, true>(m.py());
    capi::install_raw_traverse::<future::Future>(m.py());
    capi::install_raw_traverse::<task::Task>(m.py());
    capi::install_raw_traverse::<future::FutureIter>(m.py());
    Ok(())
}
