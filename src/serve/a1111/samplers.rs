//! A1111's sampler and schedule names on wgsd's samplers, and the `samplers` /
//! `schedulers` lists (A1111's `modules/sd_samplers.py`, `modules/sd_schedulers.py`).
//!
//! Since A1111 1.9 a request names the sampler and, separately, the noise schedule
//! (`"sampler_name": "DPM++ 2M", "scheduler": "Karras"`); older clients name both in one
//! (`"DPM++ 2M Karras"`). wgsd has the schedules its samplers have: "Automatic" keeps the
//! sampler as named, "Karras" picks its Karras form, "Uniform" its plain form; any other
//! combination is refused.

use axum::Json;
use serde_json::{Value, json};

use crate::schedulers::Sampler;

/// The schedules wgsd has: (name, label, default rho).
pub const SCHEDULES: [(&str, &str, f64); 3] = [
    ("automatic", "Automatic", -1.0),
    ("uniform", "Uniform", -1.0),
    ("karras", "Karras", 7.0),
];

/// A1111's default sampler (its API's `sampler_index` default).
pub const DEFAULT_SAMPLER: &str = "Euler";

const KARRAS: &str = " Karras";

fn by_a1111_name(name: &str) -> Option<Sampler> {
    Sampler::all().find(|s| s.a1111_name().eq_ignore_ascii_case(name.trim()))
}

/// The sampler for A1111's `sampler_name` and `scheduler`; the error says why not.
pub fn resolve(sampler_name: &str, scheduler: Option<&str>) -> Result<Sampler, String> {
    let base = by_a1111_name(sampler_name)
        .or_else(|| Sampler::parse(sampler_name).ok())
        .ok_or_else(|| {
            let names: Vec<&str> = Sampler::all().map(Sampler::a1111_name).collect();
            format!(
                "Sampler not found: {sampler_name:?}; wgsd has {}",
                names.join(", ")
            )
        })?;
    let schedule = scheduler.map(|s| s.trim().to_ascii_lowercase());
    let is_karras = base.a1111_name().ends_with(KARRAS);
    match schedule.as_deref() {
        None | Some("") | Some("automatic") => Ok(base),
        Some("karras") if is_karras => Ok(base),
        Some("karras") => {
            by_a1111_name(&format!("{}{KARRAS}", base.a1111_name())).ok_or_else(|| {
                format!(
                    "wgsd has no Karras schedule for the sampler {:?}",
                    base.a1111_name()
                )
            })
        }
        Some("uniform") if is_karras => Err(format!(
            "the sampler {:?} has the Karras schedule; it cannot take \"Uniform\"",
            base.a1111_name()
        )),
        Some("uniform") => Ok(base),
        Some(other) => Err(format!(
            "Scheduler not supported: {other:?}; wgsd has Automatic, Uniform and Karras"
        )),
    }
}

/// `GET /sdapi/v1/samplers`.
pub async fn samplers() -> Json<Value> {
    let list: Vec<Value> = Sampler::all()
        .map(|s| {
            let mut aliases = vec![s.name()];
            aliases.extend(s.aliases());
            let options = if s.a1111_name().ends_with(KARRAS) {
                json!({ "scheduler": "karras" })
            } else {
                json!({})
            };
            json!({ "name": s.a1111_name(), "aliases": aliases, "options": options })
        })
        .collect();
    Json(Value::from(list))
}

/// `GET /sdapi/v1/schedulers`.
pub async fn schedulers() -> Json<Value> {
    let list: Vec<Value> = SCHEDULES
        .iter()
        .map(|(name, label, rho)| {
            json!({
                "name": name,
                "label": label,
                "aliases": null,
                "default_rho": rho,
                "need_inner_model": false,
            })
        })
        .collect();
    Json(Value::from(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a1111(name: &str, scheduler: Option<&str>) -> Result<&'static str, String> {
        resolve(name, scheduler).map(Sampler::a1111_name)
    }

    #[test]
    fn names_and_schedules() {
        assert_eq!(a1111("Euler a", None), Ok("Euler a"));
        assert_eq!(a1111("euler", Some("Automatic")), Ok("Euler"));
        assert_eq!(a1111("DPM++ 2M", Some("Karras")), Ok("DPM++ 2M Karras"));
        assert_eq!(a1111("DPM++ 2M Karras", None), Ok("DPM++ 2M Karras"));
        assert_eq!(
            a1111("DPM++ 2M Karras", Some("karras")),
            Ok("DPM++ 2M Karras")
        );
        assert_eq!(a1111("DPM++ 2M", Some("uniform")), Ok("DPM++ 2M"));
        assert_eq!(a1111("PLMS", None), Ok("PLMS"));
        assert!(a1111("DDIM", Some("Karras")).is_err(), "no DDIM Karras");
        assert!(a1111("DPM++ 2M Karras", Some("Uniform")).is_err());
        assert!(a1111("Euler", Some("Exponential")).is_err());
        assert!(a1111("Heun", None).is_err());
    }
}
