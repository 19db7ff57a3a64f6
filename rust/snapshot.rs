//! Versioned, checksummed bytes for a whole store, one client, or one
//! client's summary (its sketch without the ring of recent prompts, which is
//! what group detection needs and about half the size).
//!
//! Layout (little endian):
//! `magic[8] | version u16 | kind u8 | 0u8 | key fingerprint u64 | body length u64 | body | crc32 u32`
//! where the CRC covers everything before it. The body starts with the
//! sketch config, so a snapshot never decodes under a different shape.

use crate::config::SketchConfig;
use crate::error::{CoreError, CoreResult};
use crate::hash::Key;
use crate::sketch::{ClientSketch, MAX_LEVELS};
use crate::store::SketchStore;
use crate::strays::{StrayConfig, Strays};

const MAGIC: &[u8; 8] = b"SPANWTCH";
/// Snapshot format version this build writes and reads. Version 3 came with
/// new shingle, whole-prompt and densification hashes: a raw signature written by
/// version 2 holds minima of other hash values, so folding it with new ones
/// (or comparing them) would give meaningless Jaccard estimates. Bump it
/// whenever a stored hash changes. Version 4 added the stray tracker; a
/// version 3 snapshot reads as a store without one.
pub const VERSION: u16 = 4;
/// Oldest version this build reads.
const OLDEST: u16 = 3;
const KIND_STORE: u8 = 1;
const KIND_CLIENT: u8 = 2;
const KIND_SUMMARY: u8 = 3;
const HEADER: usize = 8 + 2 + 1 + 1 + 8 + 8;
/// Bytes of a stray tracker's counters (seen, filled, n_open, dropped,
/// dropped_mass, rng) before its buffers.
const STRAYS_COUNTERS: usize = 8 + 4 * 4 + 8;

fn err<T>(msg: impl Into<String>) -> CoreResult<T> {
    Err(CoreError::Snapshot(msg.into()))
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> CoreResult<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return err("snapshot is truncated");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> CoreResult<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("exact length"))
    }
    fn u8(&mut self) -> CoreResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> CoreResult<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> CoreResult<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> CoreResult<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn f64(&mut self) -> CoreResult<f64> {
        Ok(f64::from_le_bytes(self.arr()?))
    }
    fn f32(&mut self) -> CoreResult<f32> {
        Ok(f32::from_le_bytes(self.arr()?))
    }
    fn i8s(&mut self, out: &mut [i8]) -> CoreResult<()> {
        let bytes = self.take(out.len())?;
        for (v, &b) in out.iter_mut().zip(bytes) {
            *v = b as i8;
        }
        Ok(())
    }
    fn str(&mut self) -> CoreResult<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?)
            .or_else(|_| err("a client id in the snapshot is not UTF-8"))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

fn write_config(w: &mut Writer, c: &SketchConfig) {
    w.u8(c.levels.len() as u8);
    for &l in &c.levels {
        w.u32(l);
    }
    w.u8(c.hist_level as u8);
    w.u16(c.num_perm as u16);
    w.u8(c.shingle_size as u8);
    w.u8(c.hll_precision);
    w.u16(c.band_count as u16);
    w.u16(c.band_rows as u16);
    w.u16(c.recent_prompts as u16);
    w.u64(c.max_clients as u64);
    w.f64(c.idle_ttl);
    w.u32(c.strays.dim as u32);
    w.u32(c.strays.reservoir as u32);
    w.u32(c.strays.open as u32);
    w.f32(c.strays.radius);
}

fn read_config(r: &mut Reader, version: u16) -> CoreResult<SketchConfig> {
    let n = r.u8()? as usize;
    if n == 0 || n > MAX_LEVELS {
        return err(format!("snapshot config has {n} levels"));
    }
    let levels = (0..n).map(|_| r.u32()).collect::<CoreResult<Vec<_>>>()?;
    let c = SketchConfig {
        levels,
        hist_level: r.u8()? as usize,
        num_perm: r.u16()? as usize,
        shingle_size: r.u8()? as usize,
        hll_precision: r.u8()?,
        band_count: r.u16()? as usize,
        band_rows: r.u16()? as usize,
        recent_prompts: r.u16()? as usize,
        max_clients: r.u64()?.min(usize::MAX as u64) as usize,
        idle_ttl: r.f64()?,
        strays: if version >= 4 {
            StrayConfig {
                dim: r.u32()? as usize,
                reservoir: r.u32()? as usize,
                open: r.u32()? as usize,
                radius: r.f32()?,
            }
        } else {
            StrayConfig {
                dim: 0,
                ..SketchConfig::default().strays
            }
        },
    };
    c.validate()
        .or_else(|e| err(format!("snapshot holds an invalid config: {e}")))?;
    Ok(c)
}

