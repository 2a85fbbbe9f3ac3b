//! The pieces of Python's standard library ferroloop calls into, imported once and cached:
//! asyncio's running-loop registry, its Future/Task classes, its formatting helpers and logger.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

/// `cached_attr!(/// doc, name, "module", "attr")` defines `fn name(py) -> PyResult<&Bound<PyAny>>`
/// returning `module.attr`, imported once per interpreter. Used across the crate.
macro_rules! cached_attr {
    ($(#[$doc:meta])* $name:ident, $module:literal, $attr:literal) => {
        $(#[$doc])*
        pub(crate) fn $name(
            py: ::pyo3::Python<'_>,
        ) -> ::pyo3::PyResult<&::pyo3::Bound<'_, ::pyo3::PyAny>> {
            static CELL: ::pyo3::sync::PyOnceLock<::pyo3::Py<::pyo3::PyAny>> =
                ::pyo3::sync::PyOnceLock::new();
            CELL.get_or_try_init(py, || {
                Ok::<_, ::pyo3::PyErr>(py.import($module)?.getattr($attr)?.unbind())
            })
            .map(|o| o.bind(py))
        }
    };
}
pub(crate) use cached_attr;

cached_attr!(
    /// `asyncio.events._get_running_loop`
    get_running_loop, "asyncio.events", "_get_running_loop");
cached_attr!(
    /// `asyncio.events._set_running_loop`
    set_running_loop, "asyncio.events", "_set_running_loop");
cached_attr!(
    /// `asyncio.futures.Future` (the C class when `_asyncio` is available)
    future_class, "asyncio.futures", "Future");
cached_attr!(
    /// `asyncio.tasks.Task`
    task_class, "asyncio.tasks", "Task");
cached_attr!(
    /// `asyncio.tasks._set_task_name`
    set_task_name, "asyncio.tasks", "_set_task_name");
cached_attr!(
    /// `asyncio.format_helpers._format_callback_source`
    format_callback_source, "asyncio.format_helpers", "_format_callback_source");
cached_attr!(
    /// `asyncio.format_helpers.extract_stack`
    extract_stack, "asyncio.format_helpers", "extract_stack");
cached_attr!(
    /// `sys._getframe`
    getframe, "sys", "_getframe");
cached_attr!(
    /// `sys.get_asyncgen_hooks`
    get_asyncgen_hooks, "sys", "get_asyncgen_hooks");
cached_attr!(
    /// `sys.set_asyncgen_hooks`
    set_asyncgen_hooks, "sys", "set_asyncgen_hooks");
cached_attr!(
    /// `sys.set_coroutine_origin_tracking_depth`
    set_coroutine_origin_tracking_depth, "sys", "set_coroutine_origin_tracking_depth");
cached_attr!(
    /// `asyncio.constants.DEBUG_STACK_DEPTH`
    debug_stack_depth, "asyncio.constants", "DEBUG_STACK_DEPTH");

cached_attr!(
    /// `asyncio.events._get_event_loop`
    get_event_loop, "asyncio.events", "_get_event_loop");
cached_attr!(
    /// `asyncio.exceptions.CancelledError`
    cancelled_error, "asyncio.exceptions", "CancelledError");
cached_attr!(
    /// `asyncio.tasks._release_waiter` (wait_for's waiter callback)
    release_waiter, "asyncio.tasks", "_release_waiter");
cached_attr!(
    /// `asyncio.tasks.FIRST_COMPLETED`
    first_completed, "asyncio.tasks", "FIRST_COMPLETED");
cached_attr!(
    /// `asyncio.tasks.FIRST_EXCEPTION`
    first_exception, "asyncio.tasks", "FIRST_EXCEPTION");
cached_attr!(
    /// `asyncio.tasks.ALL_COMPLETED`
    all_completed, "asyncio.tasks", "ALL_COMPLETED");
cached_attr!(
    /// `asyncio.tasks.current_task`
    current_task, "asyncio.tasks", "current_task");
cached_attr!(
    /// `asyncio.exceptions.InvalidStateError`
    invalid_state_error_class, "asyncio.exceptions", "InvalidStateError");
cached_attr!(
    /// `asyncio.base_futures._future_repr_info`
    future_repr_info, "asyncio.base_futures", "_future_repr_info");

cached_attr!(
    /// `asyncio.tasks._register_task`
    register_task, "asyncio.tasks", "_register_task");
cached_attr!(
    /// `asyncio.futures._set_result_unless_cancelled` (the timer callback of asyncio.sleep)
    set_result_unless_cancelled, "asyncio.futures", "_set_result_unless_cancelled");
cached_attr!(
    /// `ferroloop._loop.Loop`, the loop class (the package's Python part)
    ferroloop_loop_class, "ferroloop._loop", "Loop");
cached_attr!(
    /// `asyncio.futures._get_loop`
    futures_get_loop, "asyncio.futures", "_get_loop");
cached_attr!(
    /// `inspect.isgenerator`
    is_generator, "inspect", "isgenerator");
cached_attr!(
    /// `asyncio.coroutines.iscoroutine`
    iscoroutine, "asyncio.coroutines", "iscoroutine");
cached_attr!(
    /// `asyncio.tasks._ensure_future`
    tasks_ensure_future, "asyncio.tasks", "_ensure_future");
cached_attr!(
    /// `asyncio.base_tasks._task_get_stack`
    task_get_stack, "asyncio.base_tasks", "_task_get_stack");
cached_attr!(
    /// `asyncio.base_tasks._task_print_stack`
    task_print_stack, "asyncio.base_tasks", "_task_print_stack");
cached_attr!(
    /// `asyncio.base_tasks._task_repr_info`
    task_repr_info, "asyncio.base_tasks", "_task_repr_info");

/// `asyncio.tasks._current_tasks`: asyncio's {loop: running task} dict, which
/// `asyncio.current_task()` reads.
pub fn current_tasks(py: Python<'_>) -> PyResult<&Bound<'_, pyo3::types::PyDict>> {
    static CELL: PyOnceLock<Py<pyo3::types::PyDict>> = PyOnceLock::new();
    CELL.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("asyncio.tasks")?
                .getattr("_current_tasks")?
                .cast_into::<pyo3::types::PyDict>()?
                .unbind(),
        )
    })
    .map(|d| d.bind(py))
}

