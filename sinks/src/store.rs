//! Opening an output location (local folder, `s3://`, `memory://`) as an object store.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::SinkError;

/// The schemes [`open_output`] understands, for error messages.
pub const SUPPORTED_LOCATIONS: &str =
    "a plain path, file://, s3:// (or s3a://), gs:// (feature gcs), az:// or abfs:// (feature azure), memory://";

/// S3 connection settings; each field that is set overrides the matching `AWS_*` environment variable.
///
/// Plain data (serde, all fields optional) so it can live in the pipeline's config file. `Debug` never prints the
/// secret access key.
///
/// ```
/// let s3: capflow_sinks::S3Options = serde_json::from_str(r#"{"endpoint": "http://127.0.0.1:9000", "allow_http": true}"#).unwrap();
/// assert_eq!(s3.region, None);
/// ```
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000` for a local S3-compatible server (env `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Region, e.g. `us-east-1` (env `AWS_REGION` / `AWS_DEFAULT_REGION`; object_store defaults to `us-east-1`).
    pub region: Option<String>,
    /// Access key id (env `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (env `AWS_SECRET_ACCESS_KEY`); redacted by `Debug`.
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints. `false` leaves the environment's `AWS_ALLOW_HTTP` in charge.
    pub allow_http: bool,
    /// Use virtual-hosted-style requests (`bucket.host`) instead of path style. `false` leaves the environment's
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` in charge.
    pub virtual_hosted_style: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

/// An opened output: the store, the prefix inside it under which tables live, and the location for messages.
#[derive(Clone, Debug)]
pub struct Output {
    /// The object store (local file system, S3, or in-memory).
    pub store: Arc<dyn ObjectStore>,
    /// Prefix inside `store` under which the tables (`frames/`, `sites/`, `patients/`) live. Empty for local folders, whose
    /// store is already rooted at the folder.
    pub root: Path,
    /// The location, normalised, for messages (e.g. `file:///data/out/`, `s3://bucket/prefix`). Never holds
    /// credentials.
    pub url: String,
}

/// Opens an output location.
///
/// * a plain path or `file://` URL: a local folder, created if missing; the store is rooted at the folder;
/// * `s3://bucket/prefix` (or `s3a://`): Amazon S3 or a compatible server, configured from the standard `AWS_*`
///   environment variables, then overridden by the fields of `s3` that are set;
/// * `memory://` or `memory://prefix`: a fresh in-memory store (tests).
///
/// Building an S3 store performs no request; a wrong endpoint or key shows up on the first write.
pub fn open_output(location: &str, s3: &S3Options) -> Result<Output, SinkError> {
    let location = location.trim();
    if location.is_empty() {
        return Err(invalid(location, "the location is empty"));
    }
    let Some(scheme) = scheme_of(location) else {
        return open_local(PathBuf::from(location), location);
    };
    let url = Url::parse(location).map_err(|e| invalid(location, e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            &redact_userinfo(&url),
            "credentials in the URL are not accepted; use the S3 options or AWS_* environment variables",
        ));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            let path = url.to_file_path().map_err(|()| {
                invalid(
                    location,
                    "not a local file URL (it needs an absolute path and no host)",
                )
            })?;
            open_local(path, location)
        }
        "s3" | "s3a" => open_s3(&url, s3),
        "gs" => open_gcs(&url),
        "az" | "azure" | "abfs" | "abfss" => open_azure(&url),
        "memory" => {
            let prefix = format!("{}{}", url.host_str().unwrap_or(""), url.path());
            let root =
                Path::from_url_path(&prefix).map_err(|e| invalid(location, e.to_string()))?;
            Ok(Output {
                store: Arc::new(InMemory::new()),
                url: format!("memory://{root}"),
                root,
            })
        }
        _ => Err(SinkError::UnsupportedScheme {
            url: location.to_string(),
            scheme: scheme.to_string(),
            supported: SUPPORTED_LOCATIONS,
        }),
    }
}

/// The scheme of `location` if it looks like `scheme://...`, else `None` (a plain path).
fn scheme_of(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
        .then_some(scheme)
}