fn write_sketch(w: &mut Writer, s: &ClientSketch, c: &SketchConfig, ring: bool) {
    let levels = c.levels.len();
    w.u64(s.count);
    w.f64(s.first_ts);
    w.f64(s.last_ts);
    w.u64(s.near_dups);
    w.u8(s.alert_level);
    w.f64(s.evidence);
    if ring {
        w.u32(s.recent_pos);
    }
    for &n in &s.novelty[..levels] {
        w.0.extend_from_slice(&n.to_le_bytes());
    }
    s.sig.iter().for_each(|&v| w.u32(v));
    s.bits.iter().for_each(|&v| w.u64(v));
    s.hist.iter().for_each(|&v| w.u16(v));
    w.0.extend_from_slice(&s.hll);
    if ring {
        s.recent.iter().for_each(|&v| w.u32(v));
        if c.strays.enabled() {
            write_strays(w, &s.strays);
        }
    }
}

fn write_strays(w: &mut Writer, t: &Strays) {
    w.u64(t.seen);
    w.u32(t.filled);
    w.u32(t.n_open);
    w.u32(t.dropped);
    w.f32(t.dropped_mass);
    w.u64(t.rng);
    w.0.extend(t.reservoir.iter().map(|&v| v as u8));
    w.0.extend(t.open.iter().map(|&v| v as u8));
    t.best.iter().for_each(|&v| w.f32(v));
}

fn read_strays(r: &mut Reader, c: &StrayConfig) -> CoreResult<Strays> {
    let mut t = Strays::new(c);
    t.seen = r.u64()?;
    t.filled = r.u32()?;
    t.n_open = r.u32()?;
    t.dropped = r.u32()?;
    t.dropped_mass = r.f32()?;
    t.rng = r.u64()?;
    r.i8s(&mut t.reservoir)?;
    r.i8s(&mut t.open)?;
    for v in t.best.iter_mut() {
        *v = r.f32()?;
    }
    if !t.is_consistent(c) {
        return err("a client's stray tracker in the snapshot is inconsistent");
    }
    Ok(t)
}

fn sketch_bytes(c: &SketchConfig) -> usize {
    8 + 8
        + 8
        + 8
        + 1
        + 4
        + 4 * c.levels.len()
        + 4 * c.num_perm
        + 8 * c.bitset_words()
        + 2 * c.hist_cells()
        + (1 << c.hll_precision)
        + 4 * c.recent_slots()
        + if c.strays.enabled() {
            STRAYS_COUNTERS + c.strays.bytes()
        } else {
            0
        }
}

fn read_sketch(r: &mut Reader, c: &SketchConfig, ring: bool) -> CoreResult<ClientSketch> {
    let mut s = ClientSketch::new(c);
    s.count = r.u64()?;
    s.first_ts = r.f64()?;
    s.last_ts = r.f64()?;
    s.near_dups = r.u64()?;
    s.alert_level = r.u8()?;
    s.evidence = r.f64()?;
    if ring {
        s.recent_pos = r.u32()?;
    }
    for n in s.novelty[..c.levels.len()].iter_mut() {
        *n = f32::from_le_bytes(r.arr()?);
    }
    for v in s.sig.iter_mut() {
        *v = r.u32()?;
    }
    for v in s.bits.iter_mut() {
        *v = r.u64()?;
    }
    for v in s.hist.iter_mut() {
        *v = r.u16()?;
    }
    s.hll.copy_from_slice(r.take(s.hll.len())?);
    if ring {
        for v in s.recent.iter_mut() {
            *v = r.u32()?;
        }
        if c.strays.enabled() {
            s.strays = read_strays(r, &c.strays)?;
        }
    }
    if s.recent_pos as usize >= c.recent_prompts || s.near_dups > s.count {
        return err("a client sketch in the snapshot is inconsistent");
    }
    let max_rank = 64 - c.hll_precision + 1;
    if s.hll.iter().any(|&x| x > max_rank) {
        return err("a client sketch in the snapshot has out-of-range registers");
    }
    for (&l, off) in c.levels.iter().zip(c.level_offsets()) {
        let last = s.bits[off + (l as usize).div_ceil(64) - 1];
        if l % 64 != 0 && last >> (l % 64) != 0 {
            return err("a client sketch in the snapshot covers cells outside its level");
        }
    }
    Ok(s)
}

