//! `ferroloop.timeout(delay)`, `ferroloop.timeout_at(when)` and `ferroloop.Timeout`: Python
//! 3.11's `asyncio.timeouts` written in Rust.
//!
//! A `Timeout` is an async context manager. Entering it (in a task) schedules `_on_timeout` at
//! the deadline; if that fires, the task is cancelled, and on exit the CancelledError it causes
//! becomes a TimeoutError, unless the task got other cancel requests in the meantime (counted
//! with `Task.cancelling()`/`uncancel()`). Each step mirrors `asyncio.timeouts.Timeout`'s
//! method of the same name, with its error messages. `__aenter__`/`__aexit__` are coroutine
//! methods in asyncio; here they return a `TimeoutStep`, an awaitable that does the work when
//! first sent to (as a coroutine body runs only once awaited) and finishes at once.
//! Differences: no frames in tracebacks, and no "never awaited" warning for a step not awaited.

use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::capi::{self, SendResult};
use crate::coro_support::{
    cancel_handle, finished_step, not_started_error, running_loop, yielded_or_stop, Resume,
};
use crate::event_loop::LoopCore;
use crate::future::thrown;
use crate::gil_cell::{GilRefCell, HasStateCell, StateCell};
use crate::stdlib;

/// `asyncio.timeouts._State`, by its values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TimeoutState {
    Created,
    Entered,
    Expiring,
    Expired,
    Exited,
}

impl TimeoutState {
    /// The `_State` member's value, as repr and error messages show it.
    fn value(self) -> &'static str {
        match self {
            TimeoutState::Created => "created",
            TimeoutState::Entered => "active",
            TimeoutState::Expiring => "expiring",
            TimeoutState::Expired => "expired",
            TimeoutState::Exited => "finished",
        }
    }
}

/// `asyncio.timeouts.Timeout`: cancels the task that entered it once the deadline passes.
///
/// Frozen for PyO3: the state sits in a [`GilRefCell`] (PyO3's borrow flag is atomic).
#[pyclass(
    module = "ferroloop",
    name = "Timeout",
    subclass,
    weakref,
    dict,
    frozen
)]
pub struct Timeout {
    st: GilRefCell<TimeoutFields>,
}

/// What a Timeout holds.
pub(crate) struct TimeoutFields {
    state: TimeoutState,
    /// The deadline in loop time (None: never).
    when: Py<PyAny>,
    /// The pending `_on_timeout` call (a Handle or TimerHandle).
    timeout_handler: Option<Py<PyAny>>,
    /// The task that entered the context.
    task: Option<Py<PyAny>>,
    /// `task.cancelling()` when it entered.
    cancelling: Option<Py<PyAny>>,
}

/// Which method a `TimeoutStep` runs.
enum StepKind {
    Enter,
    Exit {
        exc_type: Py<PyAny>,
        exc_val: Py<PyAny>,
    },
}

/// What `Timeout.__aenter__()`/`__aexit__()` return: awaiting it runs the method.
#[pyclass(module = "ferroloop", name = "TimeoutStep", frozen)]
pub struct TimeoutStep {
    st: GilRefCell<TimeoutStepFields>,
}

/// What a TimeoutStep holds.
pub(crate) struct TimeoutStepFields {
    timeout: Option<Py<Timeout>>,
    /// None once run (or closed).
    kind: Option<StepKind>,
}

/// `ferroloop.timeout(delay)`: `asyncio.timeout`, a Timeout `delay` seconds from now (None:
/// no deadline).
#[pyfunction]
pub fn timeout(py: Python<'_>, delay: &Bound<'_, PyAny>) -> PyResult<Timeout> {
    let loop_ = running_loop(py)?;
    let when = if delay.is_none() {
        py.None()
    } else {
        loop_time(&loop_)?.add(delay)?.unbind()
    };
    Ok(Timeout::created(when))
}

/// `ferroloop.timeout_at(when)`: `asyncio.timeout_at`, a Timeout at loop time `when`.
#[pyfunction]
pub fn timeout_at(when: Py<PyAny>) -> Timeout {
    Timeout::created(when)
}

