//! LoopCore: the Rust half of `ferroloop.Loop` — the run loop, the ready queue, the timer heap,
//! I/O readiness (add_reader/add_writer), cross-thread wake-up, and the scheduling methods
//! (call_soon, call_later, call_at, call_soon_threadsafe, create_future, create_task).
//!
//! The Python class `ferroloop.Loop` subclasses LoopCore and `asyncio.AbstractEventLoop`, adding
//! the cold paths (run_until_complete, exception handlers, executors, async generators).
//!
//! Locking rule: the `sched` and `io` mutexes are only held for short, Python-free sections. No
//! Python object is dropped and no Python code runs while one is held (a finalizer could call
//! back into the loop and deadlock).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use crate::gil_cell::{GilCell, GilRefCell};

use ferroloop_core::{clock, Event, Interest, Poller, ReadyQueue, TimerHeap, Waker};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{ffi, intern, PyTraverseError, PyVisit};

use crate::capi::ContextSnapshot;
use crate::future::{Future, FutureCore, MethodCall};
use crate::gather::GatherCallback;
use crate::handle::{self, report_unhandled, run_handle, Handle, HandleState, TimerHandle};
use crate::native_io::NativeIo;
use crate::stdlib::{self, KwNames};
use crate::task::Task;
use crate::taskgroup::TaskGroupCore;
use crate::transport::TransportCore;
use crate::{capi, stdlib::kwnames};

/// asyncio's `base_events.MAXIMUM_SELECT_TIMEOUT`: the poller never sleeps longer than a day.
const MAXIMUM_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;
/// asyncio's `_MIN_SCHEDULED_TIMER_HANDLES` and `_MIN_CANCELLED_TIMER_HANDLES_FRACTION`: when
/// more than half of over 100 timers are cancelled, the heap is rebuilt without them.
const MIN_SCHEDULED_TIMER_HANDLES: usize = 100;
const MIN_CANCELLED_TIMER_HANDLES_FRACTION: f64 = 0.5;

/// An entry of the ready queue.
pub(crate) enum Ready {
    Handle(Py<Handle>),
    /// `task.__step(exc)`, run in the task's context.
    TaskStep(Py<Task>, Option<Py<PyAny>>),
    /// `task.__wakeup(future)`, run in the task's context.
    TaskWakeup(Py<Task>, Py<PyAny>),
    /// A `ferroloop.gather` child is done: its gather's done callback, called with it.
    GatherChild(Py<GatherCallback>, Py<PyAny>),
    /// A task of a `ferroloop.TaskGroup` is done: the group's `_on_task_done`, called with it.
    TaskGroupChild(Py<TaskGroupCore>, Py<PyAny>),
    /// A Python done callback of a native future, `callback(future)` run in the snapshot's
    /// context: what `loop.call_soon(callback, future, context=...)` queues, without a Handle
    /// or an argument tuple (a Handle is made only if the callback fails, for the exception
    /// handler). Debug mode queues real Handles.
    FutureCallback(Py<PyAny>, Py<PyAny>, ContextSnapshot),
    /// The same for a bound method kept apart (`future::Callback::Method`) and the future:
    /// `func(this, future)`, without making the method object.
    MethodCallback(Box<MethodCall>, Py<PyAny>),
    /// A Rust transport's fd is ready: `(target, write side, registration generation)`.
    Io(NativeIo, bool, u32),
    /// A Rust transport's deferred start (`protocol.connection_made(transport)`, then
    /// reading), run in the context copied when it was queued: what a transport's `__init__`
    /// queues as separate callbacks, as one entry and without Handles.
    Start(Py<TransportCore>, Py<PyAny>),
}

#[derive(Default)]
struct Sched {
    ready: ReadyQueue<Ready>,
    timers: TimerHeap<Py<TimerHandle>>,
    cancelled_timers: usize,
}

/// `_io_key`'s answer: (selectors event mask, reader Handle, writer Handle).
type IoKey = (u8, Option<Py<Handle>>, Option<Py<Handle>>);

/// What a watched fd runs when ready: a Python callback's Handle (add_reader/add_writer), or a
/// Rust transport called directly (no Handle).
pub(crate) enum Watcher {
    Handle(Py<Handle>),
    Native(NativeIo, u32),
}

impl Watcher {
    fn handle(&self) -> Option<&Py<Handle>> {
        match self {
            Watcher::Handle(h) => Some(h),
            Watcher::Native(..) => None,
        }
    }
}

/// Hashes an fd with one multiplication (Fibonacci hashing): the io map's keys are small
/// distinct ints, and SipHash showed up in profiles of socket-heavy loops.
#[derive(Default)]
struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i32(&mut self, n: i32) {
        self.0 = u64::from(n as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type FdMap<V> = HashMap<RawFd, V, BuildHasherDefault<FdHasher>>;

/// What the loop watches on one fd, and how the poller has it.
///
/// An fd whose only watcher is a `sock_*` operation is registered one-shot: the poller disarms
/// it when it reports it; the operation re-arms it when it must wait again, and a finished
/// operation leaves it registered but disarmed (reporting nothing, not even a hang-up), so the
/// next operation on the fd re-arms it with one system call instead of an add and a delete.
/// An entry with no watcher and such a disarmed registration stays in the map.
#[derive(Default)]
struct IoWatch {
    reader: Option<Watcher>,
    writer: Option<Watcher>,
    /// The fd is registered with the poller.
    registered: bool,
    /// The registration is one-shot.
    oneshot: bool,
    /// A one-shot registration has not been reported since it was (re-)armed.
    armed: bool,
}

impl IoWatch {
    fn interest(&self) -> Interest {
        Interest {
            read: self.reader.is_some(),
            write: self.writer.is_some(),
        }
    }

    fn watched(&self) -> bool {
        self.reader.is_some() || self.writer.is_some()
    }

    /// One side watched, by a sock_* operation.
    fn wants_oneshot(&self) -> bool {
        matches!(
            (&self.reader, &self.writer),
            (Some(Watcher::Native(NativeIo::Sock(_), _)), None)
                | (None, Some(Watcher::Native(NativeIo::Sock(_), _)))
        )
    }

    /// Nothing watched and nothing the poller could report: the entry can go.
    fn is_vacant(&self) -> bool {
        !self.watched() && !self.registered
    }
}

/// Which transport owns each fd: `BaseSelectorEventLoop._transports` (a WeakValueDictionary
/// fd -> transport there, a weak reference and a dict slot per connection). An entry here is
/// the address of the transport's core, put in by `TransportCore._register` and taken out
/// when that core is freed (first thing in its `Drop`) or another transport registers the same
/// fd: the registry holds no reference and no Python object. Shared (`Arc`) with the cores,
/// which may outlive their loop.
pub(crate) struct TransportRegistry {
    owners: GilCell<FdMap<usize>>,
}

impl Default for TransportRegistry {
    fn default() -> Self {
        TransportRegistry {
            owners: GilCell::new(FdMap::default()),
        }
    }
}

impl TransportRegistry {
    /// `core` (a TransportCore's address) owns `fd` from now on.
    pub(crate) fn insert(&self, py: Python<'_>, fd: RawFd, core: usize) {
        self.owners.lock(py).insert(fd, core);
    }

    /// Forgets `fd`'s owner if it is still `core`.
    pub(crate) fn remove_if(&self, py: Python<'_>, fd: RawFd, core: usize) {
        let mut owners = self.owners.lock(py);
        if owners.get(&fd) == Some(&core) {
            owners.remove(&fd);
        }
    }

    fn remove(&self, py: Python<'_>, fd: RawFd) {
        self.owners.lock(py).remove(&fd);
    }

    fn owner(&self, py: Python<'_>, fd: RawFd) -> Option<usize> {
        self.owners.lock(py).get(&fd).copied()
    }

    fn is_empty(&self, py: Python<'_>) -> bool {
        self.owners.lock(py).is_empty()
    }
}

#[pyclass(module = "ferroloop._ferroloop", subclass, frozen)]
pub struct LoopCore {
    sched: GilCell<Sched>,
    /// The poller's event buffer, kept between turns (no allocation per poll).
    events: GilCell<Vec<Event>>,
    io: GilCell<FdMap<IoWatch>>,
    /// Number of fds in `io` (read without the lock to skip polling when nothing is watched).
    io_count: AtomicUsize,
    poller: RwLock<Option<Poller>>,
    waker: RwLock<Option<Waker>>,
    stopping: AtomicBool,
    /// The previous turn of this run polled the fds (see `run_once_impl`, step 3).
    polled_last_turn: AtomicBool,
    closed: AtomicBool,
    /// `threading.get_ident()` of the thread running the loop, 0 when not running.
    thread_id: AtomicU64,
    debug: AtomicBool,
    slow_callback_duration: AtomicU64,
    task_factory: GilCell<Option<Py<PyAny>>>,
    /// One-shot Handle objects that have run and that nobody else references, kept for reuse by
    /// call_soon (saves an allocation and a deallocation per callback). They hold no references.
    handle_pool: GilCell<Vec<Py<Handle>>>,
    /// create_future()/create_task() make ferroloop's native Future/Task (else asyncio's).
    native_tasks: AtomicBool,
    current_handle: GilCell<Option<Py<PyAny>>>,
    clock_resolution: f64,
    /// fd -> the transport that owns it.
    pub(crate) transports: std::sync::Arc<TransportRegistry>,
}

/// The first half of `selectors._fileobj_to_fd`: an int, or `int(obj.fileno())`, as a Python int
/// (checked by [`fd_as_c_int`] once the loop is known to be open).
pub(crate) fn fileobj_to_fd<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let fd = if obj.is_instance_of::<pyo3::types::PyInt>() {
        obj.clone()
    } else {
        let int_type = py.get_type::<pyo3::types::PyInt>();
        match obj
            .call_method0(intern!(py, "fileno"))
            .and_then(|v| int_type.call1((v,)))
        {
            Ok(fd) => fd,
            Err(e)
                if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                    || e.is_instance_of::<PyTypeError>(py)
                    || e.is_instance_of::<PyValueError>(py) =>
            {
                return Err(PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    repr_of(obj)
                )));
            }
            Err(e) => return Err(e),
        }
    };
    Ok(fd)
}

