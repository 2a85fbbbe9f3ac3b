//! ferroloop.Task: asyncio's Task, native. A Task is a Future that drives a coroutine: each
//! step sends into (or throws into) the coroutine with `PyIter_Send`, and when the coroutine
//! awaits a future the task registers its wake-up on it. On a ferroloop loop a step or wake-up
//! is queued as the task itself (no Handle, no bound method); on another loop it goes through
//! `loop.call_soon` with small callable objects. Behaviour and messages follow asyncio's
//! `tasks.Task` (`__step`, `__wakeup`, cancel/uncancel, naming, repr, the
//! "Task was destroyed but it is pending!" report).

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::asyncio_base::PyAsyncioTask;
use crate::capi::ContextSnapshot;
use crate::event_loop::{LoopCore, Ready};
use crate::future::{
    future_pymethods, Callback, CoreMut, CoreRef, FutureCore, FutureIter, NativeFuture, State,
};
use crate::gil_cell::{GilRef, GilRefCell, GilRefMut};
use crate::handle::escapes_loop;
use crate::{capi, stdlib, task_registry};

/// A coroutine wrapped in a Future (asyncio's `Task`); a subclass of `asyncio.Task`.
///
/// Frozen for PyO3: the state sits in two [`GilRefCell`]s (PyO3's borrow flag is atomic),
/// reached from a bound Task through [`TaskCells`].
#[pyclass(module = "ferroloop", name = "Task", extends = PyAsyncioTask, subclass, frozen)]
pub struct Task {
    /// The Future part (asyncio's Task inherits it from Future).
    pub(crate) core: GilRefCell<FutureCore>,
    pub(crate) st: GilRefCell<TaskState>,
}

/// What a Task holds besides its Future part.
pub(crate) struct TaskState {
    pub(crate) coro: Option<Py<PyAny>>,
    /// `_context`. Unless given, or asked for, only its variables are held between steps (see
    /// [`Task::step_context`]): a pending task then holds no Context, one object fewer for the
    /// collector to count and walk.
    pub(crate) context: Option<ContextSnapshot>,
    name: Option<Py<PyAny>>,
    /// The Task-N number when no name was given (formatted on first use).
    number: u64,
    must_cancel: bool,
    fut_waiter: Option<Py<PyAny>>,
    num_cancels_requested: u64,
    log_destroy_pending: bool,
    /// The weak reference that registers this task in asyncio's task set (see
    /// `task_registry`), taken out of the set when the task is deallocated. Not visited by the
    /// collector: a weak reference without a callback holds nothing.
    registry_ref: Option<Py<PyAny>>,
    /// What [`Task::park`] took off the collector's lists ([`PARKED_TASK`], [`PARKED_CORO`]).
    parked: u8,
    /// Whether a step has run the coroutine (before that it awaits nothing).
    stepped: bool,
    /// The coroutines and generators the parked coroutine awaits through, also taken off the
    /// lists by [`Task::park`], each held here so that none can be freed while untracked
    /// (boxed: most tasks never park one, and a pending task stays small).
    parked_chain: Option<Box<ParkedChain>>,
}

/// The number of the next unnamed Task ("Task-N"), counted from 1. Like `_asyncio`'s C Task on
/// 3.11 (`task_name_counter` in `_asyncio_Task___init___impl`), native Tasks keep their own
/// process-wide counter instead of calling `asyncio.tasks._task_name_counter`, which numbers
/// asyncio's Python Tasks.
static TASK_NUMBER: AtomicU64 = AtomicU64::new(0);

fn next_task_number() -> u64 {
    TASK_NUMBER.fetch_add(1, Ordering::Relaxed) + 1
}

/// How many objects a parked task holds off the collector's lists besides itself and its
/// coroutine ([`TaskState::parked_chain`]): what the coroutine awaits through (`await leaf()`
/// -> `asyncio.sleep(0)` -> its bare-yield generator is three; up to four), and the future a
/// timer will complete.
const PARKED_CHAIN_LEN: usize = 5;

/// [`TaskState::parked_chain`]: the awaited objects taken off the lists, nearest first.
type ParkedChain = [Option<Py<PyAny>>; PARKED_CHAIN_LEN];

/// [`TaskState::parked`]: the Task itself is untracked.
const PARKED_TASK: u8 = 1;
/// [`TaskState::parked`]: its coroutine is untracked.
const PARKED_CORO: u8 = 2;

impl TaskState {
    /// Puts the coroutine back on the collector's lists if [`Task::park`] took it off: before
    /// the task lets go of it (a native coroutine's dealloc requires it tracked).
    ///
    /// The awaited chain is tracked again too; its references are handed back, to be dropped
    /// where the state is no longer borrowed (one may be the last, if the chain was changed
    /// while parked, and a coroutine's finalizer runs Python code).
    #[must_use]
    #[inline]
    fn unpark_coro(&mut self, py: Python<'_>) -> Option<Box<ParkedChain>> {
        if self.parked & PARKED_CORO != 0 {
            self.parked &= !PARKED_CORO;
            if let Some(coro) = &self.coro {
                capi::gc_track(coro.bind(py));
            }
        }
        let chain = self.parked_chain.take()?;
        for awaited in chain.iter().flatten() {
            capi::gc_track(awaited.bind(py));
        }
        Some(chain)
    }
}

