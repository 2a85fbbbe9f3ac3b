//! ferroloop.Future: asyncio's Future, native, and the future state Task shares. Behaviour,
//! messages and private attributes follow asyncio's `futures.Future` (and its C twin
//! `_asyncio.Future`, which is its base type): result/exception/set_*, cancel(msg), done
//! callbacks run through the loop's call_soon with their contexts, `await` through
//! [`FutureIter`], and "exception was never retrieved" reported by a finalizer through the loop's
//! exception handler. [`FutureCore`] is the state, [`NativeFuture`] reaches it in a Future or a
//! Task, and `future_pymethods!` gives both classes the methods asyncio's Task inherits (the
//! most called of them, `result`, `exception`, `cancelled`, `done` and `add_done_callback`,
//! as functions of their own: `install_shared_methods`).

use ferroloop_core::callback_list::CallbackList;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::asyncio_base::PyAsyncioFuture;
use crate::capi::ContextSnapshot;
use crate::event_loop::{LoopCore, Ready};
use crate::gather::GatherCallback;
use crate::gil_cell::{GilCell, GilRef, GilRefCell, GilRefMut};
use crate::task::{Task, TaskWakeupMethod};
use crate::taskgroup::TaskGroupCore;
use crate::{capi, handle, stdlib};

/// A done callback: a Python callable with the context it runs in, or the wake-up of a native
/// Task waiting on this future (no Python object needed until someone looks at `_callbacks`).
pub(crate) enum Callback {
    Python {
        func: Py<PyAny>,
        context: ContextSnapshot,
    },
    /// A bound method nobody else could see when it was added (`self._on_done` written in
    /// the call, as asyncio.TaskGroup adds `_on_task_done`), kept as its function and instance
    /// (`capi::unseen_method_parts`): no method object waits with the future (walked by every
    /// collection meanwhile), and none is made to run it on a ferroloop loop
    /// (`Ready::MethodCallback`); an equal one is made to show it or to report its error.
    Method(Box<MethodCall>),
    TaskWakeup(Py<Task>),
    /// The done callback of a `ferroloop.gather` this future is a child of.
    Gather(Py<GatherCallback>),
    /// `_on_task_done` of the `ferroloop.TaskGroup` this task belongs to.
    TaskGroup(Py<TaskGroupCore>),
}

// A Python callback (function and context snapshot) fits in three words, as a function and
// a Context did: a future's inline callback list stays 32 bytes.
const _: () = assert!(std::mem::size_of::<Callback>() == 24);

/// A bound method taken apart (`Callback::Method`) and the context it runs in:
/// `func(this, future)` is what calling it with the future does.
pub(crate) struct MethodCall {
    pub(crate) func: Py<PyAny>,
    pub(crate) this: Py<PyAny>,
    pub(crate) context: ContextSnapshot,
}

impl MethodCall {
    /// The bound method again (equal to the one given: same `__func__` and `__self__`).
    pub(crate) fn method<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        capi::bound_method(self.func.bind(py), self.this.bind(py))
    }

    pub(crate) fn visit<V: capi::Visitor>(&self, visit: &V) -> Result<(), V::Error> {
        visit.visit(Some(&self.func))?;
        visit.visit(Some(&self.this))?;
        visit.visit(Some(self.context.held()))
    }
}

impl Callback {
    /// The ready-queue entry a ferroloop loop runs for this callback once `future` is done
    /// (None for a Python callback, which goes through call_soon).
    fn ready_item(self, future: Py<PyAny>) -> Result<Ready, Self> {
        match self {
            Callback::TaskWakeup(task) => Ok(Ready::TaskWakeup(task, future)),
            Callback::Gather(cb) => Ok(Ready::GatherChild(cb, future)),
            Callback::TaskGroup(tg) => Ok(Ready::TaskGroupChild(tg, future)),
            python => Err(python),
        }
    }

    /// The callback asyncio would show for this entry (what remove_done_callback compares).
    fn function<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Callback::Python { func, .. } => Ok(func.bind(py).clone()),
            Callback::Method(call) => call.method(py),
            Callback::TaskWakeup(task) => Ok(Bound::new(
                py,
                TaskWakeupMethod {
                    task: task.clone_ref(py),
                },
            )?
            .into_any()),
            Callback::Gather(cb) => Ok(cb.bind(py).clone().into_any()),
            Callback::TaskGroup(tg) => TaskGroupCore::bound_done_callback(tg.bind(py)),
        }
    }

    /// The `(callback, context)` pair asyncio would show for this entry. A Python callback's
    /// context snapshot becomes its Context here, kept from then on.
    fn as_pair<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let func = self.function(py)?;
        let context = match self {
            Callback::Python { context, .. } => context.context(py)?.into_bound(py),
            Callback::Method(call) => call.context.context(py)?.into_bound(py),
            Callback::TaskWakeup(task) => crate::task::context_of(&task.get().st, py)?,
            Callback::Gather(_) | Callback::TaskGroup(_) => capi::copy_context(py)?.into_bound(py),
        };
        Ok((func, context))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    Pending,
    Cancelled,
    Finished,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Cancelled => "CANCELLED",
            State::Finished => "FINISHED",
        }
    }
}

/// The state of every native future, Future or Task: what asyncio's C `FutureObj` holds.
pub(crate) struct FutureCore {
    pub(crate) loop_: Option<Py<PyAny>>,
    pub(crate) state: State,
    pub(crate) result: Option<Py<PyAny>>,
    pub(crate) exception: Option<Py<PyAny>>,
    exception_tb: Option<Py<PyAny>>,
    /// Done callbacks, in registration order.
    pub(crate) callbacks: CallbackList<Callback>,
    pub(crate) log_traceback: bool,
    pub(crate) blocking: bool,
    pub(crate) cancel_message: Option<Py<PyAny>>,
    pub(crate) cancelled_exc: Option<Py<PyAny>>,
    pub(crate) source_traceback: Option<Py<PyAny>>,
    /// How many timers in a loop's heap will complete this future
    /// (`call_later(delay, futures._set_result_unless_cancelled, fut, result)`, which is what
    /// asyncio.sleep schedules): while one does, the running loop holds the future, and
    /// through it the tasks waiting on it.
    pub(crate) timer_holds: u32,
    /// A native Task waiting on it was parked (`Task::park`) because a timer holds it; those
    /// tasks are put back on the collector's lists when the future stops being held
    /// ([`NativeFuture::unpark_waiters`]), or when their wake-up runs.
    pub(crate) parked_waiters: bool,
}

