//! Downloads a model archive from an allowed http(s) URL into the model store (the
//! management API's `POST /models?url=https://...`): to a temporary file in the store,
//! renamed into place only when complete, never over an existing file, with a size cap.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ApiError, ErrorKind};

/// Largest archive a registration downloads (a full SD2 `.mar` in f32 is ~5 GB).
pub const MAX_DOWNLOAD_BYTES: u64 = 16 * 1024 * 1024 * 1024;

fn download_error(url: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorKind::DownloadModel,
        format!("Failed to download model from: {url}: {why}"),
    )
}

/// The file name the URL's last path segment gives, if it is a plain name.
fn file_name(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
    let (_, route) = after_scheme.split_once('/')?;
    let name = route.rsplit('/').next()?;
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['\\', ':', '%']);
    ok.then(|| name.to_string())
}

/// Downloads `url` to `store/<last path segment>`; blocking (run it off the runtime).
pub fn fetch_into(url: &str, store: &Path) -> Result<PathBuf, ApiError> {
    fetch_limited(url, store, MAX_DOWNLOAD_BYTES)
}

/// [`fetch_into`] with the size cap given.
pub fn fetch_limited(url: &str, store: &Path, limit: u64) -> Result<PathBuf, ApiError> {
    let name = file_name(url).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{url}: the URL must end in the archive's file name (e.g. .../model.mar)"
        ))
    })?;
    let dest = store.join(&name);
    if dest.exists() {
        return Err(ApiError::new(
            ErrorKind::FileAlreadyExists,
            format!("{name} already exists in the model store; register it by name"),
        ));
    }
    // No redirects: a redirect could lead outside `allowed_urls`. A server that stops
    // answering is given up on instead of holding the registration forever.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| download_error(url, e))?;
    // Only a 200 is an archive: a redirect (not followed) or any other answer is refused
    // before a file is created, so it cannot block the name.
    if resp.status() != 200 {
        let whither = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| format!(" to {l}; redirects are not followed"))
            .unwrap_or_default();
        return Err(download_error(
            url,
            format!("the server answered {}{whither}", resp.status()),
        ));
    }
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(download_error(
            url,
            format!("the archive is larger than the {limit}-byte download limit"),
        ));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(store)
        .map_err(|e| download_error(url, e))?;
    let mut reader = resp.body_mut().with_config().limit(limit).reader();
    let copied = std::io::copy(&mut reader, &mut tmp).map_err(|e| download_error(url, e))?;
    tmp.flush().map_err(|e| download_error(url, e))?;
    // `.mar` and `.zip` archives are zip files (a folder cannot be downloaded).
    let mut magic = [0u8; 4];
    let is_zip = {
        use std::io::{Read, Seek};
        let f = tmp.as_file_mut();
        f.rewind().is_ok() && f.read_exact(&mut magic).is_ok() && magic == *b"PK\x03\x04"
    };
    if !is_zip {
        return Err(download_error(
            url,
            format!("the body ({copied} bytes) is not a .mar or .zip archive"),
        ));
    }
    tmp.persist_noclobber(&dest).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            ApiError::new(
                ErrorKind::FileAlreadyExists,
                format!("{name} already exists in the model store; register it by name"),
            )
        } else {
            download_error(url, e.error)
        }
    })?;
    dest.canonicalize().map_err(|e| download_error(url, e))
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn file_name_is_the_last_plain_segment() {
        assert_eq!(
            file_name("http://h:1/a/b/sd.mar").as_deref(),
            Some("sd.mar")
        );
        assert_eq!(file_name("https://h/sd.mar?x=1").as_deref(), Some("sd.mar"));
        assert_eq!(file_name("http://h/"), None);
        assert_eq!(file_name("http://h"), None);
        assert_eq!(file_name("http://h/a/.."), None);
        assert_eq!(file_name("http://h/a/%2e%2e"), None);
    }
}
