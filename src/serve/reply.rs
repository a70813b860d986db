//! Image replies as JSON, written lazily one image row per chunk, with their exact size
//! known before the first byte goes out: `max_response_size` is checked up front, so a
//! reply is either whole or an error, never cut short.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorKind};
use crate::pipeline::Image;

/// One piece of a JSON reply.
pub(crate) enum Part {
    /// Literal JSON text.
    Text(String),
    /// `np.array(image).tolist()`: `[[[r,g,b],...],...]`.
    Nested(Image),
    /// The image's bytes as bare comma-separated numbers (part of a flat tensor `data`
    /// array); `comma` puts a `,` before the first number.
    Flat { image: Image, comma: bool },
}

/// Characters in the decimal form of `v`.
fn digits(v: u8) -> usize {
    match v {
        0..=9 => 1,
        10..=99 => 2,
        _ => 3,
    }
}

fn digit_sum(data: &[u8]) -> usize {
    data.iter().map(|&v| digits(v)).sum()
}

/// Exact length of the compact nested list of `img`: per pixel `[r,g,b]` (4 + digits),
/// commas between pixels and rows, brackets around each row and the image.
pub(crate) fn nested_len(img: &Image) -> usize {
    let (w, h) = (img.width, img.height);
    let pixels = w * h;
    2 + h.saturating_sub(1) + h * (2 + w.saturating_sub(1)) + 4 * pixels + digit_sum(&img.data)
}

/// The smallest a nested-list reply of `n` images of `width` x `height` can be (every
/// value one digit): checked before generating, so a reply that cannot fit costs no GPU
/// time.
pub(crate) fn min_nested_len(width: usize, height: usize, n: usize) -> usize {
    let one =
        2 + height.saturating_sub(1) + height * (2 + width.saturating_sub(1)) + 7 * width * height;
    n * one + if n == 1 { 0 } else { 2 + n.saturating_sub(1) }
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Text(s) => s.len(),
            Part::Nested(img) => nested_len(img),
            Part::Flat { image, comma } => {
                let n = image.data.len();
                usize::from(*comma && n > 0) + n.saturating_sub(1) + digit_sum(&image.data)
            }
        }
    }
}

/// The images as TorchServe's reply: one image as its nested list, several as a list of
/// them.
pub(crate) fn nested_parts(images: Vec<Image>) -> Vec<Part> {
    if images.len() == 1 {
        return images.into_iter().map(Part::Nested).collect();
    }
    let mut parts = vec![Part::Text("[".into())];
    for (i, img) in images.into_iter().enumerate() {
        if i > 0 {
            parts.push(Part::Text(",".into()));
        }
        parts.push(Part::Nested(img));
    }
    parts.push(Part::Text("]".into()));
    parts
}

/// The error for a reply over `max_response_size`.
///
/// 500 with `ResponseTooLargeException`: the request itself is valid (the same request
/// succeeds under a larger limit), the refusal comes from the server's own
/// configuration, as in TorchServe where an over-limit reply fails on the server side
/// (its frontend drops the worker's frame). A 4xx would tell the client its request is
/// malformed; 413 is about the request body and 507 is kept for GPU out of memory.
pub(crate) fn too_large(len: usize, limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::ResponseTooLarge,
        format!(
            "the reply would be {len} bytes, over max_response_size ({limit} bytes); \
             raise max_response_size, or ask for fewer or smaller images, or a PNG \
             (Accept: image/png)"
        ),
    )
}

/// Refuses a reply of `len` bytes over `limit`.
pub(crate) fn check_size(len: usize, limit: usize) -> Result<(), ApiError> {
    if len > limit {
        Err(too_large(len, limit))
    } else {
        Ok(())
    }
}