fn seal(kind: u8, key: &Key, body: Vec<u8>) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(HEADER + body.len() + 4));
    w.0.extend_from_slice(MAGIC);
    w.u16(VERSION);
    w.u8(kind);
    w.u8(0);
    w.u64(key.fingerprint());
    w.u64(body.len() as u64);
    w.0.extend_from_slice(&body);
    let crc = crc32fast::hash(&w.0);
    w.u32(crc);
    w.0
}

/// Checks magic, version, length, checksum and key; returns the body and
/// its format version.
fn open<'a>(bytes: &'a [u8], kind: u8, key: &Key) -> CoreResult<(&'a [u8], u16)> {
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return err("not a spanwatch snapshot (bad magic bytes)");
    }
    if bytes.len() < HEADER + 4 {
        return err("snapshot is truncated");
    }
    let mut r = Reader { buf: bytes, pos: 8 };
    let version = r.u16()?;
    if version < OLDEST {
        return err(format!(
            "snapshot format version {version} was written by an older sketch format \
             (its hashes differ from this build's, so it cannot be mixed with new \
             sketches); this build reads versions {OLDEST} to {VERSION}: rebuild the state from events"
        ));
    }
    if version > VERSION {
        return err(format!(
            "snapshot format version {version} is not supported (written by a newer \
             build; this build reads {VERSION})"
        ));
    }
    let got_kind = r.u8()?;
    if got_kind != kind {
        let name = |k| match k {
            KIND_STORE => "a store",
            KIND_CLIENT => "a client",
            KIND_SUMMARY => "a client summary",
            _ => "an unknown kind",
        };
        return err(format!(
            "expected a snapshot of {}, got one of {}",
            name(kind),
            name(got_kind)
        ));
    }
    r.u8()?;
    let fp = r.u64()?;
    let body_len = r.u64()?;
    let expected = (HEADER as u64).saturating_add(body_len).saturating_add(4);
    if (bytes.len() as u64) < expected {
        return err("snapshot is truncated");
    }
    if (bytes.len() as u64) > expected {
        return err("snapshot has trailing bytes");
    }
    let end = bytes.len() - 4;
    let crc = u32::from_le_bytes(bytes[end..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..end]) != crc {
        return err("snapshot checksum mismatch: the bytes are corrupt");
    }
    if fp != key.fingerprint() {
        return err("snapshot was written under a different secret key");
    }
    Ok((&bytes[HEADER..end], version))
}

/// Bytes of the whole store, clients in least-recent-first order.
pub fn store_to_bytes(s: &SketchStore) -> Vec<u8> {
    let c = s.config();
    let ids = s.ids_lru_order();
    let mut w = Writer(Vec::with_capacity(64 + ids.len() * (sketch_bytes(c) + 32)));
    write_config(&mut w, c);
    w.u64(s.evictions);
    w.f64(s.max_ts);
    w.u64(ids.len() as u64);
    for id in ids {
        w.str(id);
        write_sketch(&mut w, s.get(id).expect("listed id"), c, true);
    }
    seal(KIND_STORE, &s.key, w.0)
}

/// A store from bytes written by `store_to_bytes` under the same secret.
pub fn store_from_bytes(bytes: &[u8], secret: &[u8]) -> CoreResult<SketchStore> {
    let key = Key::from_secret(secret);
    let (body, version) = open(bytes, KIND_STORE, &key)?;
    let mut r = Reader { buf: body, pos: 0 };
    let c = read_config(&mut r, version)?;
    let evictions = r.u64()?;
    let max_ts = r.f64()?;
    let n = r.u64()?;
    let min_entry = 4 + sketch_bytes(&c);
    if n > (r.remaining() / min_entry) as u64 {
        return err(format!(
            "snapshot claims {n} clients but is too short for them"
        ));
    }
    let mut store = SketchStore::with_key(c.clone(), key);
    for _ in 0..n {
        let id = r.str()?;
        let sketch = read_sketch(&mut r, &c, true)?;
        if store.get(id).is_some() {
            return err(format!("snapshot holds client {id:?} twice"));
        }
        store.put(id, sketch);
    }
    if r.remaining() != 0 {
        return err("snapshot body has trailing bytes");
    }
    store.evictions = evictions;
    store.max_ts = max_ts;
    Ok(store)
}

