//! `ferroloop.wait_for(fut, timeout)`: Python 3.11's asyncio.wait_for written in Rust.
//!
//! asyncio.wait_for is a coroutine function. `WaitForCoroutine` is its coroutine as a native
//! object with the coroutine protocol (`send`, `throw`, `close`, `__await__`, `am_send`), whose
//! stages are the places where asyncio's body suspends:
//! - no timeout: `return await fut`, every send and throw passed on to `fut`'s await iterator;
//! - `timeout <= 0`: `fut = ensure_future(fut)`; its result if done, else
//!   `await _cancel_and_wait(fut)` and the result, or TimeoutError from its CancelledError;
//! - otherwise: a waiter future released by `loop.call_later(timeout, _release_waiter, waiter)`
//!   or by fut's done callback (`functools.partial(_release_waiter, waiter)` in asyncio; a native
//!   `_ReleaseWaiter` here, so fut's `_callbacks` and repr show it); `await waiter`; then
//!   fut's result, or `_cancel_and_wait(fut)` and TimeoutError (expired), or, when the wait
//!   itself was cancelled, `_cancel_and_wait(fut)` and the CancelledError again; the timer is
//!   cancelled on the way out (`finally: timeout_handle.cancel()`).
//!
//! Each step calls what asyncio's calls (`ensure_future`, `_release_waiter`, the future's
//! `add_done_callback`/`remove_done_callback`/`cancel`/`result`), so foreign futures and a
//! patched asyncio behave as with asyncio's wait_for. Exceptions raised while asyncio's body
//! handles a CancelledError get it as `__context__`, and `raise TimeoutError() from exc` sets
//! the cause, as there. Differences: no frame (`cr_frame` is None), no "never awaited" warning,
//! and a coroutine destroyed while suspended does not run its `finally` (the timer then fires
//! and releases a waiter nobody awaits).

