//! `ferroloop.wait(fs, *, timeout=None, return_when=ALL_COMPLETED)`: Python 3.11's
//! asyncio.wait written in Rust.
//!
//! asyncio.wait checks its arguments when its coroutine starts, then `_wait` gives every future
//! one shared done callback, `_on_completion`, which counts completions and releases a waiter
//! future when the `return_when` condition holds (or the optional timer does); after the waiter
//! it removes the callbacks and splits the futures into `(done, pending)` sets.
//! `WaitCoroutine` is that coroutine as a native object (coroutine protocol and `am_send`, as
//! ferroloop.sleep), and `WaitOnCompletion` the shared callback. Each step calls what asyncio's
//! calls (`set(fs)`, the futures' `add_done_callback`/`remove_done_callback`/`done`/
//! `cancelled`/`exception`, `loop.call_later(timeout, _release_waiter, waiter)`), so foreign
//! futures behave as with asyncio's wait. Differences: the shared callback is a native object
//! (a future's `_callbacks` and repr show it), no frame (`cr_frame` is None), no "never
//! awaited" warning.

use std::sync::atomic::{AtomicIsize, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::capi::{self, SendResult};
use crate::coro_support::{
    call_later, cancel_handle, create_future, done, finished_step, native_coroutine_pymethods,
    not_started_error, release_waiter, resume_future, running_loop, suspend_on, yielded_or_stop,
    Resume,
};
use crate::future::{thrown, NativeFuture, State};
use crate::gil_cell::{GilRefCell, HasStateCell, StateCell};
use crate::stdlib;

/// `asyncio.FIRST_COMPLETED` / `FIRST_EXCEPTION` / `ALL_COMPLETED`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReturnWhen {
    FirstCompleted,
    FirstException,
    AllCompleted,
}

/// Where the coroutine is.
enum Stage {
    Created {
        fs: Py<PyAny>,
        timeout: Py<PyAny>,
        return_when: Py<PyAny>,
    },
    /// `await waiter`, every future carrying `cb`.
    Waiting {
        fs: Py<PySet>,
        waiter: Py<PyAny>,
        cb: Py<WaitOnCompletion>,
    },
    Finished,
}

/// The coroutine `ferroloop.wait(...)` returns.
///
/// Frozen for PyO3: the state sits in a [`GilRefCell`] (PyO3's borrow flag is atomic).
#[pyclass(module = "ferroloop", name = "WaitCoroutine", frozen)]
pub struct WaitCoroutine {
    st: GilRefCell<WaitState>,
}

/// What a WaitCoroutine holds.
pub(crate) struct WaitState {
    stage: Stage,
}

/// `_wait`'s `_on_completion(f)`: counts done futures, releases the waiter when `return_when`
/// is met, and cancels the timer then.
#[pyclass(module = "ferroloop", name = "_WaitOnCompletion", frozen)]
pub struct WaitOnCompletion {
    counter: AtomicIsize,
    return_when: ReturnWhen,
    waiter: Py<PyAny>,
    timeout_handle: Option<Py<PyAny>>,
}

/// `ferroloop.wait(fs, *, timeout=None, return_when=ALL_COMPLETED)`: waits for the futures in
/// `fs`; returns the sets `(done, pending)`.
#[pyfunction]
#[pyo3(signature = (fs, *, timeout=None, **kwargs))]
pub fn wait(
    py: Python<'_>,
    fs: Py<PyAny>,
    timeout: Option<Py<PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<WaitCoroutine> {
    // `return_when=ALL_COMPLETED`, told apart from an explicit None (a ValueError later).
    let mut return_when = None;
    if let Some(kwargs) = kwargs {
        for (key, value) in kwargs.iter() {
            if key.extract::<&str>().ok() != Some("return_when") {
                return Err(PyTypeError::new_err(format!(
                    "wait() got an unexpected keyword argument '{}'",
                    key.str()?
                )));
            }
            return_when = Some(value.unbind());
        }
    }
    let return_when = match return_when {
        Some(r) => r,
        None => stdlib::all_completed(py)?.clone().unbind(),
    };
    Ok(WaitCoroutine {
        st: GilRefCell::new(WaitState {
            stage: Stage::Created {
                fs,
                timeout: timeout.unwrap_or_else(|| py.None()),
                return_when,
            },
        }),
    })
}

/// `futures.isfuture(obj)`: its class has `_asyncio_future_blocking`, and it is not None.
fn isfuture(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if NativeFuture::of(obj).is_some() {
        return Ok(true);
    }
    let py = obj.py();
    let name = intern!(py, "_asyncio_future_blocking");
    if !obj.get_type().hasattr(name)? {
        return Ok(false);
    }
    Ok(!obj.getattr(name)?.is_none())
}

fn iscoroutine(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if capi::is_native_coroutine(obj) {
        return Ok(true);
    }
    stdlib::iscoroutine(obj.py())?.call1((obj,))?.is_truthy()
}

impl WaitOnCompletion {
    /// Whether `f` finished with an exception (`not f.cancelled() and f.exception() is not
    /// None`).
    fn raised(f: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = f.py();
        if let Some(native) = NativeFuture::of(f) {
            let core = native.borrow();
            if core.state == State::Finished {
                return Ok(core.exception.is_some());
            }
        }
        if f.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            return Ok(false);
        }
        Ok(!f.call_method0(intern!(py, "exception"))?.is_none())
    }
}

