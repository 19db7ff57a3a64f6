//! The only module that knows Python: `SketchStore` as a pyclass.

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyList, PyString};

use crate::cells::Cells;
use crate::config::SketchConfig;
use crate::error::CoreError;
use crate::records;
use crate::snapshot;
use crate::store::{Batch, SketchStore};
use crate::strays::StrayConfig;

pyo3::import_exception!(spanwatch.errors, SnapshotError);
pyo3::import_exception!(spanwatch.errors, ConfigError);
pyo3::import_exception!(spanwatch.errors, InputError);

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        let msg = e.to_string();
        match e {
            CoreError::Config(_) => ConfigError::new_err(msg),
            CoreError::Input(_) => InputError::new_err(msg),
            CoreError::Snapshot(_) => SnapshotError::new_err(msg),
            CoreError::UnknownClient(_) => PyKeyError::new_err(msg),
        }
    }
}

/// Per-client sketches of prompt streams, with a bounded number of clients.
#[pyclass(name = "SketchStore", module = "spanwatch._core")]
pub struct PySketchStore {
    inner: SketchStore,
    secret: Vec<u8>,
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Strings of a Python list, borrowed without copying; text that is not
/// valid Unicode (a lone surrogate) is an InputError naming the argument and
/// position.
fn texts(name: &str, items: &Bound<'_, PyAny>) -> PyResult<Vec<PyBackedStr>> {
    if items.is_instance_of::<PyString>() {
        return Err(InputError::new_err(format!(
            "{name} must be a list of str, not a str"
        )));
    }
    let mut out = Vec::new();
    for (i, item) in items.try_iter()?.enumerate() {
        let item = item?;
        let s = item
            .cast::<PyString>()
            .map_err(|_| InputError::new_err(format!("{name}[{i}] is not a str")))?;
        let text = PyBackedStr::try_from(s.clone()).map_err(|_| {
            InputError::new_err(format!("{name}[{i}] is not valid Unicode (lone surrogate)"))
        })?;
        out.push(text);
    }
    Ok(out)
}

#[pymethods]
impl PySketchStore {
    #[new]
    #[pyo3(signature = (
        *, secret = b"".to_vec(), levels = vec![16, 256, 4096], hist_level = 1, num_perm = 128,
        shingle_size = 3, hll_precision = 8, band_count = 8, band_rows = 4, recent_prompts = 32,
        max_clients = 1_000_000, idle_ttl = 0.0, stray_dim = 0, stray_reservoir = 64,
        stray_open = 32, stray_radius = 0.8
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        secret: Vec<u8>,
        levels: Vec<u32>,
        hist_level: usize,
        num_perm: usize,
        shingle_size: usize,
        hll_precision: u8,
        band_count: usize,
        band_rows: usize,
        recent_prompts: usize,
        max_clients: usize,
        idle_ttl: f64,
        stray_dim: usize,
        stray_reservoir: usize,
        stray_open: usize,
        stray_radius: f32,
    ) -> PyResult<Self> {
        let config = SketchConfig {
            levels,
            hist_level,
            num_perm,
            shingle_size,
            hll_precision,
            band_count,
            band_rows,
            recent_prompts,
            max_clients,
            idle_ttl,
            strays: StrayConfig {
                dim: stray_dim,
                reservoir: stray_reservoir,
                open: stray_open,
                radius: stray_radius,
            },
        };
        let inner = SketchStore::new(config, &secret)?;
        Ok(PySketchStore { inner, secret })
    }

