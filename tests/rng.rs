//! `wgsd::rng::TorchGenerator` against `torch.randn` outputs saved by
//! `tests/fixtures/make_rng_reference.py` (tests/fixtures/rng_reference.json): every value
//! must have the same f32 bit pattern (no tolerance).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wgsd::rng::{NormalPath, TorchGenerator, randn_like_diffusers};

#[derive(Deserialize)]
struct Reference {
    torch_version: String,
    cases: Vec<Case>,
    #[serde(default)]
    scalar_cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    seed: u64,
    draws: Vec<Draw>,
}

#[derive(Deserialize)]
struct Draw {
    shape: Vec<usize>,
    numel: usize,
    /// Every value's bits (small draws).
    #[serde(default)]
    bits: Option<Vec<u32>>,
    /// First and last values' bits and the SHA-256 of all values (large draws).
    #[serde(default)]
    head: Vec<u32>,
    #[serde(default)]
    tail: Vec<u32>,
    #[serde(default)]
    sha256: Option<String>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rng_reference.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sha256_hex(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_bits().to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares one draw; returns the number of mismatching values it can see and a message
/// for the first one.
fn compare(case: &str, k: usize, got: &[f32], want: &Draw) -> (usize, Option<String>) {
    assert_eq!(got.len(), want.numel, "{case} draw {k}: length");
    let mut bad = 0;
    let mut first = None;
    let mut check = |i: usize, want_bits: u32| {
        let g = got[i].to_bits();
        if g != want_bits {
            bad += 1;
            first.get_or_insert_with(|| {
                format!(
                    "{case} draw {k} {:?} [{i}]: got {} ({g:#010x}), want {} ({want_bits:#010x})",
                    want.shape,
                    got[i],
                    f32::from_bits(want_bits)
                )
            });
        }
    };
    if let Some(bits) = &want.bits {
        for (i, &b) in bits.iter().enumerate() {
            check(i, b);
        }
    } else {
        for (i, &b) in want.head.iter().enumerate() {
            check(i, b);
        }
        let start = got.len() - want.tail.len();
        for (i, &b) in want.tail.iter().enumerate() {
            check(start + i, b);
        }
        let digest = sha256_hex(got);
        if Some(&digest) != want.sha256.as_ref() && bad == 0 {
            bad += 1;
            first = Some(format!(
                "{case} draw {k} {:?}: head and tail match but the SHA-256 of all values differs",
                want.shape
            ));
        }
    }
    (bad, first)
}

fn run_cases(cases: &[Case], path: NormalPath, torch_version: &str) {
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    let mut values = 0usize;
    for case in cases {
        let mut g = TorchGenerator::with_path(case.seed, path);
        assert_eq!(g.initial_seed(), case.seed);
        for (k, draw) in case.draws.iter().enumerate() {
            let got = g.randn(&draw.shape).expect("shape fits usize");
            values += got.len();
            let (bad, msg) = compare(&case.name, k, &got, draw);
            if bad > 0 {
                failures.push(format!("{bad} mismatching: {}", msg.unwrap_or_default()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{path:?} path vs torch {torch_version}: {} draws differ (of {values} values):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Torch's x86-64 AVX2 kernel (what diffusers runs on a usual Linux/Windows PC).
#[test]
fn randn_matches_torch_avx2_bit_for_bit() {
    let r = reference();
    run_cases(&r.cases, NormalPath::Avx2, &r.torch_version);
}

/// Torch's generic kernel (`ATEN_CPU_CAPABILITY=default`), same glibc libm.
#[test]
fn randn_matches_torch_default_capability_bit_for_bit() {
    let r = reference();
    run_cases(&r.scalar_cases, NormalPath::Scalar, &r.torch_version);
}

/// The diffusers convenience is one generator drawing the whole batch.
#[test]
fn randn_like_diffusers_is_one_generator() {
    let shape = [2, 4, 10, 14];
    let a = randn_like_diffusers(1234, &shape).expect("fits");
    let b = TorchGenerator::new(1234).randn(&shape).expect("fits");
    assert_eq!(a.len(), 1120);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// Hand-checked values: torch.Generator().manual_seed(0) gives randn(3) =
/// [1.5409960746765137, -0.293428897857666, -2.1787893772125244], and the seed is taken
/// modulo 2^32 for the state (5 and 2^32 + 5 agree).
#[test]
fn tiny_hand_checked() {
    let v = TorchGenerator::new(0).randn(&[3]).expect("fits");
    assert_eq!(v, [1.540_996_1_f32, -0.293_428_9, -2.178_789_4]);
    let a = TorchGenerator::new(5).randn(&[1, 4, 8, 8]).expect("fits");
    let b = TorchGenerator::new((1 << 32) + 5)
        .randn(&[1, 4, 8, 8])
        .expect("fits");
    assert_eq!(a, b);
    let mut g = TorchGenerator::new(0);
    g.randn(&[3]).expect("fits");
    g.manual_seed(0);
    assert_eq!(g.randn(&[3]).expect("fits"), v);
}

#[test]
fn overflowing_shape_is_an_error() {
    let mut g = TorchGenerator::new(0);
    assert!(g.randn(&[usize::MAX, 2]).is_err());
    assert!(g.randn(&[]).expect("scalar").len() == 1);
}