impl Drop for TaskState {
    fn drop(&mut self) {
        if self.parked & PARKED_CORO != 0 || self.parked_chain.is_some() {
            Python::attach(|py| drop(self.unpark_coro(py)));
        }
    }
}

/// The cells of a bound Task: its Future part and the rest.
pub(crate) trait TaskCells {
    fn core(&self) -> CoreRef<'_>;
    fn core_mut(&self) -> CoreMut<'_>;
    fn state(&self) -> GilRef<'_, TaskState>;
    fn state_mut(&self) -> GilRefMut<'_, TaskState>;
}

impl TaskCells for Bound<'_, Task> {
    #[track_caller]
    fn core(&self) -> CoreRef<'_> {
        self.get().core.borrow(self.py())
    }

    #[track_caller]
    fn core_mut(&self) -> CoreMut<'_> {
        self.get().core.borrow_mut(self.py())
    }

    #[track_caller]
    fn state(&self) -> GilRef<'_, TaskState> {
        self.get().st.borrow(self.py())
    }

    #[track_caller]
    fn state_mut(&self) -> GilRefMut<'_, TaskState> {
        self.get().st.borrow_mut(self.py())
    }
}

impl Task {
    /// A Task whose Future part is `core`, not started yet.
    pub(crate) fn with_core(core: FutureCore) -> Self {
        Task {
            core: GilRefCell::new(core),
            st: GilRefCell::new(TaskState {
                coro: None,
                context: None,
                name: None,
                number: 0,
                must_cancel: false,
                fut_waiter: None,
                num_cancels_requested: 0,
                log_destroy_pending: true,
                registry_ref: None,
                parked: 0,
                stepped: false,
                parked_chain: None,
            }),
        }
    }
}

/// `self._context` of the task whose state is `cell`: the Context, made from the variables the
/// first time it is asked for and kept from then on; None before the task started.
pub(crate) fn context_of<'py>(
    cell: &GilRefCell<TaskState>,
    py: Python<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(context_made(cell, py)?.0)
}

/// [`context_of`], and whether the Context was made now from the variables. It is made outside
/// any borrow of the state: making it may start a collection, whose finalizers may look at this
/// task (and make it first: then that one it is).
fn context_made<'py>(
    cell: &GilRefCell<TaskState>,
    py: Python<'py>,
) -> PyResult<(Bound<'py, PyAny>, bool)> {
    let vars = match &cell.borrow(py).context {
        Some(ContextSnapshot::Vars(vars)) => vars.clone_ref(py),
        Some(ContextSnapshot::Context(c)) => return Ok((c.bind(py).clone(), false)),
        None => return Ok((py.None().into_bound(py), false)),
    };
    let made = capi::context_from_vars(py, vars)?.into_bound(py);
    let mut t = cell.borrow_mut(py);
    match &t.context {
        Some(ContextSnapshot::Vars(_)) => {
            let old = t
                .context
                .replace(ContextSnapshot::Context(made.clone().unbind()));
            drop(t);
            // The new Context holds the same variables, so this release frees nothing.
            if let Some(old) = old {
                old.release(py);
            }
            Ok((made, true))
        }
        Some(ContextSnapshot::Context(c)) => Ok((c.bind(py).clone(), false)),
        None => Ok((py.None().into_bound(py), false)),
    }
}

impl Task {
    /// `Task.__init__` after the Future part: checks the coroutine, names the task, schedules
    /// its first step and registers it with asyncio.
    pub(crate) fn start(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        if !is_coroutine(coro)? {
            slf.state_mut().log_destroy_pending = false;
            return Err(PyTypeError::new_err(format!(
                "a coroutine was expected, got {}",
                coro.repr()?
            )));
        }
        let (name, number) = match name {
            Some(n) if !n.is_none() => (Some(n.str()?.into_any().unbind()), 0),
            _ => (None, next_task_number()),
        };
        // `contextvars.copy_context()`, or the one given.
        let context = match context {
            Some(c) if !c.is_none() => ContextSnapshot::Context(c.clone().unbind()),
            _ => capi::snapshot_context(py)?,
        };
        let parked_chain = {
            let mut t = slf.state_mut();
            let parked_chain = t.unpark_coro(py);
            t.name = name;
            t.number = number;
            t.num_cancels_requested = 0;
            t.must_cancel = false;
            t.fut_waiter = None;
            t.coro = Some(coro.clone().unbind());
            t.stepped = false;
            t.context = Some(context);
            parked_chain
        };
        drop(parked_chain);
        Self::schedule_step(slf, None)?;
        if let Some(weak) = task_registry::register(slf.as_any())? {
            slf.state_mut().registry_ref = Some(weak);
        }
        Ok(())
    }

