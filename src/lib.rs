//! envoi: the connector's "Send Email" action as a command-line tool, and the library
//! under it.
//!
//! The library is four layers; each uses only the ones below it:
//!
//! | layer | job |
//! | --- | --- |
//! | [`outbox`] | the one way out ([`outbox::submit`]) and durable state: the queue, flushing it, the idempotency ledger |
//! | [`deliver`] | one prepared message → delivered: retries, SMTP, the file transport |
//! | [`profile`] | where to send: config file, secrets, routes, and one [`profile::resolve`] |
//! | [`message`] | untrusted text → [`Email`] → exact RFC 5322 bytes |
//!
//! with [`error`] (the exit-code contract), [`durable`] (crash-safe writes),
//! [`ownership`] (whose a trusted file is, who else may change it) and `token` (ids
//! unique without coordination) beneath them all. The command line (`src/cli/`) is part
//! of the binary only: no library code can reach it, and it is the only code that prints
//! or exits.
//!
//! Building a message from Rust (`examples/send.rs` also delivers it):
//!
//! ```
//! use std::time::SystemTime;
//! use envoi::draft::{Draft, Sourced};
//!
//! let draft = Draft {
//!     to: Some(Sourced::new("to", vec!["Ann <ann@example.com>; bob@example.com".to_owned()])),
//!     bcc: Some(Sourced::new("bcc", vec!["audit@example.com".to_owned()])),
//!     subject: Some(Sourced::new("subject", "Nightly build ✓".to_owned())),
//!     importance: Some(Sourced::new("importance", "high".to_owned())),
//!     ..Draft::default()
//! };
//! let email = draft.into_email()?;
//! let from: envoi::Mailbox = "Bot <bot@example.com>".parse()?;
//! let prepared = envoi::message::build(email, &from, SystemTime::now())?;
//!
//! let text = String::from_utf8(prepared.bytes.to_vec()?)?;
//! assert!(text.contains("X-Priority: 1 (Highest)\r\n"));
//! assert!(!text.contains("X-MSMail-Priority")); // a spam sign without X-MimeOLE
//! assert!(!text.contains("audit@")); // Bcc: envelope only
//! assert_eq!(prepared.envelope.to().len(), 3);
//! assert!(prepared.message_id.ends_with("@example.com>"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod deliver;
pub mod durable;
pub mod error;
pub mod message;
pub mod outbox;
pub mod ownership;
pub mod profile;
mod token;

pub use error::{Error, ErrorKind};
pub use lettre::message::Mailbox;
pub use message::{Attachment, Body, Email, Importance, address, draft, payload};
