//! What ferroloop's native coroutine objects (`sleep`, `wait_for`, `wait`, the timeout steps)
//! share: how they are resumed, how they hand back a step's outcome, how they await a future
//! (`Future.__await__`'s two halves), and the loop calls they make, natively on ferroloop's own
//! loop class.

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::capi::{self, SendResult};
use crate::event_loop::LoopCore;
use crate::future::{NativeFuture, State};
use crate::handle::TimerHandle;
use crate::stdlib;

/// How a suspended coroutine is resumed.
pub(crate) enum Resume<'py> {
    Send(Bound<'py, PyAny>),
    /// `throw(type, value, traceback)`: the exception, and the arguments to pass on.
    Throw {
        err: PyErr,
        args: Vec<Bound<'py, PyAny>>,
    },
}

/// What `send`/`__next__` give back: the yielded value, or the return value as StopIteration,
/// made as CPython makes it (`_PyGen_SetStopIterationValue`: no argument for None).
pub(crate) fn yielded_or_stop(step: SendResult<'_>) -> PyResult<Py<PyAny>> {
    match step {
        SendResult::Yielded(v) => Ok(v.unbind()),
        SendResult::Returned(v) if v.is_none() => Err(PyStopIteration::new_err(())),
        SendResult::Returned(v) => Err(PyStopIteration::new_err((v.unbind(),))),
    }
}

/// A send or throw to a coroutine that returned, raised or was closed: what CPython's
/// coroutines answer (RuntimeError for a send, the exception itself for a throw).
pub(crate) fn finished_step<'py>(resume: Resume<'py>) -> PyResult<SendResult<'py>> {
    match resume {
        Resume::Send(_) => Err(PyRuntimeError::new_err(
            "cannot reuse already awaited coroutine",
        )),
        Resume::Throw { err, .. } => Err(err),
    }
}

/// The TypeError of a first `send` with a value other than None.
pub(crate) fn not_started_error() -> PyErr {
    PyTypeError::new_err("can't send non-None value to a just-started coroutine")
}

/// `_release_waiter(waiter)`: `if not waiter.done(): waiter.set_result(None)`, natively for
/// ferroloop's futures.
pub(crate) fn release_waiter(waiter: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = waiter.py();
    if done(waiter)? {
        return Ok(());
    }
    match NativeFuture::of(waiter) {
        Some(native) => native.set_result(py.None()),
        None => waiter
            .call_method1(intern!(py, "set_result"), (py.None(),))
            .map(drop),
    }
}

/// `future.done()`, natively for ferroloop's futures.
pub(crate) fn done(fut: &Bound<'_, PyAny>) -> PyResult<bool> {
    match NativeFuture::of(fut) {
        Some(native) => Ok(native.borrow().state != State::Pending),
        None => fut.call_method0(intern!(fut.py(), "done"))?.is_truthy(),
    }
}

/// `future.result()`, natively for ferroloop's futures.
pub(crate) fn result<'py>(fut: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    match NativeFuture::of(fut) {
        Some(native) => native.result(),
        None => fut.call_method0(intern!(fut.py(), "result")),
    }
}

/// The start of `await future`: None if it is done already (no suspension), else the future to
/// yield, with its blocking flag set.
pub(crate) fn suspend_on<'py>(fut: &Bound<'py, PyAny>) -> PyResult<Option<SendResult<'py>>> {
    if done(fut)? {
        return Ok(None);
    }
    match NativeFuture::of(fut) {
        Some(native) => native.borrow_mut().blocking = true,
        None => fut.setattr(intern!(fut.py(), "_asyncio_future_blocking"), true)?,
    }
    Ok(Some(SendResult::Yielded(fut.clone())))
}

/// Resuming `await future` (`Future.__await__` after its yield): the result, or what was
/// thrown in.
pub(crate) fn resume_future<'py>(
    fut: &Bound<'py, PyAny>,
    resume: Resume<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    match resume {
        Resume::Throw { err, .. } => Err(err),
        Resume::Send(_) => {
            if !done(fut)? {
                return Err(PyRuntimeError::new_err("await wasn't used with future"));
            }
            result(fut)
        }
    }
}

