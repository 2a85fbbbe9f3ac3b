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
use crate::gil_cell::{GilRefCell, HasStateCell, StateCell};
use crate::stdlib::cached_attr;

cached_attr!(
    /// `asyncio.events.get_running_loop`
    running_loop, "asyncio.events", "get_running_loop");
cached_attr!(
    /// `asyncio.tasks.current_task`
    current_task, "asyncio.tasks", "current_task");

/// The state and per-task machinery of a task group (the attributes asyncio's TaskGroup has).
/// Valid when zeroed (an unborrowed cell, None and false fields): the garbage collector may
/// visit an instance before `__new__` has filled it in (PyO3 makes `dict` classes through
/// `object.__new__`, which can collect while it sets up the instance dict).
///
/// Frozen for PyO3: the state sits in a [`GilRefCell`] (PyO3's borrow flag is atomic); the
/// attributes are its getters and setters.
#[pyclass(
    module = "ferroloop",
    name = "_TaskGroupCore",
    subclass,
    dict,
    weakref,
    frozen
)]
pub struct TaskGroupCore {
    st: GilRefCell<GroupState>,
}

/// What a task group holds (asyncio's TaskGroup attributes of the same names).
pub(crate) struct GroupState {
    entered: bool,
    exiting: bool,
    aborting: bool,
    loop_: Option<Py<PyAny>>,
    parent_task: Option<Py<PyAny>>,
    parent_cancel_requested: bool,
    tasks: Option<Py<PySet>>,
    /// A list, or None once `__aexit__` has raised the group's errors.
    errors: Option<Py<PyAny>>,
    base_error: Option<Py<PyAny>>,
    on_completed_fut: Option<Py<PyAny>>,
}

impl HasStateCell for TaskGroupCore {
    type State = GroupState;
    fn state_cell(&self) -> &GilRefCell<GroupState> {
        &self.st
    }
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

impl GroupState {
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
}

impl TaskGroupCore {
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
            let g = slf.st();
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
        let errors = opt(py, &slf.st().errors);
        errors
            .bind(py)
            .call_method1(intern!(py, "append"), (&exc,))?;
        if is_base_error(&exc) && slf.st().base_error.is_none() {
            slf.st_mut().base_error = Some(exc.clone().unbind());
        }
        let parent = opt(py, &slf.st().parent_task).into_bound(py);
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
            let loop_ = opt(py, &slf.st().loop_).into_bound(py);
            loop_.call_method1(intern!(py, "call_exception_handler"), (context,))?;
            return Ok(());
        }
        let (aborting, requested) = {
            let g = slf.st();
            (g.aborting, g.parent_cancel_requested)
        };
        if !aborting && !requested {
            Self::abort(slf)?;
            slf.st_mut().parent_cancel_requested = true;
            parent.call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }

