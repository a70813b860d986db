//! deploy/kserve/'s manifests against KServe's own schemas (vendored in
//! deploy/kserve/schema/ from kserve/kserve's CRDs, source and commit in its README),
//! strictly: a misspelt or misplaced field fails as `kubectl apply --validate=strict`
//! would fail it. The validator itself is shown to catch such mistakes, so a pass means
//! something.

#[path = "common/k8s_schema.rs"]
mod k8s_schema;

use serde_json::{Value, json};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest(name: &str) -> Value {
    let path = root().join("deploy/kserve").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(yaml).expect("YAML maps to JSON")
}

/// The vendored schema file: `(apiVersion, kind, openAPIV3Schema)`.
fn schema(name: &str) -> (String, String, Value) {
    let path = root().join("deploy/kserve/schema").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: Value = serde_json::from_str(&text).expect("vendored schema is JSON");
    let field = |v: &Value, k: &str| v[k].as_str().expect(k).to_string();
    (
        field(&v, "apiVersion"),
        field(&v, "kind"),
        v["openAPIV3Schema"].take(),
    )
}

fn assert_valid(manifest_file: &str, schema_file: &str) {
    let doc = manifest(manifest_file);
    let (api_version, kind, schema) = schema(schema_file);
    assert_eq!(
        doc["apiVersion"],
        api_version.as_str(),
        "{manifest_file}'s apiVersion"
    );
    assert_eq!(doc["kind"], kind.as_str(), "{manifest_file}'s kind");
    let errors = k8s_schema::validate(&schema, &doc);
    assert!(
        errors.is_empty(),
        "{manifest_file} does not validate against KServe's {kind} schema:\n{}",
        errors.join("\n")
    );
}

#[test]
fn inference_service_matches_kserves_v1beta1_schema() {
    assert_valid("inferenceservice.yaml", "inferenceservice.v1beta1.json");
}

#[test]
fn serving_runtime_matches_kserves_v1alpha1_schema() {
    assert_valid("servingruntime.yaml", "servingruntime.v1alpha1.json");
}

/// Applies `edit` to a copy of the manifest and returns the validator's complaints.
fn errors_after(
    manifest_file: &str,
    schema_file: &str,
    edit: impl FnOnce(&mut Value),
) -> Vec<String> {
    let mut doc = manifest(manifest_file);
    edit(&mut doc);
    k8s_schema::validate(&schema(schema_file).2, &doc)
}

fn assert_caught(errors: &[String], path: &str) {
    assert!(
        errors.iter().any(|e| e.starts_with(path)),
        "expected an error at {path}, got {errors:?}"
    );
}

#[test]
fn the_schema_check_catches_typical_manifest_mistakes() {
    let isvc = ("inferenceservice.yaml", "inferenceservice.v1beta1.json");
    let runtime = ("servingruntime.yaml", "servingruntime.v1alpha1.json");

    let e = errors_after(isvc.0, isvc.1, |d| {
        d["spec"]["predictor"]["minReplica"] = json!(1)
    });
    assert_caught(&e, ".spec.predictor.minReplica: unknown field");
    let e = errors_after(isvc.0, isvc.1, |d| {
        d["spec"]["predictor"]["maxReplicas"] = json!("four")
    });
    assert_caught(&e, ".spec.predictor.maxReplicas: expected integer");
    let e = errors_after(isvc.0, isvc.1, |d| {
        d["spec"]["predictor"]["scaleMetric"] = json!("qps")
    });
    assert_caught(&e, ".spec.predictor.scaleMetric");
    let e = errors_after(isvc.0, isvc.1, |d| {
        d["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] = json!("one")
    });
    assert_caught(&e, ".spec.predictor.model.resources.limits.nvidia.com/gpu");
    let e = errors_after(isvc.0, isvc.1, |d| {
        d["metadata"]["name"] = json!("Stable_Diffusion")
    });
    assert_caught(&e, ".metadata.name");

    let e = errors_after(runtime.0, runtime.1, |d| {
        d["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("8080")
    });
    assert_caught(
        &e,
        ".spec.containers[0].ports[0].containerPort: expected integer",
    );
    let e = errors_after(runtime.0, runtime.1, |d| {
        d["spec"]["containers"][0]["args"] = json!("--http_port=8080")
    });
    assert_caught(&e, ".spec.containers[0].args: expected array");
    let e = errors_after(runtime.0, runtime.1, |d| {
        d["spec"]["containers"][0]
            .as_object_mut()
            .expect("container")
            .remove("name");
    });
    assert_caught(&e, ".spec.containers[0]: missing required field `name`");
    let e = errors_after(runtime.0, runtime.1, |d| {
        d["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = json!("/v2/health/ready")
    });
    assert_caught(
        &e,
        ".spec.containers[0].readinessProbe.httpGet.paht: unknown field",
    );
}
