//! `ferroloop.sleep(delay, result=None)`: asyncio.sleep written in Rust.
//!
//! asyncio.sleep is a coroutine function; each call makes a coroutine whose body, once
//! started, either yields once to the loop (`delay <= 0`, through `__sleep0`) or creates a
//! future, schedules `futures._set_result_unless_cancelled(future, result)` with
//! `loop.call_later(delay, ...)`, awaits the future and cancels the timer on the way out
//! (`try/finally: h.cancel()`). `SleepCoroutine` is that coroutine as a native object: it has
//! the coroutine protocol (`send`, `throw`, `close`, `__await__`, and `am_send` for
//! `PyIter_Send`), so `asyncio.iscoroutine()` accepts it and a Task drives it, without a frame
//! per call. Behaviour follows asyncio.sleep step by step: `delay <= 0` is evaluated when the
//! coroutine starts (so a bad delay fails at the first await, as asyncio's does), the running
//! loop is looked up then, and a cancellation or a thrown exception cancels the timer.
//! Differences: no "coroutine ... was never awaited" warning for one dropped unawaited, and no
//! frame (`cr_frame` is None).

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::capi::{self, SendResult};
use crate::coro_support::{
    call_later, cancel_handle, create_future, finished_step, native_coroutine_pymethods,
    not_started_error, resume_future, running_loop, Resume,
};
use crate::future::{thrown, NativeFuture};
use crate::gil_cell::{GilRefCell, HasStateCell, StateCell};
use crate::stdlib;

/// Where a sleep coroutine is.
enum Stage {
    /// Made, not started (`delay <= 0` not evaluated yet).
    Created,
    /// Yielded once to the loop (`delay <= 0`): the next send returns the result.
    Yielded,
    /// Waiting on `future`; `timer` sets its result.
    Waiting { future: Py<PyAny>, timer: Py<PyAny> },
    /// Returned, raised or closed.
    Finished,
}

/// The coroutine `ferroloop.sleep(delay, result)` returns.
///
/// Frozen for PyO3: the state sits in a [`GilRefCell`] (PyO3's borrow flag is atomic).
#[pyclass(module = "ferroloop", name = "SleepCoroutine", frozen)]
pub struct SleepCoroutine {
    st: GilRefCell<SleepState>,
}

/// What a SleepCoroutine holds.
pub(crate) struct SleepState {
    delay: Option<Py<PyAny>>,
    result: Option<Py<PyAny>>,
    stage: Stage,
}

/// `ferroloop.sleep(delay, result=None)`: a coroutine that completes after `delay` seconds.
#[pyfunction]
#[pyo3(signature = (delay, result=None))]
pub fn sleep(py: Python<'_>, delay: Py<PyAny>, result: Option<Py<PyAny>>) -> SleepCoroutine {
    SleepCoroutine {
        st: GilRefCell::new(SleepState {
            delay: Some(delay),
            result: Some(result.unwrap_or_else(|| py.None())),
            stage: Stage::Created,
        }),
    }
}

impl SleepCoroutine {
    /// The `result` argument (None once cleared by the collector).
    fn result_of<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        let py = slf.py();
        match &slf.st().result {
            Some(r) => r.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    /// One `send(value)`: what the coroutine yields next, or what it returns.
    fn send_step<'py>(
        slf: &Bound<'py, Self>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        let stage = std::mem::replace(&mut slf.st_mut().stage, Stage::Finished);
        match stage {
            Stage::Finished => finished_step(Resume::Send(value.clone())),
            Stage::Created => {
                if !value.is_none() {
                    // Still not started, as a coroutine stays after this error.
                    slf.st_mut().stage = Stage::Created;
                    return Err(not_started_error());
                }
                Self::start(slf)
            }
            Stage::Yielded => Ok(SendResult::Returned(Self::result_of(slf))),
            Stage::Waiting { future, timer } => {
                // The `await future` resumes (`Future.__await__`), then `finally: h.cancel()`.
                let outcome = resume_future(future.bind(py), Resume::Send(value.clone()));
                cancel_handle(timer.bind(py))?;
                outcome.map(SendResult::Returned)
            }
        }
    }

    /// The body up to its first suspension.
    fn start<'py>(slf: &Bound<'py, Self>) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        let delay = match &slf.st().delay {
            Some(d) => d.bind(py).clone(),
            None => py.None().into_bound(py),
        };
        let result = Self::result_of(slf);
        if delay.le(0)? {
            // `await __sleep0()`: a bare yield, which a Task answers by stepping again soon.
            slf.st_mut().stage = Stage::Yielded;
            return Ok(SendResult::Yielded(py.None().into_bound(py)));
        }
        let loop_ = running_loop(py)?;
        let callback = stdlib::set_result_unless_cancelled(py)?;
        let future = create_future(&loop_)?;
        let args = PyTuple::new(py, [&future, &result])?;
        let timer = call_later(&loop_, &delay, callback, &args)?;
        // `await future`: a pending future is yielded with its blocking flag set.
        match NativeFuture::of(&future) {
            Some(native) => native.borrow_mut().blocking = true,
            None => future.setattr(intern!(py, "_asyncio_future_blocking"), true)?,
        }
        slf.st_mut().stage = Stage::Waiting {
            future: future.clone().unbind(),
            timer: timer.unbind(),
        };
        Ok(SendResult::Yielded(future))
    }
}

native_coroutine_pymethods!(SleepCoroutine, "sleep", {
    /// The exception is raised where the coroutine is suspended: the timer is cancelled on
    /// the way out (the `finally` of asyncio.sleep), and the coroutine is finished.
    #[pyo3(signature = (r#type, value=None, traceback=None))]
    fn throw(
        slf: &Bound<'_, Self>,
        r#type: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let err = thrown(py, r#type, value, traceback);
        let stage = std::mem::replace(&mut slf.st_mut().stage, Stage::Finished);
        if let Stage::Waiting { timer, .. } = stage {
            cancel_handle(timer.bind(py))?;
        }
        Err(err)
    }

    /// `coroutine.close()`: a waiting sleep cancels its timer.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let stage = std::mem::replace(&mut slf.st_mut().stage, Stage::Finished);
        if let Stage::Waiting { timer, .. } = stage {
            cancel_handle(timer.bind(py))?;
        }
        Ok(())
    }

    /// What the coroutine awaits: the future while it waits.
    #[getter]
    fn cr_await(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match &self.st.borrow(py).stage {
            Stage::Waiting { future, .. } => Some(future.clone_ref(py)),
            _ => None,
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(this) = self.st.for_traverse() else {
            return Ok(());
        };
        visit.call(&this.delay)?;
        visit.call(&this.result)?;
        if let Stage::Waiting { future, timer } = &this.stage {
            visit.call(future)?;
            visit.call(timer)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.st.clear_with(|this| {
            (
                this.delay.take(),
                this.result.take(),
                std::mem::replace(&mut this.stage, Stage::Finished),
            )
        });
    }
});

/// Adds `sleep` and its coroutine class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SleepCoroutine>()?;
    m.add_function(wrap_pyfunction!(sleep, m)?)?;
    capi::install_am_send::<SleepCoroutine>(&m.py().get_type::<SleepCoroutine>());
    Ok(())
}

impl HasStateCell for SleepCoroutine {
    type State = SleepState;
    fn state_cell(&self) -> &GilRefCell<SleepState> {
        &self.st
    }
}