impl FutureCore {
    /// A pending future of `loop_` (with its creation stack in debug mode).
    pub(crate) fn for_loop(py: Python<'_>, loop_: Py<PyAny>, debug: bool) -> PyResult<Self> {
        let source_traceback = if debug {
            Some(handle::capture_stack(py)?)
        } else {
            None
        };
        Ok(FutureCore {
            loop_: Some(loop_),
            source_traceback,
            ..FutureCore::uninit()
        })
    }

    /// A future not bound to a loop yet (`Future.__new__` without `__init__`).
    pub(crate) fn uninit() -> Self {
        FutureCore {
            loop_: None,
            state: State::Pending,
            result: None,
            exception: None,
            exception_tb: None,
            callbacks: CallbackList::default(),
            log_traceback: false,
            blocking: false,
            cancel_message: None,
            cancelled_exc: None,
            source_traceback: None,
            timer_holds: 0,
            parked_waiters: false,
        }
    }

    pub(crate) fn traverse<V: capi::Visitor>(&self, visit: &V) -> Result<(), V::Error> {
        visit.visit(self.loop_.as_ref())?;
        visit.visit(self.result.as_ref())?;
        visit.visit(self.exception.as_ref())?;
        visit.visit(self.exception_tb.as_ref())?;
        for cb in &self.callbacks {
            match cb {
                Callback::Python { func, context } => {
                    visit.visit(Some(func))?;
                    visit.visit(Some(context.held()))?;
                }
                Callback::Method(call) => call.visit(visit)?,
                Callback::TaskWakeup(task) => visit.visit(Some(task))?,
                Callback::Gather(cb) => visit.visit(Some(cb))?,
                Callback::TaskGroup(tg) => visit.visit(Some(tg))?,
            }
        }
        visit.visit(self.cancel_message.as_ref())?;
        visit.visit(self.cancelled_exc.as_ref())?;
        visit.visit(self.source_traceback.as_ref())?;
        Ok(())
    }

    /// `tp_clear`: takes the references out (the state and flags stay), for the caller to drop
    /// once its borrow is released (dropping one can run Python code that reaches this future).
    pub(crate) fn take_references(&mut self) -> FutureCore {
        let kept = FutureCore {
            state: self.state,
            log_traceback: self.log_traceback,
            blocking: self.blocking,
            ..FutureCore::uninit()
        };
        std::mem::replace(self, kept)
    }

    /// `tp_traverse` of a cell holding a FutureCore: nothing is visited while it is exclusively
    /// borrowed (the collector started from an allocation there).
    pub(crate) fn traverse_cell<V: capi::Visitor>(
        cell: &GilRefCell<FutureCore>,
        visit: &V,
    ) -> Result<(), V::Error> {
        match cell.for_traverse() {
            Some(core) => core.traverse(visit),
            None => Ok(()),
        }
    }

    /// `tp_clear` of a cell holding a FutureCore.
    pub(crate) fn clear_cell(cell: &GilRefCell<FutureCore>) {
        cell.clear_with(FutureCore::take_references);
    }

    /// As the C Future: None when there are no callbacks, else a list of (callback, context).
    pub(crate) fn callbacks_list<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        if self.callbacks.is_empty() {
            return Ok(None);
        }
        let items = self
            .callbacks
            .iter_mut()
            .map(|cb| cb.as_pair(py).and_then(|(f, c)| PyTuple::new(py, [f, c])))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Some(PyList::new(py, items)?))
    }
}

/// A result that will arrive later (asyncio's `Future`); a subclass of `asyncio.Future`.
///
/// Frozen for PyO3: the state sits in a [`GilRefCell`] (PyO3's borrow flag is atomic).
#[pyclass(module = "ferroloop", name = "Future", extends = PyAsyncioFuture, subclass, frozen)]
pub struct Future {
    pub(crate) core: GilRefCell<FutureCore>,
}

/// A ferroloop Future or Task (or a subclass of either), whichever its Python type: Future
/// extends `asyncio.Future` and Task extends `asyncio.Task`, so they share no Rust base; both
/// hold a [`FutureCore`], which this reaches.
#[derive(Clone)]
pub(crate) enum NativeFuture<'py> {
    Plain(Bound<'py, Future>),
    Task(Bound<'py, Task>),
}

/// A shared borrow of a native future's [`FutureCore`].
pub(crate) type CoreRef<'a> = GilRef<'a, FutureCore>;

/// An exclusive borrow of a native future's [`FutureCore`].
pub(crate) type CoreMut<'a> = GilRefMut<'a, FutureCore>;

impl<'py> From<&Bound<'py, Future>> for NativeFuture<'py> {
    fn from(f: &Bound<'py, Future>) -> Self {
        NativeFuture::Plain(f.clone())
    }
}

impl<'py> From<&Bound<'py, Task>> for NativeFuture<'py> {
    fn from(t: &Bound<'py, Task>) -> Self {
        NativeFuture::Task(t.clone())
    }
}

/// An owned reference to a native future, kept without its Python type being checked again.
pub(crate) enum OwnedNativeFuture {
    Plain(Py<Future>),
    Task(Py<Task>),
}

impl OwnedNativeFuture {
    pub(crate) fn bind<'py>(&self, py: Python<'py>) -> NativeFuture<'py> {
        match self {
            OwnedNativeFuture::Plain(f) => NativeFuture::Plain(f.bind(py).clone()),
            OwnedNativeFuture::Task(t) => NativeFuture::Task(t.bind(py).clone()),
        }
    }

    fn as_any(&self) -> &Py<PyAny> {
        match self {
            OwnedNativeFuture::Plain(f) => f.as_any(),
            OwnedNativeFuture::Task(t) => t.as_any(),
        }
    }
}

