//! Compressed request bodies: `Content-Encoding: gzip` (or `x-gzip`), `deflate` and
//! `identity`, in any sequence (`gzip, deflate`: undone last first), as RFC 9110 §8.4
//! describes and as tritonclient sends with `request_compression_algorithm`.
//!
//! The decoded body must fit `max_request_size` too: decoding stops one byte past it
//! (413), so a small body that inflates to gigabytes (a zip bomb) costs nothing.

use std::io::Read;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

use super::error::{ApiError, ErrorKind};

/// `body` with every encoding in `headers`' `Content-Encoding` undone, at most `limit`
/// bytes.
pub fn decode(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let value = value
            .to_str()
            .map_err(|_| unsupported("a Content-Encoding that is not text"))?;
        codings.extend(
            value
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity"),
        );
    }
    let mut body = body;
    for coding in codings.iter().rev() {
        body = match coding.as_str() {
            "gzip" | "x-gzip" => inflate(flate2::read::GzDecoder::new(&body[..]), limit)?,
            // HTTP's deflate is zlib-wrapped; some clients send the raw stream.
            "deflate" => inflate(flate2::read::ZlibDecoder::new(&body[..]), limit)
                .or_else(|_| inflate(flate2::read::DeflateDecoder::new(&body[..]), limit))?,
            other => {
                return Err(unsupported(&format!(
                    "Content-Encoding {other:?} (gzip, deflate and identity are accepted)"
                )));
            }
        };
    }
    Ok(body)
}

fn inflate(decoder: impl Read, limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request(format!("could not decompress the request body: {e}"))
        })?;
    if out.len() > limit {
        return Err(ApiError::new(
            ErrorKind::RequestEntityTooLarge,
            format!(
                "the decompressed request body is larger than max_request_size ({limit} bytes)"
            ),
        ));
    }
    Ok(Bytes::from(out))
}

fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::UnsupportedMediaType,
        format!("unsupported {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn headers(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, encoding.parse().expect("header"));
        h
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("compress");
        Bytes::from(e.finish().expect("compress"))
    }

    #[test]
    fn gzip_deflate_and_stacked_codings_decode() {
        let text = b"a red circle on a white background";
        let got = decode(&headers("gzip"), gzip(text), 100).expect("gzip");
        assert_eq!(&got[..], text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(text).expect("compress");
        let zlib = Bytes::from(z.finish().expect("compress"));
        assert_eq!(
            &decode(&headers("deflate"), zlib.clone(), 100).expect("zlib")[..],
            text
        );
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        r.write_all(text).expect("compress");
        let raw = Bytes::from(r.finish().expect("compress"));
        assert_eq!(
            &decode(&headers("Deflate"), raw, 100).expect("raw")[..],
            text
        );
        // deflate applied first, then gzip.
        let both = gzip(&zlib);
        assert_eq!(
            &decode(&headers("deflate, gzip"), both, 100).expect("both")[..],
            text
        );
        assert_eq!(
            &decode(&HeaderMap::new(), Bytes::from_static(text), 100).expect("plain")[..],
            text
        );
    }

    #[test]
    fn bombs_unknown_codings_and_garbage_are_refused() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100_000);
        let e = decode(&headers("gzip"), bomb, 1 << 20).expect_err("a bomb");
        assert_eq!(e.kind, ErrorKind::RequestEntityTooLarge);
        let e = decode(&headers("br"), Bytes::from_static(b"x"), 10).expect_err("br");
        assert_eq!(e.kind, ErrorKind::UnsupportedMediaType);
        let e = decode(&headers("gzip"), Bytes::from_static(b"not gzip"), 10).expect_err("junk");
        assert_eq!(e.kind, ErrorKind::BadRequest);
    }
}
