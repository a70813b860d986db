//! Compressed request bodies (issue 16): `Content-Encoding: gzip` or `deflate` on the
//! inference API give the reply the plain body gives, and `max_request_size` applies to
//! the decompressed body (a small gzip bomb is a 413, not gigabytes in memory).

#[path = "serve_common/mod.rs"]
mod serve_common;

use std::io::Write;

use wgsd::serve::start;

use serve_common::{agent, tiny_config};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("compress");
    e.finish().expect("compress")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("compress");
    e.finish().expect("compress")
}

#[test]
fn gzip_and_deflate_bodies_decode_under_the_size_limit() {
    let server = start(tiny_config()).expect("server starts");
    let base = format!("http://{}", server.addr());
    let agent = agent();
    let post = |path: &str, encoding: Option<&str>, body: &[u8]| {
        let mut req = agent
            .post(format!("{base}{path}"))
            .header("Content-Type", "application/json");
        if let Some(e) = encoding {
            req = req.header("Content-Encoding", e);
        }
        let mut r = req.send(body).expect("request");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_vec().expect("body"))
    };

    let json = br#"{"prompt": "a red circle", "seed": 7}"#;
    let (s, plain) = post("/predictions/sd", None, json);
    assert_eq!(s, 200);
    for (encoding, body) in [("gzip", gzip(json)), ("deflate", zlib(json))] {
        let (s, got) = post("/predictions/sd", Some(encoding), &body);
        assert_eq!(s, 200, "{encoding}: {}", String::from_utf8_lossy(&got));
        assert!(
            got == plain,
            "{encoding}: a different image than the plain body's"
        );
    }

    // Open Inference Protocol too.
    let infer = br#"{"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["a red circle"]}], "parameters": {"seed": 7}}"#;
    let (s, plain) = post("/v2/models/sd/infer", None, infer);
    assert_eq!(s, 200);
    let (s, got) = post("/v2/models/sd/infer", Some("gzip"), &gzip(infer));
    assert_eq!(s, 200);
    let outputs = |body: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(body).expect("OIP JSON");
        v["outputs"].clone()
    };
    assert!(
        outputs(&got) == outputs(&plain),
        "OIP: different outputs than the plain body's"
    );

    // 64 MiB of spaces inside a valid JSON body, gzipped to ~65 KB: 413 after decoding.
    let mut bomb = br#"{"prompt": "x""#.to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 64 << 20));
    bomb.extend_from_slice(b"}");
    let bomb = gzip(&bomb);
    assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
    let (s, got) = post("/predictions/sd", Some("gzip"), &bomb);
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&got));
    assert!(String::from_utf8_lossy(&got).contains("decompressed"));

    let (s, _) = post("/predictions/sd", Some("br"), json);
    assert_eq!(s, 415);
    let (s, _) = post("/predictions/sd", Some("gzip"), json);
    assert_eq!(s, 400);
}
