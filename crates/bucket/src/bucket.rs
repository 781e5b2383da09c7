//! One bucket and key prefix on an S3-compatible store.

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, PutOptions, PutPayload,
    RetryConfig,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Where a bucket is and how to reach it. Fields left out come from the usual AWS environment
/// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BucketConfig {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// The S3 API endpoint, e.g. `http://127.0.0.1:3900` (Garage); `AWS_ENDPOINT_URL` when
    /// absent, or AWS.
    pub endpoint: Option<String>,
    /// The region (Garage: its `s3_region`, usually `garage`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint that is not on this machine (loopback endpoints always are).
    pub allow_http: bool,
}

/// Shows everything but the secret key.
impl std::fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(hidden)"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Why a bucket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The configuration cannot name a bucket.
    #[error("bucket {url:?}: {reason}")]
    Config {
        /// The configured URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The object store failed (unreachable, refused, ...).
    #[error("{url}: {source}")]
    Store {
        /// The object's URL.
        url: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// An object is larger than anything the log writes there.
    #[error("{url}: {size} bytes, more than the {limit} an object there can hold")]
    TooLarge {
        /// The object's URL.
        url: String,
        /// Its size.
        size: u64,
        /// The most it may hold.
        limit: u64,
    },
}

/// One bucket and prefix; cheap to clone.
#[derive(Clone, Debug)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix` without a trailing slash: names the copy (and its watermark).
    url: String,
    /// The key prefix, empty or ending in `/`.
    prefix: String,
}

/// Per-request bound: a publisher retries a failed round itself, so the client only retries
/// briefly, and a store that stopped answering fails the round instead of stalling it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Bucket {
    /// Opens the bucket `config` names. Nothing is contacted yet.
    pub fn open(config: &BucketConfig) -> Result<Bucket, BucketError> {
        let fail = |reason: String| BucketError::Config {
            url: config.url.clone(),
            reason,
        };
        let rest = config
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| fail("expected s3://bucket[/prefix]".into()))?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if name.is_empty() {
            return Err(fail("no bucket name".into()));
        }
        if prefix.split('/').any(|s| s == "." || s == "..")
            || Path::parse(prefix).is_err()
            || prefix.contains("//")
        {
            return Err(fail(format!("bad key prefix {prefix:?}")));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(name)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: REQUEST_TIMEOUT,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(Duration::from_secs(5)),
            );
        let endpoint = config.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|v| std::env::var(v).ok())
        });
        if let Some(endpoint) = &endpoint {
            let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|l| endpoint.starts_with(l));
            if endpoint.starts_with("http://") && !local && !config.allow_http {
                return Err(fail(format!(
                    "plain-HTTP endpoint {endpoint} is not on this machine: use https, or set \
                     allow_http"
                )));
            }
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| fail(e.to_string()))?;
        let url = match prefix {
            "" => format!("s3://{name}"),
            p => format!("s3://{name}/{p}"),
        };
        Ok(Bucket {
            store: Arc::new(store),
            url,
            prefix: match prefix {
                "" => String::new(),
                p => format!("{p}/"),
            },
        })
    }

    /// `s3://bucket/prefix`: the name of this copy of the log.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }

    fn error(&self, key: &str, source: object_store::Error) -> BucketError {
        BucketError::Store {
            url: format!("{}/{key}", self.url),
            source,
        }
    }

    /// Writes `key` (relative to the prefix), replacing any object there, with the headers a
    /// static endpoint serves it with.
    pub async fn put(
        &self,
        key: &str,
        data: Vec<u8>,
        headers: &[(Attribute, &'static str)],
    ) -> Result<(), BucketError> {
        let attributes: Attributes = headers
            .iter()
            .map(|(a, v)| (a.clone(), object_store::AttributeValue::from(*v)))
            .collect();
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(key), PutPayload::from(data), options)
            .await
            .map(drop)
            .map_err(|e| self.error(key, e))
    }

    /// Reads `key`; None when there is no such object. An object over `limit` bytes is refused
    /// before its body is read. Returns the bytes and whether they are stored gzip-encoded.
    pub async fn get(&self, key: &str, limit: u64) -> Result<Option<(Bytes, bool)>, BucketError> {
        let got = match self.store.get(&self.path(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(key, e)),
        };
        if got.meta.size > limit {
            return Err(BucketError::TooLarge {
                url: format!("{}/{key}", self.url),
                size: got.meta.size,
                limit,
            });
        }
        let gzip = got
            .attributes
            .get(&Attribute::ContentEncoding)
            .is_some_and(|v| v.as_ref() == "gzip");
        let bytes = got.bytes().await.map_err(|e| self.error(key, e))?;
        Ok(Some((bytes, gzip)))
    }

    /// Deletes `key`; deleting what is not there is no error.
    pub async fn delete(&self, key: String) -> Result<(), BucketError> {
        match self.store.delete(&self.path(&key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str) -> Result<Bucket, BucketError> {
        Bucket::open(&BucketConfig {
            url: url.into(),
            endpoint: Some("http://127.0.0.1:3900".into()),
            region: Some("garage".into()),
            access_key_id: Some("GK00".into()),
            secret_access_key: Some("00".into()),
            allow_http: false,
        })
    }

    #[test]
    fn urls_name_a_bucket_and_a_clean_prefix() {
        let b = open("s3://logs/btlog/").expect("valid");
        assert_eq!(b.url(), "s3://logs/btlog");
        assert_eq!(b.path("checkpoint").as_ref(), "btlog/checkpoint");
        let b = open("s3://logs").expect("valid");
        assert_eq!(b.path("tile/0/000").as_ref(), "tile/0/000");
        for bad in [
            "logs/x",
            "s3://",
            "s3:///x",
            "s3://logs/a/../b",
            "s3://logs/a//b",
        ] {
            assert!(open(bad).is_err(), "{bad}");
        }
        let remote = Bucket::open(&BucketConfig {
            url: "s3://logs".into(),
            endpoint: Some("http://s3.example.com".into()),
            ..BucketConfig::default()
        });
        assert!(
            remote.is_err(),
            "plain HTTP off this machine needs allow_http"
        );
        let shown = format!(
            "{:?}",
            BucketConfig {
                secret_access_key: Some("s3cr3t".into()),
                ..BucketConfig::default()
            }
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
