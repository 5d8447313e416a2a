//! The Rust SDK of trustmesh: a typed client of the mesh's gRPC API.
//!
//! - [`Client`] (`client`): one channel (TLS 1.3 through `trustmesh-runtime`, or development
//!   plaintext to loopback), one bearer credential on every call, the tenant it acts in, and
//!   retries of UNAVAILABLE / RESOURCE_EXHAUSTED / ABORTED with jittered exponential backoff
//!   (`backon`) where a retry is safe.
//! - `datasets`: streamed uploads from a path or a reader in bounded memory
//!   ([`Client::upload_path`], [`Client::upload_reader`], with [`Progress`] callbacks), and
//!   reading datasets back.
//! - `jobs`: [`Client::start_analysis`] → [`Analysis`] with [`Analysis::wait`] and
//!   [`Analysis::watch`]; job lists, watches and cancellation.
//! - `trust`: reports, rows by issue ([`RowQuery`]) and the cleanset export.
//! - `admin`: tenants, API keys, webhook endpoints, deletions and certificates, the audit log.
//! - `quota`: the tenant's quota ([`Client::get_quota`], [`Client::update_quota`] with a
//!   [`QuotaChange`]).
//! - `paging`: every `List*` RPC is a `Stream` of items that fetches pages as it is consumed.
//! - [`Error`] (`error`): usage, I/O, invalid request, auth, not found, server and transport
//!   errors, apart.
//!
//! ```no_run
//! # async fn example() -> Result<(), trustmesh_sdk::Error> {
//! use futures::TryStreamExt as _;
//! use trustmesh_sdk::{Client, RowQuery, SecretString, Upload};
//! use trustmesh_sdk::proto::IssueType;
//!
//! let key = SecretString::from(std::env::var("TRUSTMESH_API_KEY").unwrap_or_default());
//! let client = Client::connect("http://127.0.0.1:50051", &key).await?.with_tenant("acme");
//! let dataset = client
//!     .upload_path("wine.csv".as_ref(), Upload::csv("wine"), |p| eprintln!("{} bytes", p.sent))
//!     .await?;
//! let job = client.analyze(&dataset.name, "label").await?.wait().await?;
//! let label_issues: Vec<_> = client
//!     .list_rows(&job.output, RowQuery::issue(IssueType::Label))
//!     .try_collect()
//!     .await?;
//! # Ok(()) }
//! ```

mod admin;
mod client;
mod datasets;
mod error;
mod jobs;
mod paging;
mod quota;
mod trust;

pub use client::{Authed, Bearer, Client, RetryPolicy, once_known};
pub use datasets::{CHUNK_BYTES, Progress, Upload, format_of};
pub use error::{Error, GrpcCode};
pub use jobs::{Analysis, is_final};
pub use quota::QuotaChange;
pub use trust::{ExportOptions, Exported, RowQuery};
pub use trustmesh_proto::v1 as proto;
pub use trustmesh_runtime::{ClientTls, ExposeSecret, SecretString};