impl<'py> NativeFuture<'py> {
    /// `obj` as a native future, if it is one.
    pub(crate) fn of(obj: &Bound<'py, PyAny>) -> Option<Self> {
        // The exact classes first: a type-pointer comparison each, where a failed subclass
        // check walks the MRO (a Task is no ferroloop.Future).
        if let Some(native) = Self::exact(obj) {
            return Some(native);
        }
        if let Ok(f) = obj.cast::<Future>() {
            return Some(NativeFuture::Plain(f.clone()));
        }
        obj.cast::<Task>()
            .ok()
            .map(|t| NativeFuture::Task(t.clone()))
    }

    /// `obj` as a native future if its type is exactly ferroloop's Future or Task (whose
    /// methods no subclass overrides).
    pub(crate) fn exact(obj: &Bound<'py, PyAny>) -> Option<Self> {
        if let Ok(f) = obj.cast_exact::<Future>() {
            return Some(NativeFuture::Plain(f.clone()));
        }
        obj.cast_exact::<Task>()
            .ok()
            .map(|t| NativeFuture::Task(t.clone()))
    }

    pub(crate) fn as_any(&self) -> &Bound<'py, PyAny> {
        match self {
            NativeFuture::Plain(f) => f.as_any(),
            NativeFuture::Task(t) => t.as_any(),
        }
    }

    pub(crate) fn py(&self) -> Python<'py> {
        self.as_any().py()
    }

    pub(crate) fn unbind(&self) -> OwnedNativeFuture {
        match self {
            NativeFuture::Plain(f) => OwnedNativeFuture::Plain(f.clone().unbind()),
            NativeFuture::Task(t) => OwnedNativeFuture::Task(t.clone().unbind()),
        }
    }

    /// The cell holding the future state.
    fn cell(&self) -> &GilRefCell<FutureCore> {
        match self {
            NativeFuture::Plain(f) => &f.get().core,
            NativeFuture::Task(t) => &t.get().core,
        }
    }

    #[track_caller]
    pub(crate) fn borrow(&self) -> CoreRef<'_> {
        self.cell().borrow(self.py())
    }

    #[track_caller]
    pub(crate) fn borrow_mut(&self) -> CoreMut<'_> {
        self.cell().borrow_mut(self.py())
    }

    pub(crate) fn try_borrow(&self) -> Option<CoreRef<'_>> {
        self.cell().try_borrow(self.py())
    }

    pub(crate) fn try_borrow_mut(&self) -> Option<CoreMut<'_>> {
        self.cell().try_borrow_mut(self.py())
    }

    pub(crate) fn loop_of(&self) -> PyResult<Bound<'py, PyAny>> {
        match &self.borrow().loop_ {
            Some(l) => Ok(l.bind(self.py()).clone()),
            None => Err(PyRuntimeError::new_err("Future object is not initialized.")),
        }
    }

    /// `Future.__schedule_callbacks`: every callback goes to the loop with its context. On a
    /// ferroloop loop this is direct: no call_soon lookup, and a waiting native Task is queued
    /// itself.
    pub(crate) fn schedule_callbacks(&self) -> PyResult<()> {
        let py = self.py();
        // Parked waiters go to the ready queue parked, and are put back when their wake-up
        // runs (or when the loop stops running).
        let callbacks = {
            let mut f = self.borrow_mut();
            f.parked_waiters = false;
            std::mem::take(&mut f.callbacks)
        };
        if callbacks.is_empty() {
            return Ok(());
        }
        let loop_ = self.loop_of()?;
        if let Ok(native) = loop_.cast::<LoopCore>() {
            for cb in callbacks {
                match cb.ready_item(self.as_any().clone().unbind()) {
                    Ok(item) => native.get().schedule_ready(native.py(), item)?,
                    Err(Callback::Python { func, context }) => {
                        LoopCore::schedule_callback(
                            native,
                            func.bind(py),
                            self.as_any(),
                            Some(context),
                        )?;
                    }
                    Err(Callback::Method(call)) => {
                        LoopCore::schedule_method_callback(native, call, self.as_any())?;
                    }
                    Err(_) => unreachable!("ready_item keeps only Python callbacks"),
                }
            }
            return Ok(());
        }
        let call_soon = loop_.getattr(intern!(py, "call_soon"))?;
        let kwnames = stdlib::kwnames(py, stdlib::KwNames::Context)?;
        for mut cb in callbacks {
            let (func, context) = cb.as_pair(py)?;
            capi::call_with_kwnames(&call_soon, &[&func, self.as_any(), &context], kwnames)?;
        }
        Ok(())
    }

    /// Puts the native Tasks waiting on this future that a timer parked
    /// ([`FutureCore::parked_waiters`]) back on the collector's lists: the timer was cancelled,
    /// a wake-up is being removed, or the loop stopped running.
    pub(crate) fn unpark_waiters(&self) {
        let py = self.py();
        let tasks: Vec<Py<Task>> = {
            let Some(mut f) = self.try_borrow_mut() else {
                return;
            };
            if !f.parked_waiters {
                return;
            }
            f.parked_waiters = false;
            f.callbacks
                .iter()
                .filter_map(|cb| match cb {
                    Callback::TaskWakeup(task) => Some(task.clone_ref(py)),
                    _ => None,
                })
                .collect()
        };
        for task in tasks {
            Task::unpark(task.bind(py));
        }
    }

    /// Registers a native Task's wake-up or a gather's done callback (what
    /// `add_done_callback(task.__wakeup)` / `add_done_callback(gather_callback)` do). Already
    /// done: queued at once, natively on a ferroloop loop.
    pub(crate) fn add_native_callback(&self, cb: Callback) -> PyResult<()> {
        self.ensure_alive()?;
        if self.borrow().state == State::Pending {
            self.borrow_mut().callbacks.push(cb);
            return Ok(());
        }
        let loop_ = self.loop_of()?;
        let mut cb = match loop_.cast::<LoopCore>() {
            Ok(native) => match cb.ready_item(self.as_any().clone().unbind()) {
                Ok(item) => return native.get().schedule_ready(native.py(), item),
                Err(cb) => cb,
            },
            Err(_) => cb,
        };
        let (func, context) = cb.as_pair(self.py())?;
        self.add_done_callback(func, Some(&context))
    }

    /// `Future.add_done_callback(fn, *, context=None)`. Takes bound references: what it lets
    /// go of is decref'd at once, also when called from a method trampoline that PyO3 does not
    /// count as attached (where dropping a `Py` defers the decref to PyO3's pool, and a bound
    /// method made for the call would outlive it).
    pub(crate) fn add_done_callback(
        &self,
        func: Bound<'py, PyAny>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let py = self.py();
        self.ensure_alive()?;
        let context = match ContextSnapshot::given(context) {
            Some(c) => c,
            None => capi::snapshot_context(py)?,
        };
        if self.borrow().state != State::Pending {
            let loop_ = self.loop_of()?;
            if let Ok(native) = loop_.cast::<LoopCore>() {
                return LoopCore::schedule_callback(native, &func, self.as_any(), Some(context));
            }
            let call_soon = loop_.getattr(intern!(py, "call_soon"))?;
            capi::call_with_kwnames(
                &call_soon,
                &[&func, self.as_any(), context.into_context(py)?.bind(py)],
                stdlib::kwnames(py, stdlib::KwNames::Context)?,
            )?;
        } else {
            // Two references: ours and the caller's argument (a method made for the call).
            let callback = match capi::unseen_method_parts(&func, 2) {
                Some((func, this)) => Callback::Method(Box::new(MethodCall {
                    func,
                    this,
                    context,
                })),
                None => Callback::Python {
                    func: func.unbind(),
                    context,
                },
            };
            self.borrow_mut().callbacks.push(callback);
        }
        Ok(())
    }

    /// `Future.remove_done_callback`: removes every registration of `fn`; returns how many
    /// there were.
    pub(crate) fn remove_done_callback(&self, func: &Bound<'_, PyAny>) -> PyResult<usize> {
        let py = self.py();
        self.ensure_alive()?;
        // A removed wake-up would leave its task untracked and held by nothing.
        self.unpark_waiters();
        let callbacks = std::mem::take(&mut self.borrow_mut().callbacks);
        let mut kept = CallbackList::default();
        let mut removed = Vec::new();
        let mut error = None;
        for cb in callbacks {
            let matches = if error.is_some() {
                Ok(false)
            } else {
                // PyObject_RichCompareBool, as the C Future's remove_done_callback: identity
                // first, then ==.
                cb.function(py)
                    .and_then(|f| if f.is(func) { Ok(true) } else { f.eq(func) })
            };
            match matches {
                Ok(true) => removed.push(cb),
                Ok(false) => kept.push(cb),
                Err(e) => {
                    error = Some(e);
                    kept.push(cb);
                }
            }
        }
        // Callbacks added while comparing (a custom __eq__) stay, after the kept ones.
        {
            let mut f = self.borrow_mut();
            let added = std::mem::take(&mut f.callbacks);
            kept.extend(added);
            f.callbacks = kept;
        }
        let count = removed.len();
        drop(removed);
        match error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// `Future._make_cancelled_error`
    pub(crate) fn make_cancelled_error(&self) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py();
        if let Some(exc) = self.borrow_mut().cancelled_exc.take() {
            return Ok(exc.into_bound(py));
        }
        let cls = stdlib::cancelled_error(py)?;
        let message = self
            .borrow()
            .cancel_message
            .as_ref()
            .map(|m| m.clone_ref(py));
        let exc = match message {
            Some(m) => cls.call1((m,))?,
            None => cls.call0()?,
        };
        Ok(exc)
    }

    /// `Future.__init__(*, loop=None)`: (re)binds the future to a loop, fresh.
    pub(crate) fn init(&self, r#loop: Option<Py<PyAny>>) -> PyResult<()> {
        let py = self.py();
        let loop_ = match r#loop {
            Some(l) if !l.is_none(py) => l,
            _ => stdlib::get_event_loop(py)?.call0()?.unbind(),
        };
        let debug = loop_
            .bind(py)
            .call_method0(intern!(py, "get_debug"))?
            .is_truthy()?;
        let fresh = FutureCore::for_loop(py, loop_, debug)?;
        let old = std::mem::replace(&mut *self.borrow_mut(), fresh);
        drop(old);
        Ok(())
    }

    /// The C Future's ENSURE_FUTURE_ALIVE: methods that need the loop refuse an uninitialized
    /// future.
    pub(crate) fn ensure_alive(&self) -> PyResult<()> {
        if self.borrow().loop_.is_none() {
            return Err(PyRuntimeError::new_err("Future object is not initialized."));
        }
        Ok(())
    }

    /// set_result/set_exception on a done future: asyncio's C Future (`future_set_result`)
    /// says only "invalid state" (the Python Future names the state and the future).
    fn check_state_pending(&self) -> PyResult<()> {
        self.ensure_alive()?;
        if self.borrow().state != State::Pending {
            return Err(stdlib::invalid_state_error(self.py(), "invalid state"));
        }
        Ok(())
    }

    /// `Future.set_result`. The result becomes a `Py` only once the state is checked: a
    /// `Bound` refused here is decref'd at once, also from a trampoline PyO3 does not count as
    /// attached (see capi's method trampolines).
    pub(crate) fn set_result(&self, result: impl Into<Py<PyAny>>) -> PyResult<()> {
        self.check_state_pending()?;
        {
            let mut f = self.borrow_mut();
            f.result = Some(result.into());
            f.state = State::Finished;
        }
        self.schedule_callbacks()
    }

    pub(crate) fn set_exception(&self, exception: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = self.py();
        self.check_state_pending()?;
        let exception = if exception.is_instance_of::<PyType>() {
            exception.call0()?
        } else {
            exception.clone()
        };
        if !exception.is_instance(&py.get_type::<pyo3::exceptions::PyBaseException>())? {
            return Err(PyTypeError::new_err("invalid exception object"));
        }
        if exception.get_type().is(py.get_type::<PyStopIteration>()) {
            return Err(PyTypeError::new_err(
                "StopIteration interacts badly with generators and cannot be raised into a Future",
            ));
        }
        let tb = exception.getattr(intern!(py, "__traceback__"))?;
        {
            let mut f = self.borrow_mut();
            f.exception = Some(exception.unbind());
            f.exception_tb = if tb.is_none() {
                None
            } else {
                Some(tb.unbind())
            };
            f.state = State::Finished;
        }
        self.schedule_callbacks()?;
        self.borrow_mut().log_traceback = true;
        Ok(())
    }

    /// `Future.cancel` (a Task's cancel is `Task::cancel_impl`).
    pub(crate) fn cancel(&self, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        self.ensure_alive()?;
        {
            let mut f = self.borrow_mut();
            f.log_traceback = false;
            if f.state != State::Pending {
                return Ok(false);
            }
            f.state = State::Cancelled;
            f.cancel_message = msg;
        }
        self.schedule_callbacks()?;
        Ok(true)
    }

    pub(crate) fn result(&self) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py();
        let state = self.borrow().state;
        match state {
            State::Cancelled => Err(capi::raise_instance(self.make_cancelled_error()?)),
            // The C Future's wording (`future_get_result`); the Python Future says "not ready".
            State::Pending => Err(stdlib::invalid_state_error(py, "Result is not set.")),
            State::Finished => {
                let mut f = self.borrow_mut();
                f.log_traceback = false;
                if let Some(exc) = &f.exception {
                    let exc = exc.bind(py).clone();
                    let tb = f.exception_tb.as_ref().map(|t| t.bind(py).clone());
                    drop(f);
                    if let Some(tb) = tb {
                        exc.call_method1(intern!(py, "with_traceback"), (tb,))?;
                    }
                    return Err(capi::raise_instance(exc));
                }
                Ok(match &f.result {
                    Some(r) => r.bind(py).clone(),
                    None => py.None().into_bound(py),
                })
            }
        }
    }

    pub(crate) fn exception(&self) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = self.py();
        let state = self.borrow().state;
        match state {
            State::Cancelled => Err(capi::raise_instance(self.make_cancelled_error()?)),
            State::Pending => Err(stdlib::invalid_state_error(py, "Exception is not set.")),
            State::Finished => {
                let mut f = self.borrow_mut();
                f.log_traceback = false;
                Ok(f.exception.as_ref().map(|e| e.bind(py).clone()))
            }
        }
    }

    /// `repr(future)`: `<ClassName info...>` with asyncio's `_repr_info`.
    pub(crate) fn repr(&self) -> PyResult<String> {
        let py = self.py();
        self.ensure_alive()?;
        let obj = self.as_any();
        let info = obj.call_method0(intern!(py, "_repr_info"))?;
        let joined = PyString::new(py, " ").call_method1(intern!(py, "join"), (info,))?;
        Ok(format!("<{} {}>", obj.get_type().name()?, joined.str()?))
    }
}