    /// The Context a step runs in, and whether it is lent. A task holding only its variables
    /// runs the step in a Context made of them (the pool's spare when there is one) and shows
    /// that Context as its own meanwhile, so `get_context()` during the step returns the
    /// entered one. [`Task::end_step_context`] takes it back.
    pub(crate) fn step_context<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, bool)> {
        context_made(&slf.get().st, slf.py())
    }

    /// After a step in a lent Context: if nobody but the task saw it (no other reference, no
    /// weak reference), the task keeps its variables (as the step left them) instead, and the
    /// Context goes back to the pool. Otherwise the task keeps that Context from then on, as
    /// its identity may now be known.
    pub(crate) fn end_step_context(slf: &Bound<'_, Self>, lent: Bound<'_, PyAny>) {
        let ours = matches!(
            &slf.state().context,
            Some(ContextSnapshot::Context(c)) if c.is(&lent)
        );
        // Two references: the task's and `lent`.
        let Some(vars) = ours.then(|| capi::take_back_context(lent, 2)).flatten() else {
            return;
        };
        let held = slf.state_mut().context.replace(ContextSnapshot::Vars(vars));
        // The Context, now the pool's spare or emptied: nothing is freed but maybe it.
        if let Some(held) = held {
            held.release(slf.py());
        }
    }

    fn loop_of<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        NativeFuture::from(slf).loop_of()
    }

    /// Takes the Task (exactly ferroloop's; a subclass's dealloc is not ours to vouch for) and
    /// its native coroutine off the collector's lists while the task waits in the ready queue
    /// of its loop, running on this thread (the loop parks each step it queues then): a
    /// running loop is alive and its queue holds the
    /// task, so neither can be part of garbage, and collections need not count or walk them
    /// (a created task waits there for its first step; a tree of tasks is mostly such tasks).
    /// [`Task::unpark`] tracks them again when the step is taken off the queue, and the loop
    /// does so for every task still queued when it stops running; the task tracks its
    /// coroutine again before letting go of it (`Task.__init__` again, clear, dealloc).
    ///
    /// After a step (a `sleep(0)` yields), the coroutines and generators the coroutine awaits
    /// through are taken off too and held ([`TaskState::parked_chain`]); they were made in the
    /// step, so without this the collections the rest of the queue starts would walk them (a
    /// sleep(0) tree: 230k objects walked -> 154k).
    pub(crate) fn park(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let Some(mut t) = slf.get().st.try_borrow_mut(py) else {
            return;
        };
        if t.parked != 0 {
            return;
        }
        let mut parked = 0;
        if slf.is_exact_instance_of::<Task>() && capi::is_gc_tracked(slf.as_any()) {
            capi::gc_untrack(slf.as_any());
            parked |= PARKED_TASK;
        }
        if let Some(coro) = &t.coro {
            let coro = coro.bind(py);
            if capi::is_native_coroutine(coro) && capi::is_gc_tracked(coro) {
                capi::gc_untrack(coro);
                parked |= PARKED_CORO;
                // What it awaits (the coroutine `await leaf()` made, asyncio.sleep's, ...) is
                // reachable from it alone as long as it stays suspended: alive while the task
                // is. Each is held here as well, so that one freed early (closed from outside
                // while parked) cannot be freed untracked.
                let mut link = if t.stepped {
                    capi::awaited_by(coro).filter(capi::is_gc_tracked)
                } else {
                    None
                };
                if link.is_some() {
                    let mut chain = Box::new(ParkedChain::default());
                    // The last slot is left for the awaited future (`Task::park_also`).
                    for slot in chain.iter_mut().take(PARKED_CHAIN_LEN - 1) {
                        let Some(awaited) = link.take() else { break };
                        link = capi::awaited_by(&awaited).filter(capi::is_gc_tracked);
                        capi::gc_untrack(&awaited);
                        *slot = Some(awaited.unbind());
                    }
                    t.parked_chain = Some(chain);
                }
            }
        }
        t.parked = parked;
    }

    /// Undoes [`Task::park`]. The state is never borrowed where this is called (a step taken
    /// off the queue, the loop stopping); were it, the task would stay off the lists, and its
    /// coroutine would still be tracked again before the task lets go of it.
    pub(crate) fn unpark(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let parked_chain = {
            let Some(mut t) = slf.get().st.try_borrow_mut(py) else {
                return;
            };
            if t.parked & PARKED_TASK != 0 {
                capi::gc_track(slf.as_any());
            }
            let parked_chain = t.unpark_coro(py);
            t.parked = 0;
            parked_chain
        };
        drop(parked_chain);
    }

    /// `loop.call_soon(self.__step, exc, context=self._context)`.
    fn schedule_step(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let loop_ = Self::loop_of(slf)?;
        if let Ok(native) = loop_.cast::<LoopCore>() {
            return native.get().schedule_ready(
                native.py(),
                Ready::TaskStep(slf.clone().unbind(), exc.map(Bound::unbind)),
            );
        }
        let step = Bound::new(
            py,
            TaskStepMethod {
                task: slf.clone().unbind(),
            },
        )?;
        let context = context_of(&slf.get().st, py)?;
        let call_soon = loop_.getattr(intern!(py, "call_soon"))?;
        let kwnames = stdlib::kwnames(py, stdlib::KwNames::Context)?;
        match exc {
            Some(e) => {
                capi::call_with_kwnames(&call_soon, &[step.as_any(), &e, &context], kwnames)?
            }
            None => capi::call_with_kwnames(&call_soon, &[step.as_any(), &context], kwnames)?,
        };
        Ok(())
    }

    /// `Task.__step`, run in the task's context by the caller.
    pub(crate) fn step(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        if slf.core().state != State::Pending {
            let exc_repr = match &exc {
                Some(e) => e.repr()?.to_string(),
                None => "None".to_string(),
            };
            return Err(stdlib::invalid_state_error(
                py,
                format!("_step(): already done: {}, {}", slf.repr()?, exc_repr),
            ));
        }
        let mut exc = exc;
        if slf.state().must_cancel {
            let is_cancelled = match &exc {
                Some(e) => e.is_instance(stdlib::cancelled_error(py)?)?,
                None => false,
            };
            if !is_cancelled {
                exc = Some(NativeFuture::from(slf).make_cancelled_error()?);
            }
            slf.state_mut().must_cancel = false;
        }
        let (coro, waiter) = {
            let mut t = slf.state_mut();
            t.stepped = true;
            (
                t.coro.as_ref().map(|c| c.clone_ref(py)),
                t.fut_waiter.take(),
            )
        };
        drop(waiter);
        let Some(coro) = coro else {
            return Err(PyRuntimeError::new_err("Task object is not initialized."));
        };
        let coro = coro.into_bound(py);
        let loop_ = Self::loop_of(slf)?;
        enter_task(&loop_, slf.as_any())?;
        let outcome = match &exc {
            None => capi::iter_send_none(&coro),
            Some(e) => match coro.call_method1(intern!(py, "throw"), (e,)) {
                Ok(v) => Ok(capi::SendResult::Yielded(v)),
                Err(err) if err.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                    let value = err.value(py).getattr(intern!(py, "value"))?;
                    Ok(capi::SendResult::Returned(value))
                }
                Err(err) => Err(err),
            },
        };
        let result = Self::after_send(slf, outcome);
        let left = leave_task(&loop_, slf.as_any());
        result.and(left)
    }

    /// The second half of `Task.__step`: what the coroutine's send/throw produced.
    fn after_send(slf: &Bound<'_, Self>, outcome: PyResult<capi::SendResult<'_>>) -> PyResult<()> {
        let py = slf.py();
        let fut = NativeFuture::from(slf);
        match outcome {
            Ok(capi::SendResult::Returned(value)) => {
                if slf.state().must_cancel {
                    slf.state_mut().must_cancel = false;
                    let msg = fut
                        .borrow()
                        .cancel_message
                        .as_ref()
                        .map(|m| m.clone_ref(py));
                    fut.cancel(msg)?;
                } else {
                    fut.set_result(value.unbind())?;
                }
                Ok(())
            }
            Err(err) if err.is_instance(py, stdlib::cancelled_error(py)?) => {
                fut.borrow_mut().cancelled_exc = Some(stdlib::exception_value(py, &err).unbind());
                fut.cancel(None)?;
                Ok(())
            }
            Err(err) if escapes_loop(py, &err) => {
                fut.set_exception(&stdlib::exception_value(py, &err))?;
                Err(err)
            }
            Err(err) => {
                fut.set_exception(&stdlib::exception_value(py, &err))?;
                Ok(())
            }
            Ok(capi::SendResult::Yielded(result)) => Self::handle_yield(slf, result),
        }
    }

    /// The coroutine yielded `result`: wait on it if it is a future of this loop, else
    /// reschedule with asyncio's RuntimeError for the misuse.
    fn handle_yield(slf: &Bound<'_, Self>, result: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        // Exactly ferroloop's Future, Task or gather's future (a subclass may override
        // add_done_callback).
        let ty = result.get_type();
        if ty.is(py.get_type::<crate::future::Future>())
            || ty.is(py.get_type::<Task>())
            || ty.is(py.get_type::<crate::gather::GatheringFuture>())
        {
            if let Some(native) = NativeFuture::of(&result) {
                return Self::wait_on_native(slf, &native);
            }
        }
        // A bare `yield` (asyncio.sleep(0)) gives up one turn. Checked before the attribute,
        // as `task_step_impl` does: asking None for `_asyncio_future_blocking` raises an
        // AttributeError (formatted, then fetched: thousands of instructions) only to answer
        // what `is None` does.
        if result.is_none() {
            return Self::schedule_step(slf, None);
        }
        let blocking = match result.getattr(intern!(py, "_asyncio_future_blocking")) {
            Ok(b) => Some(b),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => None,
            Err(e) => return Err(e),
        };
        match blocking {
            Some(b) if !b.is_none() => {
                let loop_ = Self::loop_of(slf)?;
                let result_loop = stdlib::futures_get_loop(py)?.call1((&result,))?;
                if !result_loop.is(&loop_) {
                    let msg = format!(
                        "Task {} got Future {} attached to a different loop",
                        slf.repr()?,
                        result.repr()?
                    );
                    return Self::schedule_step(slf, Some(runtime_error(py, msg)?));
                }
                if b.is_truthy()? {
                    if result.is(slf) {
                        let msg = format!("Task cannot await on itself: {}", slf.repr()?);
                        return Self::schedule_step(slf, Some(runtime_error(py, msg)?));
                    }
                    result.setattr(intern!(py, "_asyncio_future_blocking"), false)?;
                    let wakeup = Bound::new(
                        py,
                        TaskWakeupMethod {
                            task: slf.clone().unbind(),
                        },
                    )?;
                    let context = context_of(&slf.get().st, py)?;
                    let kwnames = stdlib::kwnames(py, stdlib::KwNames::Context)?;
                    capi::call_with_kwnames(
                        &result.getattr(intern!(py, "add_done_callback"))?,
                        &[wakeup.as_any(), &context],
                        kwnames,
                    )?;
                    Self::set_waiter(slf, result)
                } else {
                    let msg = format!(
                        "yield was used instead of yield from in task {} with {}",
                        slf.repr()?,
                        result.repr()?
                    );
                    Self::schedule_step(slf, Some(runtime_error(py, msg)?))
                }
            }
            _ => {
                let msg = if stdlib::is_generator(py)?.call1((&result,))?.is_truthy()? {
                    format!(
                        "yield was used instead of yield from for generator in task {} with {}",
                        slf.repr()?,
                        result.repr()?
                    )
                } else {
                    format!("Task got bad yield: {}", result.repr()?)
                };
                Self::schedule_step(slf, Some(runtime_error(py, msg)?))
            }
        }
    }

    /// Waiting on a ferroloop Future: the same checks, and a native wake-up registration.
    fn wait_on_native(slf: &Bound<'_, Self>, result: &NativeFuture<'_>) -> PyResult<()> {
        let py = slf.py();
        let (blocking, same_loop) = {
            let f = result.borrow();
            let same = match (&f.loop_, &slf.core().loop_) {
                (Some(a), Some(b)) => a.is(b),
                _ => false,
            };
            (f.blocking, same)
        };
        if !same_loop {
            let msg = format!(
                "Task {} got Future {} attached to a different loop",
                slf.repr()?,
                result.as_any().repr()?
            );
            return Self::schedule_step(slf, Some(runtime_error(py, msg)?));
        }
        if !blocking {
            let msg = format!(
                "yield was used instead of yield from in task {} with {}",
                slf.repr()?,
                result.as_any().repr()?
            );
            return Self::schedule_step(slf, Some(runtime_error(py, msg)?));
        }
        if result.as_any().is(slf) {
            let msg = format!("Task cannot await on itself: {}", slf.repr()?);
            return Self::schedule_step(slf, Some(runtime_error(py, msg)?));
        }
        result.borrow_mut().blocking = false;
        result.add_native_callback(Callback::TaskWakeup(slf.clone().unbind()))?;
        Self::set_waiter(slf, result.as_any().clone())?;
        Self::park_on_timer(slf, result);
        Ok(())
    }

    /// Parks the task (see [`Task::park`]) while it waits on a future that a timer in its
    /// running loop's heap will complete (asyncio.sleep's): the loop holds the timer, the
    /// timer the future, the future the task's wake-up, so the task cannot be garbage until
    /// the timer fires or is cancelled. The future puts it back on the collector's lists when
    /// the timer is cancelled (`Handle.cancel`) or a wake-up removed; a wake-up queued when
    /// the future completes does it when it runs, and the loop when it stops running. A leaf
    /// task of a tree of sleeping tasks is mostly such a task.
    fn park_on_timer(slf: &Bound<'_, Self>, future: &NativeFuture<'_>) {
        {
            let f = future.borrow();
            if f.timer_holds == 0 || f.state != State::Pending {
                return;
            }
        }
        let runs_here = match &slf.core().loop_ {
            Some(l) => l
                .bind(slf.py())
                .cast::<LoopCore>()
                .is_ok_and(|native| native.get().runs_on_this_thread()),
            None => false,
        };
        if runs_here {
            future.borrow_mut().parked_waiters = true;
            Self::park(slf);
            // The future too: the timer holds it (a ferroloop Future may be freed untracked).
            Self::park_also(slf, future.as_any());
        }
    }

    /// Adds `obj`, which the parked task's step will reach, to what [`Task::park`] took off
    /// the collector's lists (after the awaited chain, if a slot is free).
    fn park_also(slf: &Bound<'_, Self>, obj: &Bound<'_, PyAny>) {
        let py = slf.py();
        let Some(mut t) = slf.get().st.try_borrow_mut(py) else {
            return;
        };
        if t.parked & PARKED_CORO == 0 || !capi::is_gc_tracked(obj) {
            return;
        }
        let chain = t
            .parked_chain
            .get_or_insert_with(|| Box::new(ParkedChain::default()));
        if let Some(slot) = chain.iter_mut().find(|slot| slot.is_none()) {
            capi::gc_untrack(obj);
            *slot = Some(obj.clone().unbind());
        }
    }

    /// Remembers what the task waits on; a cancel() that came while stepping is passed on.
    fn set_waiter(slf: &Bound<'_, Self>, waiter: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        slf.state_mut().fut_waiter = Some(waiter.clone().unbind());
        if slf.state().must_cancel {
            let msg = slf.core().cancel_message.as_ref().map(|m| m.clone_ref(py));
            let cancelled = cancel_other(&waiter, msg)?;
            if cancelled {
                slf.state_mut().must_cancel = false;
            }
        }
        Ok(())
    }

    /// `Task.__wakeup(future)`: step with the future's exception, or plainly.
    pub(crate) fn wakeup(slf: &Bound<'_, Self>, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let outcome = if let Some(native) = NativeFuture::of(future) {
            native.result().map(|_| ())
        } else {
            future.call_method0(intern!(py, "result")).map(|_| ())
        };
        match outcome {
            Ok(()) => Self::step(slf, None),
            Err(err) => Self::step(slf, Some(stdlib::exception_value(py, &err))),
        }
    }
}

