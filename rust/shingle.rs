//! Word shingles of a prompt, as keyed 64-bit hashes.
//!
//! Words are maximal runs of alphanumeric characters, lowercased. A prompt
//! with fewer words than the shingle size gives one shingle of all its words;
//! a prompt with no words at all gives one shingle of its raw bytes.

use crate::hash::Key;

/// Reusable buffers for shingling, one per worker thread.
#[derive(Default)]
pub struct Shingler {
    word: Vec<u8>,
    words: Vec<u64>,
    /// One bit per byte of the prompt: may it be part of a word (an ASCII
    /// letter or digit, or any byte of a non-ASCII character).
    part: Vec<u64>,
    /// One bit per byte: is it a byte of a non-ASCII character.
    high: Vec<u64>,
}

impl Shingler {
    /// Fills `out` with the prompt's shingle hashes and returns a hash of the
    /// whole normalized prompt (for distinct-prompt counting).
    pub fn shingles(&mut self, key: &Key, text: &str, k: usize, out: &mut Vec<u64>) -> u64 {
        out.clear();
        self.words.clear();
        self.word.clear();
        self.hash_words(key, text);

        let words = &self.words;
        if words.is_empty() {
            let h = key.hash(text.as_bytes());
            if !text.is_empty() {
                out.push(h);
            }
            return h;
        }
        // A window and a prompt shorter than one window hash the same way, so
        // "the quick brown" shares its shingle with "the quick brown fox".
        if words.len() < k {
            out.push(key.hash_window(words));
        } else {
            key.hash_windows(words, k, out);
        }
        key.hash_sequence(words)
    }

    /// Hashes the words of a prompt into `self.words`. Word boundaries come
    /// from bitmaps built eight bytes at a time, so finding a word costs two
    /// bit scans instead of a branch per byte. A run of word bytes that holds
    /// a non-ASCII character goes through Unicode rules; every other run
    /// (most of any prompt) is hashed in place.
    fn hash_words(&mut self, key: &Key, text: &str) {
        let bytes = text.as_bytes();
        self.part.clear();
        self.high.clear();
        let mut any_high = 0u64;
        let mut blocks = bytes.chunks_exact(64);
        let mut tail = [0u8; 64];
        let rest = blocks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        let last = (!rest.is_empty()).then_some(&tail);
        for block in blocks
            .by_ref()
            .map(|b| b.try_into().expect("64 bytes"))
            .chain(last)
        {
            let (part, high) = block_classes(block);
            self.part.push(part);
            self.high.push(high);
            any_high |= high;
        }
        let n = bytes.len();
        // The first non-ASCII byte at or after the current word, found again
        // only once a word starts past it (a scan per word would be quadratic).
        let mut next_high = if any_high != 0 {
            next_bit(&self.high, 0, 0)
        } else {
            None
        };
        let mut pos = 0;
        while let Some(start) = next_bit(&self.part, pos, 0) {
            let end = next_bit(&self.part, start, !0).unwrap_or(n).min(n);
            pos = end;
            if next_high.is_some_and(|h| h < start) {
                next_high = next_bit(&self.high, start, 0);
            }
            if next_high.is_some_and(|h| h < end) {
                // runs end at ASCII bytes, which are character boundaries
                self.unicode_words(key, &text[start..end]);
            } else {
                self.words
                    .push(key.hash_word_ascii_lower(bytes, start, end));
            }
        }
    }

    /// Words of a piece of text under Unicode rules: alphanumeric characters,
    /// lowercased; any other character ends a word.
    fn unicode_words(&mut self, key: &Key, text: &str) {
        let mut tmp = [0u8; 4];
        for ch in text.chars() {
            if ch.is_ascii_alphanumeric() {
                self.word.push((ch as u8).to_ascii_lowercase());
            } else if ch.is_alphanumeric() {
                for lower in ch.to_lowercase() {
                    self.word
                        .extend_from_slice(lower.encode_utf8(&mut tmp).as_bytes());
                }
            } else {
                self.end_word(key);
            }
        }
        self.end_word(key);
    }

