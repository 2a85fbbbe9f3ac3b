//! Handle and TimerHandle: a scheduled callback, as returned by call_soon/call_later/call_at.
//!
//! Behaviour, attributes and repr follow asyncio's `events.Handle` and `events.TimerHandle`.
//! A handle owns its callback, its argument tuple and the contextvars.Context it runs in.
//!
//! One-shot handles (call_soon, call_later, call_at, call_soon_threadsafe) are not tracked by
//! the cyclic garbage collector while queued (a loop scheduling many callbacks would otherwise
//! pay for collections that traverse every queued handle). To keep reference cycles through
//! them collectable, one that only the loop holds drops its callback, arguments and context
//! once it has run, as cancel() drops them; one that someone else also holds keeps them, as
//! asyncio's does, and is tracked from then on (`run_handle`). Handles that run repeatedly
//! (readers, writers, signal handlers) and handles made from Python are tracked.

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::capi::ContextSnapshot;
use crate::event_loop::LoopCore;
use crate::future::{Future, NativeFuture, State};
use crate::gil_cell::GilCell;
use crate::{capi, stdlib};
use std::sync::atomic::{AtomicBool, Ordering};

/// A callback scheduled on a loop (asyncio's `events.Handle`).
///
/// Allocated without counting toward the collector's threshold (`capi::install_uncounted_alloc`;
/// a count per handle would start a collection every few hundred call_later/call_soon) and
/// untracked, which one-shot handles want; the handles that live on (readers, writers, handles
/// made from Python) are tracked where they are made.
///
/// Frozen for PyO3: its state sits in a [`GilCell`] (no atomic borrow flag per access).
#[pyclass(module = "ferroloop", subclass, weakref, frozen)]
pub struct Handle {
    pub(crate) state: GilCell<HandleState>,
}

/// What a Handle holds.
pub(crate) struct HandleState {
    pub(crate) callback: Option<Py<PyAny>>,
    /// The callback's arguments. call_later/call_at give a new tuple the collector does not
    /// track (the timer alone owns it, and a queued one-shot handle is untracked too: while the
    /// timer waits, tracking the tuple would only make collections walk it); the handle's
    /// traverse visits its items instead (`capi::visit_args`). It is tracked before anything
    /// else can hold it: before the callback gets it, and when Python code is shown it
    /// (`_args`, repr, comparison, an error report) — see [`share_args`]. (call_soon's tuple,
    /// run in the next turn, stays tracked: untracking it would only cost time.)
    pub(crate) args: Option<Py<PyTuple>>,
    /// The context it runs in: given, or the caller's snapshot (`capi::snapshot_context`),
    /// made into a Context when it runs or is looked at.
    pub(crate) context: Option<ContextSnapshot>,
    pub(crate) loop_: Option<Py<PyAny>>,
    pub(crate) cancelled: bool,
    /// Runs at most once: its references are released after running.
    pub(crate) oneshot: bool,
    pub(crate) source_traceback: Option<Py<PyAny>>,
    repr: Option<Py<PyAny>>,
}

impl Handle {
    pub(crate) fn new(state: HandleState) -> Self {
        Handle {
            state: GilCell::new(state),
        }
    }

    /// A new handle's state. `context` None means a copy of the current context, as asyncio
    /// does (taken as a snapshot: see `capi::snapshot_context`).
    pub(crate) fn build(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        loop_: Py<PyAny>,
        context: Option<ContextSnapshot>,
        debug: bool,
    ) -> PyResult<HandleState> {
        let context = match context {
            Some(c) => c,
            None => capi::snapshot_context(py)?,
        };
        let source_traceback = if debug {
            Some(capture_stack(py)?)
        } else {
            None
        };
        Ok(HandleState {
            callback: Some(callback),
            args: Some(args),
            context: Some(context),
            loop_: Some(loop_),
            cancelled: false,
            oneshot: false,
            source_traceback,
            repr: None,
        })
    }
}