/// Bytes of one client's sketch, with the config it was made under.
pub fn client_to_bytes(s: &SketchStore, id: &str) -> CoreResult<Vec<u8>> {
    one_to_bytes(s, id, KIND_CLIENT)
}

/// Bytes of one client's summary: its sketch without the recent-prompt ring.
pub fn summary_to_bytes(s: &SketchStore, id: &str) -> CoreResult<Vec<u8>> {
    one_to_bytes(s, id, KIND_SUMMARY)
}

fn one_to_bytes(s: &SketchStore, id: &str, kind: u8) -> CoreResult<Vec<u8>> {
    let sketch = s
        .get(id)
        .ok_or_else(|| CoreError::UnknownClient(id.into()))?;
    let mut w = Writer(Vec::new());
    write_config(&mut w, s.config());
    w.str(id);
    write_sketch(&mut w, sketch, s.config(), kind == KIND_CLIENT);
    Ok(seal(kind, &s.key, w.0))
}

/// Decodes one client's snapshot for a store; the sketch config must match
/// the store's (the memory bound may differ). Returns the id and sketch.
pub fn client_from_bytes(s: &SketchStore, bytes: &[u8]) -> CoreResult<(String, ClientSketch)> {
    one_from_bytes(s, bytes, KIND_CLIENT)
}

/// Decodes a client summary; its ring of recent prompts comes back empty.
pub fn summary_from_bytes(s: &SketchStore, bytes: &[u8]) -> CoreResult<(String, ClientSketch)> {
    one_from_bytes(s, bytes, KIND_SUMMARY)
}

fn one_from_bytes(s: &SketchStore, bytes: &[u8], kind: u8) -> CoreResult<(String, ClientSketch)> {
    let (body, version) = open(bytes, kind, &s.key)?;
    let mut r = Reader { buf: body, pos: 0 };
    let c = read_config(&mut r, version)?;
    let mine = s.config();
    // A summary holds no stray tracker, and a version 3 client none either:
    // either fits any store's tracker, and starts an empty one.
    let fresh_strays = kind == KIND_SUMMARY || version < 4;
    let same_shape = SketchConfig {
        max_clients: mine.max_clients,
        idle_ttl: mine.idle_ttl,
        strays: if fresh_strays { mine.strays } else { c.strays },
        ..c.clone()
    };
    if &same_shape != mine {
        return err(format!(
            "client snapshot was made under another sketch config: {c:?}"
        ));
    }
    let id = r.str()?.to_string();
    let mut sketch = read_sketch(&mut r, &c, kind == KIND_CLIENT)?;
    if r.remaining() != 0 {
        return err("snapshot body has trailing bytes");
    }
    if fresh_strays {
        sketch.strays = Strays::new(&mine.strays);
    }
    Ok((id, sketch))
}

impl SketchStore {
    /// Puts a client decoded from a client snapshot into the store,
    /// replacing any client of the same id. Returns the id.
    pub fn restore_client(&mut self, bytes: &[u8]) -> CoreResult<String> {
        let (id, sketch) = client_from_bytes(self, bytes)?;
        self.put(&id, sketch);
        Ok(id)
    }

    /// Puts a client decoded from a summary into the store, replacing any
    /// client of the same id. Returns the id.
    pub fn restore_summary(&mut self, bytes: &[u8]) -> CoreResult<String> {
        let (id, sketch) = summary_from_bytes(self, bytes)?;
        self.put(&id, sketch);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Batch;

    fn filled() -> SketchStore {
        let mut s = SketchStore::new(SketchConfig::default(), b"secret").unwrap();
        let ids = ["a", "b", "a", "c"];
        let prompts = [
            "how do I bake bread",
            "what is rust",
            "bake bread at home",
            "ünïcode ok",
        ];
        let cells = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 255, 4095];
        s.update(
            &Batch {
                client_ids: &ids,
                prompts: &prompts,
                cells: &cells,
                ts: &[1.0, 2.0, 3.0, 4.0],
                emb: None,
            },
            0,
        )
        .unwrap();
        s
    }