    /// Folds a batch into the sketches. Returns (near_dup, checkpoint_index,
    /// checkpoint_features): a bool per event, the indices of events at which
    /// a client's count reached a multiple of `checkpoint_every`, and the
    /// client's feature row at each of those moments. `embeddings`, one row
    /// per event, feed the stray tracker of a store made with `stray_dim`.
    #[pyo3(signature = (client_ids, prompts, cells, ts, checkpoint_every = 0, embeddings = None))]
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn update<'py>(
        &mut self,
        py: Python<'py>,
        client_ids: &Bound<'py, PyAny>,
        prompts: &Bound<'py, PyAny>,
        cells: PyReadonlyArray2<'py, i64>,
        ts: PyReadonlyArray1<'py, f64>,
        checkpoint_every: u64,
        embeddings: Option<PyReadonlyArray2<'py, f32>>,
    ) -> PyResult<(
        Bound<'py, PyArray1<bool>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyAny>,
    )> {
        let shape = cells.shape();
        if shape[1] != self.inner.config().levels.len() {
            return Err(InputError::new_err(format!(
                "cells must have one column per level ({}), got {}",
                self.inner.config().levels.len(),
                shape[1]
            )));
        }
        let client_ids = texts("client_ids", client_ids)?;
        let prompts = texts("prompts", prompts)?;
        let cells: Vec<i64> = cells.as_array().iter().copied().collect();
        let ts: Vec<f64> = ts.as_array().iter().copied().collect();
        let dim = self.inner.config().strays.dim;
        let emb: Option<Vec<f32>> = match embeddings {
            Some(e) if dim > 0 => {
                if e.shape()[1] != dim {
                    return Err(InputError::new_err(format!(
                        "embeddings must have {dim} columns (the store's stray_dim), got {}",
                        e.shape()[1]
                    )));
                }
                Some(e.as_array().iter().copied().collect())
            }
            _ => None,
        };
        let inner = &mut self.inner;
        let up = py.detach(|| {
            let ids: Vec<&str> = client_ids.iter().map(|s| &**s).collect();
            let prompts: Vec<&str> = prompts.iter().map(|s| &**s).collect();
            inner.update(
                &Batch {
                    client_ids: &ids,
                    prompts: &prompts,
                    cells: &cells,
                    ts: &ts,
                    emb: emb.as_deref(),
                },
                checkpoint_every,
            )
        })?;
        let width = self.inner.feature_names().len();
        let k = up.checkpoints.len();
        let idx: Vec<i64> = up.checkpoints.into_iter().map(|i| i as i64).collect();
        Ok((
            PyArray1::from_vec(py, up.near_dup),
            PyArray1::from_vec(py, idx),
            PyArray1::from_vec(py, up.features)
                .reshape([k, width])?
                .into_any(),
        ))
    }

    /// Column names of `features`.
    #[getter]
    fn feature_names(&self) -> Vec<String> {
        self.inner.feature_names()
    }

    /// Float matrix of features, one row per client id (zeros if unknown).
    fn features<'py>(
        &self,
        py: Python<'py>,
        client_ids: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let width = self.inner.feature_names().len();
        let n = client_ids.len();
        let inner = &self.inner;
        let flat = py.detach(|| inner.features(&strs(&client_ids)));
        Ok(PyArray1::from_vec(py, flat).reshape([n, width])?.into_any())
    }

    /// Feature row of the union of several clients' traffic.
    fn union_features<'py>(
        &self,
        py: Python<'py>,
        client_ids: Vec<String>,
    ) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.inner.union_features(&strs(&client_ids)))
    }

    /// Integer matrix of cell histograms at the histogram level.
    fn histograms<'py>(
        &self,
        py: Python<'py>,
        client_ids: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let width = self.inner.config().hist_cells();
        let n = client_ids.len();
        let flat = self.inner.histograms(&strs(&client_ids));
        Ok(PyArray1::from_vec(py, flat).reshape([n, width])?.into_any())
    }

    /// Densified MinHash signatures, `(n, num_perm)` uint32, one row per id
    /// (zeros for unknown ids): for LSH across clients.
    fn signatures<'py>(
        &self,
        py: Python<'py>,
        client_ids: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let width = self.inner.config().num_perm;
        let n = client_ids.len();
        let flat = self.inner.signatures(&strs(&client_ids));
        Ok(PyArray1::from_vec(py, flat).reshape([n, width])?.into_any())
    }

    /// Densified MinHash signatures of prompts, `(n, num_perm)` uint32,
    /// under this store's key and shingle size, without touching any client
    /// (a client holding exactly one of these prompts has its row in
    /// `signatures`). Hashes in parallel without the GIL.
    fn minhash<'py>(
        &self,
        py: Python<'py>,
        prompts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let prompts = texts("prompts", prompts)?;
        let width = self.inner.config().num_perm;
        let n = prompts.len();
        let inner = &self.inner;
        let flat = py.detach(|| {
            let refs: Vec<&str> = prompts.iter().map(|s| &**s).collect();
            inner.minhash(&refs)
        });
        Ok(PyArray1::from_vec(py, flat).reshape([n, width])?.into_any())
    }

    /// Estimated Jaccard index of two clients' prompt shingles.
    fn jaccard(&self, a: &str, b: &str) -> PyResult<f64> {
        Ok(self.inner.jaccard(a, b)?)
    }

    /// Folds client `src` into client `dst` (created if absent).
    fn merge(&mut self, src: &str, dst: &str) -> PyResult<()> {
        Ok(self.inner.merge(src, dst)?)
    }

    /// Stores a client's alert level (0-255) with its sketch.
    fn set_alert_level(&mut self, client_id: &str, level: u8) -> PyResult<()> {
        Ok(self.inner.set_alert_level(client_id, level)?)
    }

    /// Stores a client's sequential-test state with its sketch.
    fn set_evidence(&mut self, client_id: &str, value: f64) -> PyResult<()> {
        Ok(self.inner.set_evidence(client_id, value)?)
    }

    /// Sets the reference distribution over the histogram level's cells
    /// that the `kl_ref` feature compares each client with.
    fn set_reference(&mut self, probs: Vec<f64>) -> PyResult<()> {
        Ok(self.inner.set_reference(&probs)?)
    }

    /// Drops a client; returns whether it was held.
    fn remove(&mut self, client_id: &str) -> bool {
        self.inner.remove(client_id)
    }

    /// Evicts clients idle since before `cutoff`; returns how many.
    fn evict_idle(&mut self, cutoff: f64) -> usize {
        self.inner.evict_idle(cutoff)
    }

    /// Client ids, least recently updated first.
    fn client_ids(&self) -> Vec<String> {
        self.inner
            .ids_lru_order()
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[getter]
    fn evictions(&self) -> u64 {
        self.inner.evictions()
    }

    #[getter]
    fn levels(&self) -> Vec<u32> {
        self.inner.config().levels.clone()
    }

    #[getter]
    fn hist_level(&self) -> usize {
        self.inner.config().hist_level
    }

    #[getter]
    fn num_perm(&self) -> usize {
        self.inner.config().num_perm
    }

    #[getter]
    fn max_clients(&self) -> usize {
        self.inner.config().max_clients
    }

    /// Embedding dimensions of the stray tracker (0: no tracker).
    #[getter]
    fn stray_dim(&self) -> usize {
        self.inner.config().strays.dim
    }

    /// Estimated bytes per client for ids of `id_len` bytes.
    #[pyo3(signature = (id_len = 16))]
    fn bytes_per_client(&self, id_len: usize) -> usize {
        self.inner.bytes_per_client(id_len)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __contains__(&self, client_id: &str) -> bool {
        self.inner.get(client_id).is_some()
    }

    /// Versioned, checksummed bytes of the whole store.
    fn snapshot<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let inner = &self.inner;
        let bytes = py.detach(|| snapshot::store_to_bytes(inner));
        PyBytes::new(py, &bytes)
    }

    /// A store from `snapshot()` bytes; the secret must be the one it was made with.
    #[staticmethod]
    #[pyo3(signature = (data, *, secret = b"".to_vec()))]
    fn restore(py: Python<'_>, data: Vec<u8>, secret: Vec<u8>) -> PyResult<Self> {
        let inner = py.detach(|| snapshot::store_from_bytes(&data, &secret))?;
        Ok(PySketchStore { inner, secret })
    }

    /// Versioned, checksummed bytes of one client.
    fn snapshot_client<'py>(
        &self,
        py: Python<'py>,
        client_id: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(
            py,
            &snapshot::client_to_bytes(&self.inner, client_id)?,
        ))
    }

    /// Puts a client from `snapshot_client()` bytes into this store; returns its id.
    fn restore_client(&mut self, data: &[u8]) -> PyResult<String> {
        Ok(self.inner.restore_client(data)?)
    }

    /// Versioned, checksummed bytes of one client's summary: the sketch
    /// without its ring of recent prompts (counts, coverage bitsets, cell
    /// histogram, MinHash signature, HyperLogLog, evidence).
    fn summary<'py>(&self, py: Python<'py>, client_id: &str) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(
            py,
            &snapshot::summary_to_bytes(&self.inner, client_id)?,
        ))
    }

    /// Puts a client from `summary()` bytes into this store (its ring of
    /// recent prompts empty), replacing any of the same id; returns its id.
    fn restore_summary(&mut self, data: &[u8]) -> PyResult<String> {
        Ok(self.inner.restore_summary(data)?)
    }

    /// Public fingerprint of the secret, as hex.
    #[getter]
    fn key_fingerprint(&self) -> String {
        format!("{:016x}", self.inner.key_fingerprint())
    }

    fn __getstate__<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
        (PyBytes::new(py, &self.secret), self.snapshot(py))
    }

    fn __setstate__(&mut self, py: Python<'_>, state: (Vec<u8>, Vec<u8>)) -> PyResult<()> {
        let (secret, data) = state;
        *self = Self::restore(py, data, secret)?;
        Ok(())
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "SketchStore(clients={}, levels={:?}, num_perm={}, max_clients={})",
            self.inner.len(),
            c.levels,
            c.num_perm,
            c.max_clients
        )
    }
}

