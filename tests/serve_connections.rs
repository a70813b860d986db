//! Slow and silent clients cannot hold `wgsd serve`'s connections (issue 16, hardening):
//! a request head dripped byte by byte, an idle connection, a body shorter than its
//! `Content-Length` or a chunked body that never ends are cut off by their timeouts on all
//! three listeners, and past `max_connections` new connections wait until one closes.
//! A request being handled is never timed out.

#[path = "serve_common/mod.rs"]
mod serve_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wgsd::serve::{ConnectionLimits, start};

use serve_common::tiny_config;

/// Reads until the server closes the connection (or `within` passes: a failure).
fn closed_within(stream: &mut TcpStream, within: Duration) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (t.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (t.elapsed(), got);
            }
            Err(e) => panic!(
                "the server kept the connection open for {:?} ({e}); got {:?}",
                t.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

fn limits(header_ms: u64, idle_ms: u64, body_ms: u64, max: usize) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        body_read_timeout: Duration::from_millis(body_ms),
        max_connections: max,
    }
}

#[test]
fn slow_and_idle_clients_are_dropped_on_every_listener() {
    let mut config = tiny_config();
    config.connections = limits(600, 400, 700, 64);
    let server = start(config).expect("server starts");
    let a = server.addrs();

    for addr in [a.inference, a.management, a.metrics] {
        // Silent: closed after idle_timeout.
        let mut idle = TcpStream::connect(addr).expect("connect");
        let (took, _) = closed_within(&mut idle, Duration::from_secs(10));
        assert!(
            took >= Duration::from_millis(300),
            "{addr}: idle closed after {took:?}"
        );

        // Slowloris: a head that keeps coming, one header line at a time, never ends.
        let mut slow = TcpStream::connect(addr).expect("connect");
        slow.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        let t = Instant::now();
        let mut dropped = false;
        while t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
            if slow.write_all(b"X-Slow: 1\r\n").is_err() {
                dropped = true;
                break;
            }
        }
        if !dropped {
            // The writes may all land in buffers; the read sees the close.
            closed_within(&mut slow, Duration::from_secs(2));
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{addr}: a dripped head held the connection {:?}",
            t.elapsed()
        );
    }

    // A body shorter than its Content-Length: 408 after body_read_timeout.
    let mut short = TcpStream::connect(a.inference).expect("connect");
    short
        .write_all(b"POST /predictions/sd HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\na red")
        .expect("write");
    let (took, reply) = closed_within(&mut short, Duration::from_secs(10));
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_read_timeout"), "{reply}");
    assert!(took >= Duration::from_millis(600), "408 after {took:?}");

    // A chunked body that never ends: a chunk every 100 ms still gets 408.
    let mut endless = TcpStream::connect(a.inference).expect("connect");
    endless
        .write_all(
            b"POST /predictions/sd HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .expect("write");
    endless
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let t = Instant::now();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while t.elapsed() < Duration::from_secs(10) {
        if endless.write_all(b"1\r\na\r\n").is_err() {
            break;
        }
        match endless.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
        if reply.ends_with(b"}") {
            break;
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A request that runs longer than every timeout is not cut off, and its
    // connection stays usable.
    let mut keep = TcpStream::connect(a.inference).expect("connect");
    let body = r#"{"prompt":"a slow one","num_inference_steps":40,"width":64,"height":64}"#;
    let request = format!(
        "POST /predictions/sd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let t = Instant::now();
    keep.write_all(request.as_bytes()).expect("write");
    let status = read_status(&mut keep);
    assert!(
        t.elapsed() > Duration::from_millis(700),
        "the generation took {:?}: too fast to show the timers stop while it runs",
        t.elapsed()
    );
    assert_eq!(status, 200);
    keep.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert_eq!(read_status(&mut keep), 200);
}

/// Reads one reply (head and `Content-Length` body) and returns its status.
fn read_status(stream: &mut TcpStream) -> u16 {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = stream.read(&mut buf).expect("read the reply");
        assert!(
            n > 0,
            "closed mid-reply: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a Content-Length");
        if got.len() >= end + 4 + length {
            return head[9..12].parse().expect("status");
        }
    }
}

fn ping(addr: SocketAddr, wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    s.set_read_timeout(Some(wait)).expect("read timeout");
    let mut reply = Vec::new();
    match s.read_to_end(&mut reply) {
        Ok(_) if reply.len() > 12 => String::from_utf8_lossy(&reply[9..12]).parse().ok(),
        _ => None,
    }
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let mut config = tiny_config();
    config.connections = limits(30_000, 30_000, 30_000, 2);
    let server = start(config).expect("server starts");
    let addr = server.addr();
    assert_eq!(ping(addr, Duration::from_secs(10)), Some(200));

    let first = TcpStream::connect(addr).expect("connect");
    let _second = TcpStream::connect(addr).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    // The third connects (the kernel's backlog) but is not served...
    let waiting = std::thread::spawn(move || {
        let t = Instant::now();
        (ping(addr, Duration::from_secs(20)), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !waiting.is_finished(),
        "a third connection was served past the cap of 2"
    );
    // ...until one of the two closes.
    drop(first);
    let (status, waited) = waiting.join().expect("client thread");
    assert_eq!(status, Some(200));
    assert!(
        waited >= Duration::from_millis(900),
        "served after {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "served after {waited:?}");
}