impl Handle {
    /// The Context the callback runs in (made from the snapshot on first use, then kept).
    pub(crate) fn context_object(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut h = self.state.lock(py);
        h.context.as_mut().map(|c| c.context(py)).transpose()
    }

    /// `handle.cancel()` through Python, so subclasses and TimerHandle behave as declared.
    pub(crate) fn cancel_handle(h: &Bound<'_, Handle>) -> PyResult<()> {
        h.call_method0(intern!(h.py(), "cancel")).map(|_| ())
    }
}

/// Tracks a handle's argument tuple (if untracked) before Python code may keep it: from then
/// on a cycle through it is the collector's to find, as for any tuple.
pub(crate) fn share_args(args: &Bound<'_, PyTuple>) {
    // The shared empty tuple holds nothing and is never tracked.
    if !args.is_empty() {
        capi::gc_track(args.as_any());
    }
}

/// The Python stack of whoever is calling into the loop, as asyncio records it in debug mode.
pub(crate) fn capture_stack(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let frame = stdlib::getframe(py)?.call0()?;
    Ok(stdlib::extract_stack(py)?.call1((frame,))?.unbind())
}

/// Runs a handle's callback in its context. Mirrors `events.Handle._run`: SystemExit and
/// KeyboardInterrupt propagate; any other exception goes to the loop's exception handler as
/// "Exception in callback ...".
pub(crate) fn run_handle(py: Python<'_>, handle: &Bound<'_, Handle>) -> PyResult<()> {
    // The context comes out of a sole one-shot handle with the rest (`taken`); a handle that
    // keeps its references makes its Context once and keeps it (`Handle::context_object`).
    let (callback, args, taken) = {
        let mut h = handle.get().state.lock(py);
        if h.cancelled {
            return Ok(());
        }
        // A one-shot handle the loop alone holds lets go of its references as it runs (it is
        // about to be freed or pooled). One that someone else also holds (asyncio.sleep keeps
        // its TimerHandle to cancel it) keeps them, as asyncio's Handle does, and is tracked
        // by the collector from now on, so a cycle through it stays collectable. Freeing the
        // arguments and context with the handle, when its holder lets go, also keeps the
        // collector's allocation count from swinging: a turn that frees them all at once,
        // followed by one that allocates as many, makes the collector run far more often.
        let sole = capi::refcount(handle.as_any()) <= 1;
        if h.oneshot && !sole {
            capi::gc_track(handle.as_any());
        }
        if h.oneshot && sole {
            match (h.callback.take(), h.args.take(), h.context.take()) {
                (Some(cb), Some(args), Some(ctx)) => {
                    (cb.into_bound(py), args.into_bound(py), Some(ctx))
                }
                _ => return Ok(()),
            }
        } else {
            match (&h.callback, &h.args, &h.context) {
                (Some(cb), Some(args), Some(_)) => (
                    cb.clone_ref(py).into_bound(py),
                    args.clone_ref(py).into_bound(py),
                    None,
                ),
                _ => return Ok(()),
            }
        }
    };
    // The Context is made only to run a Python callback in, or to report an error: a known
    // callback reads no context variable.
    let context_of = |taken: Option<ContextSnapshot>| -> PyResult<Option<Bound<'_, PyAny>>> {
        match taken {
            Some(c) => Ok(Some(c.into_context(py)?.into_bound(py))),
            None => Ok(handle.get().context_object(py)?.map(|c| c.into_bound(py))),
        }
    };
    let mut taken = taken;
    let (outcome, context) = match run_known_callback(&callback, &args) {
        Some(outcome) => {
            // Its future is done now (or was cancelled): no task can be parked waiting on it,
            // so a later `cancel()` (asyncio.sleep's `h.cancel()`) has no waiters to look for.
            if let Ok(timer) = handle.cast_exact::<TimerHandle>() {
                timer.get().completes_future.store(false, Ordering::Relaxed);
            }
            (outcome, None)
        }
        None => {
            let Some(context) = context_of(taken.take())? else {
                return Ok(());
            };
            // The callback may keep the tuple (a class given as callback stores its args).
            share_args(&args);
            let outcome = capi::run_in_context(&context, &callback, &args).map(|_| ());
            (outcome, Some(context))
        }
    };
    let mut context = context;
    let result = match outcome {
        Ok(()) => Ok(()),
        Err(err) if escapes_loop(py, &err) => return Err(err),
        Err(err) => {
            // A known callback's error is reported with the handle's context too.
            if context.is_none() {
                context = context_of(taken.take())?;
            }
            match &context {
                Some(ctx) => report_callback_error(py, handle, &callback, &args, ctx, &err),
                None => Ok(()),
            }
        }
    };
    // A Context made for this run alone (nothing kept it) serves the next one.
    if let Some(context) = context {
        capi::recycle_context(context);
    }
    result
}

