//! Keyed hashing. Every hash the sketches use comes from SipHash-1-3 under a
//! key derived from the operator's secret: an attacker who cannot predict the
//! hashes cannot craft prompts that dodge the MinHash minima or the bands.

/// A 128-bit SipHash key derived from an arbitrary secret, and the two keys
/// of the fast word hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    k0: u64,
    k1: u64,
    w0: u64,
    w1: u64,
}

#[inline(always)]
fn folded(a: u64, b: u64) -> u64 {
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
        };
        let mut buf = Vec::with_capacity(secret.len() + 16);
        buf.extend_from_slice(b"spanwatch-key-k0");
        buf.extend_from_slice(secret);
        let k0 = zero.hash(&buf);
        buf[15] = b'1';
        let k1 = zero.hash(&buf);
        let sip = Key {
            k0,
            k1,
            w0: 0,
            w1: 0,
        };
        let (w0, w1) = (sip.hash(b"word-key-0") | 1, sip.hash(b"word-key-1") | 1);
        Key { k0, k1, w0, w1 }
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
        self.hash_word_or(data, 0)
    }

    /// `hash_word` of the lowercase form of an ASCII alphanumeric word,
    /// without copying it: setting bit 5 of every byte lowercases letters
    /// and leaves digits as they are, eight bytes at a time.
    #[inline]
    pub fn hash_word_ascii_lower(&self, data: &[u8]) -> u64 {
        self.hash_word_or(data, 0x2020_2020_2020_2020)
    }

    /// `hash_word` of `data` with every byte ORed with the matching byte of
    /// `bits` (zero: the bytes as they are).
    #[inline(always)]
    fn hash_word_or(&self, data: &[u8], bits: u64) -> u64 {
        let mut h = self.w0 ^ (data.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let m = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = folded(h ^ (m | bits), self.w1);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            // the padding bytes stay zero
            let m = u64::from_le_bytes(buf) | (bits >> (8 * (8 - rest.len())));
            h = folded(h ^ m, self.w1 ^ 0x2d35_8dcc_aa6c_78a5);
        }
        folded(h, self.w0 ^ 0x8bb8_4b93_962e_acc9)
    }

    /// Hash of one integer, for deriving per-permutation parameters.
    pub fn hash_u64(&self, tag: &[u8], x: u64) -> u64 {
        let mut buf = Vec::with_capacity(tag.len() + 8);
        buf.extend_from_slice(tag);
        buf.extend_from_slice(&x.to_le_bytes());
        self.hash(&buf)
    }
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
                k.hash_word_ascii_lower(w.as_bytes()),
                k.hash_word(low.as_bytes()),
                "{w}"
            );
        }
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