/// `asyncio.InvalidStateError(message)`.
pub fn invalid_state_error(py: Python<'_>, message: impl Into<String>) -> PyErr {
    let message: String = message.into();
    match invalid_state_error_class(py).and_then(|cls| cls.call1((message.clone(),))) {
        Ok(exc) => crate::capi::raise_instance(exc),
        Err(e) => e,
    }
}

/// `asyncio.base_events.logger`, looked up at each use so that tests patching it are honoured.
pub fn asyncio_logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("asyncio.base_events")?.getattr("logger")
}

/// The keyword names `("loop",)`, `("loop", "name", "context")`, `("context",)` as interned tuples.
pub fn kwnames<'py>(py: Python<'py>, which: KwNames) -> PyResult<&'py Bound<'py, PyTuple>> {
    static LOOP: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    static LOOP_NAME_CONTEXT: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    static CONTEXT: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    let (cell, names): (_, &[&str]) = match which {
        KwNames::Loop => (&LOOP, &["loop"]),
        KwNames::LoopNameContext => (&LOOP_NAME_CONTEXT, &["loop", "name", "context"]),
        KwNames::Context => (&CONTEXT, &["context"]),
    };
    cell.get_or_try_init(py, || {
        let items: Vec<_> = names
            .iter()
            .map(|n| pyo3::types::PyString::intern(py, n))
            .collect();
        PyTuple::new(py, items).map(Bound::unbind)
    })
    .map(|t| t.bind(py))
}

#[derive(Clone, Copy)]
pub enum KwNames {
    Loop,
    LoopNameContext,
    Context,
}

/// The exception object of `err` with its traceback attached (`__traceback__`), as Python code
/// catching it would see it.
pub fn exception_value<'py>(py: Python<'py>, err: &PyErr) -> Bound<'py, PyAny> {
    err.clone_ref(py).into_value(py).into_bound(py).into_any()
}