/// The methods and attributes Future and Task share (asyncio's Task inherits them from
/// Future; here each class gets its own copy, since they share no Rust base), added to the
/// class's own `#[pymethods]` block, which starts with its `__init__`. (`__init__`'s return
/// type is written here: PyO3's code for the slot names locals at both the attribute's and the
/// return type's spans, which must share this macro's hygiene.)
macro_rules! future_pymethods {
    (#[$attr:meta] impl $ty:ty {
        #[pyo3(signature = $sig:tt)]
        fn __init__($($param:tt)*) -> PyResult<()> $init:block
        $($own:tt)*
    }) => {
        #[$attr]
        impl $ty {
            #[pyo3(signature = $sig)]
            fn __init__($($param)*) -> PyResult<()> $init

            fn get_loop<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
                NativeFuture::from(slf).loop_of()
            }

            fn remove_done_callback(
                slf: &Bound<'_, Self>,
                r#fn: &Bound<'_, PyAny>,
            ) -> PyResult<usize> {
                NativeFuture::from(slf).remove_done_callback(r#fn)
            }

            fn _make_cancelled_error<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
                NativeFuture::from(slf).make_cancelled_error()
            }

            fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, FutureIter>> {
                let fut = NativeFuture::from(slf);
                fut.ensure_alive()?;
                FutureIter::new(slf.py(), fut.unbind())
            }

            fn __iter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, FutureIter>> {
                Self::__await__(slf)
            }

            #[classmethod]
            fn __class_getitem__<'py>(
                cls: &Bound<'py, pyo3::types::PyType>,
                item: &Bound<'py, PyAny>,
            ) -> PyResult<Bound<'py, PyAny>> {
                let py = cls.py();
                py.import(intern!(py, "types"))?
                    .getattr(intern!(py, "GenericAlias"))?
                    .call1((cls, item))
            }

            #[getter]
            fn _state(&self, py: Python<'_>) -> &'static str {
                self.core.borrow(py).state.name()
            }

            #[getter]
            fn _result(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.core.borrow(py).result.as_ref().map(|r| r.clone_ref(py))
            }

            #[getter]
            fn _exception(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.core.borrow(py).exception.as_ref().map(|r| r.clone_ref(py))
            }

            #[getter]
            fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.core.borrow(py).loop_.as_ref().map(|r| r.clone_ref(py))
            }

            #[getter]
            fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.core.borrow(py).source_traceback.as_ref().map(|r| r.clone_ref(py))
            }

            /// As the C Future: None when there are no callbacks, else a list of (callback,
            /// context).
            #[getter]
            fn _callbacks<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, pyo3::types::PyList>>> {
                self.core.borrow_mut(py).callbacks_list(py)
            }

            #[getter(_log_traceback)]
            fn get_log_traceback(&self, py: Python<'_>) -> bool {
                self.core.borrow(py).log_traceback
            }

            #[setter(_log_traceback)]
            fn set_log_traceback(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
                if value.is_truthy()? {
                    return Err(pyo3::exceptions::PyValueError::new_err(
                        "_log_traceback can only be set to False",
                    ));
                }
                self.core.borrow_mut(value.py()).log_traceback = false;
                Ok(())
            }

            #[getter(_asyncio_future_blocking)]
            fn get_asyncio_future_blocking(&self, py: Python<'_>) -> bool {
                self.core.borrow(py).blocking
            }

            #[setter(_asyncio_future_blocking)]
            fn set_asyncio_future_blocking(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
                let blocking = value.is_truthy()?;
                self.core.borrow_mut(value.py()).blocking = blocking;
                Ok(())
            }

            #[getter(_cancel_message)]
            fn get_cancel_message(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.core.borrow(py).cancel_message.as_ref().map(|r| r.clone_ref(py))
            }

            #[setter(_cancel_message)]
            fn set_cancel_message(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
                let old = std::mem::replace(&mut self.core.borrow_mut(py).cancel_message, value);
                drop(old);
            }

            $($own)*
        }
    };
}
pub(crate) use future_pymethods;