    fn end_word(&mut self, key: &Key) {
        if !self.word.is_empty() {
            self.words.push(key.hash_word(&self.word));
            self.word.clear();
        }
    }
}

/// For 64 bytes: bit `i` of the first mask set where byte `i` may be part of
/// a word (an ASCII letter or digit, or not ASCII), of the second where it is
/// not ASCII. SSE2, which every x86-64 CPU has, classifies 16 bytes in a few
/// instructions; elsewhere the same masks come eight bytes at a time.
#[inline(always)]
fn block_classes(block: &[u8; 64]) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        block_classes_sse2(block)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block_classes_swar(block)
    }
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn block_classes_swar(block: &[u8; 64]) -> (u64, u64) {
    let (mut part, mut high) = (0u64, 0u64);
    for (i, c) in block.chunks_exact(8).enumerate() {
        let (alnum, hi) = byte_classes(u64::from_le_bytes(c.try_into().expect("eight bytes")));
        part |= ((alnum | hi) as u64) << (8 * i);
        high |= (hi as u64) << (8 * i);
    }
    (part, high)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_classes_sse2(block: &[u8; 64]) -> (u64, u64) {
    use std::arch::x86_64::*;
    let (mut part, mut high) = (0u64, 0u64);
    for (i, c) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86-64 baseline, and the load reads
        // exactly the 16 bytes of `c` (unaligned loads allowed).
        let (alnum, hi) = unsafe {
            let v = _mm_loadu_si128(c.as_ptr().cast());
            // unsigned `x - lo <= n` as `min(x - lo, n) == x - lo`; bytes of
            // 0x80 and above land far outside both ranges
            let in_range = |x: __m128i, lo: u8, n: u8| {
                let d = _mm_sub_epi8(x, _mm_set1_epi8(lo as i8));
                _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(n as i8)), d)
            };
            let lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let alnum = _mm_or_si128(in_range(lower, b'a', 25), in_range(v, b'0', 9));
            (_mm_movemask_epi8(alnum) as u16, _mm_movemask_epi8(v) as u16)
        };
        part |= ((alnum | hi) as u64) << (16 * i);
        high |= (hi as u64) << (16 * i);
    }
    (part, high)
}

/// For the eight bytes of `x`: bit `i` of the first mask set where byte `i`
/// is an ASCII letter or digit, of the second where it is not ASCII. Per
/// byte below 0x80, `v + (0x80 - lo)` has its high bit set exactly when
/// `v >= lo`, with no carry into the next byte.
#[inline(always)]
fn byte_classes(x: u64) -> (u8, u8) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let at_least = |v: u64, lo: u8| v.wrapping_add(ONES * (0x80 - lo as u64));
    let low7 = x & !HIGH;
    // OR 0x20 maps 'A'..'Z' onto 'a'..'z' and no other byte into that range
    let lower = low7 | 0x2020_2020_2020_2020;
    let letter = at_least(lower, b'a') & !at_least(lower, b'z' + 1);
    let digit = at_least(low7, b'0') & !at_least(low7, b'9' + 1);
    let alnum = (letter | digit) & !x & HIGH;
    (gather(alnum), gather(x & HIGH))
}