/// `loop.time()`, natively on ferroloop's own loop class.
fn loop_time<'py>(loop_: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    if loop_.get_type().is(stdlib::ferroloop_loop_class(py)?) {
        return Ok(ferroloop_core::clock::monotonic()
            .into_pyobject(py)?
            .into_any());
    }
    loop_.call_method0(intern!(py, "time"))
}

impl Timeout {
    fn created(when: Py<PyAny>) -> Self {
        Timeout {
            st: GilRefCell::new(TimeoutFields {
                state: TimeoutState::Created,
                when,
                timeout_handler: None,
                task: None,
                cancelling: None,
            }),
        }
    }

    fn task<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        match &slf.st().task {
            Some(t) => Ok(t.bind(slf.py()).clone()),
            None => Err(PyRuntimeError::new_err("Timeout has no task")),
        }
    }

    /// `Timeout.__aenter__`'s body.
    fn enter<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if slf.st().state != TimeoutState::Created {
            return Err(PyRuntimeError::new_err("Timeout has already been entered"));
        }
        let task = stdlib::current_task(py)?.call0()?;
        if task.is_none() {
            return Err(PyRuntimeError::new_err(
                "Timeout should be used inside a task",
            ));
        }
        {
            let mut t = slf.st_mut();
            t.state = TimeoutState::Entered;
            t.task = Some(task.clone().unbind());
        }
        let cancelling = task.call_method0(intern!(py, "cancelling"))?;
        slf.st_mut().cancelling = Some(cancelling.unbind());
        let when = slf.st().when.clone_ref(py).into_bound(py);
        Self::reschedule(slf, &when)?;
        Ok(slf.clone().into_any())
    }

    /// `Timeout.__aexit__`'s body.
    fn exit(
        slf: &Bound<'_, Self>,
        exc_type: &Bound<'_, PyAny>,
        exc_val: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let state = slf.st().state;
        if !matches!(state, TimeoutState::Entered | TimeoutState::Expiring) {
            return Err(PyAssertionError::new_err(()));
        }
        let handler = slf.st_mut().timeout_handler.take();
        if let Some(h) = handler {
            cancel_handle(h.bind(py))?;
        }
        if state == TimeoutState::Expiring {
            slf.st_mut().state = TimeoutState::Expired;
            let task = Self::task(slf)?;
            let remaining = task.call_method0(intern!(py, "uncancel"))?;
            let cancelling = match &slf.st().cancelling {
                Some(c) => c.clone_ref(py).into_bound(py),
                None => py.None().into_bound(py),
            };
            if remaining.le(&cancelling)? && exc_type.is(stdlib::cancelled_error(py)?) {
                // `raise TimeoutError from exc_val`, raised while exc_val is handled.
                let err = pyo3::exceptions::PyTimeoutError::new_err(());
                let value = err.value(py);
                capi::set_cause_and_context(value.as_any(), exc_val)?;
                return Err(err);
            }
        } else {
            slf.st_mut().state = TimeoutState::Exited;
        }
        Ok(())
    }

    /// `Timeout.reschedule(when)`.
    fn reschedule(slf: &Bound<'_, Self>, when: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let state = slf.st().state;
        if state != TimeoutState::Entered {
            if state == TimeoutState::Created {
                return Err(PyRuntimeError::new_err("Timeout has not been entered"));
            }
            return Err(PyRuntimeError::new_err(format!(
                "Cannot change state of {} Timeout",
                state.value()
            )));
        }
        slf.st_mut().when = when.clone().unbind();
        let old = slf.st().timeout_handler.as_ref().map(|h| h.clone_ref(py));
        if let Some(h) = old {
            cancel_handle(h.bind(py))?;
        }
        if when.is_none() {
            slf.st_mut().timeout_handler = None;
            return Ok(());
        }
        let loop_ = running_loop(py)?;
        let callback = slf.getattr(intern!(py, "_on_timeout"))?;
        let now = loop_time(&loop_)?;
        let handler = if loop_.get_type().is(stdlib::ferroloop_loop_class(py)?) {
            let core = loop_.cast::<LoopCore>()?;
            let args = PyTuple::empty(py);
            if when.le(&now)? {
                LoopCore::schedule_soon(core, &callback, &args, None, "call_soon", true)?.into_any()
            } else {
                let at = LoopCore::when_at(when)?;
                LoopCore::call_at_impl(core, at, &callback, &args, None)?.into_any()
            }
        } else if when.le(&now)? {
            loop_
                .call_method1(intern!(py, "call_soon"), (callback,))?
                .unbind()
        } else {
            loop_
                .call_method1(intern!(py, "call_at"), (when, callback))?
                .unbind()
        };
        slf.st_mut().timeout_handler = Some(handler);
        Ok(())
    }
}

