//! Using envoi as a library: build an [`Email`] in Rust, turn it into a message and
//! deliver it through a profile.
//!
//! With `ENVOI_SMTP_URL` set (and `ENVOI_PASSWORD` when the URL has a user) it sends
//! over SMTP; otherwise it writes the message into `./outbox` with the file transport,
//! so `cargo run --example send` works with no server at all.

use std::time::SystemTime;

use envoi::deliver::{Delivery, DeliveryOptions, Notice, Observer, deliver};
use envoi::profile::{Profile, profile_from_url};
use envoi::{Attachment, Body, Email, Importance, Mailbox, message};

/// Says on stderr what the delivery layer reports (retries, mostly).
struct Stderr;

impl Observer for Stderr {
    fn notice(&mut self, notice: Notice) {
        eprintln!("{notice:?}");
    }
}

fn main() -> anyhow::Result<()> {
    let from: Mailbox = "Build Bot <bot@example.com>".parse()?;
    let email = Email {
        from: Some(from.clone()),
        to: vec!["Ann Lee <ann@example.com>".parse()?],
        cc: vec![],
        bcc: vec!["audit@example.com".parse()?],
        reply_to: vec![],
        subject: "Nightly build failed ✗".into(),
        body: Body {
            content: "<p>The nightly build <b>failed</b>; the log is attached.</p>".into(),
            is_html: true,
            text_alternative: Some("The nightly build failed; the log is attached.".into()),
        },
        importance: Importance::High,
        attachments: vec![Attachment {
            file_name: "build.log".into(),
            content_type: "text/plain".parse()?,
            data: b"step 3/7 failed: exit status 2\n".to_vec().into(),
            content_id: None,
        }],
        headers: vec![("X-Job".into(), "nightly".into())],
        read_receipt: None,
        delivery_receipt: None,
    };

    let prepared = message::build(email, &from, SystemTime::now())?;
    let (name, profile) = match std::env::var("ENVOI_SMTP_URL") {
        Ok(url) => ("ENVOI_SMTP_URL", profile_from_url(&url)?),
        Err(_) => ("example-outbox", Profile::file("outbox")),
    };
    let options = DeliveryOptions::default();
    match deliver(&profile, prepared, &options, &mut Stderr)? {
        Delivery::Sent { prepared, .. } => println!("sent {} via {name}", prepared.message_id),
        Delivery::Saved { path, .. } => println!("saved {} ({name})", path.display()),
    }
    Ok(())
}