/// A callback the loop runs natively, without entering the handle's context (neither reads a
/// context variable, so that is not observable): `fut.set_result` bound to a ferroloop future
/// (`future::run_bound_set_result`), and `futures._set_result_unless_cancelled(fut, result)`
/// (the timer callback `asyncio.sleep` schedules) on an exact ferroloop Future, the same two
/// steps (nothing if cancelled, else set_result) without a Python frame. None for any other
/// callback.
fn run_known_callback(
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> Option<PyResult<()>> {
    if let Some(outcome) = crate::future::run_bound_set_result(callback, args) {
        return Some(outcome);
    }
    let fut = future_completed_by(callback, args)?;
    if fut.borrow().state == State::Cancelled {
        return Some(Ok(()));
    }
    Some(args.get_item(1).and_then(|r| fut.set_result(r)))
}

/// The exact ferroloop Future `handle` will complete, when its callback is
/// `futures._set_result_unless_cancelled(fut, result)` (the timer asyncio.sleep schedules).
fn completed_future<'py>(handle: &Bound<'py, Handle>) -> Option<NativeFuture<'py>> {
    let py = handle.py();
    let h = handle.get().state.lock(py);
    match (&h.callback, &h.args) {
        (Some(cb), Some(args)) => future_completed_by(cb.bind(py), args.bind(py)),
        _ => None,
    }
}

/// The exact ferroloop Future that `callback(*args)` completes, when it is
/// `futures._set_result_unless_cancelled(fut, result)`.
fn future_completed_by<'py>(
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> Option<NativeFuture<'py>> {
    let py = callback.py();
    if !callback.is(stdlib::set_result_unless_cancelled(py).ok()?) || args.len() != 2 {
        return None;
    }
    let fut = args.get_item(0).ok()?;
    if !fut.get_type().is(py.get_type::<Future>()) {
        return None;
    }
    NativeFuture::of(&fut)
}

