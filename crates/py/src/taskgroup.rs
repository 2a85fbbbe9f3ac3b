//! The native part of `ferroloop.TaskGroup` (asyncio.TaskGroup, Python 3.11's
//! `asyncio.taskgroups`): its state, `create_task`, and the per-task done callback, which on a
//! ferroloop Task is registered natively (no bound method, no context copy) and run by the loop
//! straight from the ready queue. `__aenter__`/`__aexit__` are coroutines in
//! `python/ferroloop/_taskgroup.py`; behaviour and messages are asyncio's.

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PySystemExit};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PySet};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::future::{Callback, NativeFuture, State};
use crate::stdlib::cached_attr;

cached_attr!(
    /// `asyncio.events.get_running_loop`
    running_loop, "asyncio.events", "get_running_loop");
cached_attr!(
    /// `asyncio.tasks.current_task`
    current_task, "asyncio.tasks", "current_task");

/// The state and per-task machinery of a task group (the attributes asyncio's TaskGroup has).
/// Every field is valid when zeroed (None, false): the garbage collector may visit an instance
/// before `__new__` has filled it in (PyO3 makes `dict` classes through `object.__new__`, which
/// can collect while it sets up the instance dict).
#[pyclass(module = "ferroloop", name = "_TaskGroupCore", subclass, dict, weakref)]
pub struct TaskGroupCore {
    #[pyo3(get, set, name = "_entered")]
    entered: bool,
    #[pyo3(get, set, name = "_exiting")]
    exiting: bool,
    #[pyo3(get, set, name = "_aborting")]
    aborting: bool,
    #[pyo3(get, set, name = "_loop")]
    loop_: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_parent_task")]
    parent_task: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_parent_cancel_requested")]
    parent_cancel_requested: bool,
    #[pyo3(get, set, name = "_tasks")]
    tasks: Option<Py<PySet>>,
    /// A list, or None once `__aexit__` has raised the group's errors.
    #[pyo3(get, set, name = "_errors")]
    errors: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_base_error")]
    base_error: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_on_completed_fut")]
    on_completed_fut: Option<Py<PyAny>>,
}

fn opt(py: Python<'_>, v: &Option<Py<PyAny>>) -> Py<PyAny> {
    match v {
        Some(v) => v.clone_ref(py),
        None => py.None(),
    }
}

fn some(v: Py<PyAny>, py: Python<'_>) -> Option<Py<PyAny>> {
    if v.is_none(py) {
        None
    } else {
        Some(v)
    }
}

/// `TaskGroup._is_base_error`
fn is_base_error(exc: &Bound<'_, PyAny>) -> bool {
    exc.is_instance_of::<PySystemExit>() || exc.is_instance_of::<PyKeyboardInterrupt>()
}

impl TaskGroupCore {
    fn errors_len(&self, py: Python<'_>) -> usize {
        self.errors
            .as_ref()
            .and_then(|e| e.bind(py).cast::<PyList>().ok().map(|l| l.len()))
            .unwrap_or(0)
    }

    /// `self._tasks` (made by `__new__`).
    fn task_set<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySet>> {
        match &self.tasks {
            Some(t) => Ok(t.bind(py).clone()),
            None => Err(PyRuntimeError::new_err(
                "TaskGroup object is not initialized.",
            )),
        }
    }

