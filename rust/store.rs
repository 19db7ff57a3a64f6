//! The per-client store: a slab of sketches indexed by client id, in
//! least-recently-used order, with a hard cap on the number of clients.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rayon::prelude::*;

use crate::config::SketchConfig;
use crate::error::{CoreError, CoreResult};
use crate::hash::Key;
use crate::minhash::{band_keys, jaccard, MinHasher};
use crate::shingle::Shingler;
use crate::sketch::{self, ClientSketch, Digest};

const NIL: u32 = u32::MAX;
/// How many events ahead `update` prefetches a client's sketch.
const AHEAD: usize = 8;

/// One client in the slab, linked into the LRU list.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) id: Box<str>,
    pub(crate) sketch: ClientSketch,
    prev: u32,
    next: u32,
}

/// All clients' sketches under one config and one secret key.
pub struct SketchStore {
    pub(crate) config: SketchConfig,
    pub(crate) key: Key,
    offsets: Vec<usize>,
    hasher: MinHasher,
    build: std::collections::hash_map::RandomState,
    table: HashTable<u32>,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    pub(crate) evictions: u64,
    pub(crate) max_ts: f64,
    /// Natural logs of a reference distribution over the histogram level.
    log_ref: Option<Vec<f64>>,
}

/// One batch of events, borrowed from the caller.
pub struct Batch<'a> {
    pub client_ids: &'a [&'a str],
    pub prompts: &'a [&'a str],
    /// Row-major, one row of `levels.len()` cell ids per event.
    pub cells: &'a [i64],
    pub ts: &'a [f64],
    /// Row-major, one embedding of `strays.dim` values per event, for the
    /// stray tracker; None (or a store without one) skips it.
    pub emb: Option<&'a [f32]>,
}

/// What one batch update reports back.
#[derive(Debug, Default, PartialEq)]
pub struct Update {
    /// Per event: was it a near duplicate of one of its client's recent prompts.
    pub near_dup: Vec<bool>,
    /// Indices of the events at which a client reached a checkpoint.
    pub checkpoints: Vec<usize>,
    /// Row-major feature rows, one per checkpoint.
    pub features: Vec<f64>,
}

impl SketchStore {
    /// An empty store; fails on an invalid config.
    pub fn new(config: SketchConfig, secret: &[u8]) -> CoreResult<Self> {
        config.validate()?;
        let key = Key::from_secret(secret);
        Ok(Self::with_key(config, key))
    }

    pub(crate) fn with_key(config: SketchConfig, key: Key) -> Self {
        SketchStore {
            offsets: config.level_offsets(),
            hasher: MinHasher::new(&key, config.num_perm),
            config,
            key,
            build: Default::default(),
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            evictions: 0,
            max_ts: f64::NEG_INFINITY,
            log_ref: None,
        }
    }

    pub fn config(&self) -> &SketchConfig {
        &self.config
    }

    /// Clients held now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Clients evicted since the store was made (or restored).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Public fingerprint of the secret key.
    pub fn key_fingerprint(&self) -> u64 {
        self.key.fingerprint()
    }

    fn entry(&self, idx: u32) -> &Entry {
        self.slots[idx as usize].as_ref().expect("live slot")
    }

    fn entry_mut(&mut self, idx: u32) -> &mut Entry {
        self.slots[idx as usize].as_mut().expect("live slot")
    }

    fn find(&self, id: &str) -> Option<u32> {
        let h = self.build.hash_one(id);
        let slots = &self.slots;
        self.table
            .find(h, |&i| {
                slots[i as usize].as_ref().is_some_and(|e| &*e.id == id)
            })
            .copied()
    }

    /// The sketch of one client, if held.
    pub fn get(&self, id: &str) -> Option<&ClientSketch> {
        self.find(id).map(|i| &self.entry(i).sketch)
    }