/// Version of the snapshot format this build writes.
#[pyfunction]
pub fn snapshot_version() -> u16 {
    snapshot::VERSION
}

/// Columns of a batch of record values, from `parse_records`.
type Columns<'py> = (
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyList>,
    Bound<'py, PyAny>,
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyList>,
);

/// Parses Kafka record values (bytes, or None) that hold JSON prompt events.
/// Returns columns, one entry per value: parsed (bool), client_ids, prompts,
/// ts, event_ids, vectors ((n, dim) float32, zero where absent), has_vector,
/// metas (the `meta` object as JSON text). A value not parsed is left for
/// the Python parser, which accepts or refuses it with a reason; its
/// entries are None, NaN or zero.
#[pyfunction]
#[pyo3(signature = (values, default_ts, dim, max_prompt_bytes))]
pub fn parse_records<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    default_ts: PyReadonlyArray1<'py, f64>,
    dim: usize,
    max_prompt_bytes: usize,
) -> PyResult<Columns<'py>> {
    let n = values.len();
    if default_ts.len() != n {
        return Err(InputError::new_err(format!(
            "default_ts has {} entries for {} values",
            default_ts.len(),
            n
        )));
    }
    let mut raw: Vec<Option<PyBackedBytes>> = Vec::with_capacity(n);
    for (i, v) in values.iter().enumerate() {
        raw.push(if v.is_none() {
            None
        } else {
            Some(
                v.extract::<PyBackedBytes>().map_err(|_| {
                    InputError::new_err(format!("values[{i}] is not bytes or None"))
                })?,
            )
        });
    }
    let ts_in: Vec<f64> = default_ts.as_array().iter().copied().collect();
    let parsed = py.detach(|| {
        let slices: Vec<Option<&[u8]>> = raw.iter().map(|v| v.as_deref()).collect();
        records::parse_records(&slices, &ts_in, dim, max_prompt_bytes)
    });
    let mut ok = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut has_vector = Vec::with_capacity(n);
    let mut vectors = vec![0f32; n * dim];
    let (ids, prompts, event_ids, metas) = (
        PyList::empty(py),
        PyList::empty(py),
        PyList::empty(py),
        PyList::empty(py),
    );
    for (i, r) in parsed.into_iter().enumerate() {
        ok.push(r.is_some());
        match r {
            Some(r) => {
                ids.append(r.client_id)?;
                prompts.append(r.prompt)?;
                ts.push(r.ts);
                event_ids.append(r.event_id)?;
                metas.append(r.meta)?;
                has_vector.push(r.vector.is_some());
                if let Some(v) = r.vector {
                    vectors[i * dim..(i + 1) * dim].copy_from_slice(&v);
                }
            }
            None => {
                for col in [&ids, &prompts, &event_ids, &metas] {
                    col.append(py.None())?;
                }
                ts.push(f64::NAN);
                has_vector.push(false);
            }
        }
    }
    Ok((
        PyArray1::from_vec(py, ok),
        ids,
        prompts,
        PyArray1::from_vec(py, ts),
        event_ids,
        PyArray1::from_vec(py, vectors)
            .reshape([n, dim])?
            .into_any(),
        PyArray1::from_vec(py, has_vector),
        metas,
    ))
}