    /// The group's `_on_task_done` as asyncio registers it (a bound method), for foreign
    /// futures and for `_callbacks`.
    pub(crate) fn bound_done_callback<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(intern!(slf.py(), "_on_task_done"))
    }

    /// True when the group's class keeps this `_on_task_done` (a subclass may replace it, and
    /// then it is called as asyncio would).
    fn native_done_callback(slf: &Bound<'_, Self>) -> PyResult<bool> {
        static OURS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let py = slf.py();
        let ours = OURS.get_or_try_init(py, || {
            py.get_type::<TaskGroupCore>()
                .getattr(intern!(py, "_on_task_done"))
                .map(Bound::unbind)
        })?;
        Ok(slf
            .get_type()
            .getattr(intern!(py, "_on_task_done"))?
            .is(ours))
    }

    /// `TaskGroup._on_task_done(task)`
    pub(crate) fn task_done(slf: &Bound<'_, Self>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (tasks, on_completed) = {
            let g = slf.borrow();
            (g.task_set(py)?, opt(py, &g.on_completed_fut))
        };
        tasks.discard(task)?;
        let on_completed = on_completed.into_bound(py);
        if !on_completed.is_none() && tasks.is_empty() {
            match NativeFuture::of(&on_completed) {
                Some(fut) => {
                    if fut.borrow().state == State::Pending {
                        fut.set_result(true.into_pyobject(py)?.to_owned().into_any().unbind())?;
                    }
                }
                None => {
                    if !on_completed
                        .call_method0(intern!(py, "done"))?
                        .is_truthy()?
                    {
                        on_completed.call_method1(intern!(py, "set_result"), (true,))?;
                    }
                }
            }
        }
        let exc = match NativeFuture::of(task) {
            Some(fut) => {
                if fut.borrow().state == State::Cancelled {
                    return Ok(());
                }
                fut.exception()?
            }
            None => {
                if task.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
                    return Ok(());
                }
                Some(task.call_method0(intern!(py, "exception"))?).filter(|e| !e.is_none())
            }
        };
        let Some(exc) = exc else {
            return Ok(());
        };
        let errors = opt(py, &slf.borrow().errors);
        errors
            .bind(py)
            .call_method1(intern!(py, "append"), (&exc,))?;
        if is_base_error(&exc) && slf.borrow().base_error.is_none() {
            slf.borrow_mut().base_error = Some(exc.clone().unbind());
        }
        let parent = opt(py, &slf.borrow().parent_task).into_bound(py);
        if parent.call_method0(intern!(py, "done"))?.is_truthy()? {
            let context = PyDict::new(py);
            context.set_item(
                intern!(py, "message"),
                format!(
                    "Task {} has errored out but its parent task {} is already completed",
                    task.repr()?,
                    parent.str()?
                ),
            )?;
            context.set_item(intern!(py, "exception"), &exc)?;
            context.set_item(intern!(py, "task"), task)?;
            let loop_ = opt(py, &slf.borrow().loop_).into_bound(py);
            loop_.call_method1(intern!(py, "call_exception_handler"), (context,))?;
            return Ok(());
        }
        let (aborting, requested) = {
            let g = slf.borrow();
            (g.aborting, g.parent_cancel_requested)
        };
        if !aborting && !requested {
            Self::abort(slf)?;
            slf.borrow_mut().parent_cancel_requested = true;
            parent.call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }

    /// `TaskGroup._abort`: cancels every task not done yet.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        slf.borrow_mut().aborting = true;
        let tasks = slf.borrow().task_set(py)?;
        let snapshot: Vec<Bound<'_, PyAny>> = tasks.iter().collect();
        for t in snapshot {
            if !t.call_method0(intern!(py, "done"))?.is_truthy()? {
                t.call_method0(intern!(py, "cancel"))?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl TaskGroupCore {
    #[new]
    fn py_new(py: Python<'_>) -> PyResult<Self> {
        Ok(TaskGroupCore {
            entered: false,
            exiting: false,
            aborting: false,
            loop_: None,
            parent_task: None,
            parent_cancel_requested: false,
            tasks: Some(PySet::empty(py)?.unbind()),
            errors: Some(PyList::empty(py).into_any().unbind()),
            base_error: None,
            on_completed_fut: None,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let mut info = String::new();
        let ntasks = self.tasks.as_ref().map_or(0, |t| t.bind(py).len());
        if ntasks > 0 {
            info.push_str(&format!(" tasks={ntasks}"));
        }
        let nerrors = self.errors_len(py);
        if nerrors > 0 {
            info.push_str(&format!(" errors={nerrors}"));
        }
        if self.aborting {
            info.push_str(" cancelling");
        } else if self.entered {
            info.push_str(" entered");
        }
        format!("<TaskGroup{info}>")
    }

    /// The body of `TaskGroup.__aenter__` (the coroutine itself is in Python).
    fn _enter<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        if slf.borrow().entered {
            return Err(PyRuntimeError::new_err(format!(
                "TaskGroup {} has already been entered",
                slf.repr()?
            )));
        }
        if slf.borrow().loop_.is_none() {
            let l = running_loop(py)?.call0()?.unbind();
            slf.borrow_mut().loop_ = Some(l);
        }
        let loop_ = opt(py, &slf.borrow().loop_);
        let parent = current_task(py)?.call1((loop_,))?.unbind();
        let missing = parent.is_none(py);
        slf.borrow_mut().parent_task = some(parent, py);
        if missing {
            return Err(PyRuntimeError::new_err(format!(
                "TaskGroup {} cannot determine the parent task",
                slf.repr()?
            )));
        }
        slf.borrow_mut().entered = true;
        Ok(slf.clone())
    }

    /// `TaskGroup.create_task(coro, *, name=None, context=None)`
    #[pyo3(signature = (coro, *, name=None, context=None))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let (entered, exiting, aborting, no_tasks) = {
            let g = slf.borrow();
            (g.entered, g.exiting, g.aborting, g.task_set(py)?.is_empty())
        };
        let refuse = if !entered {
            Some("has not been entered")
        } else if exiting && no_tasks {
            Some("is finished")
        } else if aborting {
            Some("is shutting down")
        } else {
            None
        };
        if let Some(why) = refuse {
            return Err(PyRuntimeError::new_err(format!(
                "TaskGroup {} {why}",
                slf.repr()?
            )));
        }
        let loop_ = opt(py, &slf.borrow().loop_).into_bound(py);
        let task = match context.filter(|c| !c.is_none()) {
            None => loop_.call_method1(intern!(py, "create_task"), (coro,))?,
            Some(c) => {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "context"), c)?;
                loop_.call_method(intern!(py, "create_task"), (coro,), Some(&kwargs))?
            }
        };
        if let Some(n) = name.filter(|n| !n.is_none()) {
            crate::stdlib::set_task_name(py)?.call1((&task, n))?;
        }
        match NativeFuture::of(&task) {
            Some(fut) if Self::native_done_callback(slf)? => {
                fut.add_native_callback(Callback::TaskGroup(slf.clone().unbind()))?
            }
            _ => {
                task.call_method1(
                    intern!(py, "add_done_callback"),
                    (Self::bound_done_callback(slf)?,),
                )?;
            }
        }
        slf.borrow().task_set(py)?.add(&task)?;
        Ok(task)
    }

    fn _on_task_done(slf: &Bound<'_, Self>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::task_done(slf, task)
    }

    fn _abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::abort(slf)
    }

    fn _is_base_error(&self, exc: &Bound<'_, PyAny>) -> bool {
        is_base_error(exc)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.parent_task)?;
        visit.call(&self.tasks)?;
        visit.call(&self.errors)?;
        visit.call(&self.base_error)?;
        visit.call(&self.on_completed_fut)
    }

    fn __clear__(&mut self) {
        self.tasks = None;
        self.errors = None;
        self.loop_ = None;
        self.parent_task = None;
        self.base_error = None;
        self.on_completed_fut = None;
    }
}