/// The fd as a C int: ValueError for a negative one (as `selectors._fileobj_to_fd`), the error
/// CPython's `_PyLong_AsInt` gives for one too large (what `epoll.register` raises).
pub(crate) fn fd_as_c_int(fd: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    if fd.lt(0)? {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    fd.extract::<i64>()
        .ok()
        .and_then(|v| RawFd::try_from(v).ok())
        .ok_or_else(|| {
            pyo3::exceptions::PyOverflowError::new_err("Python int too large to convert to C int")
        })
}

/// An OSError as Python raises it for a failed system call: `OSError(errno, strerror)`, which
/// picks the matching subclass (PermissionError for EPERM, ...).
pub(crate) fn os_error(e: std::io::Error) -> PyErr {
    match e.raw_os_error() {
        Some(code) => Python::attach(|py| {
            let message = py
                .import("os")
                .and_then(|os| os.getattr("strerror"))
                .and_then(|f| f.call1((code,)))
                .and_then(|m| m.extract::<String>())
                .unwrap_or_else(|_| e.to_string());
            pyo3::exceptions::PyOSError::new_err((code, message))
        }),
        None => PyErr::from(e),
    }
}

fn repr_of(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unrepresentable>".into())
}

impl LoopCore {
    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(PyRuntimeError::new_err("Event loop is closed"))
        } else {
            Ok(())
        }
    }

    /// `BaseEventLoop._check_thread`: in debug mode, non-thread-safe calls must come from the
    /// loop's thread.
    fn check_thread(&self) -> PyResult<()> {
        let tid = self.thread_id.load(Ordering::Acquire);
        if tid != 0 && tid != capi::thread_ident() {
            return Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            ));
        }
        Ok(())
    }

    /// Debug mode (`get_debug()`), for the other classes of this crate.
    pub(crate) fn debug_enabled(&self) -> bool {
        self.is_debug()
    }

    /// A scheduled TimerHandle was cancelled (`_timer_handle_cancelled`).
    pub(crate) fn timer_cancelled(&self, py: Python<'_>) {
        self.sched.lock(py).cancelled_timers += 1;
    }

    pub(crate) fn is_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    fn new_handle(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<ContextSnapshot>,
    ) -> PyResult<HandleState> {
        Handle::build(
            slf.py(),
            callback.clone().unbind(),
            args.clone().unbind(),
            slf.clone().into_any().unbind(),
            context,
            slf.get().is_debug(),
        )
    }

    /// A handle for call_soon/call_later/call_at: released once it has run.
    fn new_oneshot(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<ContextSnapshot>,
    ) -> PyResult<HandleState> {
        let mut h = Self::new_handle(slf, callback, args, context)?;
        h.oneshot = true;
        Ok(h)
    }

    /// A one-shot Handle object, untracked by the garbage collector while queued: it drops its
    /// references when it runs or is cancelled, unless someone else holds it (then it is
    /// tracked once it has run; see `handle::run_handle`).
    fn new_oneshot_object(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<ContextSnapshot>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let fresh = Self::new_oneshot(slf, callback, args, context)?;
        let pooled = slf.get().handle_pool.lock(py).pop();
        if let Some(handle) = pooled {
            let old = std::mem::replace(&mut *handle.get().state.lock(py), fresh);
            drop(old);
            return Ok(handle);
        }
        let handle = Bound::new(py, Handle::new(fresh))?;
        capi::gc_untrack(handle.as_any());
        Ok(handle.unbind())
    }

    /// Keeps a one-shot handle that has run for reuse, if nothing else can see it: exactly a
    /// Handle, referenced only by us, with no weak references.
    fn recycle_handle(&self, h: Bound<'_, Handle>) {
        const POOL_MAX: usize = 256;
        let py = h.py();
        if !h.get_type().is(py.get_type::<Handle>())
            || capi::refcount(h.as_any()) != 1
            || capi::has_weakrefs(h.as_any())
        {
            return;
        }
        let emptied = {
            let Some(mut b) = h.get().state.try_lock(py) else {
                return;
            };
            if !b.oneshot {
                return;
            }
            (
                b.callback.take(),
                b.args.take(),
                b.context.take(),
                b.loop_.take(),
                b.source_traceback.take(),
            )
        };
        drop(emptied);
        // It may have been tracked when it ran (someone else held it then and let go during
        // the callback): a queued one-shot handle must be untracked, since the loop reports
        // what a handle it alone holds references (a tracked one would report it twice).
        capi::gc_untrack(h.as_any());
        let mut pool = self.handle_pool.lock(py);
        if pool.len() < POOL_MAX {
            pool.push(h.unbind());
        }
    }

    /// call_soon and call_soon_threadsafe (`BaseEventLoop.call_soon`): checks, then a one-shot
    /// handle at the end of the ready queue. Only call_soon is checked for the calling thread.
    /// `when` for `call_later(delay, ...)`: `self.time() + delay`, as asyncio computes it (so a
    /// bad delay fails the same way).
    pub(crate) fn when_after(delay: &Bound<'_, PyAny>) -> PyResult<f64> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let now = clock::monotonic();
        match delay.extract::<f64>() {
            Ok(d)
                if delay.is_exact_instance_of::<pyo3::types::PyFloat>()
                    || delay.is_instance_of::<pyo3::types::PyInt>() =>
            {
                Ok(now + d)
            }
            _ => pyo3::types::PyFloat::new(delay.py(), now)
                .add(delay)?
                .extract::<f64>(),
        }
    }

    /// The deadline of `call_at(when, ...)`.
    pub(crate) fn when_at(when: &Bound<'_, PyAny>) -> PyResult<f64> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        when.extract()
    }

    pub(crate) fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<ContextSnapshot>,
        method: &str,
        thread_checked: bool,
    ) -> PyResult<Py<Handle>> {
        let this = slf.get();
        this.check_closed()?;
        if this.is_debug() {
            if thread_checked {
                this.check_thread()?;
            }
            Self::check_callback(callback, method)?;
        }
        let handle = Self::new_oneshot_object(slf, callback, args, context)?;
        this.push_ready(slf.py(), Ready::Handle(handle.clone_ref(slf.py())));
        Ok(handle)
    }

    /// `loop.call_soon(callback, arg, context=context)` from Rust (a future's done callback).
    pub(crate) fn schedule_callback(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        arg: &Bound<'_, PyAny>,
        context: Option<ContextSnapshot>,
    ) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        match context {
            Some(ctx) if this.runs_without_handle(py, &ctx) => {
                this.check_closed()?;
                let item =
                    Ready::FutureCallback(callback.clone().unbind(), arg.clone().unbind(), ctx);
                this.push_ready(py, item);
                Ok(())
            }
            context => {
                let args = PyTuple::new(py, [arg])?;
                Self::schedule_soon(slf, callback, &args, context, "call_soon", true).map(drop)
            }
        }
    }

    /// Whether a done callback in `context` is queued without a Handle: not when debug mode
    /// wants one (source traceback, slow callback report) or the context is not a Context
    /// (`context.run` is called then).
    fn runs_without_handle(&self, py: Python<'_>, context: &ContextSnapshot) -> bool {
        !self.is_debug()
            && (matches!(context, ContextSnapshot::Vars(_))
                || capi::is_exact_context(context.held().bind(py)))
    }

    /// [`Self::schedule_callback`] for a bound method kept apart: queued as
    /// `Ready::MethodCallback` where that one queues `Ready::FutureCallback`, else as the
    /// method made again.
    pub(crate) fn schedule_method_callback(
        slf: &Bound<'_, Self>,
        call: Box<MethodCall>,
        future: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let this = slf.get();
        let py = slf.py();
        if this.runs_without_handle(py, &call.context) {
            this.check_closed()?;
            this.push_ready(py, Ready::MethodCallback(call, future.clone().unbind()));
            return Ok(());
        }
        let method = call.method(py)?;
        let MethodCall { context, .. } = *call;
        Self::schedule_callback(slf, &method, future, Some(context))
    }

    /// Runs a queued `Ready::FutureCallback`, as `events.Handle._run` runs the Handle
    /// call_soon would have made: an error other than SystemExit/KeyboardInterrupt goes to
    /// the exception handler, with such a Handle (made now) as `handle`.
    fn run_future_callback(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        future: Bound<'_, PyAny>,
        context: ContextSnapshot,
    ) -> PyResult<()> {
        let py = slf.py();
        let context = context.into_context(py)?.into_bound(py);
        let outcome = capi::with_context(&context, || callback.call1((&future,)));
        Self::finish_future_callback(slf, outcome.map(drop), || Ok(callback), future, context)
    }

    /// Runs a queued `Ready::MethodCallback`: `func(this, future)` in the context, which is
    /// what calling the bound method does; the method is made only to report an error.
    fn run_method_callback(
        slf: &Bound<'_, Self>,
        call: MethodCall,
        future: Py<PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let MethodCall {
            func,
            this,
            context,
        } = call;
        let (func, this, future) = (
            func.into_bound(py),
            this.into_bound(py),
            future.into_bound(py),
        );
        let context = context.into_context(py)?.into_bound(py);
        let outcome = capi::with_context(&context, || func.call1((&this, &future)));
        let method = || capi::bound_method(&func, &this);
        Self::finish_future_callback(slf, outcome.map(drop), method, future, context)
    }

    /// The end of a handle-less done callback's run, as `events.Handle._run` ends: an error
    /// other than SystemExit/KeyboardInterrupt goes to the exception handler with a Handle of
    /// `callback(future)` made now; the context is recycled if nobody kept it.
    fn finish_future_callback<'py>(
        slf: &Bound<'py, Self>,
        outcome: PyResult<()>,
        callback: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
        future: Bound<'py, PyAny>,
        context: Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(err) if handle::escapes_loop(py, &err) => Err(err),
            Err(err) => {
                let callback = callback()?;
                let args = PyTuple::new(py, [&future])?;
                let snapshot = ContextSnapshot::Context(context.clone().unbind());
                let state = Self::new_oneshot(slf, &callback, &args, Some(snapshot))?;
                let handle = Bound::new(py, Handle::new(state))?;
                // The handler may keep it (and so what it holds): the collector must see it.
                capi::gc_track(handle.as_any());
                handle::report_callback_error(py, &handle, &callback, &args, &context, &err)
            }
        };
        capi::recycle_context(context);
        result
    }

    /// `loop.call_soon(callback, *args)` from Rust (transports).
    pub(crate) fn call_soon_args(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        Self::schedule_soon(slf, callback, args, None, "call_soon", true).map(drop)
    }

    /// Checks done by call_soon for a step or wake-up queued as the task itself.
    fn check_soon(&self) -> PyResult<()> {
        self.check_closed()?;
        if self.is_debug() {
            self.check_thread()?;
        }
        Ok(())
    }

    /// Queues a task step, a task wake-up or a gather child's callback: what
    /// `loop.call_soon(task.__step | task.__wakeup | gather_callback, ...)` does, without a
    /// Handle (with call_soon's checks).
    pub(crate) fn schedule_ready(&self, py: Python<'_>, item: Ready) -> PyResult<()> {
        self.check_soon()?;
        // A task step queued on this loop while it runs here is held by it until the step is
        // taken off the queue (unparked there) or the loop stops (`unpark_queued_tasks`).
        if let Ready::TaskStep(task, _) = &item {
            if self.runs_on_this_thread() {
                Task::park(task.bind(py));
            }
        }
        self.push_ready(py, item);
        Ok(())
    }

    /// Runs a native done callback (`callback(child)`, done by `run`); an error goes to the
    /// exception handler, as a Handle's.
    fn run_native_done(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        child: Bound<'_, PyAny>,
        run: impl FnOnce() -> PyResult<()>,
    ) -> PyResult<()> {
        report_unhandled(slf.as_any(), run(), || {
            Ok(format!(
                "Exception in callback {}({})",
                callback.repr()?,
                child.repr()?
            ))
        })
    }

    /// `BaseEventLoop.create_task(coro, *, name=None, context=None)` (the method itself is
    /// `schedule_methods::CreateTask`; None stands for a parameter not given).
    pub(crate) fn create_task_impl<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: &Bound<'py, PyAny>,
        context: &Bound<'py, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        // Bound, not Py: called from a method trampoline PyO3 may not count as attached,
        // where dropping a `Py` defers its decref (see `NativeFuture::add_done_callback`).
        let factory = this
            .task_factory
            .lock(py)
            .as_ref()
            .map(|f| f.bind(py).clone());
        match factory {
            None if this.native_tasks.load(Ordering::Relaxed) => {
                let core =
                    FutureCore::for_loop(py, slf.clone().into_any().unbind(), this.is_debug())?;
                let task = Bound::new(py, Task::with_core(core))?;
                Task::start(&task, coro, Some(name), Some(context))?;
                Ok(task.into_any().unbind())
            }
            None => {
                let cls = stdlib::task_class(py)?;
                let task = capi::call_with_kwnames(
                    cls,
                    &[coro, slf.as_any(), name, context],
                    kwnames(py, KwNames::LoopNameContext)?,
                )?;
                Ok(task.unbind())
            }
            Some(factory) => {
                let task = if context.is_none() {
                    factory.call1((slf, coro))?
                } else {
                    capi::call_with_kwnames(
                        &factory,
                        &[slf.as_any(), coro, context],
                        kwnames(py, KwNames::Context)?,
                    )?
                };
                if !name.is_none() {
                    stdlib::set_task_name(py)?.call1((&task, name))?;
                }
                Ok(task.unbind())
            }
        }
    }

    /// `loop.create_future()` (the method itself is `schedule_methods::CreateFuture`).
    pub(crate) fn create_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.native_tasks.load(Ordering::Relaxed) {
            let core = FutureCore::for_loop(py, slf.clone().into_any().unbind(), this.is_debug())?;
            return Ok(Py::new(
                py,
                Future {
                    core: GilRefCell::new(core),
                },
            )?
            .into_any());
        }
        let cls = stdlib::future_class(py)?;
        Ok(capi::call_with_kwnames(cls, &[slf.as_any()], kwnames(py, KwNames::Loop)?)?.unbind())
    }

    /// Whether create_future()/create_task() make ferroloop's native Future/Task.
    pub(crate) fn native_tasks_enabled(&self) -> bool {
        self.native_tasks.load(Ordering::Relaxed)
    }

    /// Runs a queued task step or wake-up in the task's context. Errors other than
    /// SystemExit/KeyboardInterrupt go to the exception handler, as a Handle's would.
    fn run_task_item(
        slf: &Bound<'_, Self>,
        task: Bound<'_, Task>,
        arg: Option<Bound<'_, PyAny>>,
        wakeup: bool,
    ) -> PyResult<()> {
        let (context, lent) = Task::step_context(&task)?;
        let result = capi::with_context(&context, || match (&arg, wakeup) {
            (Some(fut), true) => Task::wakeup(&task, fut),
            _ => Task::step(&task, arg.clone()),
        });
        if lent {
            Task::end_step_context(&task, context);
        }
        report_unhandled(slf.as_any(), result, || {
            let what = if wakeup { "__wakeup" } else { "__step" };
            Ok(format!(
                "Exception in callback Task.{what}() of {}",
                task.repr()?
            ))
        })
    }

    /// Whether the loop is running on the calling thread.
    pub(crate) fn runs_on_this_thread(&self) -> bool {
        self.thread_id.load(Ordering::Acquire) == capi::thread_ident()
    }

    /// When the loop stops running: the tasks still queued, and those waiting on a future a
    /// timer holds, go back on the collector's lists (see `Task::park`), as the loop may now
    /// be dropped with them. (Collected first: putting back a task's awaited coroutines may
    /// free one, and its finalizer may call the loop.)
    fn unpark_queued_tasks(&self, py: Python<'_>) {
        let (tasks, timers): (Vec<Py<Task>>, Vec<Py<TimerHandle>>) = {
            let s = self.sched.lock(py);
            let tasks = s
                .ready
                .iter()
                .filter_map(|item| match item {
                    Ready::TaskStep(task, _) | Ready::TaskWakeup(task, _) => {
                        Some(task.clone_ref(py))
                    }
                    _ => None,
                })
                .collect();
            let timers = s
                .timers
                .iter()
                .filter(|(_, t)| t.get().holds_future())
                .map(|(_, t)| t.clone_ref(py))
                .collect();
            (tasks, timers)
        };
        for task in tasks {
            Task::unpark(task.bind(py));
        }
        for timer in timers {
            TimerHandle::unpark_waiters(timer.bind(py));
        }
    }

    fn push_ready(&self, py: Python<'_>, item: Ready) {
        self.sched.lock(py).ready.push(item);
    }

    pub(crate) fn wake(&self) {
        if let Some(w) = self
            .waker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            w.wake();
        }
    }

    fn schedule_timer(&self, timer: &Bound<'_, TimerHandle>) {
        let py = timer.py();
        let when = {
            let t = timer.get();
            t.set_scheduled(true);
            t.when
        };
        let item = timer.clone().unbind();
        self.sched.lock(py).timers.push(when, item);
    }

    /// `BaseEventLoop._check_callback`, used in debug mode.
    fn check_callback(callback: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
        let py = callback.py();
        let iscoro = py
            .import(intern!(py, "asyncio.coroutines"))?
            .getattr(intern!(py, "iscoroutine"))?;
        let isfunc = py
            .import(intern!(py, "asyncio.coroutines"))?
            .getattr(intern!(py, "iscoroutinefunction"))?;
        if iscoro.call1((callback,))?.is_truthy()? || isfunc.call1((callback,))?.is_truthy()? {
            return Err(PyTypeError::new_err(format!(
                "coroutines cannot be used with {method}()"
            )));
        }
        if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "a callable object was expected by {method}(), got {}",
                repr_of(callback)
            )));
        }
        Ok(())
    }

    pub(crate) fn call_at_impl(
        slf: &Bound<'_, Self>,
        when: f64,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<ContextSnapshot>,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if this.is_debug() {
            this.check_thread()?;
            Self::check_callback(callback, "call_at")?;
        }
        let base = Self::new_oneshot(slf, callback, args, context)?;
        let timer = Bound::new(
            py,
            PyClassInitializer::from(Handle::new(base)).add_subclass(TimerHandle::new(when)),
        )?;
        capi::gc_untrack(timer.as_any());
        this.schedule_timer(&timer);
        TimerHandle::hold_future(&timer, slf.as_any(), callback, args);
        Ok(timer.unbind())
    }

    /// One turn of the loop: `BaseEventLoop._run_once`.
    fn run_once_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // A turn with callbacks queued and nothing else to look at (no timer, no fd watched,
        // not stopping) goes straight to running them: steps 1 to 5 would find nothing to do
        // (no timer to drop or run, and no poll: see step 3).
        let quiet = this.io_count.load(Ordering::Acquire) == 0
            && !this.stopping.load(Ordering::Acquire)
            && {
                let s = this.sched.lock(py);
                !s.ready.is_empty() && s.timers.is_empty()
            };
        if quiet {
            this.polled_last_turn.store(false, Ordering::Relaxed);
        } else {
            Self::gather_ready(slf)?;
        }
        Self::run_ready(slf)
    }

    /// Steps 1 to 5 of a turn: cancelled timers dropped, the poll, and what is ready (fds,
    /// due timers) queued.
    fn gather_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();

        // 1. Drop cancelled timers: all of them when they are many, else those at the top.
        let dropped: Vec<Py<TimerHandle>> = {
            let mut s = this.sched.lock(py);
            let n = s.timers.len();
            if n > MIN_SCHEDULED_TIMER_HANDLES
                && (s.cancelled_timers as f64) / (n as f64) > MIN_CANCELLED_TIMER_HANDLES_FRACTION
            {
                s.cancelled_timers = 0;
                s.timers
                    .retain(|t| !t.bind(py).as_super().get().state.lock(py).cancelled)
            } else {
                let mut dropped = Vec::new();
                while let Some((_, t)) = s.timers.peek() {
                    if !t.bind(py).as_super().get().state.lock(py).cancelled {
                        break;
                    }
                    if let Some((_, t)) = s.timers.pop() {
                        dropped.push(t);
                    }
                    s.cancelled_timers = s.cancelled_timers.saturating_sub(1);
                }
                dropped
            }
        };
        if !dropped.is_empty() {
            for t in &dropped {
                t.get().set_scheduled(false);
            }
            drop(dropped);
        }

        // 2. How long the poller may sleep.
        let timeout = {
            let s = this.sched.lock(py);
            if !s.ready.is_empty() || this.stopping.load(Ordering::Acquire) {
                Some(0.0)
            } else if let Some((when, _)) = s.timers.peek() {
                Some((when - clock::monotonic()).clamp(0.0, MAXIMUM_SELECT_TIMEOUT))
            } else {
                None
            }
        };

        // 3. Poll. With nothing watched but the waker and no reason to sleep, skip the call.
        // A busy turn (callbacks queued, not stopping) right after a turn that polled skips it
        // too: the fds are looked at every other busy turn, not every turn as
        // `BaseEventLoop._run_once` does. A task woken by I/O then runs without a poll before
        // it (one that would find nothing: its peer has not run yet), so a request/response
        // exchange polls once per message, not twice; readiness that a callback of the
        // previous turn caused is seen one turn later. The first turn of each run, and a
        // stopping turn, always poll (`call_soon(loop.stop); run_forever()` runs the ready
        // I/O callbacks, as on asyncio). The event buffer is the loop's own, reused from turn
        // to turn.
        let mut events = std::mem::take(&mut *this.events.lock(py));
        events.clear();
        let busy_after_poll = timeout == Some(0.0)
            && !this.stopping.load(Ordering::Acquire)
            && this.polled_last_turn.load(Ordering::Relaxed);
        let must_poll =
            timeout != Some(0.0) || (this.io_count.load(Ordering::Acquire) > 0 && !busy_after_poll);
        this.polled_last_turn.store(must_poll, Ordering::Relaxed);
        if must_poll {
            let guard = this.poller.read().unwrap_or_else(|e| e.into_inner());
            let Some(poller) = guard.as_ref() else {
                return Err(PyRuntimeError::new_err("Event loop is closed"));
            };
            // A poll that may sleep releases the GIL; under load the fds are often ready
            // already, so first look without sleeping (and without handing the GIL over).
            let mut result = poller.wait(&mut events, Some(0.0));
            if timeout != Some(0.0) && events.is_empty() && result.is_ok() {
                result = py.detach(|| poller.wait(&mut events, timeout));
            }
            drop(guard);
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    // A signal arrived: run Python's handlers now (KeyboardInterrupt, or
                    // asyncio.Runner's SIGINT handler, surfaces here).
                    capi::check_signals(py)?;
                }
                Err(e) => return Err(os_error(e)),
            }
        }

        // 4. Readiness -> ready queue (`BaseSelectorEventLoop._process_events`).
        if !events.is_empty() {
            let waker_fd = this
                .waker
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|w| w.read_fd());
            let mut stale: Vec<RawFd> = Vec::new();
            let mut woken = false;
            {
                let mut io = this.io.lock(py);
                let mut s = this.sched.lock(py);
                for ev in &events {
                    if Some(ev.fd) == waker_fd {
                        woken = true;
                        continue;
                    }
                    if let Some(w) = io.get_mut(&ev.fd) {
                        if w.oneshot {
                            // The kernel disarmed it by reporting it.
                            w.armed = false;
                        }
                        for (ready, watcher, write) in [
                            (ev.readable, &w.reader, false),
                            (ev.writable, &w.writer, true),
                        ] {
                            match (ready, watcher) {
                                (true, Some(Watcher::Handle(h))) => {
                                    if h.get().state.lock(py).cancelled {
                                        stale.push(ev.fd);
                                    } else {
                                        s.ready.push(Ready::Handle(h.clone_ref(py)));
                                    }
                                }
                                (true, Some(Watcher::Native(target, gen))) => {
                                    s.ready.push(Ready::Io(target.clone_ref(py), write, *gen));
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            if woken {
                let signals = this
                    .waker
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|w| w.drain())
                    .unwrap_or_default();
                if !signals.is_empty() {
                    let sigs: Vec<u8> = signals;
                    slf.call_method1(intern!(py, "_process_signals"), (sigs,))?;
                }
            }
            for fd in stale {
                this.drop_cancelled_watch(py, fd);
            }
        }
        *this.events.lock(py) = events;

        // 5. Due timers -> ready queue (the clock is read only when there are timers).
        {
            let mut s = this.sched.lock(py);
            let end_time = if s.timers.is_empty() {
                f64::NEG_INFINITY
            } else {
                clock::monotonic() + this.clock_resolution
            };
            while let Some(t) = s.timers.pop_before(end_time) {
                t.get().set_scheduled(false);
                TimerHandle::release_future(t.bind(py));
                let h: Py<Handle> = t.into_bound(py).into_super().unbind();
                s.ready.push(Ready::Handle(h));
            }
        }

        Ok(())
    }

    /// Step 6 of a turn: runs what was ready when the turn began.
    fn run_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // 6. Run what was ready when this turn began.
        let ntodo = this.sched.lock(py).ready.len();
        let debug = this.is_debug();
        for _ in 0..ntodo {
            let item = this.sched.lock(py).ready.pop();
            let Some(item) = item else { break };
            match item {
                Ready::Handle(h) => {
                    let h = h.into_bound(py);
                    if debug {
                        Self::run_handle_debug(slf, &h)?;
                    } else {
                        run_handle(py, &h)?;
                    }
                    this.recycle_handle(h);
                }
                Ready::TaskStep(task, exc) => {
                    let task = task.into_bound(py);
                    Task::unpark(&task);
                    let exc = exc.map(|e| e.into_bound(py));
                    Self::run_task_timed(slf, task, exc, false, debug)?;
                }
                Ready::TaskWakeup(task, fut) => {
                    let task = task.into_bound(py);
                    // Parked if it waited on a timer's future (`Task::park_on_timer`).
                    Task::unpark(&task);
                    Self::run_task_timed(slf, task, Some(fut.into_bound(py)), true, debug)?;
                }
                Ready::GatherChild(callback, child) => {
                    let (callback, child) = (callback.into_bound(py), child.into_bound(py));
                    let run = || GatherCallback::child_done(&callback, &child);
                    Self::run_native_done(slf, callback.clone().into_any(), child.clone(), run)?;
                }
                Ready::TaskGroupChild(group, child) => {
                    let (group, child) = (group.into_bound(py), child.into_bound(py));
                    let callback = TaskGroupCore::bound_done_callback(&group)?;
                    let run = || TaskGroupCore::task_done(&group, &child);
                    Self::run_native_done(slf, callback, child.clone(), run)?;
                }
                Ready::FutureCallback(callback, future, context) => {
                    let (callback, future) = (callback.into_bound(py), future.into_bound(py));
                    Self::run_future_callback(slf, callback, future, context)?;
                }
                Ready::MethodCallback(call, future) => {
                    Self::run_method_callback(slf, *call, future)?
                }
                Ready::Io(target, write, gen) => target.on_ready(py, write, gen)?,
                Ready::Start(target, context) => {
                    TransportCore::run_start(target.bind(py), context.bind(py))?
                }
            }
        }
        Ok(())
    }

    /// Debug-mode run: track the current handle and warn about slow callbacks
    /// (`BaseEventLoop._run_once` under `self._debug`).
    fn run_handle_debug(slf: &Bound<'_, Self>, h: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if h.get().state.lock(py).cancelled {
            return Ok(());
        }
        // Keep the references a one-shot handle drops when it runs, to describe it if slow.
        let (callback, args, context) = {
            let mut b = h.get().state.lock(py);
            (
                b.callback.as_ref().map(|c| c.clone_ref(py)),
                b.args.as_ref().map(|a| a.clone_ref(py)),
                b.context.as_mut().map(|c| c.context(py)).transpose()?,
            )
        };
        *this.current_handle.lock(py) = Some(h.clone().into_any().unbind());
        let t0 = clock::monotonic();
        let result = run_handle(py, h);
        let dt = clock::monotonic() - t0;
        let prev = this.current_handle.lock(py).take();
        drop(prev);
        result?;
        if dt >= f64::from_bits(this.slow_callback_duration.load(Ordering::Relaxed)) {
            let described = match (callback, args, context) {
                (Some(cb), Some(args), Some(ctx)) => crate::handle::with_references(
                    h,
                    cb.bind(py),
                    args.bind(py),
                    ctx.bind(py),
                    || Self::format_handle(h).map(Bound::unbind),
                )?,
                _ => Self::format_handle(h)?.unbind(),
            };
            stdlib::asyncio_logger(py)?.call_method1(
                intern!(py, "warning"),
                ("Executing %s took %.3f seconds", described, dt),
            )?;
        }
        Ok(())
    }

    /// A task item, timed in debug mode (slow steps are logged as the task).
    fn run_task_timed(
        slf: &Bound<'_, Self>,
        task: Bound<'_, Task>,
        arg: Option<Bound<'_, PyAny>>,
        wakeup: bool,
        debug: bool,
    ) -> PyResult<()> {
        if !debug {
            return Self::run_task_item(slf, task, arg, wakeup);
        }
        let py = slf.py();
        let this = slf.get();
        let t0 = clock::monotonic();
        Self::run_task_item(slf, task.clone(), arg, wakeup)?;
        let dt = clock::monotonic() - t0;
        if dt >= f64::from_bits(this.slow_callback_duration.load(Ordering::Relaxed)) {
            stdlib::asyncio_logger(py)?.call_method1(
                intern!(py, "warning"),
                ("Executing %s took %.3f seconds", task.repr()?, dt),
            )?;
        }
        Ok(())
    }

    /// `base_events._format_handle`: a task's step is described by the task.
    fn format_handle<'py>(h: &Bound<'py, Handle>) -> PyResult<Bound<'py, PyAny>> {
        let py = h.py();
        let cb = h
            .get()
            .state
            .lock(py)
            .callback
            .as_ref()
            .map(|c| c.clone_ref(py));
        if let Some(cb) = cb {
            if let Ok(owner) = cb.bind(py).getattr(intern!(py, "__self__")) {
                if owner.is_instance(stdlib::task_class(py)?)? {
                    return Ok(owner.repr()?.into_any());
                }
            }
        }
        Ok(h.str()?.into_any())
    }

    fn drop_cancelled_watch(&self, py: Python<'_>, fd: RawFd) {
        let removed = {
            let mut io = self.io.lock(py);
            let Some(w) = io.get_mut(&fd) else { return };
            let mut removed = Vec::new();
            if w.reader
                .as_ref()
                .and_then(Watcher::handle)
                .is_some_and(|h| h.get().state.lock(py).cancelled)
            {
                removed.extend(w.reader.take());
            }
            if w.writer
                .as_ref()
                .and_then(Watcher::handle)
                .is_some_and(|h| h.get().state.lock(py).cancelled)
            {
                removed.extend(w.writer.take());
            }
            let before = !removed.is_empty() || w.watched();
            self.sync_poller(w, fd).ok();
            self.settle(&mut io, fd, before);
            removed
        };
        drop(removed);
    }

    fn with_poller<R>(&self, f: impl FnOnce(&Poller) -> std::io::Result<R>) -> PyResult<R> {
        let guard = self.poller.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(p) => f(p).map_err(os_error),
            None => Err(PyRuntimeError::new_err("Event loop is closed")),
        }
    }

    /// add_reader / add_writer (`BaseSelectorEventLoop._add_reader`/`_add_writer`).
    fn add_watch(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        write: bool,
    ) -> PyResult<()> {
        let this = slf.get();
        let fd = fileobj_to_fd(fd)?;
        this.check_closed()?;
        let fd = fd_as_c_int(&fd)?;
        let handle = Bound::new(
            slf.py(),
            Handle::new(Self::new_handle(slf, callback, args, None)?),
        )?;
        // A reader or writer runs again and again: the collector must see it (it starts
        // untracked).
        capi::gc_track(handle.as_any());
        this.set_watch(slf.py(), fd, Watcher::Handle(handle.unbind()), write)
    }

    /// Watches `fd` for a Rust transport (`_add_reader`/`_add_writer` with the transport's
    /// `_read_ready`/`_write_ready`): readiness calls `target.on_ready(write, generation)`.
    pub(crate) fn add_native_watch(
        &self,
        py: Python<'_>,
        fd: RawFd,
        target: NativeIo,
        generation: u32,
        write: bool,
    ) -> PyResult<()> {
        self.check_closed()?;
        self.set_watch(py, fd, Watcher::Native(target, generation), write)
    }

    /// Stops watching one side of `fd` (`_remove_reader`/`_remove_writer`); True if it was.
    pub(crate) fn remove_native_watch(&self, py: Python<'_>, fd: RawFd, write: bool) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.take_watch(py, fd, write) {
            Some(w) => {
                if let Watcher::Handle(h) = &w {
                    Handle::cancel_handle(h.bind(py)).ok();
                }
                drop(w);
                true
            }
            None => false,
        }
    }

    /// True if the watcher of one side of `fd` is the native target `target` (its
    /// registration was not removed or replaced).
    pub(crate) fn is_native_watch(
        &self,
        py: Python<'_>,
        fd: RawFd,
        write: bool,
        target: *mut ffi::PyObject,
    ) -> bool {
        let io = self.io.lock(py);
        let Some(w) = io.get(&fd) else { return false };
        let side = if write { &w.writer } else { &w.reader };
        matches!(side, Some(Watcher::Native(t, _)) if t.as_ptr() == target)
    }

    /// Stops watching one side of `fd` if its watcher is still the native target `target`
    /// (asyncio's `_sock_read_done`: remove the reader unless its handle was cancelled).
    pub(crate) fn remove_native_watch_if(
        &self,
        py: Python<'_>,
        fd: RawFd,
        write: bool,
        target: *mut ffi::PyObject,
    ) -> bool {
        if self.closed.load(Ordering::Acquire) || !self.is_native_watch(py, fd, write, target) {
            return false;
        }
        self.remove_native_watch(py, fd, write)
    }

    /// Makes the poller's registration of `fd` match `w`'s watchers: added, or modified (which
    /// also re-arms a one-shot registration and re-adds an fd the kernel forgot), one-shot when
    /// a sock_* operation is the only watcher; deleted when nothing is watched, except a
    /// disarmed one-shot registration, which can report nothing and is kept for the next
    /// operation. The state changes only if the system call succeeds.
    fn sync_poller(&self, w: &mut IoWatch, fd: RawFd) -> PyResult<()> {
        let want = w.interest();
        if want.is_empty() {
            // A disarmed one-shot registration stays (see IoWatch).
            let disarmed = w.oneshot && !w.armed;
            if w.registered && !disarmed {
                self.with_poller(|p| p.delete(fd))?;
                w.registered = false;
            }
            return Ok(());
        }
        let oneshot = w.wants_oneshot();
        self.with_poller(|p| match (w.registered, oneshot) {
            (true, true) => p.modify_oneshot(fd, want),
            (true, false) => p.modify(fd, want),
            (false, true) => p.add_oneshot(fd, want),
            (false, false) => p.add(fd, want),
        })?;
        w.registered = true;
        w.oneshot = oneshot;
        w.armed = true;
        Ok(())
    }

    /// After `fd`'s entry changed: count it in or out of the watched fds (`before`: it was
    /// watched) and drop it from the map if vacant. The caller drops what was taken out.
    fn settle(&self, io: &mut FdMap<IoWatch>, fd: RawFd, before: bool) -> Option<IoWatch> {
        let (after, vacant) = match io.get(&fd) {
            Some(w) => (w.watched(), w.is_vacant()),
            None => (false, false),
        };
        match (before, after) {
            (false, true) => {
                self.io_count.fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                self.io_count.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        if vacant {
            io.remove(&fd)
        } else {
            None
        }
    }

    /// Re-arms the one-shot registration of a sock_* operation that must wait again after a
    /// readiness report (if its watcher is still `target`).
    pub(crate) fn rearm_native_watch(
        &self,
        py: Python<'_>,
        fd: RawFd,
        write: bool,
        target: *mut ffi::PyObject,
    ) -> PyResult<()> {
        let mut io = self.io.lock(py);
        let Some(w) = io.get_mut(&fd) else {
            return Ok(());
        };
        let side = if write { &w.writer } else { &w.reader };
        let current = matches!(side, Some(Watcher::Native(t, _)) if t.as_ptr() == target);
        if current && w.registered && w.oneshot && !w.armed {
            self.sync_poller(w, fd)?;
        }
        Ok(())
    }

    /// Installs a watcher for one side of `fd`, cancelling the one it replaces.
    fn set_watch(&self, py: Python<'_>, fd: RawFd, watcher: Watcher, write: bool) -> PyResult<()> {
        let previous = {
            let mut io = self.io.lock(py);
            let w = io.entry(fd).or_default();
            let before = w.watched();
            let previous = if write {
                w.writer.replace(watcher)
            } else {
                w.reader.replace(watcher)
            };
            if let Err(e) = self.sync_poller(w, fd) {
                // Undo: the fd is watched as it was.
                let new = if write {
                    std::mem::replace(&mut w.writer, previous)
                } else {
                    std::mem::replace(&mut w.reader, previous)
                };
                let gone = self.settle(&mut io, fd, before);
                drop(io);
                drop((new, gone));
                return Err(e);
            }
            self.settle(&mut io, fd, before);
            previous
        };
        if let Some(Watcher::Handle(prev)) = &previous {
            Handle::cancel_handle(prev.bind(py))?;
        }
        drop(previous);
        Ok(())
    }

    /// Removes the watcher of one side of `fd` (the caller drops or cancels it, lock released).
    fn take_watch(&self, py: Python<'_>, fd: RawFd, write: bool) -> Option<Watcher> {
        let mut io = self.io.lock(py);
        let w = io.get_mut(&fd)?;
        let before = w.watched();
        let removed = if write {
            w.writer.take()
        } else {
            w.reader.take()
        };
        removed.as_ref()?;
        self.sync_poller(w, fd).ok();
        // A vacant entry holds no watcher: nothing Python is dropped under the lock.
        drop(self.settle(&mut io, fd, before));
        removed
    }

    /// remove_reader / remove_writer: True if a callback was registered.
    fn remove_watch(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>, write: bool) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let fd = fileobj_to_fd(fd)?;
        if this.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        // An fd no C int can hold is not registered (asyncio: the selector has no key for it).
        let fd = match fd_as_c_int(&fd) {
            Ok(fd) => fd,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        Ok(this.remove_native_watch(py, fd, write))
    }

    /// The public add_reader/add_writer/remove_reader/remove_writer refuse an fd a live
    /// transport owns (`BaseSelectorEventLoop._ensure_fd_no_transport`).
    fn ensure_fd_no_transport(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::ensure_fd_no_transport_for(slf, fd)
    }

    /// `self._ensure_fd_no_transport(fd)`, asked only when a transport may own `fd` (an int
    /// fd is looked up here; another file object when any transport is registered).
    pub(crate) fn ensure_fd_no_transport_for(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let registry = &slf.get().transports;
        let maybe_owned = if fd.is_exact_instance_of::<pyo3::types::PyInt>() {
            fd.extract::<RawFd>()
                .is_ok_and(|fd| registry.owner(py, fd).is_some())
        } else {
            !registry.is_empty(py)
        };
        if maybe_owned {
            slf.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
        }
        Ok(())
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let poller = Poller::new().map_err(os_error)?;
        let waker = Waker::new().map_err(os_error)?;
        poller
            .add(waker.read_fd(), Interest::READ)
            .map_err(os_error)?;
        Ok(LoopCore {
            sched: GilCell::new(Sched::default()),
            io: GilCell::new(FdMap::default()),
            io_count: AtomicUsize::new(0),
            poller: RwLock::new(Some(poller)),
            waker: RwLock::new(Some(waker)),
            stopping: AtomicBool::new(false),
            polled_last_turn: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            thread_id: AtomicU64::new(0),
            debug: AtomicBool::new(false),
            slow_callback_duration: AtomicU64::new(0.1f64.to_bits()),
            task_factory: GilCell::new(None),
            handle_pool: GilCell::new(Vec::new()),
            events: GilCell::new(Vec::new()),
            native_tasks: AtomicBool::new(false),
            current_handle: GilCell::new(None),
            clock_resolution: clock::resolution(),
            transports: Default::default(),
        })
    }

    /// The live transport that owns `fd`, or None (`self._transports.get(fd)` in asyncio).
    fn _transport_of(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
        let core = self.transports.owner(py, fd.extract::<RawFd>().ok()?)?;
        crate::transport::transport_of_core(py, core)
    }

    /// No transport owns `fd` any more (`del self._transports[fd]`, for sendfile; the
    /// transport's `_core._register()` puts it back).
    fn _forget_transport(&self, py: Python<'_>, fd: RawFd) {
        self.transports.remove(py, fd);
    }

    #[getter]
    fn _clock_resolution(&self) -> f64 {
        self.clock_resolution
    }

    // call_soon, call_soon_threadsafe, call_later, call_at and create_task (METH_FASTCALL),
    // create_future, time and get_debug (METH_NOARGS) are written in `schedule_methods.rs`
    // (no PyO3 trampoline or argument parsing on the hottest calls).

    /// Called by TimerHandle.cancel() for a scheduled timer.
    fn _timer_handle_cancelled(&self, handle: &Bound<'_, PyAny>) {
        let py = handle.py();
        self.timer_cancelled(py);
    }

    /// Queues an existing ferroloop Handle and wakes the loop (asyncio's private
    /// `BaseEventLoop._add_callback_signalsafe`, kept for code that calls it; signal handlers
    /// themselves go through `_handle_signal` and call_soon_threadsafe).
    fn _add_callback_signalsafe(&self, handle: &Bound<'_, Handle>) -> PyResult<()> {
        self.check_closed()?;
        self.push_ready(handle.py(), Ready::Handle(handle.clone().unbind()));
        self.wake();
        Ok(())
    }

    fn _write_to_self(&self) {
        self.wake();
    }

    /// The fd Python's `signal.set_wakeup_fd` may write signal numbers to.
    fn _wakeup_write_fd(&self) -> PyResult<RawFd> {
        self.waker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.write_fd())
            .ok_or_else(|| PyRuntimeError::new_err("Event loop is closed"))
    }

    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_once_impl(slf)
    }

    /// `BaseEventLoop.run_forever`.
    fn run_forever(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if this.thread_id.load(Ordering::Acquire) != 0 {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        if !stdlib::get_running_loop(py)?.call0()?.is_none() {
            return Err(PyRuntimeError::new_err(
                "Cannot run the event loop while another loop is running",
            ));
        }
        let debug = this.is_debug();
        set_origin_tracking(py, debug)?;
        let old_hooks = stdlib::get_asyncgen_hooks(py)?.call0()?;
        this.thread_id
            .store(capi::thread_ident(), Ordering::Release);
        this.polled_last_turn.store(false, Ordering::Relaxed);
        let mut untracked = false;
        let result = (|| -> PyResult<()> {
            let kwargs = PyDict::new(py);
            kwargs.set_item(
                "firstiter",
                slf.getattr(intern!(py, "_asyncgen_firstiter_hook"))?,
            )?;
            kwargs.set_item(
                "finalizer",
                slf.getattr(intern!(py, "_asyncgen_finalizer_hook"))?,
            )?;
            stdlib::set_asyncgen_hooks(py)?.call((), Some(&kwargs))?;
            stdlib::set_running_loop(py)?.call1((slf,))?;
            // A running loop is alive (this call holds it, and so does the running-loop
            // slot), so everything it holds is reachable: the collector need not traverse its
            // queues, timers and I/O map on every collection that includes it. Tracked again
            // on the way out, and only if it was tracked on the way in.
            if capi::is_gc_tracked(slf.as_any()) {
                capi::gc_untrack(slf.as_any());
                untracked = true;
            }
            loop {
                Self::run_once_impl(slf)?;
                if this.stopping.load(Ordering::Acquire) {
                    break;
                }
            }
            Ok(())
        })();
        this.stopping.store(false, Ordering::Release);
        this.thread_id.store(0, Ordering::Release);
        if untracked {
            capi::gc_track(slf.as_any());
        }
        this.unpark_queued_tasks(py);
        let cleanup = (|| -> PyResult<()> {
            stdlib::set_running_loop(py)?.call1((py.None(),))?;
            set_origin_tracking(py, false)?;
            stdlib::set_asyncgen_hooks(py)?.call1(old_hooks.cast::<PyTuple>()?)?;
            Ok(())
        })();
        result.and(cleanup)
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn is_running(&self) -> bool {
        self.thread_id.load(Ordering::Acquire) != 0
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    #[getter]
    fn _closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    #[getter]
    fn _thread_id(&self) -> Option<u64> {
        match self.thread_id.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// The Rust part of close(): refuses while running, drops every pending callback and timer,
    /// stops watching fds and closes the poller and waker. Returns False if already closed.
    fn _close_core(&self, py: Python<'_>) -> PyResult<bool> {
        if self.is_running() {
            return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        let (ready, timers) = {
            let mut s = self.sched.lock(py);
            s.cancelled_timers = 0;
            (s.ready.take_all(), s.timers.take_all())
        };
        let io: Vec<IoWatch> = self.io.lock(py).drain().map(|(_, w)| w).collect();
        let pool = std::mem::take(&mut *self.handle_pool.lock(py));
        drop(pool);
        self.io_count.store(0, Ordering::Release);
        let poller = self
            .poller
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let waker = self.waker.write().unwrap_or_else(|e| e.into_inner()).take();
        drop((poller, waker));
        for t in &timers {
            t.get().set_scheduled(false);
        }
        // One-shot handles are invisible to the garbage collector; one that outlives the loop
        // (`asyncio.sleep`'s coroutine holds its TimerHandle) must not keep its callback and
        // arguments, or a cycle through them (task -> coroutine -> handle -> future -> task)
        // could never be collected. They will never run: let go of what they hold.
        let mut released = Vec::new();
        for t in &timers {
            released.push(release_oneshot(t.bind(py).as_super()));
        }
        for item in ready.iter() {
            if let Ready::Handle(h) = item {
                released.push(release_oneshot(h.bind(py)));
            }
        }
        drop((ready, timers, io));
        drop(released);
        Ok(true)
    }

    fn set_debug(slf: &Bound<'_, Self>, enabled: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.debug.store(enabled, Ordering::Relaxed);
        if this.is_running() {
            let f = py
                .import(intern!(py, "sys"))?
                .getattr(intern!(py, "set_coroutine_origin_tracking_depth"))?;
            let depth = if enabled {
                stdlib::debug_stack_depth(py)?.clone()
            } else {
                0i32.into_pyobject(py)?.into_any()
            };
            let args = PyTuple::new(py, [depth])?;
            Self::schedule_soon(slf, &f, &args, None, "call_soon_threadsafe", false)?;
            slf.get().wake();
        }
        Ok(())
    }

    #[getter]
    fn get_slow_callback_duration(&self) -> f64 {
        f64::from_bits(self.slow_callback_duration.load(Ordering::Relaxed))
    }

    #[setter]
    fn set_slow_callback_duration(&self, value: f64) {
        self.slow_callback_duration
            .store(value.to_bits(), Ordering::Relaxed);
    }

    #[getter]
    fn _current_handle(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.current_handle
            .lock(py)
            .as_ref()
            .map(|h| h.clone_ref(py))
    }

    /// `BaseEventLoop._check_closed`
    fn _check_closed(&self) -> PyResult<()> {
        self.check_closed()
    }

    /// `BaseEventLoop._check_thread`
    fn _check_thread(&self) -> PyResult<()> {
        self.check_thread()
    }

    /// `BaseEventLoop._check_running`
    fn _check_running(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().is_running() {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        if !stdlib::get_running_loop(py)?.call0()?.is_none() {
            return Err(PyRuntimeError::new_err(
                "Cannot run the event loop while another loop is running",
            ));
        }
        Ok(())
    }

    fn _set_native_tasks(&self, enabled: bool) {
        self.native_tasks.store(enabled, Ordering::Relaxed);
    }

    fn set_task_factory(&self, factory: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = factory.py();
        if !factory.is_none() && !factory.is_callable() {
            return Err(PyTypeError::new_err(
                "task factory must be a callable or None",
            ));
        }
        let new = if factory.is_none() {
            None
        } else {
            Some(factory.clone().unbind())
        };
        let old = std::mem::replace(&mut *self.task_factory.lock(py), new);
        drop(old);
        Ok(())
    }

    fn get_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory.lock(py).as_ref().map(|f| f.clone_ref(py))
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        Self::ensure_fd_no_transport(slf, fd)?;
        Self::add_watch(slf, fd, callback, args, false)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        Self::add_watch(slf, fd, callback, args, false)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        Self::add_watch(slf, fd, callback, args, true)
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_watch(slf, fd, false)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_watch(slf, fd, true)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        Self::ensure_fd_no_transport(slf, fd)?;
        Self::add_watch(slf, fd, callback, args, true)
    }

    fn remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::ensure_fd_no_transport(slf, fd)?;
        Self::remove_watch(slf, fd, false)
    }

    fn remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::ensure_fd_no_transport(slf, fd)?;
        Self::remove_watch(slf, fd, true)
    }

    /// What the loop watches on `fd`, as `selectors` would report it: None, or
    /// `(events, reader, writer)` with EVENT_READ=1/EVENT_WRITE=2 and the Handles (None for a
    /// side watched by a Rust transport).
    fn _io_key(&self, py: Python<'_>, fd: RawFd) -> Option<IoKey> {
        let io = self.io.lock(py);
        let w = io.get(&fd).filter(|w| w.watched())?;
        let events = u8::from(w.reader.is_some()) | (u8::from(w.writer.is_some()) << 1);
        let handle_of = |x: &Option<Watcher>| {
            x.as_ref()
                .and_then(Watcher::handle)
                .map(|h| h.clone_ref(py))
        };
        Some((events, handle_of(&w.reader), handle_of(&w.writer)))
    }

    /// Number of callbacks waiting in the ready queue (for tests and diagnostics).
    fn _ready_count(&self, py: Python<'_>) -> usize {
        self.sched.lock(py).ready.len()
    }

    /// Number of timers in the heap, cancelled ones included (asyncio's `len(loop._scheduled)`).
    fn _timer_count(&self, py: Python<'_>) -> usize {
        self.sched.lock(py).timers.len()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Handles are not tracked by the collector (see handle.rs), so only the other objects
        // the loop holds are visited. try_lock: the collector may run while this thread holds
        // a lock (it never waits). Readers and writers are tracked handles: visit them.
        // Queued one-shot handles are untracked; when the loop holds the only reference to
        // one, what the handle references is reported as the loop's own (that keeps a cycle
        // loop -> handle -> callback -> loop collectable, e.g. an unclosed loop dropped with
        // callbacks pending). A handle someone else also holds is left out: its contents are
        // reachable from there.
        crate::capi::in_traverse(|py| -> Result<(), PyTraverseError> {
            if let Some(s) = self.sched.try_lock(py) {
                for item in s.ready.iter() {
                    match item {
                        Ready::Handle(h) => visit_sole_handle(h.bind(py), &visit)?,
                        Ready::TaskStep(task, exc) => {
                            visit.call(task)?;
                            visit.call(exc)?;
                        }
                        Ready::TaskWakeup(task, fut) => {
                            visit.call(task)?;
                            visit.call(fut)?;
                        }
                        Ready::GatherChild(callback, child) => {
                            visit.call(callback)?;
                            visit.call(child)?;
                        }
                        Ready::TaskGroupChild(group, child) => {
                            visit.call(group)?;
                            visit.call(child)?;
                        }
                        Ready::FutureCallback(callback, future, context) => {
                            visit.call(callback)?;
                            visit.call(future)?;
                            visit.call(context.held())?;
                        }
                        Ready::MethodCallback(call, future) => {
                            call.visit(&visit)?;
                            visit.call(future)?;
                        }
                        Ready::Io(target, ..) => target.visit(&visit)?,
                        Ready::Start(target, context) => {
                            visit.call(target)?;
                            visit.call(context)?;
                        }
                    }
                }
                for (_, t) in s.timers.iter() {
                    visit_sole_handle(t.bind(py).as_super(), &visit)?;
                }
            }
            if let Some(io) = self.io.try_lock(py) {
                for w in io.values() {
                    for watcher in [&w.reader, &w.writer].into_iter().flatten() {
                        match watcher {
                            Watcher::Handle(h) => visit.call(h)?,
                            Watcher::Native(target, _) => target.visit(&visit)?,
                        }
                    }
                }
            }
            if let Some(f) = self.task_factory.try_lock(py) {
                visit.call(&*f)?;
            }
            if let Some(h) = self.current_handle.try_lock(py) {
                visit.call(&*h)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn __clear__(&self) {
        // Cold path (the collector breaking a cycle): attaching when already attached only
        // counts up, and gives the token the cells ask for.
        Python::attach(|py| {
            let taken = self.sched.try_lock(py).map(|mut s| {
                s.cancelled_timers = 0;
                (s.ready.take_all(), s.timers.take_all())
            });
            let io: Option<Vec<IoWatch>> = self
                .io
                .try_lock(py)
                .map(|mut io| io.drain().map(|(_, w)| w).collect());
            let f = self.task_factory.try_lock(py).and_then(|mut f| f.take());
            drop((taken, io, f));
        });
    }
}

/// What a one-shot handle held, taken out of it (dropped by the caller, outside any lock).
type Released = Option<(
    Option<Py<PyAny>>,
    Option<Py<PyTuple>>,
    Option<capi::ContextSnapshot>,
    Option<Py<PyAny>>,
)>;

/// Takes the callback, arguments, context and source traceback out of a one-shot handle.
fn release_oneshot(h: &Bound<'_, Handle>) -> Released {
    let mut b = h.get().state.try_lock(h.py())?;
    if !b.oneshot {
        return None;
    }
    Some((
        b.callback.take(),
        b.args.take(),
        b.context.take(),
        b.source_traceback.take(),
    ))
}

/// Visits what a queued handle references, if the loop holds the only reference to it.
fn visit_sole_handle(h: &Bound<'_, Handle>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    if capi::refcount(h.as_any()) != 1 {
        return Ok(());
    }
    if let Some(b) = h.get().state.try_lock(h.py()) {
        visit.call(&b.callback)?;
        capi::visit_args(h.py(), b.args.as_ref(), visit)?;
        visit.call(b.context.as_ref().map(capi::ContextSnapshot::held))?;
        visit.call(&b.loop_)?;
        visit.call(&b.source_traceback)?;
    }
    Ok(())
}

/// `BaseEventLoop._set_coroutine_origin_tracking`
fn set_origin_tracking(py: Python<'_>, enabled: bool) -> PyResult<()> {
    let depth = if enabled {
        stdlib::debug_stack_depth(py)?.clone()
    } else {
        0i32.into_pyobject(py)?.into_any()
    };
    stdlib::set_coroutine_origin_tracking_depth(py)?.call1((depth,))?;
    Ok(())
}
