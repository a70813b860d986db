//! Seeded mutation fuzzing shared by tests/fuzz_parsers.rs and tests/fuzz_bodies.rs:
//! byte-level mutations, structural JSON mutations with hostile values, and a panic
//! catcher that prints the seed and the input so a failure can be replayed.
//! `WGSD_FUZZ_ITERS` sets the iterations per target (default 300, the CI-sized run).

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::Value;

use super::Rng;

pub fn iters() -> usize {
    std::env::var("WGSD_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Runs `f` on `input`, turning a panic into a test failure that shows the input.
pub fn no_panic<T: AsRef<[u8]>>(target: &str, seed: u64, input: T, f: impl FnOnce(&[u8])) {
    let bytes = input.as_ref();
    if catch_unwind(AssertUnwindSafe(|| f(bytes))).is_err() {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned();
        panic!(
            "{target}: panicked on seed {seed}; input ({} bytes): {shown:?}",
            bytes.len()
        );
    }
}

/// One random byte-level mutation of `data`.
pub fn mutate_bytes(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    let rounds = 1 + rng.range(0, 4);
    for _ in 0..rounds {
        if v.is_empty() {
            v.push(rng.next_u64() as u8);
            continue;
        }
        let at = rng.range(0, v.len());
        match rng.range(0, 6) {
            0 => v[at] ^= 1 << rng.range(0, 8),
            1 => v[at] = rng.next_u64() as u8,
            2 => v.truncate(at),
            3 => {
                let len = rng.range(0, 16.min(v.len() - at) + 1);
                v.drain(at..at + len);
            }
            4 => {
                let from = rng.range(0, v.len());
                let len = rng.range(0, 32.min(v.len() - from) + 1);
                let chunk = v[from..from + len].to_vec();
                v.splice(at..at, chunk);
            }
            _ => {
                // Interesting values: 0xff.., huge lengths, separators.
                let pick: &[u8] = match rng.range(0, 5) {
                    0 => &[0xff; 8],
                    1 => b"18446744073709551615",
                    2 => b"-1",
                    3 => b"\"",
                    _ => b"\0",
                };
                v.splice(at..at, pick.iter().copied());
            }
        }
    }
    v
}

/// A hostile JSON value.
pub fn hostile_value(rng: &mut Rng) -> Value {
    match rng.range(0, 10) {
        0 => Value::Null,
        1 => Value::from(-1),
        2 => Value::from(0),
        3 => Value::from(u64::MAX),
        4 => Value::from(1e308),
        5 => Value::from("x"),
        6 => Value::from(vec![0; 0]),
        7 => Value::from(vec![1_000_000_000u64; 3]),
        8 => serde_json::json!({"a": [1, {"b": null}]}),
        _ => Value::from(true),
    }
}

/// Replaces, removes or perturbs fields of a JSON object (recursively into arrays).
pub fn mutate_json(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            if keys.is_empty() {
                return;
            }
            for _ in 0..1 + rng.range(0, 3) {
                let key = &keys[rng.range(0, keys.len())];
                match rng.range(0, 4) {
                    0 => {
                        map.remove(key);
                    }
                    1 => {
                        map.insert(key.clone(), hostile_value(rng));
                    }
                    _ => {
                        if let Some(inner) = map.get_mut(key) {
                            mutate_json(rng, inner);
                        }
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.range(0, items.len());
            match rng.range(0, 3) {
                0 => {
                    items.remove(i);
                }
                1 => items.push(hostile_value(rng)),
                _ => mutate_json(rng, &mut items[i]),
            }
        }
        Value::Number(_) => *v = hostile_value(rng),
        _ => {}
    }
}

/// Valid JSON mutated structurally, or (one time in four) at the byte level.
pub fn json_inputs(seed_text: &str, seed: u64) -> impl Iterator<Item = (u64, Vec<u8>)> + '_ {
    let base: Value = serde_json::from_str(seed_text).expect("seed JSON");
    (0..iters() as u64).map(move |i| {
        let s = seed * 1_000_003 + i;
        let mut rng = Rng::new(s);
        let bytes = if rng.range(0, 4) == 0 {
            mutate_bytes(&mut rng, seed_text.as_bytes())
        } else {
            let mut v = base.clone();
            mutate_json(&mut rng, &mut v);
            serde_json::to_vec(&v).expect("serialize")
        };
        (s, bytes)
    })
}