    /// `TaskGroup._abort`: cancels every task not done yet.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        slf.st_mut().aborting = true;
        let tasks = slf.st().task_set(py)?;
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
            st: GilRefCell::new(GroupState {
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
            }),
        })
    }

    #[getter(_entered)]
    fn get_entered(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).entered
    }

    #[setter(_entered)]
    fn set_entered(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).entered = value;
    }

    #[getter(_exiting)]
    fn get_exiting(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).exiting
    }

    #[setter(_exiting)]
    fn set_exiting(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).exiting = value;
    }

    #[getter(_aborting)]
    fn get_aborting(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).aborting
    }

    #[setter(_aborting)]
    fn set_aborting(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).aborting = value;
    }

    #[getter(_parent_cancel_requested)]
    fn get_parent_cancel_requested(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).parent_cancel_requested
    }

    #[setter(_parent_cancel_requested)]
    fn set_parent_cancel_requested(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).parent_cancel_requested = value;
    }

    #[getter(_loop)]
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        opt(py, &self.st.borrow(py).loop_)
    }

    #[setter(_loop)]
    fn set_loop(&self, py: Python<'_>, value: Py<PyAny>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).loop_, some(value, py));
        drop(old);
    }

    #[getter(_parent_task)]
    fn get_parent_task(&self, py: Python<'_>) -> Py<PyAny> {
        opt(py, &self.st.borrow(py).parent_task)
    }

    #[setter(_parent_task)]
    fn set_parent_task(&self, py: Python<'_>, value: Py<PyAny>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).parent_task, some(value, py));
        drop(old);
    }

    #[getter(_tasks)]
    fn get_tasks(&self, py: Python<'_>) -> Option<Py<PySet>> {
        self.st.borrow(py).tasks.as_ref().map(|t| t.clone_ref(py))
    }

    #[setter(_tasks)]
    fn set_tasks(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = value.py();
        let tasks = if value.is_none() {
            None
        } else {
            Some(value.cast::<PySet>()?.clone().unbind())
        };
        let old = std::mem::replace(&mut self.st.borrow_mut(py).tasks, tasks);
        drop(old);
        Ok(())
    }

    #[getter(_errors)]
    fn get_errors(&self, py: Python<'_>) -> Py<PyAny> {
        opt(py, &self.st.borrow(py).errors)
    }

    #[setter(_errors)]
    fn set_errors(&self, py: Python<'_>, value: Py<PyAny>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).errors, some(value, py));
        drop(old);
    }

    #[getter(_base_error)]
    fn get_base_error(&self, py: Python<'_>) -> Py<PyAny> {
        opt(py, &self.st.borrow(py).base_error)
    }

    #[setter(_base_error)]
    fn set_base_error(&self, py: Python<'_>, value: Py<PyAny>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).base_error, some(value, py));
        drop(old);
    }

    #[getter(_on_completed_fut)]
    fn get_on_completed_fut(&self, py: Python<'_>) -> Py<PyAny> {
        opt(py, &self.st.borrow(py).on_completed_fut)
    }

    #[setter(_on_completed_fut)]
    fn set_on_completed_fut(&self, py: Python<'_>, value: Py<PyAny>) {
        let old = std::mem::replace(
            &mut self.st.borrow_mut(py).on_completed_fut,
            some(value, py),
        );
        drop(old);
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let this = self.st.borrow(py);
        let mut info = String::new();
        let ntasks = this.tasks.as_ref().map_or(0, |t| t.bind(py).len());
        if ntasks > 0 {
            info.push_str(&format!(" tasks={ntasks}"));
        }
        let nerrors = this.errors_len(py);
        if nerrors > 0 {
            info.push_str(&format!(" errors={nerrors}"));
        }
        if this.aborting {
            info.push_str(" cancelling");
        } else if this.entered {
            info.push_str(" entered");
        }
        format!("<TaskGroup{info}>")
    }

    /// The body of `TaskGroup.__aenter__` (the coroutine itself is in Python).
    fn _enter<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        if slf.st().entered {
            return Err(PyRuntimeError::new_err(format!(
                "TaskGroup {} has already been entered",
                slf.repr()?
            )));
        }
        if slf.st().loop_.is_none() {
            let l = running_loop(py)?.call0()?.unbind();
            slf.st_mut().loop_ = Some(l);
        }
        let loop_ = opt(py, &slf.st().loop_);
        let parent = current_task(py)?.call1((loop_,))?.unbind();
        let missing = parent.is_none(py);
        slf.st_mut().parent_task = some(parent, py);
        if missing {
            return Err(PyRuntimeError::new_err(format!(
                "TaskGroup {} cannot determine the parent task",
                slf.repr()?
            )));
        }
        slf.st_mut().entered = true;
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
            let g = slf.st();
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
        let loop_ = opt(py, &slf.st().loop_).into_bound(py);
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
        slf.st().task_set(py)?.add(&task)?;
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
        let Some(this) = self.st.for_traverse() else {
            return Ok(());
        };
        visit.call(&this.loop_)?;
        visit.call(&this.parent_task)?;
        visit.call(&this.tasks)?;
        visit.call(&this.errors)?;
        visit.call(&this.base_error)?;
        visit.call(&this.on_completed_fut)
    }

    fn __clear__(&self) {
        self.st.clear_with(|this| {
            (
                this.tasks.take(),
                this.errors.take(),
                this.loop_.take(),
                this.parent_task.take(),
                this.base_error.take(),
                this.on_completed_fut.take(),
            )
        });
    }
}
