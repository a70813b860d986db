//! `wgsd bench --models --json` through the binary: the precision it resolved, the FMA
//! peak of the same run, and per call the dispatch count and peak GPU memory (no timing
//! is asserted).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[test]
fn bench_models_reports_precision_dispatches_and_peak_memory() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(["bench", "--models", "--json", "--repeats", "1"])
        .args(["--precision", "f32", "--model"])
        .arg(root.join("weights/sd2-tiny.zip"))
        .output()
        .expect("run wgsd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(j["precision"], "f32");
    assert_eq!(j["dtype"], "f32");
    assert!(j["fma_peak_gflops"].as_f64().is_some_and(|g| g > 0.0));
    let results = j["results"].as_array().expect("results");
    // UNet and VAE decode at the fixture size and at 512 px.
    assert_eq!(results.len(), 4);
    for r in results {
        let weights = r["weights_mib"].as_f64().expect("weights") * (1u64 << 20) as f64;
        assert!(r["dispatches"].as_u64().is_some_and(|d| d > 0), "{r}");
        let peak = r["peak_gpu_bytes"].as_u64().expect("peak") as f64;
        assert!(peak >= weights, "the peak holds the weights: {r}");
        // No FLOP count for the tiny model, so no fraction either.
        assert!(
            r["gflops"].is_null() && r["fraction_of_peak"].is_null(),
            "{r}"
        );
    }
    // The same UNet records the same dispatches at every size.
    assert_eq!(results[0]["dispatches"], results[2]["dispatches"]);

    let bad = Command::new(env!("CARGO_BIN_EXE_wgsd"))
        .args(["bench", "--models", "--precision", "f8"])
        .output()
        .expect("run wgsd");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected auto, f32 or f16"));
}