/// `except (SystemExit, KeyboardInterrupt): raise` in `events.Handle._run`: the exceptions a
/// callback lets escape from the loop; every other one goes to the exception handler.
pub(crate) fn escapes_loop(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// What `events.Handle._run` does with the outcome of a callback the loop runs without a
/// Handle object (a task step, a native done callback, a transport or sock_* readiness):
/// SystemExit and KeyboardInterrupt escape; another exception goes to
/// `loop.call_exception_handler({'message': message(), 'exception': exc})`.
pub(crate) fn report_unhandled(
    loop_: &Bound<'_, PyAny>,
    outcome: PyResult<()>,
    message: impl FnOnce() -> PyResult<String>,
) -> PyResult<()> {
    let py = loop_.py();
    match outcome {
        Ok(()) => Ok(()),
        Err(err) if escapes_loop(py, &err) => Err(err),
        Err(err) => {
            let ctx = PyDict::new(py);
            ctx.set_item(intern!(py, "message"), message()?)?;
            ctx.set_item(intern!(py, "exception"), stdlib::exception_value(py, &err))?;
            loop_.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
            Ok(())
        }
    }
}

/// What `events.Handle._run` does with a callback's exception: "Exception in callback ..."
/// to the loop's exception handler, with the handle (and its creation stack, if recorded).
pub(crate) fn report_callback_error(
    py: Python<'_>,
    handle: &Bound<'_, Handle>,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    context: &Bound<'_, PyAny>,
    err: &PyErr,
) -> PyResult<()> {
    share_args(args);
    let source = stdlib::format_callback_source(py)?.call1((callback, args))?;
    let ctx = PyDict::new(py);
    ctx.set_item(
        intern!(py, "message"),
        format!("Exception in callback {}", source.str()?),
    )?;
    ctx.set_item(intern!(py, "exception"), stdlib::exception_value(py, err))?;
    ctx.set_item(intern!(py, "handle"), handle)?;
    let (loop_, tb) = {
        let h = handle.get().state.lock(py);
        (
            h.loop_.as_ref().map(|l| l.clone_ref(py)),
            h.source_traceback.as_ref().map(|t| t.clone_ref(py)),
        )
    };
    if let Some(tb) = tb {
        ctx.set_item(intern!(py, "source_traceback"), tb)?;
    }
    // The handler sees the handle as it was (its repr names the callback); a one-shot
    // handle lets go of its references again afterwards.
    with_references(handle, callback, args, context, || match &loop_ {
        Some(l) => l
            .bind(py)
            .call_method1(intern!(py, "call_exception_handler"), (ctx,))
            .map(|_| ()),
        None => Ok(()),
    })
}

/// Runs `f` with a one-shot handle's references put back (for reporting), then releases them.
pub(crate) fn with_references<R>(
    handle: &Bound<'_, Handle>,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    context: &Bound<'_, PyAny>,
    f: impl FnOnce() -> PyResult<R>,
) -> PyResult<R> {
    // Only a one-shot handle that let go of its references when it ran needs them back.
    let py = handle.py();
    let restore = {
        let h = handle.get().state.lock(py);
        h.oneshot && h.callback.is_none()
    };
    if restore {
        let mut h = handle.get().state.lock(py);
        if !h.cancelled {
            h.callback = Some(callback.clone().unbind());
            h.args = Some(args.clone().unbind());
            h.context = Some(ContextSnapshot::Context(context.clone().unbind()));
        }
    }
    let result = f();
    if restore {
        let taken = {
            let mut h = handle.get().state.lock(py);
            (h.callback.take(), h.args.take(), h.context.take())
        };
        drop(taken);
    }
    result
}

/// `loop.get_debug()`, read directly from a ferroloop loop.
fn loop_debug(py: Python<'_>, loop_: &Option<Py<PyAny>>) -> PyResult<bool> {
    match loop_ {
        Some(l) => match l.bind(py).cast::<LoopCore>() {
            Ok(core) => Ok(core.get().debug_enabled()),
            Err(_) => l
                .bind(py)
                .call_method0(intern!(py, "get_debug"))?
                .is_truthy(),
        },
        None => Ok(false),
    }
}

/// `events.Handle._repr_info`: class name, "cancelled", callback source, creation place.
fn handle_repr_info<'py>(slf: &Bound<'py, Handle>) -> PyResult<Bound<'py, PyList>> {
    let py = slf.py();
    let info = PyList::empty(py);
    info.append(slf.get_type().name()?)?;
    // Taken out first: formatting the callback runs Python code, which may look at the handle.
    let (cancelled, callback, args, source_traceback) = {
        let h = slf.get().state.lock(py);
        (
            h.cancelled,
            h.callback.as_ref().map(|c| c.clone_ref(py)),
            h.args.as_ref().map(|a| a.clone_ref(py)),
            h.source_traceback.as_ref().map(|t| t.clone_ref(py)),
        )
    };
    if cancelled {
        info.append(intern!(py, "cancelled"))?;
    }
    if let Some(cb) = &callback {
        let args: Bound<'_, PyAny> = match &args {
            Some(a) => {
                share_args(a.bind(py));
                a.bind(py).clone().into_any()
            }
            None => py.None().into_bound(py),
        };
        info.append(stdlib::format_callback_source(py)?.call1((cb, args))?)?;
    }
    if let Some(tb) = &source_traceback {
        let tb = tb.bind(py);
        if tb.len()? > 0 {
            let frame = tb.get_item(-1)?;
            info.append(format!(
                "created at {}:{}",
                frame.get_item(0)?.str()?,
                frame.get_item(1)?.str()?
            ))?;
        }
    }
    Ok(info)
}