use pyo3::exceptions::{PyAttributeError, PyGeneratorExit, PyRuntimeError, PyStopIteration};
use pyo3::exceptions::{PyTimeoutError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::capi::{self, SendResult};
use crate::coro_support::{
    call_later, cancel_handle, create_future, done, finished_step, native_coroutine_pymethods,
    not_started_error, release_waiter, result, resume_future, suspend_on, yielded_or_stop, Resume,
};
use crate::future::{thrown, NativeFuture};
use crate::gil_cell::{GilRefCell, HasStateCell, StateCell};
use crate::stdlib;

/// What the code after `await _cancel_and_wait(fut)` does.
enum After {
    /// `timeout <= 0`: fut's result, or TimeoutError from its CancelledError.
    ZeroTimeout,
    /// The timeout expired: the same, then the timer is cancelled.
    Expired { handle: Py<PyAny> },
    /// The wait was cancelled: `raise` (this CancelledError again), then the timer is cancelled.
    Cancelled {
        handle: Py<PyAny>,
        cancelled: Py<PyAny>,
    },
}

/// Where the coroutine is.
enum Stage {
    /// Made, not started.
    Created { fut: Py<PyAny>, timeout: Py<PyAny> },
    /// `return await fut` (no timeout).
    Delegating { iter: Py<PyAny> },
    /// `await waiter`, with the timer and fut's done callback set.
    Waiting {
        fut: Py<PyAny>,
        waiter: Py<PyAny>,
        handle: Py<PyAny>,
        cb: Py<PyAny>,
    },
    /// Inside `_cancel_and_wait(fut)`: fut cancelled, `await waiter` until fut is done.
    Cancelling {
        fut: Py<PyAny>,
        waiter: Py<PyAny>,
        cb: Py<PyAny>,
        after: After,
    },
    /// Returned, raised or closed.
    Finished,
}

/// The coroutine `ferroloop.wait_for(fut, timeout)` returns.
///
/// Frozen for PyO3: the state sits in a [`GilRefCell`] (PyO3's borrow flag is atomic).
#[pyclass(module = "ferroloop", name = "WaitForCoroutine", frozen)]
pub struct WaitForCoroutine {
    st: GilRefCell<WaitForState>,
}

/// What a WaitForCoroutine holds.
pub(crate) struct WaitForState {
    stage: Stage,
    /// The running loop, from the first step on.
    loop_: Option<Py<PyAny>>,
}

/// `ferroloop.wait_for(fut, timeout)`: `fut`'s result, or TimeoutError (and `fut` cancelled)
/// after `timeout` seconds.
#[pyfunction]
pub fn wait_for(fut: Py<PyAny>, timeout: Py<PyAny>) -> WaitForCoroutine {
    WaitForCoroutine {
        st: GilRefCell::new(WaitForState {
            stage: Stage::Created { fut, timeout },
            loop_: None,
        }),
    }
}

fn is_cancelled_error(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    Ok(err.is_instance(py, stdlib::cancelled_error(py)?))
}

/// What an exception raised in an `except` block gets: the handled exception as `__context__`
/// (cycles through it cut), as `_PyErr_SetObject` chains it.
fn while_handling<T>(handled: &Bound<'_, PyAny>, outcome: PyResult<T>) -> PyResult<T> {
    let err = match outcome {
        Ok(v) => return Ok(v),
        Err(err) => err,
    };
    let py = handled.py();
    let value = err.value(py).clone().into_any();
    if !value.is(handled) {
        let mut o = handled.clone();
        loop {
            let context = o.getattr(intern!(py, "__context__"))?;
            if context.is_none() {
                break;
            }
            if context.is(&value) {
                o.setattr(intern!(py, "__context__"), py.None())?;
                break;
            }
            o = context;
        }
        value.setattr(intern!(py, "__context__"), handled)?;
    }
    Err(PyErr::from_value(value))
}

/// `fut.result()`, or `raise TimeoutError() from exc` for its CancelledError.
fn result_or_timeout<'py>(fut: &Bound<'py, PyAny>) -> PyResult<SendResult<'py>> {
    let py = fut.py();
    match result(fut) {
        Ok(v) => Ok(SendResult::Returned(v)),
        Err(e) if is_cancelled_error(py, &e)? => {
            let exc = e.value(py).clone().into_any();
            let timeout_error = PyTimeoutError::new_err(());
            capi::set_cause_and_context(timeout_error.value(py).as_any(), &exc)?;
            Err(timeout_error)
        }
        Err(e) => Err(e),
    }
}

/// `timeout_handle.cancel()` (natively for ferroloop's TimerHandle) once the body is left.
fn leave_with<'py>(
    py: Python<'py>,
    handle: &Py<PyAny>,
    outcome: PyResult<SendResult<'py>>,
) -> PyResult<SendResult<'py>> {
    if let Ok(SendResult::Yielded(_)) = outcome {
        return outcome;
    }
    cancel_handle(handle.bind(py))?;
    outcome
}

/// The await iterator `await obj` uses (`_PyCoro_GetAwaitableIter`, with `GET_AWAITABLE`'s
/// check that a coroutine is not awaited twice).
fn awaitable_iter<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if capi::is_native_coroutine(obj) {
        if !obj.getattr(intern!(py, "cr_await"))?.is_none() {
            return Err(PyRuntimeError::new_err(
                "coroutine is being awaited already",
            ));
        }
        return Ok(obj.clone());
    }
    if is_iterable_coroutine(obj)? {
        return Ok(obj.clone());
    }
    let Some(iter) = capi::call_am_await(obj)? else {
        return Err(PyTypeError::new_err(format!(
            "object {} can't be used in 'await' expression",
            capi::type_name(&obj.get_type())
        )));
    };
    if capi::is_native_coroutine(&iter) || is_iterable_coroutine(&iter)? {
        return Err(PyTypeError::new_err("__await__() returned a coroutine"));
    }
    if !capi::is_iterator(&iter) {
        return Err(PyTypeError::new_err(format!(
            "__await__() returned non-iterator of type '{}'",
            capi::type_name(&iter.get_type())
        )));
    }
    Ok(iter)
}