/// `fut.cancel(msg=msg)` on any future, natively for ferroloop's.
fn cancel_other(fut: &Bound<'_, PyAny>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
    let py = fut.py();
    if let Ok(task) = fut.cast::<Task>() {
        return Task::cancel_impl(task, msg);
    }
    if let Ok(native) = fut.cast::<crate::future::Future>() {
        if native.get_type().is(py.get_type::<crate::future::Future>()) {
            return NativeFuture::from(native).cancel(msg);
        }
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "msg"), msg)?;
    fut.call_method(intern!(py, "cancel"), (), Some(&kwargs))?
        .is_truthy()
}

fn runtime_error<'py>(py: Python<'py>, msg: String) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyRuntimeError::new_err(msg).value(py).clone().into_any())
}

/// `asyncio.coroutines.iscoroutine`, with the common case decided without a call.
fn is_coroutine(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    if capi::is_native_coroutine(obj) {
        return Ok(true);
    }
    stdlib::iscoroutine(obj.py())?.call1((obj,))?.is_truthy()
}

/// `asyncio.tasks._enter_task`, on asyncio's own `_current_tasks` dict.
fn enter_task(loop_: &Bound<'_, PyAny>, task: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = task.py();
    let current = stdlib::current_tasks(py)?;
    // One dict operation in the common case (no task current): insert unless present.
    let before = current.len();
    let other = capi::dict_setdefault(current, loop_, task)?;
    if current.len() > before {
        return Ok(());
    }
    if !other.is_none() {
        return Err(PyRuntimeError::new_err(format!(
            "Cannot enter into task {} while another task {} is being executed.",
            task.repr()?,
            other.repr()?
        )));
    }
    current.set_item(loop_, task)
}

