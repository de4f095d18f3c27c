//! The model store: pulls models from the Hugging Face Hub (or a mirror) into a local cache
//! that never holds a half-written model, and keeps a registry of what is there.
//!
//! # Cache layout
//! Under the Hearth home (`$HEARTH_HOME`, default `$XDG_CACHE_HOME/hearth`, then
//! `~/.cache/hearth`), readable by a person and laid out like `huggingface_hub`'s cache:
//!
//! ```text
//! hearth.db                                  the registry (SQLite)
//! hub/models--{org}--{name}/
//!     blobs/{hash}                           verified content, named by its hash
//!     blobs/{hash}.partial                   an interrupted download, resumed by the next pull
//!     snapshots/{commit}/{file}              relative symlinks to blobs
//!     refs/{revision}                        the commit a branch or tag resolved to
//!     manifests/{commit}.json                written last: the snapshot is complete
//!     .lock                                  held (exclusive) by a pull or a removal
//!     .in-use.lock                           held (shared) by a server that has the model loaded
//! ```
//!
//! A blob's hash is the Hub's LFS SHA-256 for large files and the git blob SHA-1 for the
//! others, so every file is verified after download and can be re-verified later
//! ([`Store::verify`]). Files land as `.partial` and are renamed into `blobs/` only once
//! complete and verified; the manifest is written (atomically) only after every file of the
//! snapshot is in place, and removal deletes the manifest first. A kill at any moment
//! therefore leaves the previous state or a resumable partial, never a model that looks
//! complete.
//!
//! # For the server
//! * [`Store::pull`] reports [`PullEvent`]s through a callback (wrap a channel sender in it
//!   to stream them as SSE) and is safe to call from several processes at once: pulls of
//!   one repo are serialised by `.lock`.
//! * [`Store::hold`] takes a shared lock on the model's `.in-use.lock` for as long as the
//!   returned guard lives: a server holds it while the model is loaded, and
//!   [`Store::remove`] (`hearth rm`) refuses to delete a held model unless forced.
//! * [`Store::resolve`] finds a model by name, alias or repo id without any network call;
//!   [`ModelResolver`] is what the CLI and the server resolve a model name with: a path (where
//!   allowed), the store, `$HEARTH_HOME/models`, then a pull.
//!
//! An existing Hugging Face cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`)
//! is read in place, never copied.

mod cache;
pub mod catalogue;
mod download;
mod error;
#[cfg(feature = "fake-hub")]
pub mod fake_hub;
mod hub;
mod lock;
mod metadata;
pub mod name;
mod pull;
mod registry;
mod resolve;
mod store;

pub use cache::normalise;
pub use error::{Result, StoreError};
pub use hub::HubConfig;
pub use metadata::chat_template;
pub use pull::{PullEvent, PullRequest};
pub use registry::{ModelRecord, Source};
pub use resolve::{hearth_home, installed_model, ModelResolver, DEFAULT_MODEL};
pub use store::{CacheReport, InUseGuard, PruneReport, Resolved, Store};
