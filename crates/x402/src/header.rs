//! Header codec: standard base64 (with `+/` and `=` padding, as the TS SDK writes it) over
//! UTF-8 JSON, with a size limit applied before any decoding work.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest payment header accepted by default. An EOA `exact` payload is ~1.3 KB
/// encoded; 8 KiB leaves room for extensions while bounding the work a client can cause.
pub const MAX_PAYMENT_HEADER_BYTES: usize = 8 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("header is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("header is empty")]
    Empty,
    #[error("header is not standard base64: {0}")]
    Base64(String),
    #[error("header does not decode to UTF-8 JSON of the expected shape: {0}")]
    Json(String),
}

/// Encodes a protocol object as a header value.
pub fn encode_header<T: Serialize>(value: &T) -> String {
    // Serializing these plain data types to a Vec cannot fail: no maps with non-string
    // keys, no custom serializers that error.
    let json = serde_json::to_vec(value).unwrap_or_default();
    STANDARD.encode(json)
}

/// Decodes a header value into a protocol object, refusing anything over `max_len` bytes.
pub fn decode_header<T: DeserializeOwned>(value: &[u8], max_len: usize) -> Result<T, HeaderError> {
    if value.len() > max_len {
        return Err(HeaderError::TooLarge { len: value.len(), max: max_len });
    }
    let trimmed = value.trim_ascii();
    if trimmed.is_empty() {
        return Err(HeaderError::Empty);
    }
    let json = STANDARD.decode(trimmed).map_err(|e| HeaderError::Base64(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| HeaderError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_json() {
        let value = serde_json::json!({"x402Version": 2, "a": "b+/"});
        let encoded = encode_header(&value);
        let decoded: serde_json::Value = decode_header(encoded.as_bytes(), 1024).unwrap();
        assert_eq!(decoded, value);
    }

    #[test]
    fn refuses_oversized_before_decoding() {
        let err = decode_header::<serde_json::Value>(&[b'A'; 100], 10).unwrap_err();
        assert_eq!(err, HeaderError::TooLarge { len: 100, max: 10 });
    }

    #[test]
    fn refuses_base64url_and_garbage() {
        assert!(matches!(decode_header::<serde_json::Value>(b"e30_", 64), Err(HeaderError::Base64(_))));
        assert!(matches!(decode_header::<serde_json::Value>(b"!!!!", 64), Err(HeaderError::Base64(_))));
        assert_eq!(decode_header::<serde_json::Value>(b"   ", 64), Err(HeaderError::Empty));
    }

    #[test]
    fn refuses_non_json() {
        let encoded = STANDARD.encode("not json");
        assert!(matches!(decode_header::<serde_json::Value>(encoded.as_bytes(), 64), Err(HeaderError::Json(_))));
    }
}