/// `asyncio.tasks._leave_task`: the entry is taken out in one dictionary operation, and put
/// back when it is not `task` (asyncio then leaves it in place).
fn leave_task(loop_: &Bound<'_, PyAny>, task: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = task.py();
    let current = stdlib::current_tasks(py)?;
    let other = match capi::dict_pop(current, loop_)? {
        Some(t) if t.is(task) => return Ok(()),
        Some(other) => {
            current.set_item(loop_, &other)?;
            other.repr()?.to_string()
        }
        None => "None".to_string(),
    };
    Err(PyRuntimeError::new_err(format!(
        "Leaving task {} does not match the current task {other}.",
        task.repr()?,
    )))
}

impl Task {
    /// `Task.cancel`
    pub(crate) fn cancel_impl(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        NativeFuture::from(slf).ensure_alive()?;
        slf.core_mut().log_traceback = false;
        if slf.core().state != State::Pending {
            return Ok(false);
        }
        slf.state_mut().num_cancels_requested += 1;
        let waiter = slf.state().fut_waiter.as_ref().map(|w| w.clone_ref(py));
        if let Some(w) = waiter {
            let msg2 = msg.as_ref().map(|m| m.clone_ref(py));
            if cancel_other(w.bind(py), msg2)? {
                // Leave self._fut_waiter; it may be a Task that catches and ignores the
                // cancellation so we may have to cancel it again later.
                return Ok(true);
            }
        }
        slf.state_mut().must_cancel = true;
        slf.core_mut().cancel_message = msg;
        Ok(true)
    }
}

