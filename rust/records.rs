//! The fast path for prompt records: a well-formed JSON event parsed in one
//! pass, with its embedding decoded. It accepts only what the Python parser
//! (`spanwatch.events.parse_event`) would accept with the same values, and
//! hands everything else back to it, so the reasons for a refusal come from
//! one place.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rayon::prelude::*;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Longest client id, in characters (as the Python `Event` model).
pub const MAX_CLIENT_ID_CHARS: usize = 512;

/// One event, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub client_id: String,
    pub prompt: String,
    pub ts: f64,
    pub event_id: Option<String>,
    /// The precomputed embedding, from `embedding` or `embedding_b64`.
    pub vector: Option<Vec<f32>>,
    /// The `meta` object as JSON text, decoded only if someone needs it.
    pub meta: Option<String>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    prompt: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    ts: Option<f64>,
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default)]
    embedding: Option<Vec<f64>>,
    #[serde(borrow, default)]
    embedding_b64: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    meta: Option<&'a RawValue>,
}

/// A field that may be missing but not null: `None` means missing, and a
/// null fails like any other wrong type.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Python's `str.isspace`: Unicode White_Space plus the four ASCII
/// separators U+001C..U+001F.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn blank(s: &str) -> bool {
    s.chars().all(python_space)
}

/// Parses one record value; `None` when the record is not of the common,
/// valid kind (the Python parser then decides and gives the reason).
/// `default_ts` fills a missing `ts`; NaN means there is none.
pub fn parse_record(
    raw: &[u8],
    default_ts: f64,
    dim: usize,
    max_prompt_bytes: usize,
) -> Option<Record> {
    let w: Wire = serde_json::from_slice(raw).ok()?;
    let client_id = w.client_id?;
    let prompt = w.prompt?;
    if client_id.is_empty()
        || client_id.chars().count() > MAX_CLIENT_ID_CHARS
        || blank(&client_id)
        || prompt.is_empty()
        || prompt.len() > max_prompt_bytes
        || blank(&prompt)
    {
        return None;
    }
    let ts = match w.ts {
        Some(t) => t,
        None if !default_ts.is_nan() => default_ts,
        None => return None,
    };
    if !ts.is_finite() {
        return None;
    }
    if let Some(m) = w.meta {
        if !m.get().starts_with('{') {
            return None;
        }
    }
    let vector = match (w.embedding, w.embedding_b64) {
        (Some(_), Some(_)) => return None,
        (Some(v), None) => Some(v.into_iter().map(|x| x as f32).collect::<Vec<f32>>()),
        (None, Some(b)) => Some(decode_f32(&b)?),
        (None, None) => None,
    };
    if vector.as_ref().is_some_and(|v| v.len() != dim) {
        return None;
    }
    Some(Record {
        client_id: client_id.into_owned(),
        prompt: prompt.into_owned(),
        ts,
        event_id: w.event_id.map(Cow::into_owned),
        vector,
        meta: w.meta.map(|m| m.get().to_owned()),
    })
}