/// A JSON reply streamed from `parts`, with its exact `Content-Length`; refused when
/// over `limit` bytes.
pub(crate) fn json(parts: Vec<Part>, limit: usize) -> Result<Response, ApiError> {
    let len: usize = parts.iter().map(Part::len).sum();
    check_size(len, limit)?;
    let chunks = Chunks {
        parts: parts.into(),
        row: 0,
    };
    let stream = futures_util::stream::iter(chunks.map(Ok::<_, Infallible>));
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Yields the text of the parts, one image row at a time.
struct Chunks {
    parts: VecDeque<Part>,
    /// The next row of the image at the front.
    row: usize,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        use std::fmt::Write;
        let y = self.row;
        let (out, done) = match self.parts.front()? {
            Part::Text(s) => (s.clone(), true),
            Part::Nested(img) => {
                let mut s = String::with_capacity(img.width * 13 + 4);
                s.push(if y == 0 { '[' } else { ',' });
                s.push('[');
                let row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
                for (x, px) in row.chunks_exact(3).enumerate() {
                    if x > 0 {
                        s.push(',');
                    }
                    let _ = write!(s, "[{},{},{}]", px[0], px[1], px[2]);
                }
                s.push(']');
                let last = y + 1 >= img.height;
                if last {
                    s.push(']');
                }
                (s, last)
            }
            Part::Flat { image, comma } => {
                let stride = image.width * 3;
                let mut s = String::with_capacity(stride * 4 + 1);
                let row = &image.data[y * stride..(y + 1) * stride];
                for (i, v) in row.iter().enumerate() {
                    if i > 0 || y > 0 || *comma {
                        s.push(',');
                    }
                    let _ = write!(s, "{v}");
                }
                (s, y + 1 >= image.height)
            }
        };
        if done {
            self.parts.pop_front();
            self.row = 0;
        } else {
            self.row += 1;
        }
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn image(w: usize, h: usize, seed: u8) -> Image {
        let data = (0..w * h * 3)
            .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
            .collect();
        Image {
            width: w,
            height: h,
            data,
        }
    }

    fn text(parts: Vec<Part>) -> (usize, String) {
        let len = parts.iter().map(Part::len).sum();
        let chunks = Chunks {
            parts: parts.into(),
            row: 0,
        };
        let s = chunks
            .map(|b| String::from_utf8(b.to_vec()).expect("utf8"))
            .collect();
        (len, s)
    }

    #[test]
    fn nested_is_numpy_tolist_and_len_exact() {
        for (w, h) in [(1, 1), (3, 2), (5, 4)] {
            for n in [1, 2, 3] {
                let imgs: Vec<Image> = (0..n).map(|i| image(w, h, i as u8 * 90)).collect();
                let want: Vec<Vec<Vec<Vec<u8>>>> = imgs
                    .iter()
                    .map(|im| {
                        im.data
                            .chunks(w * 3)
                            .map(|r| r.chunks(3).map(|p| p.to_vec()).collect())
                            .collect()
                    })
                    .collect();
                let (len, s) = text(nested_parts(imgs));
                let want = if n == 1 {
                    serde_json::to_string(&want[0])
                } else {
                    serde_json::to_string(&want)
                }
                .expect("json");
                assert_eq!(s, want);
                assert_eq!(len, s.len());
                assert!(min_nested_len(w, h, n) <= len);
                let zeros = (0..n)
                    .map(|_| Image {
                        width: w,
                        height: h,
                        data: vec![0; w * h * 3],
                    })
                    .collect();
                assert_eq!(text(nested_parts(zeros)).0, min_nested_len(w, h, n));
            }
        }
    }

    #[test]
    fn flat_is_row_major_and_len_exact() {
        let (a, b) = (image(3, 2, 5), image(3, 2, 200));
        let want: Vec<u8> = a.data.iter().chain(&b.data).copied().collect();
        let parts = vec![
            Part::Text("{\"data\":[".into()),
            Part::Flat {
                image: a,
                comma: false,
            },
            Part::Flat {
                image: b,
                comma: true,
            },
            Part::Text("]}".into()),
        ];
        let (len, s) = text(parts);
        assert_eq!(s, serde_json::json!({ "data": want }).to_string());
        assert_eq!(len, s.len());
    }

    #[test]
    fn over_limit_is_refused() {
        let parts = nested_parts(vec![image(2, 2, 0)]);
        let len: usize = parts.iter().map(Part::len).sum();
        let e = json(parts, len - 1).expect_err("over");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.kind.name(), "ResponseTooLargeException");
        assert!(json(nested_parts(vec![image(2, 2, 0)]), len).is_ok());
    }
}
