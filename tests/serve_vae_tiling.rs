//! `wgsd serve` and tiled VAE decoding: the `"vae_tiling"` request field, and the model's
//! `vae_tiling` setting for requests that do not say.

use wgsd::gpu::{AdapterChoice, Gpu};
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions, VaeTiling};
use wgsd::serve::{ModelSettings, ServeConfig, start};

mod serve_common;
use serve_common::{agent, decode_nested, root, tiny_config};

/// 144 x 104 pixels = 13 x 18 latents: 3 x 3 tiles for sd2-tiny's VAE.
fn body(tiling: Option<bool>) -> String {
    let field = tiling.map_or(String::new(), |t| format!(", \"vae_tiling\": {t}"));
    format!(
        r#"{{"prompt": "a red fox", "width": 144, "height": 104, "num_inference_steps": 2, "seed": 7{field}}}"#
    )
}

fn predict(config: ServeConfig, tiling: &[Option<bool>]) -> Vec<Vec<u8>> {
    let server = start(config).expect("server starts");
    let url = format!("http://{}/predictions/sd", server.addr());
    let agent = agent();
    tiling
        .iter()
        .map(|&t| {
            let mut r = agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body(t))
                .expect("predict");
            let text = r.body_mut().read_to_string().expect("body");
            assert_eq!(r.status(), 200, "{text}");
            let (h, w, px) = decode_nested(&text);
            assert_eq!((h, w), (104, 144));
            px
        })
        .collect()
}

#[test]
fn serve_vae_tiling_field_and_model_setting() {
    let gpu = Gpu::new(&AdapterChoice::default()).expect("gpu");
    let pipe = Pipeline::load(
        &gpu,
        &root().join("weights/sd2-tiny.zip"),
        &PipelineOptions::default(),
    )
    .expect("pipeline");
    let lib = |vae_tiling| {
        let req = GenerateRequest {
            seed: 7,
            steps: 2,
            width: 144,
            height: 104,
            vae_tiling,
            ..GenerateRequest::new("a red fox")
        };
        pipe.generate(&req).expect("generate").images.remove(0).data
    };
    let (tiled, untiled) = (lib(VaeTiling::On), lib(VaeTiling::Off));
    assert!(tiled != untiled, "tiling must change the seams");

    // Default model settings (auto, no memory limit): untiled unless asked.
    let got = predict(tiny_config(), &[Some(true), None, Some(false)]);
    assert!(got[0] == tiled, "\"vae_tiling\": true must tile");
    assert!(got[1] == untiled, "auto without a budget must not tile");
    assert!(got[2] == untiled, "\"vae_tiling\": false must not tile");

    // The model says on: requests that do not say tile; false still turns it off.
    let mut config = tiny_config();
    config.model_settings.insert(
        "sd".into(),
        ModelSettings {
            vae_tiling: VaeTiling::On,
            ..ModelSettings::default()
        },
    );
    let got = predict(config, &[None, Some(false)]);
    assert!(got[0] == tiled, "the model's vae_tiling=on must apply");
    assert!(got[1] == untiled, "the request's false must win");
}