/// A generator made by a `@types.coroutine` function (`CO_ITERABLE_COROUTINE`).
fn is_iterable_coroutine(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    const CO_ITERABLE_COROUTINE: i64 = 0x100;
    if !capi::is_exact_generator(obj) {
        return Ok(false);
    }
    let py = obj.py();
    let flags: i64 = obj
        .getattr(intern!(py, "gi_code"))?
        .getattr(intern!(py, "co_flags"))?
        .extract()?;
    Ok(flags & CO_ITERABLE_COROUTINE != 0)
}

/// `close()` on the iterator being awaited (`gen_close_iter`).
fn close_iter(iter: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = iter.py();
    match iter.getattr(intern!(py, "close")) {
        Ok(close) => close.call0().map(drop),
        Err(e) if e.is_instance_of::<PyAttributeError>(py) => Ok(()),
        Err(e) => Err(e),
    }
}

impl WaitForCoroutine {
    fn loop_of<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        match &slf.st().loop_ {
            Some(l) => Ok(l.bind(slf.py()).clone()),
            None => Err(PyRuntimeError::new_err("no running event loop")),
        }
    }

    /// `send(value)`, also the `am_send` slot and `__next__`.
    fn send_step<'py>(
        slf: &Bound<'py, Self>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<SendResult<'py>> {
        Self::step(slf, Resume::Send(value.clone()))
    }

    fn step<'py>(slf: &Bound<'py, Self>, resume: Resume<'py>) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        let stage = std::mem::replace(&mut slf.st_mut().stage, Stage::Finished);
        match stage {
            Stage::Finished => finished_step(resume),
            Stage::Created { fut, timeout } => match resume {
                Resume::Throw { err, .. } => Err(err),
                Resume::Send(value) if !value.is_none() => {
                    slf.st_mut().stage = Stage::Created { fut, timeout };
                    Err(not_started_error())
                }
                Resume::Send(_) => Self::start(slf, fut.into_bound(py), timeout.into_bound(py)),
            },
            Stage::Delegating { iter } => Self::delegate(slf, iter.into_bound(py), resume),
            Stage::Waiting {
                fut,
                waiter,
                handle,
                cb,
            } => {
                let outcome = resume_future(waiter.bind(py), resume).map(drop);
                Self::after_wait(slf, fut.bind(py), &handle, cb.bind(py), outcome)
            }
            Stage::Cancelling {
                fut,
                waiter,
                cb,
                after,
            } => {
                let outcome = resume_future(waiter.bind(py), resume).map(drop);
                Self::finish_cancel(fut.bind(py), cb.bind(py), after, outcome)
            }
        }
    }

    /// The body up to its first suspension.
    fn start<'py>(
        slf: &Bound<'py, Self>,
        fut: Bound<'py, PyAny>,
        timeout: Bound<'py, PyAny>,
    ) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        let loop_ = stdlib::get_running_loop(py)?.call0()?;
        if loop_.is_none() {
            return Err(PyRuntimeError::new_err("no running event loop"));
        }
        slf.st_mut().loop_ = Some(loop_.clone().unbind());
        if timeout.is_none() {
            let iter = awaitable_iter(&fut)?;
            return Self::delegate(slf, iter, Resume::Send(py.None().into_bound(py)));
        }
        if timeout.le(0)? {
            let fut = ensure_future(&fut, &loop_)?;
            if done(&fut)? {
                return result(&fut).map(SendResult::Returned);
            }
            return Self::begin_cancel(slf, fut, After::ZeroTimeout);
        }
        let waiter = create_future(&loop_)?;
        let release = stdlib::release_waiter(py)?;
        let handle = call_later(&loop_, &timeout, release, &PyTuple::new(py, [&waiter])?)?;
        let cb = release_callback(&waiter)?;
        let fut = ensure_future(&fut, &loop_)?;
        fut.call_method1(intern!(py, "add_done_callback"), (&cb,))?;
        // try: try: await waiter
        if let Some(yielded) = suspend_on(&waiter)? {
            slf.st_mut().stage = Stage::Waiting {
                fut: fut.unbind(),
                waiter: waiter.unbind(),
                handle: handle.unbind(),
                cb: cb.unbind(),
            };
            return Ok(yielded);
        }
        let outcome = result(&waiter).map(drop);
        Self::after_wait(slf, &fut, &handle.unbind(), &cb, outcome)
    }

    /// After `await waiter` in the main path. The `finally` that cancels the timer runs here
    /// when the body is left, or after `_cancel_and_wait` (`finish_after`).
    fn after_wait<'py>(
        slf: &Bound<'py, Self>,
        fut: &Bound<'py, PyAny>,
        handle: &Py<PyAny>,
        cb: &Bound<'py, PyAny>,
        outcome: PyResult<()>,
    ) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        let after = match outcome {
            Err(e) if is_cancelled_error(py, &e)? => {
                // except exceptions.CancelledError:
                let handled = e.value(py).clone().into_any();
                let body = || -> PyResult<Option<SendResult<'py>>> {
                    if done(fut)? {
                        return result(fut).map(|v| Some(SendResult::Returned(v)));
                    }
                    fut.call_method1(intern!(py, "remove_done_callback"), (cb,))?;
                    Ok(None)
                };
                match while_handling(&handled, body()) {
                    Ok(None) => After::Cancelled {
                        handle: handle.clone_ref(py),
                        cancelled: handled.unbind(),
                    },
                    Ok(Some(returned)) => return leave_with(py, handle, Ok(returned)),
                    Err(e) => return leave_with(py, handle, Err(e)),
                }
            }
            Err(e) => return leave_with(py, handle, Err(e)),
            Ok(()) => {
                let body = || -> PyResult<Option<SendResult<'py>>> {
                    if done(fut)? {
                        return result(fut).map(|v| Some(SendResult::Returned(v)));
                    }
                    fut.call_method1(intern!(py, "remove_done_callback"), (cb,))?;
                    Ok(None)
                };
                match body() {
                    Ok(None) => After::Expired {
                        handle: handle.clone_ref(py),
                    },
                    Ok(Some(returned)) => return leave_with(py, handle, Ok(returned)),
                    Err(e) => return leave_with(py, handle, Err(e)),
                }
            }
        };
        Self::begin_cancel(slf, fut.clone(), after)
    }

    /// `await _cancel_and_wait(fut, loop=loop)` up to its suspension.
    fn begin_cancel<'py>(
        slf: &Bound<'py, Self>,
        fut: Bound<'py, PyAny>,
        after: After,
    ) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        let setup = || -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
            let loop_ = Self::loop_of(slf)?;
            let waiter = create_future(&loop_)?;
            let cb = release_callback(&waiter)?;
            fut.call_method1(intern!(py, "add_done_callback"), (&cb,))?;
            Ok((waiter, cb))
        };
        let (waiter, cb) = match setup() {
            Ok(pair) => pair,
            Err(e) => return Self::finish_after(&fut, after, Err(e)),
        };
        // try: fut.cancel(); await waiter / finally: fut.remove_done_callback(cb)
        let suspended = fut
            .call_method0(intern!(py, "cancel"))
            .and_then(|_| suspend_on(&waiter));
        match suspended {
            Ok(Some(yielded)) => {
                slf.st_mut().stage = Stage::Cancelling {
                    fut: fut.unbind(),
                    waiter: waiter.unbind(),
                    cb: cb.unbind(),
                    after,
                };
                Ok(yielded)
            }
            Ok(None) => {
                let outcome = result(&waiter).map(drop);
                Self::finish_cancel(&fut, &cb, after, outcome)
            }
            Err(e) => Self::finish_cancel(&fut, &cb, after, Err(e)),
        }
    }

    /// The end of `_cancel_and_wait` (its `finally`), then the code after it.
    fn finish_cancel<'py>(
        fut: &Bound<'py, PyAny>,
        cb: &Bound<'py, PyAny>,
        after: After,
        outcome: PyResult<()>,
    ) -> PyResult<SendResult<'py>> {
        let py = fut.py();
        let removed = fut.call_method1(intern!(py, "remove_done_callback"), (cb,));
        let outcome = match (outcome, removed) {
            (outcome, Ok(_)) => outcome,
            (Ok(()), Err(e)) => Err(e),
            (Err(first), Err(e)) => {
                let first = first.value(py).clone().into_any();
                while_handling(&first, Err(e))
            }
        };
        Self::finish_after(fut, after, outcome)
    }

    /// The code after `await _cancel_and_wait(fut)`, given how that await ended.
    fn finish_after<'py>(
        fut: &Bound<'py, PyAny>,
        after: After,
        outcome: PyResult<()>,
    ) -> PyResult<SendResult<'py>> {
        let py = fut.py();
        match after {
            After::ZeroTimeout => outcome.and_then(|()| result_or_timeout(fut)),
            After::Expired { handle } => {
                leave_with(py, &handle, outcome.and_then(|()| result_or_timeout(fut)))
            }
            After::Cancelled { handle, cancelled } => {
                let cancelled = cancelled.into_bound(py);
                // `raise`: the handled CancelledError again, as it is.
                let reraised = outcome.and_then(|()| Err(PyErr::from_value(cancelled.clone())));
                leave_with(py, &handle, while_handling(&cancelled, reraised))
            }
        }
    }

    /// `return await fut`: one send or throw passed on to fut's await iterator.
    fn delegate<'py>(
        slf: &Bound<'py, Self>,
        iter: Bound<'py, PyAny>,
        resume: Resume<'py>,
    ) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        let step = match resume {
            Resume::Send(value) => capi::iter_send_value(&iter, &value),
            Resume::Throw { err, args } => {
                if err.is_instance_of::<PyGeneratorExit>(py) {
                    close_iter(&iter)?;
                    return Err(err);
                }
                let throw = match iter.getattr(intern!(py, "throw")) {
                    Ok(t) => t,
                    Err(e) if e.is_instance_of::<PyAttributeError>(py) => return Err(err),
                    Err(e) => return Err(e),
                };
                match throw.call1(PyTuple::new(py, args)?) {
                    Ok(v) => Ok(SendResult::Yielded(v)),
                    Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                        let value = e.value(py).getattr(intern!(py, "value"))?;
                        Ok(SendResult::Returned(value))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Ok(SendResult::Yielded(_)) = &step {
            slf.st_mut().stage = Stage::Delegating {
                iter: iter.unbind(),
            };
        }
        step
    }
}

/// `ensure_future(fut, loop=loop)`; natively for a ferroloop future of this loop and for a
/// coroutine on ferroloop's loop class (`_ensure_future`'s two common cases).
fn ensure_future<'py>(
    fut: &Bound<'py, PyAny>,
    loop_: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = fut.py();
    if let Some(native) = NativeFuture::of(fut) {
        if native.loop_of()?.is(loop_) {
            return Ok(fut.clone());
        }
    } else if capi::is_native_coroutine(fut)
        && loop_.get_type().is(stdlib::ferroloop_loop_class(py)?)
    {
        return match loop_.call_method1(intern!(py, "create_task"), (fut,)) {
            Ok(task) => Ok(task),
            Err(e) if e.is_instance_of::<PyRuntimeError>(py) => {
                fut.call_method0(intern!(py, "close"))?;
                Err(e)
            }
            Err(e) => Err(e),
        };
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "loop"), loop_)?;
    stdlib::tasks_ensure_future(py)?.call((fut,), Some(&kwargs))
}