/// Nearest cells of a space's levels: exact at every level but the finest,
/// which is searched among the children of the query's `widen` best cells
/// of the level above (exact too when `widen` is 0).
#[pyclass(name = "CellSearch", module = "spanwatch._core", frozen)]
pub struct PyCellSearch {
    inner: Cells,
}

#[pymethods]
impl PyCellSearch {
    #[new]
    #[pyo3(signature = (levels, widen = 0))]
    fn new(levels: Vec<PyReadonlyArray2<'_, f32>>, widen: usize) -> PyResult<Self> {
        let dim = levels.first().map_or(0, |l| l.shape()[1]);
        if let Some(j) = levels.iter().position(|l| l.shape()[1] != dim) {
            return Err(InputError::new_err(format!(
                "level {j} has dimension {}, level 0 has {dim}",
                levels[j].shape()[1]
            )));
        }
        let rows = levels
            .iter()
            .map(|l| l.as_array().iter().copied().collect())
            .collect();
        Ok(Self {
            inner: Cells::new(dim, rows, widen)?,
        })
    }

    /// Cell ids of each row of `x` ((n, dim) float32): an (n, levels) int64 matrix.
    fn assign<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let (n, dim) = (x.shape()[0], x.shape()[1]);
        if dim != self.inner.dim() {
            return Err(InputError::new_err(format!(
                "queries have dimension {dim}, the cells {}",
                self.inner.dim()
            )));
        }
        let queries: Vec<f32> = x.as_array().iter().copied().collect();
        let inner = &self.inner;
        let ids = py.detach(|| inner.assign(&queries))?;
        let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
        PyArray1::from_vec(py, ids).reshape([n, self.inner.n_levels()])
    }
}