fn join_repr(py: Python<'_>, info: &Bound<'_, PyList>) -> PyResult<String> {
    let joined = PyString::new(py, " ").call_method1(intern!(py, "join"), (info,))?;
    Ok(format!("<{}>", joined.str()?))
}

#[pymethods]
impl Handle {
    #[new]
    #[pyo3(signature = (callback, args, r#loop, context=None))]
    fn py_new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Option<Py<PyAny>>,
        r#loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let args = match args {
            Some(a) if !a.is_none(py) => a.bind(py).extract::<Bound<'_, PyTuple>>()?.unbind(),
            _ => PyTuple::empty(py).unbind(),
        };
        let debug = loop_debug(py, &Some(r#loop.clone_ref(py)))?;
        let context = ContextSnapshot::given(context.as_ref().map(|c| c.bind(py)));
        Ok(Handle::new(Handle::build(
            py, callback, args, r#loop, context, debug,
        )?))
    }

    /// A handle made from Python is tracked by the collector (it starts untracked); `__new__`
    /// took the arguments.
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(
        slf: &Bound<'_, Self>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        capi::gc_track(slf.as_any());
    }

    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let loop_ = {
            let mut h = slf.get().state.lock(py);
            if h.cancelled {
                return Ok(());
            }
            h.cancelled = true;
            h.loop_.as_ref().map(|l| l.clone_ref(py))
        };
        // A timer that would complete a future lets go of it below: the future is no longer
        // held by the loop, so tasks parked waiting on it go back on the collector's lists.
        if let Ok(timer) = slf.cast_exact::<TimerHandle>() {
            let t = timer.get();
            if t.completes_future.load(Ordering::Relaxed) || t.holds_future() {
                if let Some(fut) = completed_future(slf) {
                    t.stop_holding(&fut);
                    fut.unpark_waiters();
                }
            }
        }
        if loop_debug(py, &loop_)? {
            // Keep a repr for debugging: the callback and arguments are released below.
            let r = slf.repr()?.into_any().unbind();
            slf.get().state.lock(py).repr = Some(r);
        }
        let (cb, args) = {
            let mut h = slf.get().state.lock(py);
            (h.callback.take(), h.args.take())
        };
        drop((cb, args));
        Ok(())
    }

    fn cancelled(&self, py: Python<'_>) -> bool {
        self.state.lock(py).cancelled
    }

    fn get_context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.context_object(py)
    }

    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        run_handle(slf.py(), slf)
    }

    fn _repr_info<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        handle_repr_info(slf)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let kept = slf
            .get()
            .state
            .lock(py)
            .repr
            .as_ref()
            .map(|r| r.clone_ref(py));
        if let Some(r) = kept {
            return Ok(r);
        }
        let info = slf
            .call_method0(intern!(py, "_repr_info"))?
            .cast_into::<PyList>()?;
        Ok(PyString::new(py, &join_repr(py, &info)?)
            .into_any()
            .unbind())
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .lock(py)
            .callback
            .as_ref()
            .map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        let args = self.state.lock(py).args.as_ref().map(|c| c.clone_ref(py));
        if let Some(a) = &args {
            share_args(a.bind(py));
        }
        args
    }

    #[getter]
    fn _cancelled(&self, py: Python<'_>) -> bool {
        self.state.lock(py).cancelled
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.context_object(py)
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.lock(py).loop_.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .lock(py)
            .source_traceback
            .as_ref()
            .map(|c| c.clone_ref(py))
    }

    /// Only tracked handles are traversed: readers, writers, signal handlers, handles made
    /// from Python and one-shot handles kept by someone after running (see `run_handle`).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // None from try_lock: this thread is inside a borrow (the collector started from an
        // allocation there); nothing is visited.
        capi::in_traverse(|py| {
            if let Some(h) = self.state.try_lock(py) {
                visit.call(&h.callback)?;
                capi::visit_args(py, h.args.as_ref(), &visit)?;
                visit.call(h.context.as_ref().map(ContextSnapshot::held))?;
                visit.call(&h.loop_)?;
                visit.call(&h.source_traceback)?;
                visit.call(&h.repr)?;
            }
            Ok(())
        })
    }

    fn __clear__(&self) {
        let taken = Python::attach(|py| {
            self.state.try_lock(py).map(|mut h| {
                (
                    h.callback.take(),
                    h.args.take(),
                    h.context.take(),
                    h.loop_.take(),
                    h.source_traceback.take(),
                    h.repr.take(),
                )
            })
        });
        drop(taken);
    }
}