future_pymethods! {
#[pymethods]
impl Task {
    #[pyo3(signature = (coro, *, r#loop=None, name=None, context=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        coro: &Bound<'_, PyAny>,
        r#loop: Option<Py<PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        NativeFuture::from(slf).init(r#loop)?;
        Task::start(slf, coro, name, context)
    }

    /// A Task not yet initialized; `__init__` starts it (as asyncio's, for subclasses).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Task::with_core(FutureCore::uninit())
    }


    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        Self::cancel_impl(slf, msg)
    }

    fn cancelling(&self, py: Python<'_>) -> u64 {
        self.st.borrow(py).num_cancels_requested
    }

    fn uncancel(&self, py: Python<'_>) -> u64 {
        let mut t = self.st.borrow_mut(py);
        if t.num_cancels_requested > 0 {
            t.num_cancels_requested -= 1;
        }
        t.num_cancels_requested
    }

    fn set_result(&self, _result: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyRuntimeError::new_err(
            "Task does not support set_result operation",
        ))
    }

    fn set_exception(&self, _exception: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyRuntimeError::new_err(
            "Task does not support set_exception operation",
        ))
    }

    fn get_coro(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow(py).coro.as_ref().map(|c| c.clone_ref(py))
    }

    fn get_context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let context = context_of(&self.st, py)?;
        Ok((!context.is_none()).then(|| context.unbind()))
    }

    fn get_name(&self, py: Python<'_>) -> Py<PyAny> {
        let number = {
            let t = self.st.borrow(py);
            if let Some(n) = &t.name {
                return n.clone_ref(py);
            }
            t.number
        };
        let name = PyString::new(py, &format!("Task-{number}"))
            .into_any()
            .unbind();
        self.st.borrow_mut(py).name = Some(name.clone_ref(py));
        name
    }

    fn set_name(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let name = value.str()?.into_any().unbind();
        let old = self.st.borrow_mut(value.py()).name.replace(name);
        drop(old);
        Ok(())
    }

    #[pyo3(signature = (*, limit=None))]
    fn get_stack<'py>(
        slf: &Bound<'py, Self>,
        limit: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let none = py.None().into_bound(py);
        stdlib::task_get_stack(py)?.call1((slf, limit.unwrap_or(&none)))
    }

    #[pyo3(signature = (*, limit=None, file=None))]
    fn print_stack<'py>(
        slf: &Bound<'py, Self>,
        limit: Option<&Bound<'py, PyAny>>,
        file: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let none = py.None().into_bound(py);
        stdlib::task_print_stack(py)?.call1((slf, limit.unwrap_or(&none), file.unwrap_or(&none)))
    }

    fn _repr_info<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        stdlib::task_repr_info(slf.py())?.call1((slf,))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        NativeFuture::from(slf).repr()
    }

    /// As asyncio's `Task.__del__`, for subclasses (whose finalizer calls `__del__`).
    #[pyo3(name = "__del__")]
    fn py_del(slf: &Bound<'_, Self>) -> PyResult<()> {
        <Task as capi::Finalized>::finalize(slf.as_any())
    }

    /// Subclasses keep the destroy-pending report.
    #[classmethod]
    #[pyo3(signature = (**kwargs))]
    fn __init_subclass__(
        cls: &Bound<'_, pyo3::types::PyType>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        crate::future::init_subclass::<Task>(cls, kwargs, "Task")
    }

    #[getter]
    fn _coro(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get_coro(py)
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.get_context(py)
    }

    #[getter]
    fn _fut_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow(py).fut_waiter.as_ref().map(|w| w.clone_ref(py))
    }

    #[getter]
    fn _must_cancel(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).must_cancel
    }

    #[getter]
    fn _num_cancels_requested(&self, py: Python<'_>) -> u64 {
        self.st.borrow(py).num_cancels_requested
    }

    #[getter(_log_destroy_pending)]
    fn get_log_destroy_pending(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).log_destroy_pending
    }

    #[setter(_log_destroy_pending)]
    fn set_log_destroy_pending(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let pending = value.is_truthy()?;
        self.st.borrow_mut(value.py()).log_destroy_pending = pending;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse_fields(&visit)
    }

    fn __clear__(&self) {
        FutureCore::clear_cell(&self.core);
        self.st.clear_with(|t| {
            let parked_chain = Python::attach(|py| t.unpark_coro(py));
            (
                parked_chain,
                t.coro.take(),
                t.context.take(),
                t.name.take(),
                t.fut_waiter.take(),
            )
        });
    }
}
}