fn open_local(dir: PathBuf, location: &str) -> Result<Output, SinkError> {
    std::fs::create_dir_all(&dir).map_err(|source| SinkError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let canonical = dir.canonicalize().map_err(|source| SinkError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let store =
        LocalFileSystem::new_with_prefix(&canonical).map_err(|source| SinkError::OpenStore {
            url: location.to_string(),
            source,
        })?;
    Ok(Output {
        store: Arc::new(store),
        root: Path::ROOT,
        url: file_url(&canonical),
    })
}

fn file_url(dir: &FsPath) -> String {
    Url::from_directory_path(dir)
        .map(String::from)
        .unwrap_or_else(|()| dir.display().to_string())
}

/// The S3 client settings for `url` (`s3://bucket/prefix`): its bucket, the prefix as a path, and the builder.
fn s3_builder(url: &Url, s3: &S3Options) -> Result<(AmazonS3Builder, String, Path), SinkError> {
    let location = url.as_str();
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| invalid(location, "no bucket: expected s3://bucket/prefix"))?;
    let root = Path::from_url_path(url.path()).map_err(|e| invalid(location, e.to_string()))?;

    // object_store's own retries stay short (a blip is absorbed inside one request); longer outages are ridden out
    // by the writer's retry loop, which logs each attempt and knows when to give up.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: Duration::from_secs(15),
        })
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            "5s",
        )
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "60s");
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if s3.allow_http {
        builder = builder.with_allow_http(true);
    }
    if s3.virtual_hosted_style {
        builder = builder.with_virtual_hosted_style_request(true);
    }
    Ok((builder, bucket.to_string(), root))
}

fn open_s3(url: &Url, s3: &S3Options) -> Result<Output, SinkError> {
    let location = url.as_str();
    let (builder, bucket, root) = s3_builder(url, s3)?;
    let store = builder.build().map_err(|source| SinkError::OpenStore {
        url: location.to_string(),
        source,
    })?;
    Ok(Output {
        store: Arc::new(store),
        url: format!("s3://{bucket}/{root}"),
        root,
    })
}

/// A time-limited URL that reads the object at `location` (`s3://bucket/key`) over HTTP(S), signed with the S3
/// settings (SigV4 query signing; no request is made). GStreamer's HTTP source streams archived videos through it
/// with range requests, so MP4s seek and nothing is copied to local disk first. The URL grants read access to
/// that one object until it expires: keep it out of logs and tables.
pub async fn presign_s3_get(
    location: &str,
    s3: &S3Options,
    expires_in: Duration,
) -> Result<String, SinkError> {
    use object_store::signer::{Method, Signer};
    let url = Url::parse(location).map_err(|e| invalid(location, e.to_string()))?;
    if !matches!(url.scheme(), "s3" | "s3a") {
        return Err(invalid(location, "expected s3://bucket/key"));
    }
    let (builder, _, key) = s3_builder(&url, s3)?;
    let store = builder.build().map_err(|source| SinkError::OpenStore {
        url: location.to_string(),
        source,
    })?;
    let signed = store
        .signed_url(Method::GET, &key, expires_in)
        .await
        .map_err(|source| SinkError::Store {
            path: location.to_string(),
            source,
        })?;
    Ok(signed.to_string())
}

/// An [`Output`] for a cloud store built from `url`: the prefix inside the bucket or container is the URL's path
/// (for `abfs://container@account…/p`, too).
#[cfg(any(feature = "gcs", feature = "azure"))]
fn cloud_output(
    url: &Url,
    built: Result<Arc<dyn ObjectStore>, object_store::Error>,
) -> Result<Output, SinkError> {
    let store = built.map_err(|source| SinkError::OpenStore {
        url: url.to_string(),
        source,
    })?;
    Ok(Output {
        store,
        root: Path::from_url_path(url.path()).map_err(|e| invalid(url.as_str(), e.to_string()))?,
        url: url.to_string(),
    })
}