future_pymethods! {
#[pymethods]
impl Future {
    #[pyo3(signature = (*, r#loop=None))]
    fn __init__(slf: &Bound<'_, Self>, r#loop: Option<Py<PyAny>>) -> PyResult<()> {
        NativeFuture::from(slf).init(r#loop)
    }

    /// A Future not yet initialized: `__init__` binds it to a loop (as the C Future, so that
    /// a subclass skipping `super().__init__()` gets clear errors, not a crash).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Future {
            core: GilRefCell::new(FutureCore::uninit()),
        }
    }

    /// As the C Future's `__del__`, for subclasses that define their own and call super().
    #[pyo3(name = "__del__")]
    fn py_del(slf: &Bound<'_, Self>) -> PyResult<()> {
        finalize_future(slf.as_any())
    }

    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        NativeFuture::from(slf).cancel(msg)
    }

    fn _repr_info<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        stdlib::future_repr_info(slf.py())?.call1((slf,))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        NativeFuture::from(slf).repr()
    }

    /// Subclasses keep the "exception was never retrieved" report.
    #[classmethod]
    #[pyo3(signature = (**kwargs))]
    fn __init_subclass__(
        cls: &Bound<'_, PyType>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        init_subclass::<Future>(cls, kwargs, "Future")
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        FutureCore::traverse_cell(&self.core, &visit)
    }

    fn __clear__(&self) {
        FutureCore::clear_cell(&self.core);
    }
}
}