/// A callback scheduled for a time on the loop clock (asyncio's `events.TimerHandle`).
#[pyclass(module = "ferroloop", extends = Handle, subclass, frozen)]
pub struct TimerHandle {
    pub(crate) when: f64,
    /// In the loop's timer heap (a plain load/store: only threads holding the GIL touch it).
    pub(crate) scheduled: AtomicBool,
    /// Counted in its future's `timer_holds` (see [`TimerHandle::hold_future`]).
    holds_future: AtomicBool,
    /// Its callback completes an exact ferroloop Future (it was counted once) and has not run
    /// yet: only such a timer's cancel looks for tasks parked on the future.
    completes_future: AtomicBool,
}

impl TimerHandle {
    pub(crate) fn new(when: f64) -> Self {
        TimerHandle {
            when,
            scheduled: AtomicBool::new(false),
            holds_future: AtomicBool::new(false),
            completes_future: AtomicBool::new(false),
        }
    }

    /// When the timer enters `loop_`'s heap: if it will complete an exact ferroloop Future of
    /// that loop (asyncio.sleep's timer), the future counts it in `timer_holds`, so that tasks
    /// awaiting it can be parked (`Task::park_on_timer`).
    pub(crate) fn hold_future(
        slf: &Bound<'_, Self>,
        loop_: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) {
        if let Some(fut) = future_completed_by(callback, args) {
            // Only a future of this loop: a task waiting on it runs here, where this heap
            // holds the timer.
            let mut f = fut.borrow_mut();
            if !f.loop_.as_ref().is_some_and(|l| l.is(loop_)) {
                return;
            }
            f.timer_holds += 1;
            drop(f);
            slf.get().holds_future.store(true, Ordering::Relaxed);
            slf.get().completes_future.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn holds_future(&self) -> bool {
        self.holds_future.load(Ordering::Relaxed)
    }

    /// Puts back on the collector's lists the tasks parked waiting on this timer's future.
    pub(crate) fn unpark_waiters(slf: &Bound<'_, Self>) {
        if let Some(fut) = completed_future(slf.as_super()) {
            fut.unpark_waiters();
        }
    }

    /// When the timer leaves the heap (taken out to run, or cancelled): its future no longer
    /// counts it.
    pub(crate) fn release_future(slf: &Bound<'_, Self>) {
        if slf.get().holds_future.load(Ordering::Relaxed) {
            if let Some(fut) = completed_future(slf.as_super()) {
                slf.get().stop_holding(&fut);
            }
        }
    }

    /// `fut` (this timer's) no longer counts the timer, if it did.
    fn stop_holding(&self, fut: &NativeFuture<'_>) {
        if self.holds_future.swap(false, Ordering::Relaxed) {
            let mut f = fut.borrow_mut();
            f.timer_holds = f.timer_holds.saturating_sub(1);
        }
    }

    pub(crate) fn is_scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    pub(crate) fn set_scheduled(&self, scheduled: bool) {
        self.scheduled.store(scheduled, Ordering::Relaxed);
    }
}

#[pymethods]
impl TimerHandle {
    #[new]
    #[pyo3(signature = (when, callback, args, r#loop, context=None))]
    fn py_new(
        py: Python<'_>,
        when: f64,
        callback: Py<PyAny>,
        args: Option<Py<PyAny>>,
        r#loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let base = Handle::py_new(py, callback, args, r#loop, context)?;
        Ok(PyClassInitializer::from(base).add_subclass(TimerHandle::new(when)))
    }

    fn when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.is_scheduled()
    }

    /// `events.TimerHandle.cancel`: tells the loop, so it can purge cancelled timers.
    pub(crate) fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let base = slf.as_super();
        let loop_ = {
            let h = base.get().state.lock(py);
            if !h.cancelled && slf.get().is_scheduled() {
                h.loop_.as_ref().map(|l| l.clone_ref(py))
            } else {
                None
            }
        };
        if let Some(l) = loop_ {
            match l.bind(py).cast::<LoopCore>() {
                Ok(core) => core.get().timer_cancelled(py),
                Err(_) => {
                    l.bind(py)
                        .call_method1(intern!(py, "_timer_handle_cancelled"), (slf,))?;
                }
            }
        }
        Handle::cancel(base)
    }