#[pymethods]
impl Timeout {
    /// `Timeout(when)`; argument errors are worded as for asyncio's `Timeout.__init__`.
    #[new]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let mut when = match args.len() {
            0 => None,
            1 => Some(args.get_item(0)?.unbind()),
            n => {
                return Err(PyTypeError::new_err(format!(
                    "Timeout.__init__() takes 2 positional arguments but {} were given",
                    n + 1
                )))
            }
        };
        if let Some(kwargs) = kwargs {
            for (key, value) in kwargs.iter() {
                if key.extract::<&str>().ok() != Some("when") {
                    return Err(PyTypeError::new_err(format!(
                        "Timeout.__init__() got an unexpected keyword argument '{}'",
                        key.str()?
                    )));
                }
                if when.is_some() {
                    return Err(PyTypeError::new_err(
                        "Timeout.__init__() got multiple values for argument 'when'",
                    ));
                }
                when = Some(value.unbind());
            }
        }
        match when {
            Some(when) => Ok(Timeout::created(when)),
            None => Err(PyTypeError::new_err(
                "Timeout.__init__() missing 1 required positional argument: 'when'",
            )),
        }
    }

    /// The current deadline.
    fn when(&self, py: Python<'_>) -> Py<PyAny> {
        self.st.borrow(py).when.clone_ref(py)
    }

    #[pyo3(name = "reschedule")]
    fn py_reschedule(slf: &Bound<'_, Self>, when: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::reschedule(slf, when)
    }

    /// Whether the deadline passed while the context ran.
    fn expired(&self, py: Python<'_>) -> bool {
        matches!(
            self.st.borrow(py).state,
            TimeoutState::Expiring | TimeoutState::Expired
        )
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let t = slf.st();
        let mut info = String::new();
        if t.state == TimeoutState::Entered {
            let when = t.when.bind(py);
            let shown = if when.is_none() {
                "None".to_string()
            } else {
                let builtins = py.import(intern!(py, "builtins"))?;
                builtins
                    .getattr(intern!(py, "round"))?
                    .call1((when, 3))?
                    .repr()?
                    .to_string()
            };
            info = format!(" when={shown}");
        }
        Ok(format!("<Timeout [{}]{}>", t.state.value(), info))
    }

    fn __aenter__(slf: &Bound<'_, Self>) -> TimeoutStep {
        TimeoutStep {
            st: GilRefCell::new(TimeoutStepFields {
                timeout: Some(slf.clone().unbind()),
                kind: Some(StepKind::Enter),
            }),
        }
    }

    #[pyo3(signature = (exc_type, exc_val, exc_tb))]
    fn __aexit__(
        slf: &Bound<'_, Self>,
        exc_type: Py<PyAny>,
        exc_val: Py<PyAny>,
        exc_tb: &Bound<'_, PyAny>,
    ) -> TimeoutStep {
        let _ = exc_tb;
        TimeoutStep {
            st: GilRefCell::new(TimeoutStepFields {
                timeout: Some(slf.clone().unbind()),
                kind: Some(StepKind::Exit { exc_type, exc_val }),
            }),
        }
    }

    /// The deadline's callback: cancels the task.
    fn _on_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if slf.st().state != TimeoutState::Entered {
            return Err(PyAssertionError::new_err(()));
        }
        Self::task(slf)?.call_method0(intern!(py, "cancel"))?;
        let mut t = slf.st_mut();
        t.state = TimeoutState::Expiring;
        // Drop the reference early.
        t.timeout_handler = None;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(this) = self.st.for_traverse() else {
            return Ok(());
        };
        visit.call(&this.when)?;
        visit.call(&this.timeout_handler)?;
        visit.call(&this.task)?;
        visit.call(&this.cancelling)?;
        Ok(())
    }

    fn __clear__(&self) {
        self.st.clear_with(|this| {
            (
                this.timeout_handler.take(),
                this.task.take(),
                this.cancelling.take(),
            )
        });
    }
}