impl capi::RawTraverse for Future {
    fn traverse_raw(&self, _py: Python<'_>, visit: &capi::GcVisit) -> Result<(), std::ffi::c_int> {
        FutureCore::traverse_cell(&self.core, visit)
    }

    fn base_pointer_offsets() -> Option<&'static [usize]> {
        crate::asyncio_base::future_pointers()
    }
}

/// The receiver of a Future method stored by [`install_base_methods`]: a ferroloop Future or
/// Task, else the TypeError a method descriptor gives.
fn receiver<'py>(slf: &Bound<'py, PyAny>, name: &str) -> PyResult<NativeFuture<'py>> {
    NativeFuture::of(slf).ok_or_else(|| {
        let tp = slf.get_type();
        PyTypeError::new_err(format!(
            "descriptor '{name}' for 'ferroloop.Future' objects doesn't apply to a '{}' object",
            tp.fully_qualified_name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

/// `Future.set_result(result, /)`
struct SetResult;

impl capi::MethO for SetResult {
    const NAME: &'static std::ffi::CStr = c"set_result";
    const DOC: &'static std::ffi::CStr = c"Mark the future done and set its result.";
    fn call<'py>(slf: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        receiver(slf, "set_result")?.set_result(arg.clone())?;
        Ok(slf.py().None().into_bound(slf.py()))
    }
}

/// `Future.set_exception(exception, /)`
struct SetException;

impl capi::MethO for SetException {
    const NAME: &'static std::ffi::CStr = c"set_exception";
    const DOC: &'static std::ffi::CStr = c"Mark the future done and set an exception.";
    fn call<'py>(slf: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        receiver(slf, "set_exception")?.set_exception(arg)?;
        Ok(slf.py().None().into_bound(slf.py()))
    }
}

/// Future and Task: the classes whose instances are native futures. (`native` is
/// `NativeFuture::from`, which a trait's where-clause could not carry to the generic impls.)
trait FutureClass: pyo3::PyTypeInfo {
    fn native<'py>(slf: &Bound<'py, Self>) -> NativeFuture<'py>;
}

impl FutureClass for Future {
    fn native<'py>(slf: &Bound<'py, Self>) -> NativeFuture<'py> {
        NativeFuture::from(slf)
    }
}

impl FutureClass for Task {
    fn native<'py>(slf: &Bound<'py, Self>) -> NativeFuture<'py> {
        NativeFuture::from(slf)
    }
}

/// `Future.result()`, for Future (C = Future) and Task (C = Task).
struct ResultMethod<C>(std::marker::PhantomData<C>);

impl<C: FutureClass> capi::MethNoArgs for ResultMethod<C> {
    type Owner = C;
    const NAME: &'static std::ffi::CStr = c"result";
    const DOC: &'static std::ffi::CStr =
        c"result($self, /)\n--\n\nReturn the result this future represents.";
    fn call<'py>(slf: &Bound<'py, C>) -> PyResult<Bound<'py, PyAny>> {
        C::native(slf).result()
    }
}

/// `Future.exception()`
struct ExceptionMethod<C>(std::marker::PhantomData<C>);

impl<C: FutureClass> capi::MethNoArgs for ExceptionMethod<C> {
    type Owner = C;
    const NAME: &'static std::ffi::CStr = c"exception";
    const DOC: &'static std::ffi::CStr =
        c"exception($self, /)\n--\n\nReturn the exception that was set on this future.";
    fn call<'py>(slf: &Bound<'py, C>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        Ok(C::native(slf)
            .exception()?
            .unwrap_or_else(|| py.None().into_bound(py)))
    }
}

/// `Future.cancelled()`
struct CancelledMethod<C>(std::marker::PhantomData<C>);

impl<C: FutureClass> capi::MethNoArgs for CancelledMethod<C> {
    type Owner = C;
    const NAME: &'static std::ffi::CStr = c"cancelled";
    const DOC: &'static std::ffi::CStr =
        c"cancelled($self, /)\n--\n\nReturn True if the future was cancelled.";
    fn call<'py>(slf: &Bound<'py, C>) -> PyResult<Bound<'py, PyAny>> {
        let cancelled = C::native(slf).borrow().state == State::Cancelled;
        Ok(PyBool::new(slf.py(), cancelled).to_owned().into_any())
    }
}