    fn same(a: &SketchStore, b: &SketchStore) {
        assert_eq!(a.ids_lru_order(), b.ids_lru_order());
        for id in a.ids_lru_order() {
            assert_eq!(a.get(id), b.get(id));
        }
    }

    #[test]
    fn store_round_trips() {
        let s = filled();
        let bytes = store_to_bytes(&s);
        let back = store_from_bytes(&bytes, b"secret").unwrap();
        same(&s, &back);
        assert_eq!(store_to_bytes(&back), bytes);
    }

    #[test]
    fn client_round_trips() {
        let s = filled();
        let bytes = client_to_bytes(&s, "a").unwrap();
        let mut other = SketchStore::new(SketchConfig::default(), b"secret").unwrap();
        assert_eq!(other.restore_client(&bytes).unwrap(), "a");
        assert_eq!(other.get("a"), s.get("a"));
    }

    #[test]
    fn summary_keeps_all_but_the_ring() {
        let s = filled();
        let bytes = summary_to_bytes(&s, "a").unwrap();
        assert!(bytes.len() < client_to_bytes(&s, "a").unwrap().len() * 2 / 3);
        let mut other = SketchStore::new(SketchConfig::default(), b"secret").unwrap();
        assert_eq!(other.restore_summary(&bytes).unwrap(), "a");
        let (got, want) = (other.get("a").unwrap(), s.get("a").unwrap());
        assert!(got.recent.iter().all(|&k| k == 0) && got.recent_pos == 0);
        assert!(want.recent.iter().any(|&k| k != 0));
        let mut want = want.clone();
        want.recent.fill(0);
        want.recent_pos = 0;
        assert_eq!(got, &want);
        // a summary is not a client snapshot, and the other way round
        assert!(other.restore_client(&bytes).is_err());
        let full = client_to_bytes(&s, "a").unwrap();
        let e = other.restore_summary(&full).unwrap_err().to_string();
        assert!(e.contains("client summary"), "{e}");
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let bytes = store_to_bytes(&filled());
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(
                matches!(
                    store_from_bytes(&bad, b"secret"),
                    Err(CoreError::Snapshot(_))
                ),
                "byte {i}"
            );
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let bytes = store_to_bytes(&filled());
        for n in 0..bytes.len() {
            assert!(
                store_from_bytes(&bytes[..n], b"secret").is_err(),
                "length {n}"
            );
        }
    }

    #[test]
    fn foreign_and_wrong_key_are_refused_with_reasons() {
        let bytes = store_to_bytes(&filled());
        let msg = |r: CoreResult<SketchStore>| match r {
            Err(CoreError::Snapshot(m)) => m,
            _ => panic!("expected a snapshot error"),
        };
        assert!(
            msg(store_from_bytes(b"PK\x03\x04 a zip file", b"secret")).contains("not a spanwatch")
        );
        assert!(msg(store_from_bytes(&bytes, b"other")).contains("different secret key"));
        let mut newer = bytes.clone();
        newer[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes());
        assert!(msg(store_from_bytes(&newer, b"secret")).contains("newer build"));
        let client = client_to_bytes(&filled(), "a").unwrap();
        assert!(
            msg(store_from_bytes(&client, b"secret")).contains("expected a snapshot of a store")
        );
    }

