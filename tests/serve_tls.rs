//! TLS as TorchServe configures it (issue 16): with a certificate and key (PEM) every
//! listener speaks HTTPS only; a client that trusts the certificate gets the usual
//! replies, a plain-HTTP client gets none, and a bad key stops start-up. The
//! certificate is self-signed, made here by rcgen.

#[path = "serve_common/mod.rs"]
mod serve_common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};
use wgsd::serve::start;

use serve_common::tiny_config;

#[test]
fn https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let cert_pem = signed.cert.pem();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).expect("write cert");
    std::fs::write(&key_path, signed.signing_key.serialize_pem()).expect("write key");

    // A key file that holds no key: start-up fails, naming it.
    let mut config = tiny_config();
    config.tls = Some((cert_path.clone(), cert_path.clone()));
    let err = start(config).expect_err("a certificate is no key");
    assert!(err.to_string().contains("cert.pem"), "{err}");

    let mut config = tiny_config();
    config.tls = Some((cert_path, key_path));
    let server = start(config).expect("server starts");
    let a = server.addrs();

    let root = Certificate::from_der(signed.cert.der()).to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(vec![root])))
                .build(),
        )
        .build()
        .into();
    let get = |url: String| {
        let mut r = agent.get(&url).call().expect(&url);
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().expect("body"))
    };
    let (s, body) = get(format!("https://localhost:{}/ping", a.inference.port()));
    assert_eq!((s, body.contains("Healthy")), (200, true), "{body}");
    let (s, body) = get(format!("https://localhost:{}/models", a.management.port()));
    assert_eq!(s, 200);
    assert!(body.contains("\"sd\""), "{body}");
    let (s, body) = get(format!("https://localhost:{}/metrics", a.metrics.port()));
    assert_eq!(s, 200);
    assert!(body.contains("ts_inference_requests_total"), "{body}");
    let mut r = agent
        .post(format!(
            "https://localhost:{}/predictions/sd",
            a.inference.port()
        ))
        .send("a red circle")
        .expect("predict");
    assert_eq!(r.status(), 200);
    let image: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(serde_json::json!(image.as_array().map(Vec::len)), 24);

    // A client that does not trust the certificate is refused in the handshake.
    let untrusting = serve_common::agent();
    let e = untrusting
        .get(format!("https://localhost:{}/ping", a.inference.port()))
        .call()
        .expect_err("an unknown issuer");
    assert!(
        matches!(
            e,
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Io(_)
        ),
        "{e:?}"
    );

    // Plain HTTP gets no HTTP reply.
    let mut plain = std::net::TcpStream::connect(a.inference).expect("connect");
    plain
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
}