impl Task {
    /// What a Task references, for either kind of traverse (see `capi::RawTraverse`). Nothing
    /// of a cell that is exclusively borrowed (the collector started from an allocation there).
    fn traverse_fields<V: capi::Visitor>(&self, visit: &V) -> Result<(), V::Error> {
        FutureCore::traverse_cell(&self.core, visit)?;
        if let Some(t) = self.st.for_traverse() {
            visit.visit(t.coro.as_ref())?;
            visit.visit(t.context.as_ref().map(ContextSnapshot::held))?;
            visit.visit(t.name.as_ref())?;
            visit.visit(t.fut_waiter.as_ref())?;
        }
        Ok(())
    }
}

impl capi::RawTraverse for Task {
    fn traverse_raw(&self, _py: Python<'_>, visit: &capi::GcVisit) -> Result<(), std::ffi::c_int> {
        self.traverse_fields(visit)
    }

    fn base_pointer_offsets() -> Option<&'static [usize]> {
        crate::asyncio_base::task_pointers()
    }
}

impl capi::Finalized for Task {
    /// `Task.__del__`: "Task was destroyed but it is pending!", then the Future's report.
    fn finalize(obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = obj.py();
        if let Ok(task) = obj.cast::<Task>() {
            let cells = (task.get().core.try_borrow(py), task.get().st.try_borrow(py));
            let report = match cells {
                (Some(f), Some(t)) => {
                    if f.state == State::Pending && t.log_destroy_pending {
                        f.loop_.as_ref().map(|l| {
                            (
                                l.clone_ref(py),
                                f.source_traceback.as_ref().map(|s| s.clone_ref(py)),
                            )
                        })
                    } else {
                        None
                    }
                }
                _ => None,
            };
            if let Some((loop_, tb)) = report {
                let context = PyDict::new(py);
                context.set_item(intern!(py, "task"), obj)?;
                context.set_item(
                    intern!(py, "message"),
                    "Task was destroyed but it is pending!",
                )?;
                if let Some(tb) = tb {
                    if tb.bind(py).is_truthy()? {
                        context.set_item(intern!(py, "source_traceback"), tb)?;
                    }
                }
                loop_
                    .bind(py)
                    .call_method1(intern!(py, "call_exception_handler"), (context,))?;
            }
        }
        crate::future::finalize_future(obj)
    }