/// Little-endian float32 values from canonical base64; `None` for anything
/// else (Python's decoder, which is more lenient, decides those).
fn decode_f32(b64: &str) -> Option<Vec<f32>> {
    let bytes = STANDARD.decode(b64).ok()?;
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// `parse_record` over a batch, in parallel; a missing value is `None`.
pub fn parse_records(
    values: &[Option<&[u8]>],
    default_ts: &[f64],
    dim: usize,
    max_prompt_bytes: usize,
) -> Vec<Option<Record>> {
    values
        .par_iter()
        .zip(default_ts.par_iter())
        .map(|(v, &t)| v.and_then(|raw| parse_record(raw, t, dim, max_prompt_bytes)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Record> {
        parse_record(s.as_bytes(), f64::NAN, 2, 100)
    }

    #[test]
    fn a_plain_event_parses() {
        let r = parse(r#"{"client_id":"a","prompt":"hi there","ts":5,"event_id":"e1"}"#).unwrap();
        assert_eq!(r.client_id, "a");
        assert_eq!(r.prompt, "hi there");
        assert_eq!(r.ts, 5.0);
        assert_eq!(r.event_id.as_deref(), Some("e1"));
        assert_eq!(r.vector, None);
    }

    #[test]
    fn escapes_and_unknown_fields() {
        let r = parse(r#"{"client_id":"a\u00e9","prompt":"x\ny","ts":1.5,"other":[1,{"k":2}]}"#)
            .unwrap();
        assert_eq!(r.client_id, "aé");
        assert_eq!(r.prompt, "x\ny");
    }

    #[test]
    fn both_vector_forms_decode() {
        let list = parse(r#"{"client_id":"a","prompt":"p","ts":1,"embedding":[0.5,-2]}"#).unwrap();
        assert_eq!(list.vector, Some(vec![0.5, -2.0]));
        let b64 = STANDARD.encode([0.5f32.to_le_bytes(), (-2f32).to_le_bytes()].concat());
        let s = format!(r#"{{"client_id":"a","prompt":"p","ts":1,"embedding_b64":"{b64}"}}"#);
        assert_eq!(parse(&s).unwrap().vector, list.vector);
    }

    #[test]
    fn meta_is_kept_as_json_text() {
        let r = parse(r#"{"client_id":"a","prompt":"p","ts":1,"meta":{"org": "x"}}"#).unwrap();
        assert_eq!(r.meta.as_deref(), Some(r#"{"org": "x"}"#));
        let r = parse(r#"{"client_id":"a","prompt":"p","ts":1,"meta":null}"#).unwrap();
        assert_eq!(r.meta, None);
    }

    #[test]
    fn a_missing_ts_takes_the_default_but_null_does_not() {
        let raw = br#"{"client_id":"a","prompt":"p"}"#;
        assert_eq!(parse_record(raw, 7.0, 2, 100).unwrap().ts, 7.0);
        assert!(parse_record(raw, f64::NAN, 2, 100).is_none());
        let null = br#"{"client_id":"a","prompt":"p","ts":null}"#;
        assert!(parse_record(null, 7.0, 2, 100).is_none());
    }

    #[test]
    fn anything_unusual_is_left_to_python() {
        for s in [
            r#"not json"#,
            r#"[1,2]"#,
            r#"{"client_id":"a","prompt":"p","ts":1} trailing"#,
            r#"{"client_id":7,"prompt":"p","ts":1}"#,
            r#"{"client_id":"a","prompt":"p","ts":"2024-01-01T00:00:00Z"}"#,
            r#"{"client_id":"a","prompt":"p","ts":true}"#,
            r#"{"client_id":"a","prompt":"  ","ts":1}"#,
            "{\"client_id\":\"\\u001c\",\"prompt\":\"p\",\"ts\":1}",
            r#"{"client_id":"","prompt":"p","ts":1}"#,
            r#"{"client_id":"a","prompt":"\ud800","ts":1}"#,
            r#"{"client_id":"a","messages":[{"role":"user","content":"p"}],"ts":1}"#,
            r#"{"client_id":"a","prompt":"p","ts":1,"event_id":3}"#,
            r#"{"client_id":"a","prompt":"p","ts":1,"meta":[1]}"#,
            r#"{"client_id":"a","prompt":"p","ts":1,"embedding":[1,2,3]}"#,
            r#"{"client_id":"a","prompt":"p","ts":1,"embedding":[1,true]}"#,
            r#"{"client_id":"a","prompt":"p","ts":1,"embedding_b64":"AAA"}"#,
            r#"{"client_id":"a","prompt":"p","ts":1,"embedding":[1,2],"embedding_b64":"AAAAAAAAAAA="}"#,
            r#"{"client_id":"a","client_id":"b","prompt":"p","ts":1}"#,
            r#"{"client_id":"a","prompt":"p","ts":1e999}"#,
        ] {
            assert!(parse(s).is_none(), "{s}");
        }
    }

    #[test]
    fn size_limits() {
        let long_id = "x".repeat(MAX_CLIENT_ID_CHARS + 1);
        let s = format!(r#"{{"client_id":"{long_id}","prompt":"p","ts":1}}"#);
        assert!(parse(&s).is_none());
        // 512 two-byte characters are within the limit, which counts characters
        let id = "é".repeat(MAX_CLIENT_ID_CHARS);
        let s = format!(r#"{{"client_id":"{id}","prompt":"p","ts":1}}"#);
        assert!(parse(&s).is_some());
        let s = format!(
            r#"{{"client_id":"a","prompt":"{}","ts":1}}"#,
            "y".repeat(101)
        );
        assert!(parse(&s).is_none());
    }

    #[test]
    fn invalid_utf8_is_left_to_python() {
        let raw = b"{\"client_id\":\"a\",\"prompt\":\"\xff\",\"ts\":1}";
        assert!(parse_record(raw, f64::NAN, 2, 100).is_none());
    }

    #[test]
    fn a_batch_keeps_its_order() {
        let a = br#"{"client_id":"a","prompt":"p","ts":1}"#.as_slice();
        let b = br#"{"client_id":"b","prompt":"p","ts":2}"#.as_slice();
        let out = parse_records(&[Some(a), None, Some(b)], &[f64::NAN; 3], 2, 100);
        let ids: Vec<_> = out
            .iter()
            .map(|r| r.as_ref().map(|r| r.client_id.clone()))
            .collect();
        assert_eq!(ids, [Some("a".into()), None, Some("b".into())]);
    }
}