/// The done callback wait_for gives the awaited future: `_release_waiter(waiter, *args)`
/// (`if not waiter.done(): waiter.set_result(None)`), in place of asyncio's
/// `functools.partial(_release_waiter, waiter)`.
#[pyclass(module = "ferroloop", name = "_ReleaseWaiter", frozen)]
pub struct ReleaseWaiter {
    waiter: Py<PyAny>,
}

#[pymethods]
impl ReleaseWaiter {
    #[pyo3(signature = (*_args))]
    fn __call__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        release_waiter(self.waiter.bind(py))
    }

    #[getter]
    fn __qualname__(&self) -> &'static str {
        "_release_waiter"
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "<_release_waiter of {}>",
            self.waiter.bind(py).repr()?
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.waiter)
    }
}

fn release_callback<'py>(waiter: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    Ok(Bound::new(
        waiter.py(),
        ReleaseWaiter {
            waiter: waiter.clone().unbind(),
        },
    )?
    .into_any())
}

native_coroutine_pymethods!(WaitForCoroutine, "wait_for", {
    #[pyo3(signature = (r#type, value=None, traceback=None))]
    fn throw(
        slf: &Bound<'_, Self>,
        r#type: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let err = thrown(py, r#type, value, traceback);
        let mut args = vec![r#type.clone()];
        if let Some(v) = value {
            args.push(v.clone());
            if let Some(tb) = traceback {
                args.push(tb.clone());
            }
        }
        yielded_or_stop(Self::step(slf, Resume::Throw { err, args })?)
    }

    /// `coroutine.close()`: GeneratorExit thrown in where it is suspended.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let suspended = matches!(
            slf.st().stage,
            Stage::Delegating { .. } | Stage::Waiting { .. } | Stage::Cancelling { .. }
        );
        if !suspended {
            slf.st_mut().stage = Stage::Finished;
            return Ok(());
        }
        let exit = py.get_type::<PyGeneratorExit>();
        let err = PyErr::from_type(exit.clone(), ());
        let args = vec![exit.into_any()];
        match Self::step(slf, Resume::Throw { err, args }) {
            Ok(SendResult::Yielded(_)) => {
                Err(PyRuntimeError::new_err("coroutine ignored GeneratorExit"))
            }
            Ok(SendResult::Returned(_)) => Ok(()),
            Err(e)
                if e.is_instance_of::<PyGeneratorExit>(py)
                    || e.is_instance_of::<PyStopIteration>(py) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// What the coroutine awaits while suspended.
    #[getter]
    fn cr_await(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match &self.st.borrow(py).stage {
            Stage::Delegating { iter } => Some(iter.clone_ref(py)),
            Stage::Waiting { waiter, .. } | Stage::Cancelling { waiter, .. } => {
                Some(waiter.clone_ref(py))
            }
            _ => None,
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(this) = self.st.for_traverse() else {
            return Ok(());
        };
        visit.call(&this.loop_)?;
        match &this.stage {
            Stage::Created { fut, timeout } => {
                visit.call(fut)?;
                visit.call(timeout)?;
            }
            Stage::Delegating { iter } => visit.call(iter)?,
            Stage::Waiting {
                fut,
                waiter,
                handle,
                cb,
            } => {
                visit.call(fut)?;
                visit.call(waiter)?;
                visit.call(handle)?;
                visit.call(cb)?;
            }
            Stage::Cancelling {
                fut,
                waiter,
                cb,
                after,
            } => {
                visit.call(fut)?;
                visit.call(waiter)?;
                visit.call(cb)?;
                match after {
                    After::ZeroTimeout => {}
                    After::Expired { handle } => visit.call(handle)?,
                    After::Cancelled { handle, cancelled } => {
                        visit.call(handle)?;
                        visit.call(cancelled)?;
                    }
                }
            }
            Stage::Finished => {}
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.st.clear_with(|this| {
            (
                this.loop_.take(),
                std::mem::replace(&mut this.stage, Stage::Finished),
            )
        });
    }
});

/// Adds `wait_for` and its coroutine class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WaitForCoroutine>()?;
    m.add_class::<ReleaseWaiter>()?;
    m.add_function(wrap_pyfunction!(wait_for, m)?)?;
    capi::install_am_send::<WaitForCoroutine>(&m.py().get_type::<WaitForCoroutine>());
    Ok(())
}

impl HasStateCell for WaitForCoroutine {
    type State = WaitForState;
    fn state_cell(&self) -> &GilRefCell<WaitForState> {
        &self.st
    }
}
