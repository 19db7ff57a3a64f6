//! Property tests of the sketch core.

use _core::config::SketchConfig;
use _core::hash::{mix, Key};
use _core::minhash::{jaccard, MinHasher};
use _core::sketch::{ClientSketch, Digest};
use _core::snapshot::{store_from_bytes, store_to_bytes};
use _core::store::{Batch, SketchStore};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The estimate is a mean of `num_perm` Bernoulli(J) draws: it stays within
    /// five standard errors of the true Jaccard index.
    #[test]
    fn minhash_estimate_tracks_true_jaccard(only_a in 0usize..300, both in 0usize..300, only_b in 0usize..300, seed: u64) {
        prop_assume!(only_a + both + only_b > 0);
        let num_perm = 256;
        let h = MinHasher::new(&Key::from_secret(&seed.to_le_bytes()), num_perm);
        let item = |i: usize| mix(i as u64, seed);
        let a: Vec<u64> = (0..only_a + both).map(item).collect();
        let b: Vec<u64> = (only_a..only_a + both + only_b).map(item).collect();
        let (mut sa, mut sb) = (vec![0; num_perm], vec![0; num_perm]);
        let (mut ra, mut rb) = (vec![0; num_perm], vec![0; num_perm]);
        h.signature(&a, &mut ra);
        h.signature(&b, &mut rb);
        h.densify(&ra, &mut sa, &mut Vec::new());
        h.densify(&rb, &mut sb, &mut Vec::new());
        let truth = both as f64 / (only_a + both + only_b) as f64;
        let sd = (truth * (1.0 - truth) / num_perm as f64).sqrt();
        let est = jaccard(&sa, &sb);
        prop_assert!((est - truth).abs() <= 5.0 * sd + 0.02, "est {est} truth {truth}");
    }

    #[test]
    fn merge_is_commutative_and_associative(seeds in proptest::collection::vec(any::<u64>(), 3)) {
        let cfg = SketchConfig::default();
        let off = cfg.level_offsets();
        let make = |seed: u64| {
            let mut s = ClientSketch::new(&cfg);
            for i in 0..(seed % 40 + 1) {
                let sig: Vec<u32> = (0..cfg.num_perm as u64).map(|p| mix(seed ^ i, p) as u32).collect();
                let bands: Vec<u32> = (0..cfg.keys_per_prompt() as u64).map(|j| (mix(seed, i * 31 + j) as u32).max(1)).collect();
                let r = mix(seed, i);
                let cells = [(r % 16) as u32, ((r >> 8) % 256) as u32, ((r >> 20) % 4096) as u32];
                s.apply(&cfg, &off, &Digest { sig: &sig, bands: &bands, prompt_hash: r, cells: &cells, ts: (r % 1000) as f64, emb: None });
            }
            s
        };
        let (a, b, c) = (make(seeds[0]), make(seeds[1]), make(seeds[2]));
        let merged = |x: &ClientSketch, y: &ClientSketch| { let mut m = x.clone(); m.merge(y); m };
        let same = |x: &ClientSketch, y: &ClientSketch| {
            x.count == y.count && x.first_ts == y.first_ts && x.last_ts == y.last_ts
                && x.near_dups == y.near_dups && x.sig == y.sig && x.bits == y.bits
                && x.hist == y.hist && x.hll == y.hll
                && x.novelty.iter().zip(y.novelty).all(|(p, q)| (p - q).abs() < 1e-5)
        };
        prop_assert!(same(&merged(&a, &b), &merged(&b, &a)));
        prop_assert!(same(&merged(&merged(&a, &b), &c), &merged(&a, &merged(&b, &c))));
    }

    #[test]
    fn store_snapshots_round_trip(events in proptest::collection::vec((0u8..12, "[a-z ]{0,40}", 0i64..4096, 0.0f64..1e9), 0..80), cap in 1usize..20) {
        let cfg = SketchConfig { max_clients: cap, ..Default::default() };
        let mut s = SketchStore::new(cfg, b"prop").unwrap();
        let ids: Vec<String> = events.iter().map(|e| format!("client-{}", e.0)).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let prompts: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        let cells: Vec<i64> = events.iter().flat_map(|e| [e.2 % 16, e.2 % 256, e.2]).collect();
        let ts: Vec<f64> = events.iter().map(|e| e.3).collect();
        s.update(&Batch { client_ids: &ids, prompts: &prompts, cells: &cells, ts: &ts, emb: None }, 0).unwrap();
        let bytes = store_to_bytes(&s);
        let back = store_from_bytes(&bytes, b"prop").unwrap();
        prop_assert_eq!(back.ids_lru_order(), s.ids_lru_order());
        prop_assert_eq!(back.evictions(), s.evictions());
        for id in s.ids_lru_order() {
            prop_assert_eq!(back.get(id), s.get(id));
        }
        prop_assert_eq!(store_to_bytes(&back), bytes);
    }

    /// Folding a batch at once gives the store that feeding its events one at
    /// a time gives, also when clients are evicted and their slots reused in
    /// the middle of the batch (the lookups made ahead of the fold go stale).
    #[test]
    fn one_batch_equals_events_one_by_one(events in proptest::collection::vec((0u8..12, "[a-z ]{0,20}", 0i64..4096), 0..120), cap in 1usize..8, warm in 0usize..40) {
        let cfg = SketchConfig { max_clients: cap, ..Default::default() };
        let ids: Vec<String> = events.iter().map(|e| format!("client-{}", e.0)).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let prompts: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        let cells: Vec<i64> = events.iter().flat_map(|e| [e.2 % 16, e.2 % 256, e.2]).collect();
        let ts: Vec<f64> = (0..events.len()).map(|t| t as f64).collect();
        let batch = |lo: usize, hi: usize| Batch {
            client_ids: &ids[lo..hi],
            prompts: &prompts[lo..hi],
            cells: &cells[3 * lo..3 * hi],
            ts: &ts[lo..hi],
            emb: None,
        };
        // the first `warm` events go in first, so the big batch meets known clients
        let warm = warm.min(events.len());
        let mut whole = SketchStore::new(cfg.clone(), b"prop").unwrap();
        whole.update(&batch(0, warm), 5).unwrap();
        let a = whole.update(&batch(warm, events.len()), 5).unwrap();
        let mut single = SketchStore::new(cfg, b"prop").unwrap();
        single.update(&batch(0, warm), 5).unwrap();
        let mut near_dup = Vec::new();
        let mut checkpoints = Vec::new();
        for i in warm..events.len() {
            let u = single.update(&batch(i, i + 1), 5).unwrap();
            near_dup.extend(u.near_dup);
            checkpoints.extend(u.checkpoints.iter().map(|_| i - warm));
        }
        prop_assert_eq!(a.near_dup, near_dup);
        prop_assert_eq!(a.checkpoints, checkpoints);
        prop_assert_eq!(whole.ids_lru_order(), single.ids_lru_order());
        prop_assert_eq!(whole.evictions(), single.evictions());
        for id in whole.ids_lru_order() {
            prop_assert_eq!(whole.get(id), single.get(id));
        }
    }
}