    /// `events.TimerHandle._repr_info`: the handle's info with `when=...` after the class name
    /// (and after "cancelled").
    fn _repr_info<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let info = handle_repr_info(slf.as_super())?;
        let pos = if slf.as_super().get().state.lock(slf.py()).cancelled {
            2
        } else {
            1
        };
        let when = slf.get().when;
        let when_repr = pyo3::types::PyFloat::new(slf.py(), when).repr()?;
        info.insert(pos, format!("when={}", when_repr))?;
        Ok(info)
    }

    fn __hash__(&self) -> u64 {
        // Python hashes equal floats equally; this only has to agree with __eq__.
        self.when.to_bits()
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let a = slf.get().when;
        let b = other.get().when;
        let result = match op {
            CompareOp::Lt => a < b,
            CompareOp::Le => a < b || slf.is(other) || same_handle(slf, other)?,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a > b || slf.is(other) || same_handle(slf, other)?,
            CompareOp::Eq => same_handle(slf, other)?,
            CompareOp::Ne => !same_handle(slf, other)?,
        };
        Ok(pyo3::types::PyBool::new(py, result)
            .to_owned()
            .into_any()
            .unbind())
    }
}

/// `events.TimerHandle.__eq__`: same deadline, callback, arguments and cancelled state.
fn same_handle(a: &Bound<'_, TimerHandle>, b: &Bound<'_, TimerHandle>) -> PyResult<bool> {
    if a.is(b) {
        return Ok(true);
    }
    let py = a.py();
    if a.get().when != b.get().when {
        return Ok(false);
    }
    // Taken out first: comparing callbacks runs Python code, which may look at the handles.
    let parts = |t: &Bound<'_, TimerHandle>| {
        let h = t.as_super().get().state.lock(py);
        (
            h.cancelled,
            h.callback.as_ref().map(|c| c.clone_ref(py)),
            h.args.as_ref().map(|a| a.clone_ref(py)),
        )
    };
    let (ha, hb) = (parts(a), parts(b));
    for args in [&ha.2, &hb.2].into_iter().flatten() {
        share_args(args.bind(py));
    }
    if ha.0 != hb.0 {
        return Ok(false);
    }
    let eq = |x: &Option<Py<PyAny>>, y: &Option<Py<PyAny>>| -> PyResult<bool> {
        match (x, y) {
            (None, None) => Ok(true),
            (Some(x), Some(y)) => x.bind(py).eq(y.bind(py)),
            _ => Ok(false),
        }
    };
    let args_a = ha.2.map(Py::into_any);
    let args_b = hb.2.map(Py::into_any);
    Ok(eq(&ha.1, &hb.1)? && eq(&args_a, &args_b)?)
}
