//! The body of an ingest request: `Content-Encoding` undone with a bound
//! on the decompressed size (a small compressed body can expand
//! enormously), and the `{"events": [...]}` envelope split into events.

use std::io::Read;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::export::metrics::RejectReason;

/// Request-level failures, before any event is looked at.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("unsupported Content-Encoding {0:?} (gzip, zstd or identity)")]
    Encoding(String),
    #[error("cannot decompress the body: {0}")]
    Decompress(String),
    #[error("malformed body: {0}")]
    Malformed(String),
}

impl BodyError {
    pub fn reason(&self) -> RejectReason {
        match self {
            BodyError::TooLarge(_) => RejectReason::TooLarge,
            BodyError::Encoding(_) => RejectReason::UnsupportedEncoding,
            BodyError::Decompress(_) | BodyError::Malformed(_) => RejectReason::MalformedBody,
        }
    }
}

/// The body after `Content-Encoding`, refusing more than `max` bytes
/// decompressed (a small compressed body can expand enormously).
pub fn decode(encoding: Option<&str>, body: &[u8], max: usize) -> Result<Vec<u8>, BodyError> {
    let limited = |r: &mut dyn Read| -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        r.take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| BodyError::Decompress(e.to_string()))?;
        if out.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        Ok(out)
    };
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > max {
                return Err(BodyError::TooLarge(max));
            }
            Ok(body.to_vec())
        }
        Some("gzip") | Some("x-gzip") => limited(&mut flate2::read::GzDecoder::new(body)),
        Some("zstd") => {
            let mut d = zstd::stream::read::Decoder::new(body)
                .map_err(|e| BodyError::Decompress(e.to_string()))?;
            limited(&mut d)
        }
        Some(other) => Err(BodyError::Encoding(other.to_string())),
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Splits `{"events": [...]}` into the raw text of each event.
pub fn split_events(body: &[u8]) -> Result<Vec<&RawValue>, BodyError> {
    let text =
        std::str::from_utf8(body).map_err(|e| BodyError::Malformed(format!("not UTF-8: {e}")))?;
    let env: Envelope = serde_json::from_str(text)
        .map_err(|e| BodyError::Malformed(format!("expected {{\"events\": [...]}}: {e}")))?;
    Ok(env.events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decode_bounds_decompressed_size() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![b' '; 10_000]).expect("compress");
        let body = gz.finish().expect("compress");
        assert!(body.len() < 200);
        assert_eq!(
            decode(Some("gzip"), &body, 1000),
            Err(BodyError::TooLarge(1000))
        );
        assert_eq!(
            decode(Some("gzip"), &body, 20_000).map(|b| b.len()),
            Ok(10_000)
        );
        let z = zstd::encode_all(&b"{\"events\": []}"[..], 3).expect("zstd");
        assert_eq!(
            decode(Some("zstd"), &z, 100).as_deref(),
            Ok(&b"{\"events\": []}"[..])
        );
        assert!(matches!(
            decode(Some("br"), b"x", 10),
            Err(BodyError::Encoding(_))
        ));
        assert!(matches!(
            decode(Some("gzip"), b"not gzip", 10),
            Err(BodyError::Decompress(_))
        ));
    }

    #[test]
    fn envelope_errors_are_clear() {
        assert!(split_events(b"[]").is_err());
        assert!(split_events(b"{\"events\": 3}").is_err());
        assert_eq!(
            split_events(b"{\"events\": [1, {\"a\": 2}]}").map(|v| v.len()),
            Ok(2)
        );
    }
}
