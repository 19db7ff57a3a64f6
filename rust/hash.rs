//! Keyed hashing. Every hash the sketches use is keyed by the operator's
//! secret (SipHash-1-3, and keys drawn from it for the fast word and shingle
//! hashes): an attacker who cannot predict the hashes cannot craft prompts
//! that dodge the MinHash minima or the bands.

/// A 128-bit SipHash key derived from an arbitrary secret, the two keys of
/// the fast word hash and the two of the shingle finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    k0: u64,
    k1: u64,
    w0: u64,
    w1: u64,
    s0: u64,
    s1: u64,
}

/// Rotation between the word hashes of neighbouring window positions. Odd, so
/// no nonzero word hash other than all ones equals its own rotation, and a
/// repeated word cannot cancel out of a window.
const WINDOW_ROT: u32 = 21;

/// The 128-bit product of `a` and `b`, its halves XORed: the mixing step of
/// the fast keyed hashes (keyed when one factor is a secret).
#[inline(always)]
pub fn folded(a: u64, b: u64) -> u64 {
    let p = (a as u128) * (b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

impl Key {
    /// Derives the key from secret bytes (any length, empty allowed).
    pub fn from_secret(secret: &[u8]) -> Self {
        let zero = Key {
            k0: 0,
            k1: 0,
            w0: 0,
            w1: 0,
            s0: 0,
            s1: 0,
        };
        let mut buf = Vec::with_capacity(secret.len() + 16);
        buf.extend_from_slice(b"spanwatch-key-k0");
        buf.extend_from_slice(secret);
        let k0 = zero.hash(&buf);
        buf[15] = b'1';
        let k1 = zero.hash(&buf);
        let sip = Key { k0, k1, ..zero };
        let (w0, w1) = (sip.hash(b"word-key-0") | 1, sip.hash(b"word-key-1") | 1);
        let (s0, s1) = (sip.hash(b"shingle-key-0"), sip.hash(b"shingle-key-1") | 1);
        Key {
            k0,
            k1,
            w0,
            w1,
            s0,
            s1,
        }
    }

    /// A public fingerprint of the key, stored in snapshots so a restore
    /// under another key is refused. It does not reveal the key.
    pub fn fingerprint(&self) -> u64 {
        self.hash(b"spanwatch-key-fingerprint")
    }

    /// SipHash-1-3 of `data`.
    pub fn hash(&self, data: &[u8]) -> u64 {
        let mut v = [
            self.k0 ^ 0x736f_6d65_7073_6575,
            self.k1 ^ 0x646f_7261_6e64_6f6d,
            self.k0 ^ 0x6c79_6765_6e65_7261,
            self.k1 ^ 0x7465_6462_7974_6573,
        ];
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let m = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            v[3] ^= m;
            sipround(&mut v);
            v[0] ^= m;
        }
        let rest = chunks.remainder();
        let mut last = (data.len() as u64 & 0xff) << 56;
        for (i, b) in rest.iter().enumerate() {
            last |= (*b as u64) << (8 * i);
        }
        v[3] ^= last;
        sipround(&mut v);
        v[0] ^= last;
        v[2] ^= 0xff;
        sipround(&mut v);
        sipround(&mut v);
        sipround(&mut v);
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }

    /// A fast keyed hash for words: folded 64x64-bit multiplies under two
    /// secret keys. Not a PRF like SipHash, but without the keys an attacker
    /// cannot tell which words collide or which shingle takes a minimum.
    #[inline]
    pub fn hash_word(&self, data: &[u8]) -> u64 {
        self.hash_word_in(data, 0, data.len(), 0)
    }

    /// `hash_word` of the lowercase form of the ASCII alphanumeric word
    /// `text[start..end]`, without copying it: setting bit 5 of every byte
    /// lowercases letters and leaves digits as they are, eight bytes at a time.
    #[inline]
    pub fn hash_word_ascii_lower(&self, text: &[u8], start: usize, end: usize) -> u64 {
        self.hash_word_in(text, start, end, 0x2020_2020_2020_2020)
    }

    /// `hash_word` of `text[start..end]` with every byte ORed with the
    /// matching byte of `bits` (zero: the bytes as they are). Full 8-byte
    /// pieces go first and the last piece holds 1 to 8 bytes, so a word of up
    /// to eight bytes (most words) takes no loop. That piece is read as one
    /// 8-byte load from `text` where the text goes on that far, with the
    /// bytes past the word masked off: no copy.
    #[inline(always)]
    fn hash_word_in(&self, text: &[u8], start: usize, end: usize, bits: u64) -> u64 {
        let len = end - start;
        let mut h = self.w0 ^ (len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut at = start;
        while end - at > 8 {
            h = folded(h ^ (load8(text, at) | bits), self.w1);
            at += 8;
        }
        let rest = end - at;
        if rest > 0 {
            // the padding bytes stay zero
            let keep = u64::MAX >> (64 - 8 * rest);
            let m = if text.len() - at >= 8 {
                load8(text, at) & keep
            } else {
                let mut buf = [0u8; 8];
                buf[..rest].copy_from_slice(&text[at..end]);
                u64::from_le_bytes(buf)
            };
            h = folded(h ^ (m | (bits & keep)), self.w1 ^ 0x2d35_8dcc_aa6c_78a5);
        }
        folded(h, self.w0 ^ 0x8bb8_4b93_962e_acc9)
    }

    /// The hash of one shingle from the word hashes of its window (or of a
    /// whole prompt shorter than a window): word `j` rotated by `j` steps,
    /// XORed, then one keyed folded multiply. The word hashes are keyed
    /// already, so one multiply is enough to spread every input bit over
    /// the bin index (high bits) and the value (low bits).
    #[inline]
    pub fn hash_window(&self, words: &[u64]) -> u64 {
        let x = words
            .iter()
            .enumerate()
            .fold(0, |x, (j, &w)| x ^ w.rotate_left(WINDOW_ROT * j as u32));
        self.finish_window(x)
    }

    /// `hash_window` of every window of `k` words, in order, appended to
    /// `out`: the XOR of rotations rolls from one window to the next in three
    /// operations, whatever `k` is.
    pub fn hash_windows(&self, words: &[u64], k: usize, out: &mut Vec<u64>) {
        if k == 0 || words.len() < k {
            return;
        }
        let top = WINDOW_ROT.wrapping_mul(k as u32 - 1) % 64;
        let mut x = words[..k]
            .iter()
            .enumerate()
            .fold(0, |x, (j, &w)| x ^ w.rotate_left(WINDOW_ROT * j as u32));
        out.reserve(words.len() - k + 1);
        out.push(self.finish_window(x));
        for (&old, &new) in words.iter().zip(&words[k..]) {
            x = (x ^ old).rotate_right(WINDOW_ROT) ^ new.rotate_left(top);
            out.push(self.finish_window(x));
        }
    }

    #[inline(always)]
    fn finish_window(&self, x: u64) -> u64 {
        folded(x ^ self.s0, self.s1)
    }

    /// A hash of a whole sequence of word hashes, order-sensitive: a keyed
    /// folded multiply per word, on four interleaved lanes so the multiplies
    /// of neighbouring words do not wait on each other.
    pub fn hash_sequence(&self, words: &[u64]) -> u64 {
        let m = self.s1 ^ 0x5157_0000_0000_0000;
        let mut lanes = [self.s0, self.s0 ^ 1, self.s0 ^ 2, self.s0 ^ 3];
        let mut chunks = words.chunks_exact(4);
        for c in &mut chunks {
            for (lane, &w) in lanes.iter_mut().zip(c) {
                *lane = folded(*lane ^ w, m);
            }
        }
        for (lane, &w) in lanes.iter_mut().zip(chunks.remainder()) {
            *lane = folded(*lane ^ w, m);
        }
        // The length tells apart sequences that differ only by a tail that
        // left some lanes as they started.
        let h = lanes
            .iter()
            .fold(words.len() as u64, |h, &lane| folded(h ^ lane, self.w1));
        folded(h ^ self.s0, self.s1)
    }

    /// Hash of one integer, for deriving per-permutation parameters.
    pub fn hash_u64(&self, tag: &[u8], x: u64) -> u64 {
        let mut buf = Vec::with_capacity(tag.len() + 8);
        buf.extend_from_slice(tag);
        buf.extend_from_slice(&x.to_le_bytes());
        self.hash(&buf)
    }
}

/// The eight bytes of `text` from `at` (which must have eight left), little endian.
#[inline(always)]
fn load8(text: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(text[at..at + 8].try_into().expect("eight bytes"))
}

/// Mixes two 64-bit values into one (a finalizer, not keyed on its own:
/// its inputs are already keyed hashes).
#[inline(always)]
pub fn mix(a: u64, b: u64) -> u64 {
    let mut x = a ^ b.rotate_left(23).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_secrets_give_different_hashes() {
        let a = Key::from_secret(b"alpha");
        let b = Key::from_secret(b"beta");
        assert_ne!(a.hash(b"hello world"), b.hash(b"hello world"));
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn hash_is_deterministic_and_length_sensitive() {
        let k = Key::from_secret(b"s");
        assert_eq!(k.hash(b"abc"), k.hash(b"abc"));
        assert_ne!(k.hash(b"abc"), k.hash(b"abc\0"));
        assert_ne!(k.hash(b""), k.hash(b"\0"));
    }

    #[test]
    fn word_hash_is_keyed_and_length_sensitive() {
        let a = Key::from_secret(b"alpha");
        let b = Key::from_secret(b"beta");
        assert_ne!(a.hash_word(b"bread"), b.hash_word(b"bread"));
        assert_ne!(a.hash_word(b"bread"), a.hash_word(b"bread\0"));
        assert_ne!(a.hash_word(b"abcdefgh"), a.hash_word(b"abcdefgi"));
        let mut ones = [0u32; 64];
        for i in 0..4000u32 {
            let h = a.hash_word(format!("w{i}").as_bytes());
            for (bit, n) in ones.iter_mut().enumerate() {
                *n += ((h >> bit) & 1) as u32;
            }
        }
        assert!(ones.iter().all(|n| (1800..2200).contains(n)), "{ones:?}");
    }

    #[test]
    fn lowercasing_while_hashing_equals_hashing_the_lowercase_word() {
        let k = Key::from_secret(b"lower");
        for w in [
            "a",
            "Z",
            "a1",
            "Hello",
            "WORLD123",
            "abcdefgh",
            "ABCDEFGHI",
            "x9Y8z7W6v5U4",
            "Supercalifragilisticexpialidocious0123456789",
        ] {
            let low = w.to_ascii_lowercase();
            assert_eq!(
                k.hash_word_ascii_lower(w.as_bytes(), 0, w.len()),
                k.hash_word(low.as_bytes()),
                "{w}"
            );
            // inside a longer text, the bytes around the word do not count
            let text = format!("Xy7{w} zzzzzzzzzzzz");
            assert_eq!(
                k.hash_word_ascii_lower(text.as_bytes(), 3, 3 + w.len()),
                k.hash_word(low.as_bytes()),
                "{w} in {text}"
            );
        }
    }

    #[test]
    fn rolling_windows_equal_windows_hashed_one_by_one() {
        let k = Key::from_secret(b"roll");
        let words: Vec<u64> = (0..40u64).map(|i| k.hash_word(&i.to_le_bytes())).collect();
        for size in 1..=8 {
            let mut rolled = Vec::new();
            k.hash_windows(&words, size, &mut rolled);
            let direct: Vec<u64> = words.windows(size).map(|w| k.hash_window(w)).collect();
            assert_eq!(rolled, direct, "window of {size}");
        }
    }

    /// The window hash is linear in the word hashes before its finalizer, so
    /// check the structured cases: every window of up to three words over a
    /// small vocabulary, repeats and reorderings included, hashes apart.
    #[test]
    fn windows_over_a_small_vocabulary_never_collide() {
        for secret in [b"a".as_slice(), b"b", b"c"] {
            let k = Key::from_secret(secret);
            let vocab: Vec<u64> = ["the", "a", "of", "to", "red", "x", "1"]
                .iter()
                .map(|w| k.hash_word(w.as_bytes()))
                .collect();
            let mut seen = std::collections::HashSet::new();
            let mut n = 0;
            for &a in &vocab {
                assert!(seen.insert(k.hash_window(&[a])));
                for &b in &vocab {
                    assert!(seen.insert(k.hash_window(&[a, b])));
                    for &c in &vocab {
                        assert!(seen.insert(k.hash_window(&[a, b, c])));
                        n += 1;
                    }
                }
            }
            assert_eq!(n, 343);
        }
    }

    /// Bin index (top bits) and value (low 32 bits) of shingle hashes are
    /// uniform and unrelated, over windows of a small, repetitive vocabulary.
    #[test]
    fn window_hash_bins_and_bits_look_uniform() {
        let k = Key::from_secret(b"uniform");
        let vocab: Vec<u64> = (0..20u64).map(|i| k.hash_word(&i.to_le_bytes())).collect();
        let (mut bins, mut ones, mut low_by_half) = ([0u32; 16], [0u32; 64], [0u64; 2]);
        let mut n = 0u32;
        for &a in &vocab {
            for &b in &vocab {
                for &c in &vocab {
                    let h = k.hash_window(&[a, b, c]);
                    bins[(h >> 60) as usize] += 1;
                    for (bit, o) in ones.iter_mut().enumerate() {
                        *o += ((h >> bit) & 1) as u32;
                    }
                    low_by_half[(h >> 63) as usize] += h as u32 as u64;
                    n += 1;
                }
            }
        }
        // 8,000 windows: 500 per bin, sd about 22; 4,000 per bit, sd about 45
        assert!(bins.iter().all(|b| (400..600).contains(b)), "{bins:?}");
        assert!(ones.iter().all(|o| (3750..4250).contains(o)), "{ones:?}");
        let mean = |s: u64| s as f64 / (n as f64 / 2.0) / u32::MAX as f64;
        for s in low_by_half {
            assert!((mean(s) - 0.5).abs() < 0.02, "{}", mean(s));
        }
    }

    #[test]
    fn sequence_hash_is_order_and_length_sensitive() {
        let k = Key::from_secret(b"seq");
        let w: Vec<u64> = (0..9u64).map(|i| k.hash_word(&i.to_le_bytes())).collect();
        let mut seen = std::collections::HashSet::new();
        for n in 0..=w.len() {
            assert!(seen.insert(k.hash_sequence(&w[..n])));
        }
        let mut swapped = w.clone();
        swapped.swap(0, 4); // the same lane
        assert!(seen.insert(k.hash_sequence(&swapped)));
        swapped.swap(1, 2); // two lanes
        assert!(seen.insert(k.hash_sequence(&swapped)));
        let mut doubled = w.clone();
        doubled.extend_from_slice(&w);
        assert!(seen.insert(k.hash_sequence(&doubled)));
        assert_ne!(
            Key::from_secret(b"other").hash_sequence(&w),
            k.hash_sequence(&w)
        );
    }

    #[test]
    fn hash_bits_look_balanced() {
        let k = Key::from_secret(b"balance");
        let mut ones = [0u32; 64];
        for i in 0..4000u32 {
            let h = k.hash(&i.to_le_bytes());
            for (bit, n) in ones.iter_mut().enumerate() {
                *n += ((h >> bit) & 1) as u32;
            }
        }
        for n in ones {
            assert!((1800..2200).contains(&n), "bit set {n} times of 4000");
        }
    }
}