    fn original_dealloc() -> &'static std::sync::OnceLock<usize> {
        static ORIGINAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        &ORIGINAL
    }

    const HAS_BEFORE_DEALLOC: bool = true;

    /// The task leaves asyncio's task set as its weak reference's callback would take it out.
    fn before_dealloc(obj: &Bound<'_, PyAny>) {
        let weak = obj
            .cast::<Task>()
            .ok()
            .and_then(|t| t.get().st.try_borrow_mut(obj.py())?.registry_ref.take());
        if let Some(weak) = weak {
            task_registry::unregister(obj.py(), weak);
        }
    }
}

/// `task.__step` as a callable, for loops other than ferroloop's.
#[pyclass(module = "ferroloop", name = "TaskStepMethWrapper", frozen)]
pub struct TaskStepMethod {
    task: Py<Task>,
}

#[pymethods]
impl TaskStepMethod {
    #[pyo3(signature = (exc=None))]
    fn __call__(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let exc = exc.filter(|e| !e.is_none());
        Task::step(self.task.bind(py), exc)
    }

    #[getter]
    fn __self__(&self, py: Python<'_>) -> Py<Task> {
        self.task.clone_ref(py)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        format!(
            "<TaskStepMethWrapper object at {:#x}>",
            slf.as_ptr() as usize
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.task)
    }
}

/// `task.__wakeup` as a callable: what `_callbacks` shows, and what other loops call.
#[pyclass(module = "ferroloop", name = "TaskWakeupMethWrapper", frozen)]
pub struct TaskWakeupMethod {
    pub(crate) task: Py<Task>,
}

#[pymethods]
impl TaskWakeupMethod {
    fn __call__(&self, py: Python<'_>, future: &Bound<'_, PyAny>) -> PyResult<()> {
        Task::wakeup(self.task.bind(py), future)
    }

    #[getter]
    fn __self__(&self, py: Python<'_>) -> Py<Task> {
        self.task.clone_ref(py)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<TaskWakeupMethod>()
            .is_ok_and(|o| o.get().task.is(&self.task))
    }

    fn __hash__(&self) -> isize {
        self.task.as_ptr() as isize
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        format!(
            "<TaskWakeupMethWrapper object at {:#x}>",
            slf.as_ptr() as usize
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.task)
    }
}