/// `Future.done()`
struct DoneMethod<C>(std::marker::PhantomData<C>);

impl<C: FutureClass> capi::MethNoArgs for DoneMethod<C> {
    type Owner = C;
    const NAME: &'static std::ffi::CStr = c"done";
    const DOC: &'static std::ffi::CStr =
        c"done($self, /)\n--\n\nReturn True if the future is done.";
    fn call<'py>(slf: &Bound<'py, C>) -> PyResult<Bound<'py, PyAny>> {
        let done = C::native(slf).borrow().state != State::Pending;
        Ok(PyBool::new(slf.py(), done).to_owned().into_any())
    }
}

/// `Future.add_done_callback(fn, /, *, context=None)`, with the C method's argument errors.
struct AddDoneCallbackMethod<C>(std::marker::PhantomData<C>);

impl<C: FutureClass> capi::MethFastcall for AddDoneCallbackMethod<C> {
    type Owner = C;
    const NAME: &'static std::ffi::CStr = c"add_done_callback";
    const DOC: &'static std::ffi::CStr = c"add_done_callback($self, fn, /, *, context=None)\n--\n\nAdd a callback to be run when the future becomes done.";
    fn call<'py>(
        slf: &Bound<'py, C>,
        args: &capi::FastArgs<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = args.py();
        if args.len() != 1 {
            return Err(PyTypeError::new_err(format!(
                "add_done_callback() takes exactly 1 positional argument ({} given)",
                args.len()
            )));
        }
        let context = if args.no_keywords() {
            None
        } else {
            let [context] = args.c_keywords("add_done_callback", ["context"])?;
            context.map(|c| c.to_owned())
        };
        C::native(slf).add_done_callback(args.get(0).to_owned(), context.as_ref())?;
        Ok(py.None().into_bound(py))
    }
}

/// Gives Future and Task the methods they share with asyncio's Future that a task, a gather
/// or a TaskGroup calls most as functions of their own: `result`, `exception`, `cancelled`
/// and `done` as `METH_NOARGS` (`capi::MethNoArgs`), `add_done_callback` as `METH_FASTCALL`
/// (`capi::MethFastcall`). Each call costs about 40 to 80 instructions less than through
/// PyO3's generated method.
fn install_shared_methods<C: FutureClass>(py: Python<'_>) -> PyResult<()> {
    capi::install_meth_noargs::<ResultMethod<C>>(py)?;
    capi::install_meth_noargs::<ExceptionMethod<C>>(py)?;
    capi::install_meth_noargs::<CancelledMethod<C>>(py)?;
    capi::install_meth_noargs::<DoneMethod<C>>(py)?;
    capi::install_meth_fastcall::<AddDoneCallbackMethod<C>>(py)
}

/// Gives ferroloop.Future the methods a Task overrides (set_result, set_exception) as
/// descriptors that also accept a ferroloop Task: Task is a Future in asyncio, and
/// `Future.set_result(task, ...)` sets the task's result there. Also installs the shared
/// methods of `install_shared_methods`.
pub(crate) fn install_base_methods(py: Python<'_>) -> PyResult<()> {
    let ty = py.get_type::<Future>();
    let owner = py.get_type::<PyAsyncioFuture>();
    install_shared_methods::<Future>(py)?;
    install_shared_methods::<Task>(py)?;
    let set_result = capi::install_meth_o::<SetResult>(&ty, &owner)?;
    // Installed once per process (the type is static); a second call finds it set.
    let _ = SET_RESULT_METHOD.set(set_result);
    capi::install_meth_o::<SetException>(&ty, &owner)?;
    Ok(())
}

/// The identity of `Future.set_result` (as installed by `install_base_methods`).
static SET_RESULT_METHOD: std::sync::OnceLock<capi::MethodDefId> = std::sync::OnceLock::new();