/// Gathers the high bits of the eight bytes of `m` (no other bit set) into
/// one byte, in order: the multiply moves bit `8i + 7` to bit `56 + i`.
#[inline(always)]
fn gather(m: u64) -> u8 {
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Position of the first bit at or after `pos` that differs from `flip`
/// (0: the next set bit; all ones: the next clear bit), if any.
#[inline(always)]
fn next_bit(map: &[u64], pos: usize, flip: u64) -> Option<usize> {
    let mut w = pos / 64;
    let mut bits = (*map.get(w)? ^ flip) & (u64::MAX << (pos % 64));
    while bits == 0 {
        w += 1;
        bits = *map.get(w)? ^ flip;
    }
    Some(w * 64 + bits.trailing_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, k: usize) -> (Vec<u64>, u64) {
        let key = Key::from_secret(b"t");
        let mut out = Vec::new();
        let whole = Shingler::default().shingles(&key, text, k, &mut out);
        (out, whole)
    }

    #[test]
    fn counts_word_windows() {
        assert_eq!(run("one two three four five", 3).0.len(), 3);
        assert_eq!(run("one two", 3).0.len(), 1);
        assert_eq!(run("", 3).0.len(), 0);
        assert_eq!(run("?!?", 3).0.len(), 1);
    }

    #[test]
    fn case_and_punctuation_do_not_matter() {
        assert_eq!(run("Hello, World again!", 2), run("hello world   AGAIN", 2));
        assert_eq!(run("ÉCOLE publique", 1), run("école publique", 1));
    }

    #[test]
    fn a_whole_short_prompt_is_the_same_shingle_as_its_window() {
        let (short, _) = run("the quick brown", 3);
        let (long, _) = run("the quick brown fox", 3);
        assert_eq!(short.len(), 1);
        assert_eq!(short[0], long[0]);
        let (two, _) = run("the quick", 3);
        assert_ne!(two[0], long[0]);
    }

    #[test]
    fn ascii_and_unicode_paths_hash_words_alike() {
        let (ascii, _) = run("bread flour water", 3);
        let (mixed, _) = run("bread flour water é", 3);
        assert_eq!(ascii[0], mixed[0]);
        let (long, _) = run("a supercalifragilisticexpialidociouslyverylongword here", 2);
        let (long_u, _) = run(
            "a supercalifragilisticexpialidociouslyverylongword here ü",
            2,
        );
        assert_eq!(long[..2], long_u[..2]);
    }

    #[test]
    fn byte_classes_match_the_byte_tests() {
        for b in 0u8..=255 {
            for at in 0..8 {
                for fill in [b' ', b'a', 0xc3, 0xff] {
                    let mut x = [fill; 8];
                    x[at] = b;
                    let (alnum, high) = byte_classes(u64::from_le_bytes(x));
                    let want =
                        |f: fn(&u8) -> bool| (0..8).fold(0u8, |m, i| m | ((f(&x[i]) as u8) << i));
                    assert_eq!(alnum, want(u8::is_ascii_alphanumeric), "{x:?}");
                    assert_eq!(high, want(|c| !c.is_ascii()), "{x:?}");
                }
            }
        }
    }

    #[test]
    fn block_classes_agree_with_the_byte_tests() {
        for b in 0u8..=255 {
            for at in [0, 7, 8, 15, 16, 33, 63] {
                for fill in [b' ', b'Q', 0xc3] {
                    let mut block = [fill; 64];
                    block[at] = b;
                    let want = |f: fn(&u8) -> bool| {
                        (0..64).fold(0u64, |m, i| m | ((f(&block[i]) as u64) << i))
                    };
                    let part = want(|c| c.is_ascii_alphanumeric() || !c.is_ascii());
                    let high = want(|c| !c.is_ascii());
                    assert_eq!(block_classes(&block), (part, high), "{b:#x} at {at}");
                    assert_eq!(block_classes_swar(&block), (part, high), "{b:#x} at {at}");
                }
            }
        }
    }

    #[test]
    fn words_across_bitmap_blocks_and_at_the_end() {
        // words that straddle 8- and 64-byte boundaries, and a last word
        // that ends the text (its 8-byte load would run past the end)
        let mut text = String::new();
        let mut words = Vec::new();
        for i in 0..40 {
            let w = format!("W{}", "x".repeat(i % 13));
            text.push_str(&w);
            text.push_str(if i % 3 == 0 { " " } else { "-, " });
            words.push(w.to_lowercase());
        }
        text.push_str("Zz9");
        words.push("zz9".into());
        let key = Key::from_secret(b"t");
        let want: Vec<u64> = words.iter().map(|w| key.hash_word(w.as_bytes())).collect();
        let mut sh = Shingler::default();
        sh.shingles(&key, &text, 3, &mut Vec::new());
        assert_eq!(sh.words, want);
        // the same text with non-ASCII characters: the runs that hold one
        // go through Unicode rules, the others do not change
        sh.shingles(&key, &format!("{text} \u{e9}"), 3, &mut Vec::new());
        assert_eq!(sh.words[..want.len()], want[..]);
        let mixed = "Caf\u{c9}\u{2014}na\u{ef}ve r\u{e9}sum\u{e9} \u{1F600}x \u{130}i";
        sh.shingles(&key, mixed, 3, &mut Vec::new());
        let lower: Vec<u64> = [
            "caf\u{e9}",
            "na\u{ef}ve",
            "r\u{e9}sum\u{e9}",
            "x",
            "i\u{307}i",
        ]
        .iter()
        .map(|w| key.hash_word(w.as_bytes()))
        .collect();
        assert_eq!(sh.words, lower);
    }

    /// The definition of words: maximal runs of alphanumeric characters,
    /// lowercased, one character at a time.
    fn reference_words(key: &Key, text: &str) -> Vec<u64> {
        let mut out = Vec::new();
        let mut word = String::new();
        for ch in text.chars().chain([' ']) {
            if ch.is_alphanumeric() {
                word.extend(ch.to_lowercase());
            } else if !word.is_empty() {
                out.push(key.hash_word(word.as_bytes()));
                word.clear();
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn words_follow_their_definition(
            text in "([a-zA-Z0-9 ,.\\-]|\\PC){0,200}",
            pad in 0usize..70,
        ) {
            let key = Key::from_secret(b"w");
            let text = format!("{}{text}", " ".repeat(pad));
            let mut sh = Shingler::default();
            sh.shingles(&key, &text, 3, &mut Vec::new());
            proptest::prop_assert_eq!(&sh.words, &reference_words(&key, &text));
        }
    }

    /// The estimate over real word windows (shared prefixes, repeated
    /// words) is unbiased: averaged over many secrets, it matches the exact
    /// Jaccard index of the shingle sets.
    #[test]
    fn jaccard_of_word_windows_is_unbiased() {
        use crate::minhash::{jaccard, MinHasher};
        let vocab = [
            "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "off",
        ];
        // a: 60 words; b: its first 40 words, then 20 others
        let word = |i: usize, salt: u64| vocab[(crate::hash::mix(i as u64, salt) % 10) as usize];
        let a: Vec<&str> = (0..60).map(|i| word(i, 1)).collect();
        let b: Vec<&str> = (0..60)
            .map(|i| if i < 40 { word(i, 1) } else { word(i, 3) })
            .collect();
        let set = |ws: &[&str]| -> std::collections::HashSet<String> {
            ws.windows(3).map(|w| w.join(" ")).collect()
        };
        let (sa, sb) = (set(&a), set(&b));
        let truth = sa.intersection(&sb).count() as f64 / sa.union(&sb).count() as f64;
        assert!(
            sa.len() > 20 && (0.3..0.8).contains(&truth),
            "{} {truth}",
            sa.len()
        );
        let (mut sum, trials) = (0.0, 300);
        let mut sh = Shingler::default();
        for t in 0..trials {
            let key = Key::from_secret(format!("s{t}").as_bytes());
            let m = MinHasher::new(&key, 128);
            let sig = |text: &str, sh: &mut Shingler| {
                let mut out = Vec::new();
                sh.shingles(&key, text, 3, &mut out);
                let (mut raw, mut dense) = (vec![0; 128], vec![0; 128]);
                m.signature(&out, &mut raw);
                m.densify(&raw, &mut dense, &mut Vec::new());
                dense
            };
            let (da, db) = (sig(&a.join(" "), &mut sh), sig(&b.join(" "), &mut sh));
            sum += jaccard(&da, &db) - truth;
        }
        // 300 estimates of sd about 0.04 each: their mean has sd about 0.0025
        assert!(
            (sum / trials as f64).abs() < 0.01,
            "bias {}",
            sum / trials as f64
        );
    }

    #[test]
    fn order_matters() {
        assert_ne!(run("a b c", 3).0, run("c b a", 3).0);
    }
}