/// `events.get_running_loop()`.
pub(crate) fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let loop_ = stdlib::get_running_loop(py)?.call0()?;
    if loop_.is_none() {
        return Err(PyRuntimeError::new_err("no running event loop"));
    }
    Ok(loop_)
}

/// True for ferroloop's own loop class (whose methods can be called natively).
pub(crate) fn is_ferroloop_loop(loop_: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(loop_
        .get_type()
        .is(stdlib::ferroloop_loop_class(loop_.py())?))
}

/// `loop.create_future()`.
pub(crate) fn create_future<'py>(loop_: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    if is_ferroloop_loop(loop_)? {
        return Ok(LoopCore::create_future(loop_.cast::<LoopCore>()?)?.into_bound(py));
    }
    loop_.call_method0(intern!(py, "create_future"))
}

/// `loop.call_later(delay, callback, *args)`; `args` must be a new tuple nothing else holds.
pub(crate) fn call_later<'py>(
    loop_: &Bound<'py, PyAny>,
    delay: &Bound<'py, PyAny>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    if is_ferroloop_loop(loop_)? {
        let core = loop_.cast::<LoopCore>()?;
        let when = LoopCore::when_after(delay)?;
        // `args` is a new tuple the timer alone will hold: untracked, as loop.call_later's
        // (see `HandleState::args`).
        capi::untrack_new_args(args);
        let timer = LoopCore::call_at_impl(core, when, callback, args, None)?;
        return Ok(timer.into_bound(py).into_any());
    }
    let mut call_args = vec![delay.clone(), callback.clone()];
    call_args.extend(args.iter());
    loop_.call_method1(intern!(py, "call_later"), PyTuple::new(py, call_args)?)
}

/// `handle.cancel()`, natively for ferroloop's own TimerHandle.
pub(crate) fn cancel_handle(handle: &Bound<'_, PyAny>) -> PyResult<()> {
    match handle.cast_exact::<TimerHandle>() {
        Ok(timer) => TimerHandle::cancel(timer),
        Err(_) => handle
            .call_method0(intern!(handle.py(), "cancel"))
            .map(drop),
    }
}

/// The `#[pymethods]` block of a native coroutine object: what every one has alike (`__await__`
/// returning itself, `__next__` and `send` through `Self::send_step`, the coroutine attributes
/// of an object without a frame, the repr, and `am_send`), then the type's own methods
/// (`throw`, `close`, `cr_await`, GC support) given in braces.
macro_rules! native_coroutine_pymethods {
    ($ty:ident, $name:literal, { $($own:tt)* }) => {
        #[pymethods]
        impl $ty {
            fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
                slf
            }

            fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
                let none = slf.py().None().into_bound(slf.py());
                $crate::coro_support::yielded_or_stop(Self::send_step(slf, &none)?)
            }

            fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                $crate::coro_support::yielded_or_stop(Self::send_step(slf, value)?)
            }

            #[getter]
            fn __name__(&self) -> &'static str {
                $name
            }

            #[getter]
            fn __qualname__(&self) -> &'static str {
                $name
            }

            #[getter]
            fn cr_running(&self) -> bool {
                false
            }

            #[getter]
            fn cr_frame(&self) -> Option<Py<PyAny>> {
                None
            }

            #[getter]
            fn cr_code(&self) -> Option<Py<PyAny>> {
                None
            }

            fn __repr__(slf: &Bound<'_, Self>) -> String {
                format!(
                    concat!("<coroutine object ", $name, " at {:#x}>"),
                    slf.as_ptr() as usize
                )
            }

            $($own)*
        }

        impl $crate::capi::AmSend for $ty {
            fn am_send<'py>(
                coro: &Bound<'py, PyAny>,
                arg: &Bound<'py, PyAny>,
            ) -> PyResult<$crate::capi::SendResult<'py>> {
                $ty::send_step(coro.cast::<$ty>()?, arg)
            }
        }
    };
}
pub(crate) use native_coroutine_pymethods;