/// Runs `callback(*args)` when it is `fut.set_result` bound to a future (one argument): the
/// method itself, without the call machinery or a Context to run in, which it would not read
/// (set_result reads no context variable; the done callbacks it schedules run in the contexts
/// they were added with). None for any other callback.
pub(crate) fn run_bound_set_result(
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> Option<PyResult<()>> {
    let fut = capi::bound_method_self(callback, *SET_RESULT_METHOD.get()?)?;
    if args.len() != 1 {
        return None;
    }
    let result = args.get_item(0).ok()?;
    Some(<SetResult as capi::MethO>::call(&fut, &result).map(drop))
}

/// `__init_subclass__` of Future and Task: a Python subclass keeps the Rust finalizer of `T`
/// (`object.__init_subclass__` takes no keyword arguments, nor does this).
pub(crate) fn init_subclass<T: capi::Finalized>(
    cls: &Bound<'_, PyType>,
    kwargs: Option<&Bound<'_, PyDict>>,
    owner: &str,
) -> PyResult<()> {
    if kwargs.is_some_and(|k| !k.is_empty()) {
        return Err(PyTypeError::new_err(format!(
            "{owner}.__init_subclass__() takes no keyword arguments"
        )));
    }
    capi::inherit_finalizer::<T>(cls);
    Ok(())
}

/// The finalizer of Future objects: asyncio's "exception was never retrieved" report
/// (`Future.__del__`), through the loop's exception handler.
pub(crate) fn finalize_future(obj: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = obj.py();
    let Some(fut) = NativeFuture::of(obj) else {
        return Ok(());
    };
    let (log, loop_, exc, tb) = {
        let Some(f) = fut.try_borrow() else {
            return Ok(());
        };
        if !f.log_traceback {
            // The common case (every future whose outcome was seen): nothing to report.
            return Ok(());
        }
        (
            f.log_traceback,
            f.loop_.as_ref().map(|l| l.clone_ref(py)),
            f.exception.as_ref().map(|e| e.clone_ref(py)),
            f.source_traceback.as_ref().map(|t| t.clone_ref(py)),
        )
    };
    let (true, Some(loop_)) = (log, loop_) else {
        return Ok(());
    };
    let context = PyDict::new(py);
    context.set_item(
        intern!(py, "message"),
        format!("{} exception was never retrieved", obj.get_type().name()?),
    )?;
    context.set_item(intern!(py, "exception"), exc)?;
    context.set_item(intern!(py, "future"), obj)?;
    if let Some(tb) = tb {
        if tb.bind(py).is_truthy()? {
            context.set_item(intern!(py, "source_traceback"), tb)?;
        }
    }
    loop_
        .bind(py)
        .call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}

/// The iterator `await future` drives (asyncio's `Future.__await__` generator): yields the
/// future while it is pending, then returns its result.
///
/// Allocated without counting toward the collector's threshold (one per `await`; see
/// `capi::install_uncounted_alloc`); [`FutureIter::new`] tracks it, since a cycle can run
/// through it.
#[pyclass(module = "ferroloop", name = "FutureIter", frozen)]
pub struct FutureIter {
    /// The future awaited; None once it has returned or been thrown into or closed.
    pub(crate) future: GilCell<Option<OwnedNativeFuture>>,
}

#[pymethods]
impl FutureIter {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.step(py)? {
            capi::SendResult::Yielded(v) => Ok(v.unbind()),
            capi::SendResult::Returned(v) => Err(PyStopIteration::new_err((v.unbind(),))),
        }
    }

    fn send(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        // (PyIter_Send uses the am_send slot below; this is the method form.)
        if !value.is_none() {
            return Err(PyTypeError::new_err(
                "can't send non-None value to a FutureIter",
            ));
        }
        self.__next__(py)
    }

    #[pyo3(signature = (r#type, value=None, traceback=None))]
    fn throw(
        &self,
        py: Python<'_>,
        r#type: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.release(py);
        Err(thrown(py, r#type, value, traceback))
    }

    fn close(&self, py: Python<'_>) {
        self.release(py);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(future) = capi::in_traverse(|py| self.future.try_lock(py)) {
            capi::Visitor::visit(&visit, future.as_ref().map(OwnedNativeFuture::as_any))?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::attach(|py| self.release(py));
    }
}

/// One per pending `await`: the collector walks it in every collection that reaches it, so its
/// `tp_traverse` is the raw one (see `capi::install_raw_traverse`).
impl capi::RawTraverse for FutureIter {
    fn traverse_raw(&self, py: Python<'_>, visit: &capi::GcVisit) -> Result<(), std::ffi::c_int> {
        if let Some(future) = self.future.try_lock(py) {
            capi::Visitor::visit(visit, future.as_ref().map(OwnedNativeFuture::as_any))?;
        }
        Ok(())
    }
}

/// The exception that `gen.throw(type, value, traceback)` raises at the suspension point,
/// built as CPython's generators build it (`_gen_throw`), or the TypeError for bad arguments.
pub(crate) fn thrown(
    py: Python<'_>,
    r#type: &Bound<'_, PyAny>,
    value: Option<&Bound<'_, PyAny>>,
    traceback: Option<&Bound<'_, PyAny>>,
) -> PyErr {
    let build = || -> PyResult<Bound<'_, PyAny>> {
        let value = value.filter(|v| !v.is_none());
        let exc = if r#type.is_instance_of::<PyType>() {
            match value {
                Some(v) if v.is_instance(r#type)? => v.clone(),
                Some(v) if v.is_instance_of::<PyTuple>() => r#type.call1(v.cast::<PyTuple>()?)?,
                Some(v) => r#type.call1((v,))?,
                None => r#type.call0()?,
            }
        } else {
            if value.is_some() {
                return Err(PyTypeError::new_err(
                    "instance exception may not have a separate value",
                ));
            }
            r#type.clone()
        };
        if !exc.is_instance(&py.get_type::<pyo3::exceptions::PyBaseException>())? {
            return Err(PyTypeError::new_err(
                "exceptions must be classes deriving BaseException or instances of such a class",
            ));
        }
        if let Some(tb) = traceback.filter(|t| !t.is_none()) {
            exc.call_method1(intern!(py, "with_traceback"), (tb,))?;
        }
        Ok(exc)
    };
    match build() {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

impl capi::Finalized for Future {
    fn finalize(obj: &Bound<'_, PyAny>) -> PyResult<()> {
        finalize_future(obj)
    }

    fn original_dealloc() -> &'static std::sync::OnceLock<usize> {
        static ORIGINAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        &ORIGINAL
    }
}

impl FutureIter {
    /// A new iterator over `future`, tracked by the collector.
    pub(crate) fn new(py: Python<'_>, future: OwnedNativeFuture) -> PyResult<Bound<'_, Self>> {
        let iter = Bound::new(
            py,
            FutureIter {
                future: GilCell::new(Some(future)),
            },
        )?;
        capi::gc_track(iter.as_any());
        Ok(iter)
    }

    /// One step of `await future` without StopIteration: the future while it is pending, its
    /// result once done.
    fn step<'py>(&self, py: Python<'py>) -> PyResult<capi::SendResult<'py>> {
        let Some(fut) = self.future.lock(py).as_ref().map(|f| f.bind(py)) else {
            return Ok(capi::SendResult::Returned(py.None().into_bound(py)));
        };
        {
            let mut f = fut.borrow_mut();
            if f.state == State::Pending {
                if !f.blocking {
                    f.blocking = true;
                    drop(f);
                    return Ok(capi::SendResult::Yielded(fut.as_any().clone()));
                }
                return Err(PyRuntimeError::new_err("await wasn't used with future"));
            }
        }
        self.release(py);
        Ok(capi::SendResult::Returned(fut.result()?))
    }

    /// Lets go of the future (dropped after the cell is released).
    fn release(&self, py: Python<'_>) {
        let taken = self.future.lock(py).take();
        drop(taken);
    }
}

impl capi::AmSend for FutureIter {
    fn am_send<'py>(
        iter: &Bound<'py, PyAny>,
        arg: &Bound<'py, PyAny>,
    ) -> PyResult<capi::SendResult<'py>> {
        let py = iter.py();
        if !arg.is_none() {
            return Err(PyTypeError::new_err(
                "can't send non-None value to a FutureIter",
            ));
        }
        iter.cast::<FutureIter>()?.get().step(py)
    }
}