#[pymethods]
impl WaitOnCompletion {
    fn __call__(&self, py: Python<'_>, f: &Bound<'_, PyAny>) -> PyResult<()> {
        let counter = self.counter.fetch_sub(1, Ordering::Relaxed) - 1;
        let release = counter <= 0
            || self.return_when == ReturnWhen::FirstCompleted
            || (self.return_when == ReturnWhen::FirstException && Self::raised(f)?);
        if !release {
            return Ok(());
        }
        if let Some(handle) = &self.timeout_handle {
            cancel_handle(handle.bind(py))?;
        }
        release_waiter(self.waiter.bind(py))
    }

    #[getter]
    fn __qualname__(&self) -> &'static str {
        "_wait.<locals>._on_completion"
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.waiter)?;
        visit.call(&self.timeout_handle)
    }
}

impl WaitCoroutine {
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
            Stage::Created {
                fs,
                timeout,
                return_when,
            } => match resume {
                Resume::Throw { err, .. } => Err(err),
                Resume::Send(value) if !value.is_none() => {
                    slf.st_mut().stage = Stage::Created {
                        fs,
                        timeout,
                        return_when,
                    };
                    Err(not_started_error())
                }
                Resume::Send(_) => {
                    Self::start(slf, fs.bind(py), timeout.bind(py), return_when.bind(py))
                }
            },
            Stage::Waiting { fs, waiter, cb } => {
                let outcome = resume_future(waiter.bind(py), resume).map(drop);
                Self::finish(fs.bind(py), cb.bind(py), outcome)
            }
        }
    }

    /// `wait`'s checks, then `_wait` up to `await waiter`.
    fn start<'py>(
        slf: &Bound<'py, Self>,
        fs: &Bound<'py, PyAny>,
        timeout: &Bound<'py, PyAny>,
        return_when: &Bound<'py, PyAny>,
    ) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        if isfuture(fs)? || iscoroutine(fs)? {
            return Err(PyTypeError::new_err(format!(
                "expect a list of futures, not {}",
                fs.get_type().name()?
            )));
        }
        if !fs.is_truthy()? {
            return Err(PyValueError::new_err("Set of Tasks/Futures is empty."));
        }
        let return_when_kind = if return_when.eq(stdlib::first_completed(py)?)? {
            ReturnWhen::FirstCompleted
        } else if return_when.eq(stdlib::first_exception(py)?)? {
            ReturnWhen::FirstException
        } else if return_when.eq(stdlib::all_completed(py)?)? {
            ReturnWhen::AllCompleted
        } else {
            return Err(PyValueError::new_err(format!(
                "Invalid return_when value: {}",
                return_when.str()?
            )));
        };
        let fs = py.get_type::<PySet>().call1((fs,))?.cast_into::<PySet>()?;
        for f in fs.iter() {
            if iscoroutine(&f)? {
                return Err(PyTypeError::new_err(
                    "Passing coroutines is forbidden, use tasks explicitly.",
                ));
            }
        }
        let loop_ = running_loop(py)?;
        // _wait(fs, timeout, return_when, loop)
        let waiter = create_future(&loop_)?;
        let timeout_handle = if timeout.is_none() {
            None
        } else {
            let args = PyTuple::new(py, [&waiter])?;
            Some(call_later(&loop_, timeout, stdlib::release_waiter(py)?, &args)?.unbind())
        };
        let cb = Bound::new(
            py,
            WaitOnCompletion {
                counter: AtomicIsize::new(fs.len() as isize),
                return_when: return_when_kind,
                waiter: waiter.clone().unbind(),
                timeout_handle,
            },
        )?;
        for f in fs.iter() {
            add_done_callback(&f, cb.as_any())?;
        }
        match suspend_on(&waiter)? {
            Some(yielded) => {
                slf.st_mut().stage = Stage::Waiting {
                    fs: fs.unbind(),
                    waiter: waiter.unbind(),
                    cb: cb.unbind(),
                };
                Ok(yielded)
            }
            None => {
                let outcome = crate::coro_support::result(&waiter).map(drop);
                Self::finish(&fs, &cb, outcome)
            }
        }
    }

    /// `_wait` after `await waiter`: its `finally` (timer cancelled, callbacks removed), then
    /// the `(done, pending)` split.
    fn finish<'py>(
        fs: &Bound<'py, PySet>,
        cb: &Bound<'py, WaitOnCompletion>,
        outcome: PyResult<()>,
    ) -> PyResult<SendResult<'py>> {
        let py = fs.py();
        if let Some(handle) = &cb.get().timeout_handle {
            cancel_handle(handle.bind(py))?;
        }
        for f in fs.iter() {
            remove_done_callback(&f, cb.as_any())?;
        }
        outcome?;
        let done_set = PySet::empty(py)?;
        let pending = PySet::empty(py)?;
        for f in fs.iter() {
            if done(&f)? {
                done_set.add(f)?;
            } else {
                pending.add(f)?;
            }
        }
        Ok(SendResult::Returned(
            PyTuple::new(py, [done_set, pending])?.into_any(),
        ))
    }
}