    fn reseal(mut body_and_header: Vec<u8>, version: u16) -> Vec<u8> {
        body_and_header.truncate(body_and_header.len() - 4);
        body_and_header[8..10].copy_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&body_and_header);
        body_and_header.extend_from_slice(&crc.to_le_bytes());
        body_and_header
    }

    /// A snapshot of a format before the oldest readable one, sealed
    /// properly (a valid checksum), is refused for its version alone, with a
    /// reason that says so: old signatures are never folded in with new ones.
    #[test]
    fn older_sketch_format_is_refused() {
        let store = filled();
        let older = |r: CoreResult<()>| match r {
            Err(CoreError::Snapshot(m)) => m.contains("older sketch format"),
            _ => false,
        };
        let old_store = reseal(store_to_bytes(&store), OLDEST - 1);
        assert!(older(store_from_bytes(&old_store, b"secret").map(|_| ())));
        let old_client = reseal(client_to_bytes(&store, "a").unwrap(), OLDEST - 1);
        let mut other = SketchStore::new(store.config().clone(), b"secret").unwrap();
        assert!(older(other.restore_client(&old_client).map(|_| ())));
        assert!(other.is_empty());
    }

    /// Version 3 had no stray tracker: its config ends before the tracker's
    /// fields, and its sketches hold none.
    fn as_version_3(bytes: Vec<u8>, levels: usize) -> Vec<u8> {
        let end_of_config = HEADER + 1 + 4 * levels + 1 + 2 + 1 + 1 + 2 + 2 + 2 + 8 + 8;
        let mut v = bytes[..end_of_config].to_vec();
        v.extend_from_slice(&bytes[end_of_config + 16..]);
        let body_len = (v.len() - HEADER - 4) as u64;
        v[20..28].copy_from_slice(&body_len.to_le_bytes());
        reseal(v, 3)
    }

    #[test]
    fn version_3_reads_without_strays() {
        let store = filled();
        let v3 = as_version_3(store_to_bytes(&store), 3);
        let back = store_from_bytes(&v3, b"secret").unwrap();
        assert_eq!(back.get("a"), store.get("a"));
        assert!(!back.config().strays.enabled());
        // a version 3 client fits a store with a tracker, and starts an empty one
        let cfg = SketchConfig {
            strays: StrayConfig {
                dim: 4,
                ..SketchConfig::default().strays
            },
            ..SketchConfig::default()
        };
        let mut tracked = SketchStore::new(cfg.clone(), b"secret").unwrap();
        let client = as_version_3(client_to_bytes(&store, "a").unwrap(), 3);
        assert_eq!(tracked.restore_client(&client).unwrap(), "a");
        assert_eq!(tracked.get("a").unwrap().strays, Strays::new(&cfg.strays));
        assert_eq!(tracked.get("a").unwrap().count, 2);
    }

    fn with_strays() -> SketchStore {
        let cfg = SketchConfig {
            strays: StrayConfig {
                dim: 3,
                reservoir: 2,
                open: 2,
                radius: 0.5,
            },
            ..SketchConfig::default()
        };
        let mut s = SketchStore::new(cfg, b"secret").unwrap();
        let emb = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 1.0];
        s.update(
            &Batch {
                client_ids: &["a", "a", "a", "a"],
                prompts: &["p", "q", "r", "s"],
                cells: &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                ts: &[1.0, 2.0, 3.0, 4.0],
                emb: Some(&emb),
            },
            0,
        )
        .unwrap();
        s
    }

    #[test]
    fn stray_trackers_round_trip_and_corrupt_ones_are_refused() {
        let store = with_strays();
        let t = &store.get("a").unwrap().strays;
        assert_eq!((t.seen, t.count()), (4, 2)); // the 2nd and the 4th stay alone
        let back = store_from_bytes(&store_to_bytes(&store), b"secret").unwrap();
        assert_eq!(back.get("a"), store.get("a"));
        let mut other = SketchStore::new(store.config().clone(), b"secret").unwrap();
        other
            .restore_client(&client_to_bytes(&store, "a").unwrap())
            .unwrap();
        assert_eq!(other.get("a"), store.get("a"));
        // more open strays than the config allows, under a valid checksum
        let mut bytes = store_to_bytes(&store);
        let body = &bytes[HEADER..bytes.len() - 4];
        let t_bytes = STRAYS_COUNTERS + store.config().strays.bytes();
        let at = HEADER + body.len() - t_bytes + 12; // n_open
        bytes[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
        let bad = reseal(bytes, VERSION);
        assert!(matches!(
            store_from_bytes(&bad, b"secret"),
            Err(CoreError::Snapshot(m)) if m.contains("stray tracker")
        ));
    }

    #[test]
    fn client_snapshot_needs_same_shape() {
        let bytes = client_to_bytes(&filled(), "a").unwrap();
        let cfg = SketchConfig {
            num_perm: 64,
            ..Default::default()
        };
        let mut other = SketchStore::new(cfg, b"secret").unwrap();
        assert!(
            matches!(other.restore_client(&bytes), Err(CoreError::Snapshot(m)) if m.contains("another sketch config"))
        );
    }
}