/// `gs://bucket/prefix`, configured from the standard `GOOGLE_*` environment variables.
fn open_gcs(url: &Url) -> Result<Output, SinkError> {
    #[cfg(feature = "gcs")]
    {
        let built = object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(url.as_str())
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>);
        cloud_output(url, built)
    }
    #[cfg(not(feature = "gcs"))]
    Err(SinkError::NotCompiledIn {
        url: url.to_string(),
        feature: "gcs",
    })
}

/// `az://container/prefix` or `abfs://container@account.dfs.core.windows.net/prefix`, configured from the standard
/// `AZURE_*` environment variables.
fn open_azure(url: &Url) -> Result<Output, SinkError> {
    #[cfg(feature = "azure")]
    {
        let built = object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(url.as_str())
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>);
        cloud_output(url, built)
    }
    #[cfg(not(feature = "azure"))]
    Err(SinkError::NotCompiledIn {
        url: url.to_string(),
        feature: "azure",
    })
}

fn redact_userinfo(url: &Url) -> String {
    let mut url = url.clone();
    // Only fails for URLs that cannot have credentials, which then have none to hide.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

fn invalid(url: &str, reason: impl Into<String>) -> SinkError {
    SinkError::InvalidLocation {
        url: url.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_secret() {
        let s3 = S3Options {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI-very-secret".into()),
            ..S3Options::default()
        };
        let text = format!("{s3:?}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn unknown_scheme_names_url_and_supported_schemes() {
        let err = open_output("ftp://bucket/x", &S3Options::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ftp://bucket/x"), "{text}");
        assert!(
            text.contains("s3://") && text.contains("memory://"),
            "{text}"
        );
        assert!(matches!(err, SinkError::UnsupportedScheme { .. }));
    }

    #[cfg(not(feature = "gcs"))]
    #[test]
    fn stores_not_compiled_in_name_the_feature() {
        let err = open_output("gs://bucket/x", &S3Options::default()).unwrap_err();
        assert!(
            matches!(err, SinkError::NotCompiledIn { feature: "gcs", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--features gcs"), "{err}");
    }

    #[test]
    fn credentials_in_url_are_rejected_without_echoing_them() {
        let err = open_output("s3://AKID:topsecret@bucket/x", &S3Options::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("topsecret") && !text.contains("AKID"),
            "{text}"
        );
    }

    #[test]
    fn memory_and_s3_roots() {
        let out = open_output("memory://", &S3Options::default()).unwrap();
        assert_eq!(out.root, Path::ROOT);
        let out = open_output("memory://a/b", &S3Options::default()).unwrap();
        assert_eq!(out.root.as_ref(), "a/b");
        let s3 = S3Options {
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            allow_http: true,
            ..S3Options::default()
        };
        let out = open_output("s3://bucket/some/prefix/", &s3).unwrap();
        assert_eq!(out.root.as_ref(), "some/prefix");
        assert_eq!(out.url, "s3://bucket/some/prefix");
        assert!(open_output("s3:///nobucket", &s3).is_err());
    }

    #[test]
    fn s3_output_debug_does_not_show_the_secret() {
        let s3 = S3Options {
            region: Some("us-east-1".into()),
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("hunter2-secret".into()),
            ..S3Options::default()
        };
        let out = open_output("s3://bucket/p", &s3).unwrap();
        let text = format!("{out:?} {}", out.store);
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn local_paths_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("new/out");
        let out = open_output(target.to_str().unwrap(), &S3Options::default()).unwrap();
        assert!(target.is_dir());
        assert_eq!(out.root, Path::ROOT);
        assert!(out.url.starts_with("file:///"), "{}", out.url);
        let via_url = format!("file://{}", target.display());
        open_output(&via_url, &S3Options::default()).unwrap();
    }

    #[test]
    fn options_reject_unknown_keys() {
        assert!(serde_json::from_str::<S3Options>(r#"{"secret": "x"}"#).is_err());
        let s3: S3Options = serde_json::from_str("{}").unwrap();
        assert_eq!(s3, S3Options::default());
    }
}