    /// Client ids from least to most recently updated.
    pub fn ids_lru_order(&self) -> Vec<&str> {
        let mut out = Vec::with_capacity(self.len());
        let mut cur = self.tail;
        while cur != NIL {
            let e = self.entry(cur);
            out.push(&*e.id);
            cur = e.prev;
        }
        out
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let e = self.entry(idx);
            (e.prev, e.next)
        };
        if prev != NIL {
            self.entry_mut(prev).next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.entry_mut(next).prev = prev;
        } else {
            self.tail = prev;
        }
    }

    fn push_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let e = self.entry_mut(idx);
            e.prev = NIL;
            e.next = old;
        }
        if old != NIL {
            self.entry_mut(old).prev = idx;
        } else {
            self.tail = idx;
        }
        self.head = idx;
    }

    fn remove_idx(&mut self, idx: u32) -> Entry {
        self.unlink(idx);
        let h = self.build.hash_one(&*self.entry(idx).id);
        self.table
            .find_entry(h, |&i| i == idx)
            .expect("indexed slot")
            .remove();
        self.free.push(idx);
        self.slots[idx as usize].take().expect("live slot")
    }

    /// Drops one client; returns whether it was held.
    pub fn remove(&mut self, id: &str) -> bool {
        match self.find(id) {
            Some(idx) => {
                self.remove_idx(idx);
                true
            }
            None => false,
        }
    }

    /// Inserts a sketch as the most recent client, replacing any held under
    /// the same id and evicting the least recent one beyond the cap.
    pub(crate) fn put(&mut self, id: &str, sketch: ClientSketch) -> u32 {
        if let Some(idx) = self.find(id) {
            self.entry_mut(idx).sketch = sketch;
            self.unlink(idx);
            self.push_front(idx);
            return idx;
        }
        if self.len() >= self.config.max_clients {
            self.remove_idx(self.tail);
            self.evictions += 1;
        }
        let entry = Entry {
            id: id.into(),
            sketch,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as u32
            }
        };
        let h = self.build.hash_one(id);
        let (slots, build) = (&self.slots, &self.build);
        self.table.insert_unique(h, idx, |&i| {
            build.hash_one(&*slots[i as usize].as_ref().expect("live slot").id)
        });
        self.push_front(idx);
        idx
    }

    /// Moves client `id` to the front of the LRU list, adding it if new, and
    /// returns its slot. `hint` is a slot looked up earlier in the batch (or
    /// NIL); it is trusted only while that slot still holds `id`.
    fn touch_or_insert(&mut self, hint: u32, id: &str) -> u32 {
        let held = matches!(self.slots.get(hint as usize), Some(Some(e)) if &*e.id == id);
        let found = if held { Some(hint) } else { self.find(id) };
        match found {
            Some(idx) => {
                if self.head != idx {
                    self.unlink(idx);
                    self.push_front(idx);
                }
                idx
            }
            None => {
                let fresh = ClientSketch::new(&self.config);
                self.put(id, fresh)
            }
        }
    }

    fn check_batch(&self, b: &Batch) -> CoreResult<()> {
        let n = b.client_ids.len();
        let levels = &self.config.levels;
        if b.prompts.len() != n || b.ts.len() != n || b.cells.len() != n * levels.len() {
            return Err(CoreError::Input(format!(
                "batch of {n} client ids needs {n} prompts, {n} timestamps and {n}x{} cells; \
                 got {} prompts, {} timestamps, {} cells",
                levels.len(),
                b.prompts.len(),
                b.ts.len(),
                b.cells.len()
            )));
        }
        for (row, cells) in b.cells.chunks_exact(levels.len()).enumerate() {
            for (&c, &l) in cells.iter().zip(levels) {
                if c < 0 || c >= l as i64 {
                    return Err(CoreError::Input(format!(
                        "event {row}: cell {c} is outside level of {l} cells"
                    )));
                }
            }
        }
        let dim = self.config.strays.dim;
        if let Some(e) = b.emb {
            if dim > 0 && e.len() != n * dim {
                return Err(CoreError::Input(format!(
                    "batch of {n} events needs {n}x{dim} embedding values, got {}",
                    e.len()
                )));
            }
        }
        if let Some(i) = b.ts.iter().position(|t| !t.is_finite()) {
            return Err(CoreError::Input(format!(
                "event {i}: timestamp is not finite"
            )));
        }
        Ok(())
    }

    /// Folds a batch of events into the clients' sketches. The batch is checked
    /// whole before anything changes. Hashing runs in parallel; the folding is
    /// cheap and runs in order.
    ///
    /// Whenever a client's query count reaches a multiple of `checkpoint_every`
    /// (0 = never), the client's feature row at that moment is recorded, so
    /// decisions do not depend on where batches happen to be cut.
    pub fn update(&mut self, b: &Batch, checkpoint_every: u64) -> CoreResult<Update> {
        self.check_batch(b)?;
        let n = b.client_ids.len();
        let (p, bands, rows) = (
            self.config.num_perm,
            self.config.band_count,
            self.config.band_rows,
        );
        let mut sigs = vec![0u32; n * p];
        let per = bands + 1;
        let mut keys = vec![0u32; n * per];
        let mut prompt_hashes = vec![0u64; n];
        let (hasher, key, k) = (&self.hasher, &self.key, self.config.shingle_size);
        sigs.par_chunks_mut(p)
            .zip(keys.par_chunks_mut(per))
            .zip(prompt_hashes.par_iter_mut())
            .zip(b.prompts.par_iter())
            .with_min_len(32)
            .for_each_init(
                || (Shingler::default(), Vec::new()),
                |(sh, buf), (((sig, key_out), ph), prompt)| {
                    *ph = sh.shingles(key, prompt, k, buf);
                    hasher.signature(buf, sig);
                    band_keys(sig, bands, rows, &mut key_out[..bands]);
                    // The whole normalized prompt: an exact repeat always matches.
                    key_out[bands] = ((*ph ^ (*ph >> 32)) as u32).max(1);
                },
            );

        // Each event touches a few scattered cache lines of its client's
        // sketch. Looking every client up first (independent lookups, which
        // the CPU overlaps) lets the fold below ask for the memory of the
        // event AHEAD places on while it works on this one.
        let known: Vec<u32> = b
            .client_ids
            .iter()
            .map(|id| self.find(id).unwrap_or(NIL))
            .collect();
        let levels = self.config.levels.len();
        let dim = self.config.strays.dim;
        let mut cells = vec![0u32; levels];
        let width = self.feature_names().len();
        let mut out = Update {
            near_dup: Vec::with_capacity(n),
            checkpoints: Vec::new(),
            features: Vec::new(),
        };
        for i in 0..n {
            let j = i + AHEAD;
            // A hint only: a slot gone stale since the lookup is harmless.
            if let Some(Some(e)) = known.get(j).and_then(|&k| self.slots.get(k as usize)) {
                let (cfg, off) = (&self.config, &self.offsets);
                let at = &b.cells[j * levels..(j + 1) * levels];
                e.sketch.prefetch(cfg, off, at, prompt_hashes[j]);
            }
            for (c, &v) in cells.iter_mut().zip(&b.cells[i * levels..(i + 1) * levels]) {
                *c = v as u32;
            }
            if self.config.idle_ttl > 0.0 {
                // Per event, not per batch, so evictions do not depend on
                // where the stream was cut into batches.
                self.evict_idle(self.max_ts.max(b.ts[i]) - self.config.idle_ttl);
            }
            let idx = self.touch_or_insert(known[i], b.client_ids[i]);
            let d = Digest {
                sig: &sigs[i * p..(i + 1) * p],
                bands: &keys[i * per..(i + 1) * per],
                prompt_hash: prompt_hashes[i],
                cells: &cells,
                ts: b.ts[i],
                emb: b
                    .emb
                    .filter(|_| dim > 0)
                    .map(|e| &e[i * dim..(i + 1) * dim]),
            };
            let (cfg, off) = (&self.config, &self.offsets);
            let slot = self.slots[idx as usize].as_mut().expect("live slot");
            out.near_dup.push(slot.sketch.apply(cfg, off, &d));
            if checkpoint_every > 0 && slot.sketch.count % checkpoint_every == 0 {
                out.checkpoints.push(i);
                let start = out.features.len();
                out.features.resize(start + width, 0.0);
                sketch::features(
                    cfg,
                    off,
                    self.log_ref.as_deref(),
                    Some(&slot.sketch),
                    &mut out.features[start..],
                );
            }
            self.max_ts = self.max_ts.max(b.ts[i]);
        }
        Ok(out)
    }

    /// Evicts clients whose last event is older than `cutoff`, walking from
    /// the least recently updated. Returns how many went.
    pub fn evict_idle(&mut self, cutoff: f64) -> usize {
        let mut gone = 0;
        while self.tail != NIL && self.entry(self.tail).sketch.last_ts < cutoff {
            self.remove_idx(self.tail);
            gone += 1;
        }
        self.evictions += gone as u64;
        gone
    }

    /// Names of the feature columns.
    pub fn feature_names(&self) -> Vec<String> {
        sketch::feature_names(&self.config)
    }

    /// A row-major matrix of features, one row per id (zeros for unknown ids).
    pub fn features(&self, ids: &[&str]) -> Vec<f64> {
        let width = self.feature_names().len();
        let mut out = vec![0.0; ids.len() * width];
        for (row, id) in out.chunks_exact_mut(width).zip(ids) {
            sketch::features(
                &self.config,
                &self.offsets,
                self.log_ref.as_deref(),
                self.get(id),
                row,
            );
        }
        out
    }

    /// Features of the union of several clients' traffic (unknown ids skipped).
    pub fn union_features(&self, ids: &[&str]) -> Vec<f64> {
        let mut acc = ClientSketch::new(&self.config);
        let mut any = false;
        for s in ids.iter().filter_map(|id| self.get(id)) {
            acc.merge(s);
            any = true;
        }
        let mut row = vec![0.0; self.feature_names().len()];
        sketch::features(
            &self.config,
            &self.offsets,
            self.log_ref.as_deref(),
            any.then_some(&acc),
            &mut row,
        );
        row
    }

    /// Row-major cell histograms at the histogram level (zeros for unknown ids).
    pub fn histograms(&self, ids: &[&str]) -> Vec<u32> {
        let width = self.config.hist_cells();
        let mut out = vec![0u32; ids.len() * width];
        for (row, id) in out.chunks_exact_mut(width).zip(ids) {
            if let Some(s) = self.get(id) {
                for (o, &h) in row.iter_mut().zip(s.hist.iter()) {
                    *o = h as u32;
                }
            }
        }
        out
    }

    /// Estimated Jaccard index between two clients' shingle sets.
    pub fn jaccard(&self, a: &str, b: &str) -> CoreResult<f64> {
        let sa = self
            .get(a)
            .ok_or_else(|| CoreError::UnknownClient(a.into()))?;
        let sb = self
            .get(b)
            .ok_or_else(|| CoreError::UnknownClient(b.into()))?;
        let p = self.config.num_perm;
        let (mut da, mut db) = (vec![0u32; p], vec![0u32; p]);
        let mut scratch = Vec::new();
        self.hasher.densify(&sa.sig, &mut da, &mut scratch);
        self.hasher.densify(&sb.sig, &mut db, &mut scratch);
        Ok(jaccard(&da, &db))
    }

    /// Densified MinHash signatures, row-major, one row per id (zeros for
    /// unknown ids): what `jaccard` compares, for LSH across clients.
    pub fn signatures(&self, ids: &[&str]) -> Vec<u32> {
        let p = self.config.num_perm;
        let mut out = vec![0u32; ids.len() * p];
        let mut scratch = Vec::new();
        for (row, id) in out.chunks_exact_mut(p).zip(ids) {
            if let Some(s) = self.get(id) {
                self.hasher.densify(&s.sig, row, &mut scratch);
            }
        }
        out
    }

    /// Densified MinHash signatures of prompts, one row of `num_perm` per
    /// prompt, under this store's key and shingle size: what `update` hashes
    /// for each prompt before folding it into a client, with no client touched.
    pub fn minhash(&self, prompts: &[&str]) -> Vec<u32> {
        let p = self.config.num_perm;
        let mut out = vec![0u32; prompts.len() * p];
        let (hasher, key, k) = (&self.hasher, &self.key, self.config.shingle_size);
        out.par_chunks_mut(p)
            .zip(prompts.par_iter())
            .with_min_len(32)
            .for_each_init(
                || (Shingler::default(), Vec::new(), vec![0u32; p], Vec::new()),
                |(sh, buf, raw, scratch), (row, prompt)| {
                    sh.shingles(key, prompt, k, buf);
                    hasher.signature(buf, raw);
                    hasher.densify(raw, row, scratch);
                },
            );
        out
    }

    /// Folds client `src` into client `dst` (created empty if absent).
    pub fn merge(&mut self, src: &str, dst: &str) -> CoreResult<()> {
        let from = self
            .get(src)
            .ok_or_else(|| CoreError::UnknownClient(src.into()))?
            .clone();
        let idx = self.touch_or_insert(NIL, dst);
        self.entry_mut(idx).sketch.merge(&from);
        Ok(())
    }

    /// Sets the reference distribution (probabilities over the histogram
    /// level's cells) that the `kl_ref` feature measures clients against.
    pub fn set_reference(&mut self, probs: &[f64]) -> CoreResult<()> {
        if probs.len() != self.config.hist_cells() {
            return Err(CoreError::Input(format!(
                "reference needs {} probabilities, got {}",
                self.config.hist_cells(),
                probs.len()
            )));
        }
        if probs.iter().any(|p| !p.is_finite() || *p <= 0.0) {
            return Err(CoreError::Input(
                "reference probabilities must be finite and > 0".into(),
            ));
        }
        let total: f64 = probs.iter().sum();
        self.log_ref = Some(probs.iter().map(|p| (p / total).ln()).collect());
        Ok(())
    }

    /// Sets a client's sequential-test state.
    pub fn set_evidence(&mut self, id: &str, value: f64) -> CoreResult<()> {
        if !value.is_finite() {
            return Err(CoreError::Input(format!(
                "evidence must be finite, got {value}"
            )));
        }
        let idx = self
            .find(id)
            .ok_or_else(|| CoreError::UnknownClient(id.into()))?;
        self.entry_mut(idx).sketch.evidence = value;
        Ok(())
    }

    /// Sets a client's alert level (kept in its sketch, so it survives a
    /// snapshot and goes with an eviction).
    pub fn set_alert_level(&mut self, id: &str, level: u8) -> CoreResult<()> {
        let idx = self
            .find(id)
            .ok_or_else(|| CoreError::UnknownClient(id.into()))?;
        self.entry_mut(idx).sketch.alert_level = level;
        Ok(())
    }

    /// Bytes one client costs at this config, for a client id of `id_len`
    /// bytes: slab entry, sketch buffers, id, and the index's bucket.
    pub fn bytes_per_client(&self, id_len: usize) -> usize {
        let sketch = ClientSketch::new(&self.config);
        // Each heap block carries about 16 bytes of allocator overhead.
        let blocks = 6;
        std::mem::size_of::<Option<Entry>>()
            + sketch.heap_bytes()
            + id_len
            + blocks * 16
            + std::mem::size_of::<u32>() * 8 / 7
            + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_clients: usize) -> SketchStore {
        let cfg = SketchConfig {
            max_clients,
            ..Default::default()
        };
        let mut s = SketchStore::new(cfg, b"test").unwrap();
        s.set_reference(&[1.0; 256]).unwrap();
        s
    }

    fn feed(s: &mut SketchStore, events: &[(&str, &str, [i64; 3], f64)]) {
        let ids: Vec<&str> = events.iter().map(|e| e.0).collect();
        let prompts: Vec<&str> = events.iter().map(|e| e.1).collect();
        let cells: Vec<i64> = events.iter().flat_map(|e| e.2).collect();
        let ts: Vec<f64> = events.iter().map(|e| e.3).collect();
        s.update(
            &Batch {
                client_ids: &ids,
                prompts: &prompts,
                cells: &cells,
                ts: &ts,
                emb: None,
            },
            0,
        )
        .unwrap();
    }

    #[test]
    fn counts_per_client() {
        let mut s = store(10);
        feed(
            &mut s,
            &[
                ("a", "hello there", [0, 0, 0], 1.0),
                ("b", "x y z", [1, 2, 3], 2.0),
                ("a", "q", [2, 3, 4], 3.0),
            ],
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("a").unwrap().count, 2);
        assert_eq!(s.get("b").unwrap().count, 1);
        assert_eq!(s.ids_lru_order(), vec!["b", "a"]);
    }

    #[test]
    fn evicts_least_recent_beyond_cap() {
        let mut s = store(2);
        feed(
            &mut s,
            &[
                ("a", "p", [0; 3], 1.0),
                ("b", "p", [0; 3], 2.0),
                ("a", "p", [0; 3], 3.0),
            ],
        );
        feed(&mut s, &[("c", "p", [0; 3], 4.0)]);
        assert_eq!(s.len(), 2);
        assert!(s.get("b").is_none());
        assert_eq!(s.evictions(), 1);
        assert_eq!(s.ids_lru_order(), vec!["a", "c"]);
    }

    #[test]
    fn idle_clients_expire() {
        let cfg = SketchConfig {
            idle_ttl: 100.0,
            ..Default::default()
        };
        let mut s = SketchStore::new(cfg, b"k").unwrap();
        feed(
            &mut s,
            &[("old", "p", [0; 3], 0.0), ("new", "p", [0; 3], 50.0)],
        );
        assert_eq!(s.len(), 2);
        feed(&mut s, &[("new", "p", [0; 3], 150.0)]);
        assert_eq!(s.ids_lru_order(), vec!["new"]);
        assert_eq!(s.evictions(), 1);
    }

    #[test]
    fn idle_eviction_does_not_depend_on_batch_cuts() {
        let cfg = SketchConfig {
            idle_ttl: 100.0,
            ..Default::default()
        };
        let events = [
            ("a", "p", [0; 3], 0.0),
            ("b", "p", [0; 3], 200.0),
            ("a", "p", [0; 3], 201.0),
        ];
        let mut whole = SketchStore::new(cfg.clone(), b"k").unwrap();
        feed(&mut whole, &events);
        let mut single = SketchStore::new(cfg, b"k").unwrap();
        for e in &events {
            feed(&mut single, std::slice::from_ref(e));
        }
        assert_eq!(whole.get("a").unwrap().count, 1);
        assert_eq!(whole.evictions(), single.evictions());
        assert_eq!(whole.get("a"), single.get("a"));
    }

    #[test]
    fn bad_batch_changes_nothing() {
        let mut s = store(10);
        let r = s.update(
            &Batch {
                client_ids: &["a", "b"],
                prompts: &["p", "q"],
                cells: &[0, 0, 0, 0, 0, 9999],
                ts: &[1.0, 2.0],
                emb: None,
            },
            0,
        );
        assert!(matches!(r, Err(CoreError::Input(m)) if m.contains("event 1")));
        assert!(s.is_empty());
        let r = s.update(
            &Batch {
                client_ids: &["a"],
                prompts: &["p", "q"],
                cells: &[0, 0, 0],
                ts: &[1.0],
                emb: None,
            },
            0,
        );
        assert!(r.is_err());
        let r = s.update(
            &Batch {
                client_ids: &["a"],
                prompts: &["p"],
                cells: &[0, 0, 0],
                ts: &[f64::NAN],
                emb: None,
            },
            0,
        );
        assert!(r.is_err());
    }

    #[test]
    fn merge_and_union_features_agree() {
        let mut s = store(10);
        feed(
            &mut s,
            &[
                ("a", "alpha beta gamma", [1, 1, 1], 1.0),
                ("b", "delta epsilon zeta", [2, 2, 2], 2.0),
            ],
        );
        let u = s.union_features(&["a", "b"]);
        s.merge("a", "ab").unwrap();
        s.merge("b", "ab").unwrap();
        assert_eq!(s.features(&["ab"]), u);
        assert_eq!(u[0], 2.0);
        assert!(matches!(
            s.merge("nope", "ab"),
            Err(CoreError::UnknownClient(_))
        ));
    }

    fn whole_width() -> usize {
        store(1).feature_names().len()
    }

    #[test]
    fn reference_must_fit_the_histogram_level() {
        let mut s = store(1);
        assert!(s.set_reference(&[1.0; 3]).is_err());
        assert!(s.set_reference(&[0.0; 256]).is_err());
    }

    #[test]
    fn checkpoints_do_not_depend_on_batch_cuts() {
        let events: Vec<(String, String, [i64; 3], f64)> = (0..60)
            .map(|i| {
                (
                    format!("c{}", i % 3),
                    format!("prompt number {i} about topic {}", i % 7),
                    [i % 16, i % 256, i],
                    i as f64,
                )
            })
            .collect();
        let run = |cut: usize| {
            let mut s = store(10);
            let mut rows = Vec::new();
            for chunk in events.chunks(cut) {
                let ids: Vec<&str> = chunk.iter().map(|e| e.0.as_str()).collect();
                let prompts: Vec<&str> = chunk.iter().map(|e| e.1.as_str()).collect();
                let cells: Vec<i64> = chunk.iter().flat_map(|e| e.2).collect();
                let ts: Vec<f64> = chunk.iter().map(|e| e.3).collect();
                let up = s
                    .update(
                        &Batch {
                            client_ids: &ids,
                            prompts: &prompts,
                            cells: &cells,
                            ts: &ts,
                            emb: None,
                        },
                        5,
                    )
                    .unwrap();
                rows.extend(up.features);
            }
            rows
        };
        let whole = run(60);
        assert_eq!(whole.len(), 12 * whole_width());
        assert_eq!(run(7), whole);
        assert_eq!(run(1), whole);
    }

    #[test]
    fn jaccard_of_same_text_is_one() {
        let mut s = store(10);
        feed(
            &mut s,
            &[
                ("a", "the same words here", [0; 3], 1.0),
                ("b", "the same words here", [0; 3], 1.0),
            ],
        );
        assert_eq!(s.jaccard("a", "b").unwrap(), 1.0);
    }

    #[test]
    fn default_client_fits_in_4_kib() {
        let s = store(10);
        let b = s.bytes_per_client(24);
        assert!(b <= 4096, "{b} bytes");
    }
}
