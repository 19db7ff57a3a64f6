//! Word shingles of a prompt, as keyed 64-bit hashes.
//!
//! Words are maximal runs of alphanumeric characters, lowercased. A prompt
//! with fewer words than the shingle size gives one shingle of all its words;
//! a prompt with no words at all gives one shingle of its raw bytes.

use crate::hash::{mix, Key};

/// Reusable buffers for shingling, one per worker thread.
#[derive(Default)]
pub struct Shingler {
    word: Vec<u8>,
    words: Vec<u64>,
}

impl Shingler {
    /// Fills `out` with the prompt's shingle hashes and returns a hash of the
    /// whole normalized prompt (for distinct-prompt counting).
    pub fn shingles(&mut self, key: &Key, text: &str, k: usize, out: &mut Vec<u64>) -> u64 {
        out.clear();
        self.words.clear();
        self.word.clear();
        if text.is_ascii() {
            let bytes = text.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if !bytes[i].is_ascii_alphanumeric() {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                self.words.push(key.hash_word_ascii_lower(&bytes[start..i]));
            }
        } else {
            let mut tmp = [0u8; 4];
            for ch in text.chars() {
                // most characters of most prompts are ASCII even when one is not
                if ch.is_ascii() {
                    if ch.is_ascii_alphanumeric() {
                        self.word.push((ch as u8).to_ascii_lowercase());
                    } else {
                        self.end_word(key);
                    }
                } else if ch.is_alphanumeric() {
                    for lower in ch.to_lowercase() {
                        self.word
                            .extend_from_slice(lower.encode_utf8(&mut tmp).as_bytes());
                    }
                } else {
                    self.end_word(key);
                }
            }
        }
        self.end_word(key);

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
        let fold = |ws: &[u64]| ws[1..].iter().fold(ws[0], |acc, &w| mix(acc, w));
        if words.len() < k {
            out.push(fold(words));
        } else {
            out.extend(words.windows(k).map(fold));
        }
        words.iter().fold(0x5157_u64, |acc, &w| mix(acc, w))
    }

    fn end_word(&mut self, key: &Key) {
        if !self.word.is_empty() {
            self.words.push(key.hash_word(&self.word));
            self.word.clear();
        }
    }
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
    fn order_matters() {
        assert_ne!(run("a b c", 3).0, run("c b a", 3).0);
    }
}
