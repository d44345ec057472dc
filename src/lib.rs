//! envoi: the connector's "Send Email" action as a command-line tool and a library.
//!
//! How a send flows through the modules:
//!
//! 1. [`cli`] parses flags; [`payload`] parses a connector JSON payload. Both give a
//!    [`draft::Draft`]: untrusted text, each value labelled with the flag it came from.
//! 2. [`draft::Draft::into_email`] reads files, decodes data and checks every value
//!    ([`address`] parses address lists), giving a validated [`email::Email`].
//! 3. [`message::build`] turns it into exact RFC 5322 bytes plus an envelope.
//! 4. [`config`] finds the connection profile; [`password`] fetches its secret.
//! 5. [`transport`] delivers over SMTP (framing DATA with [`wire`]) or to a directory.
//! 6. [`output`] prints the result; [`error`] maps failures to documented exit codes.
//!
//! [`send`] wires these together for `envoi send`; [`app`] is the process entry point.
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
//! let text = String::from_utf8(prepared.bytes)?;
//! assert!(text.contains("X-Priority: 1 (Highest)\r\n"));
//! assert!(!text.contains("audit@")); // Bcc: envelope only
//! assert_eq!(prepared.envelope.to().len(), 3);
//! assert!(prepared.message_id.ends_with("@example.com>"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod draft;
pub mod durable;
pub mod email;
pub mod error;
pub mod flush;
pub mod idempotency;
pub mod input;
pub mod message;
pub mod outbox;
pub mod output;
pub mod password;
pub mod payload;
pub mod send;
pub mod transport;
pub mod wire;

pub use email::{Attachment, Body, Email, Importance};
pub use error::{Error, ErrorKind};
pub use lettre::message::Mailbox;