impl TimeoutStep {
    /// One send: the first runs the method and returns its result; later ones fail as a
    /// finished coroutine does.
    fn step<'py>(slf: &Bound<'py, Self>, value: &Bound<'py, PyAny>) -> PyResult<SendResult<'py>> {
        let py = slf.py();
        if slf.st().kind.is_some() && !value.is_none() {
            return Err(not_started_error());
        }
        let kind = slf.st_mut().kind.take();
        let timeout = slf.st().timeout.as_ref().map(|t| t.clone_ref(py));
        let (Some(kind), Some(timeout)) = (kind, timeout) else {
            return finished_step(Resume::Send(value.clone()));
        };
        let timeout = timeout.into_bound(py);
        match kind {
            StepKind::Enter => Timeout::enter(&timeout).map(SendResult::Returned),
            StepKind::Exit { exc_type, exc_val } => {
                Timeout::exit(&timeout, exc_type.bind(py), exc_val.bind(py))?;
                Ok(SendResult::Returned(py.None().into_bound(py)))
            }
        }
    }
}

#[pymethods]
impl TimeoutStep {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let none = slf.py().None().into_bound(slf.py());
        yielded_or_stop(Self::step(slf, &none)?)
    }

    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        yielded_or_stop(Self::step(slf, value)?)
    }

    /// Thrown in before it ran: the method never runs, the exception comes back out.
    #[pyo3(signature = (r#type, value=None, traceback=None))]
    fn throw(
        &self,
        py: Python<'_>,
        r#type: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let taken = self.st.borrow_mut(py).kind.take();
        drop(taken);
        Err(thrown(py, r#type, value, traceback))
    }

    fn close(&self, py: Python<'_>) {
        let taken = self.st.borrow_mut(py).kind.take();
        drop(taken);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(this) = self.st.for_traverse() else {
            return Ok(());
        };
        visit.call(&this.timeout)?;
        if let Some(StepKind::Exit { exc_type, exc_val }) = &this.kind {
            visit.call(exc_type)?;
            visit.call(exc_val)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.st
            .clear_with(|this| (this.timeout.take(), this.kind.take()));
    }
}

impl capi::AmSend for TimeoutStep {
    fn am_send<'py>(
        step: &Bound<'py, PyAny>,
        arg: &Bound<'py, PyAny>,
    ) -> PyResult<SendResult<'py>> {
        TimeoutStep::step(step.cast::<TimeoutStep>()?, arg)
    }
}

/// Adds `timeout`, `timeout_at` and their classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Timeout>()?;
    m.add_class::<TimeoutStep>()?;
    m.add_function(wrap_pyfunction!(timeout, m)?)?;
    m.add_function(wrap_pyfunction!(timeout_at, m)?)?;
    capi::install_am_send::<TimeoutStep>(&m.py().get_type::<TimeoutStep>());
    Ok(())
}

impl HasStateCell for Timeout {
    type State = TimeoutFields;
    fn state_cell(&self) -> &GilRefCell<TimeoutFields> {
        &self.st
    }
}

impl HasStateCell for TimeoutStep {
    type State = TimeoutStepFields;
    fn state_cell(&self) -> &GilRefCell<TimeoutStepFields> {
        &self.st
    }
}