/// `f.add_done_callback(cb)`, natively for ferroloop's futures.
fn add_done_callback(f: &Bound<'_, PyAny>, cb: &Bound<'_, PyAny>) -> PyResult<()> {
    match NativeFuture::of(f) {
        Some(native) => native.add_done_callback(cb.clone(), None),
        None => f
            .call_method1(intern!(f.py(), "add_done_callback"), (cb,))
            .map(drop),
    }
}

/// `f.remove_done_callback(cb)`, natively for ferroloop's futures.
fn remove_done_callback(f: &Bound<'_, PyAny>, cb: &Bound<'_, PyAny>) -> PyResult<()> {
    match NativeFuture::of(f) {
        Some(native) => native.remove_done_callback(cb).map(drop),
        None => f
            .call_method1(intern!(f.py(), "remove_done_callback"), (cb,))
            .map(drop),
    }
}

native_coroutine_pymethods!(WaitCoroutine, "wait", {
    #[pyo3(signature = (r#type, value=None, traceback=None))]
    fn throw(
        slf: &Bound<'_, Self>,
        r#type: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let err = thrown(slf.py(), r#type, value, traceback);
        yielded_or_stop(Self::step(
            slf,
            Resume::Throw {
                err,
                args: Vec::new(),
            },
        )?)
    }

    /// `coroutine.close()`: GeneratorExit at `await waiter` runs `_wait`'s `finally`.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if !matches!(slf.st().stage, Stage::Waiting { .. }) {
            slf.st_mut().stage = Stage::Finished;
            return Ok(());
        }
        let err = pyo3::exceptions::PyGeneratorExit::new_err(());
        match Self::step(
            slf,
            Resume::Throw {
                err,
                args: Vec::new(),
            },
        ) {
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyGeneratorExit>(py) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err(PyRuntimeError::new_err("coroutine ignored GeneratorExit")),
        }
    }

    #[getter]
    fn cr_await(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match &self.st.borrow(py).stage {
            Stage::Waiting { waiter, .. } => Some(waiter.clone_ref(py)),
            _ => None,
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(this) = self.st.for_traverse() else {
            return Ok(());
        };
        match &this.stage {
            Stage::Created {
                fs,
                timeout,
                return_when,
            } => {
                visit.call(fs)?;
                visit.call(timeout)?;
                visit.call(return_when)?;
            }
            Stage::Waiting { fs, waiter, cb } => {
                visit.call(fs)?;
                visit.call(waiter)?;
                visit.call(cb)?;
            }
            Stage::Finished => {}
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.st
            .clear_with(|this| std::mem::replace(&mut this.stage, Stage::Finished));
    }
});

/// Adds `wait` and its classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WaitCoroutine>()?;
    m.add_class::<WaitOnCompletion>()?;
    m.add_function(wrap_pyfunction!(wait, m)?)?;
    capi::install_am_send::<WaitCoroutine>(&m.py().get_type::<WaitCoroutine>());
    Ok(())
}

impl HasStateCell for WaitCoroutine {
    type State = WaitState;
    fn state_cell(&self) -> &GilRefCell<WaitState> {
        &self.st
    }
}
