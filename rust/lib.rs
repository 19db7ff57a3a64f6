//! `spanwatch._core`: per-client sketches of LLM prompt streams.
//!
//! Everything but `py` is plain Rust with no Python in sight; `py` is the bridge.

pub mod cells;
pub mod config;
pub mod error;
pub mod hash;
pub mod hll;
pub mod minhash;
pub mod records;
pub mod shingle;
pub mod sketch;
pub mod snapshot;
pub mod store;
pub mod strays;

mod py;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<py::PySketchStore>()?;
    m.add_class::<py::PyCellSearch>()?;
    m.add_function(wrap_pyfunction!(py::snapshot_version, m)?)?;
    m.add_function(wrap_pyfunction!(py::parse_records, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
