//! Untrusted text → [`Email`] → exact bytes: the lowest layer, which knows nothing of
//! profiles, servers or the command line.
//!
//! [`payload`] (the connector's JSON) and the command line both give a [`draft::Draft`]:
//! text labelled with where it came from. [`draft::Draft::into_email`] reads files
//! ([`input`]), parses addresses ([`address`]) and checks every value (`check`), giving
//! a validated [`Email`]. [`build`] turns that into RFC 5322 bytes ([`MessageBytes`]) and
//! an envelope, with line endings owned by `wire`, which also frames them for SMTP DATA.
//! A file attached by its path stays in its file ([`AttachedFile`]) until the message is
//! written, so a large attachment is never held in memory. A message given whole
//! (sendmail mode) takes the shorter way through [`given`]. [`dkim`] signs the final
//! bytes of either.

pub mod address;
mod attached_file;
mod build;
mod bytes;
pub(crate) mod check;
pub mod dkim;
pub mod draft;
mod email;
pub mod given;
mod images;
pub mod input;
pub mod lint;
mod markdown;
pub mod payload;
pub mod records;
pub mod redirect;
pub mod template;
pub(crate) mod wire;

pub use attached_file::{AttachedFile, StreamError};
pub(crate) use build::date_value;
pub use build::{Prepared, build};
pub use bytes::MessageBytes;
pub use email::{Attachment, AttachmentData, Body, Email, Importance};
