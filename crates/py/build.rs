//! Build script: exposes the Python version cfgs (`Py_3_12`, ...) pyo3 uses, for the code in
//! `asyncio_base.rs` that depends on the C layout of asyncio's classes.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
