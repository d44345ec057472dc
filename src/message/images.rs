//! Local images of an HTML body (`<img src="out/chart.png">`, or `![chart](out/chart.png)`
//! in Markdown) go inside the message: each file becomes an inline part with a
//! Content-ID (multipart/related) and its reference is rewritten to `cid:`, so the
//! recipient sees the picture without the sender hosting it. Remote images (`https:`),
//! `cid:` and `data:` references are left as they are.
//!
//! The body says which files go out, so a `src` may only name a file under the body's
//! own folder (or an `--image-root`): see [`Confine`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::message::email::Attachment;
use crate::message::input::{Confine, attachment_data};

/// `html` with every local image reference rewritten to `cid:`, and the images as
/// inline attachments. Relative paths are taken from the first folder of `confine`
/// (the body file's, or the current one), and every path must lie under one of its
/// folders (65, naming the reference and the rule). A missing file is 66 and names the
/// reference; a file that is not an image is 65.
pub(crate) fn embed(html: &str, confine: &Confine) -> Result<(String, Vec<Attachment>)> {
    let mut out = String::with_capacity(html.len());
    let mut images: Vec<Attachment> = Vec::new();
    // The same file referenced twice is one part.
    let mut by_path: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut rest = 0;
    for (start, end) in image_sources(html) {
        let reference = &html[start..end];
        let Some(path) = local_path(reference, confine.base()) else {
            continue;
        };
        // Links followed: `chart.png` and `./chart.png` are one file, and one part.
        let path = confine.check("an image of the HTML body", reference, &path)?;
        let cid = match by_path.get(&path) {
            Some(cid) => cid.clone(),
            None => {
                let label = format!("the image {reference:?}");
                let data = attachment_data(&label, &path).map_err(|e| {
                    Error::new(
                        ErrorKind::NoInput,
                        format!("{} (referenced in the HTML body)", e.message()),
                    )
                })?;
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".to_owned());
                let mime = mime_guess::from_path(&path).first_or_octet_stream();
                if mime.type_() != mime_guess::mime::IMAGE {
                    return Err(Error::invalid(format!(
                        "{label} is {mime}, not an image; attach it with --attach instead"
                    )));
                }
                let cid = format!("image{}.{}@envoi", images.len() + 1, cid_word(&file_name));
                images.push(Attachment {
                    file_name,
                    content_type: mime.as_ref().parse().map_err(|_| {
                        Error::invalid(format!("{label}: {mime} is not a MIME type"))
                    })?,
                    data,
                    content_id: Some(cid.clone()),
                });
                by_path.insert(path, cid.clone());
                cid
            }
        };
        out.push_str(&html[rest..start]);
        out.push_str("cid:");
        out.push_str(&cid);
        rest = end;
    }
    out.push_str(&html[rest..]);
    Ok((out, images))
}

/// A Content-ID word from a file name: letters, digits, `-` and `.` only.
fn cid_word(name: &str) -> String {
    let word: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    word.trim_matches(['.', '-'])
        .chars()
        .take(40)
        .collect::<String>()
}

/// The file a `src` names, when it is one on this machine: no scheme (`https:`, `cid:`,
/// `data:`), not protocol-relative (`//host/x`); percent-escapes and `&amp;` decoded.
fn local_path(reference: &str, base: &Path) -> Option<PathBuf> {
    let reference = reference.trim();
    if reference.is_empty() || reference.starts_with("//") || reference.starts_with('#') {
        return None;
    }
    let scheme = reference
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && !s.contains('/') && s.len() > 1);
    if scheme {
        return None;
    }
    let unescaped = reference.replace("&amp;", "&");
    let decoded = percent_encoding::percent_decode_str(&unescaped)
        .decode_utf8()
        .ok()?
        .into_owned();
    let path = PathBuf::from(decoded);
    Some(if path.is_absolute() {
        path
    } else {
        base.join(path)
    })
}

/// The byte ranges of every `src` value of an `<img>` tag in `html`, in order: quoted
/// with `"` or `'`, or bare up to a space or `>`.
fn image_sources(html: &str) -> Vec<(usize, usize)> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("<img") {
        let tag_start = from + at + 4;
        let tag_end = lower[tag_start..]
            .find('>')
            .map_or(lower.len(), |e| tag_start + e);
        let tag = &lower[tag_start..tag_end];
        let mut search = 0;
        while let Some(s) = tag[search..].find("src") {
            let name_at = search + s;
            let before = tag[..name_at].chars().last();
            let after = tag[name_at + 3..].trim_start();
            search = name_at + 3;
            if !before.is_some_and(char::is_whitespace) || !after.starts_with('=') {
                continue;
            }
            let value = after[1..].trim_start();
            let value_at = tag_start + tag.len() - value.len();
            let range = match value.chars().next() {
                Some(quote @ ('"' | '\'')) => value[1..]
                    .find(quote)
                    .map(|len| (value_at + 1, value_at + 1 + len)),
                Some(_) => {
                    let len = value
                        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
                        .unwrap_or(value.len());
                    Some((value_at, value_at + len))
                }
                None => None,
            };
            if let Some(range) = range {
                found.push(range);
            }
            break;
        }
        from = tag_end;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::email::AttachmentData;

    #[test]
    fn finds_each_img_src_however_it_is_quoted() {
        let html = r#"<p><IMG alt="x" SRC="a.png"><img src='b c.png' /><img src=d.png>
            <img data-src="no.png" src="e.png"><image src="no"></p>"#;
        let found: Vec<&str> = image_sources(html)
            .into_iter()
            .map(|(s, e)| &html[s..e])
            .collect();
        assert_eq!(found, ["a.png", "b c.png", "d.png", "e.png"]);
    }

    #[test]
    fn remote_and_cid_references_stay() {
        let base = Path::new("/srv/report");
        for kept in [
            "https://x/a.png",
            "cid:logo",
            "data:image/png;base64,AA",
            "//cdn/x.png",
        ] {
            assert_eq!(local_path(kept, base), None, "{kept}");
        }
        assert_eq!(
            local_path("out/my%20chart.png", base),
            Some(PathBuf::from("/srv/report/out/my chart.png"))
        );
        assert_eq!(
            local_path("/abs/x.png", base),
            Some(PathBuf::from("/abs/x.png"))
        );
    }

    #[test]
    fn local_images_become_cid_parts_once_each() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("chart.png"), b"\x89PNG").unwrap();
        let html = r#"<img src="chart.png"><img src="https://x/y.png"><img src="./chart.png">"#;
        let confine = Confine::new(dir.path().to_owned(), &[], "");
        let (out, images) = embed(html, &confine).unwrap();
        assert_eq!(images.len(), 1, "one file, one part: {out}");
        // Only opened and measured: the file is read when the message is written.
        let AttachmentData::File(file) = &images[0].data else {
            panic!("an image file is not streamed: {:?}", images[0].data);
        };
        assert_eq!(
            file.path(),
            dir.path().canonicalize().unwrap().join("chart.png")
        );
        assert_eq!(file.len(), 4);
        assert_eq!(images[0].content_type, "image/png".parse().unwrap());
        assert_eq!(
            out,
            r#"<img src="cid:image1.chart.png@envoi"><img src="https://x/y.png"><img src="cid:image1.chart.png@envoi">"#
        );
        let err = embed(r#"<img src="gone.png">"#, &confine).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoInput);
        assert!(err.message().contains("gone.png"), "{err}");
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let err = embed(r#"<img src="notes.txt">"#, &confine).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    /// MD02: a `src` leading out of the body's folder is refused, however it is
    /// spelled, unless an extra root allows it; one inside still works.
    #[cfg(unix)]
    #[test]
    fn md02_images_stay_under_their_folders() {
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&body).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("secret.png"), b"\x89PNG secret").unwrap();
        std::fs::write(body.join("ok.png"), b"\x89PNG").unwrap();
        std::os::unix::fs::symlink(other.join("secret.png"), body.join("link.png")).unwrap();
        let secret = other.join("secret.png").display().to_string();
        let encoded = secret.replace('/', "%2F");
        let confine = Confine::new(body.clone(), &[], "give --image-root DIR");
        for src in [
            secret.as_str(),
            encoded.as_str(),
            "../other/secret.png",
            "ok/../../other/secret.png",
            "link.png",
        ] {
            let html = format!(r#"<img src="{src}">"#);
            let err = embed(&html, &confine).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{src}: {err}");
            assert!(err.message().contains("leads outside"), "{err}");
            assert!(err.message().contains("--image-root"), "{err}");
        }
        let (_, images) = embed(r#"<img src="sub/../ok.png">"#, &confine).unwrap();
        assert_eq!(images.len(), 1);
        let wider = Confine::new(body, &[other], "");
        for src in [secret.as_str(), "../other/secret.png", "link.png"] {
            let (_, images) = embed(&format!(r#"<img src="{src}">"#), &wider).unwrap();
            assert_eq!(images.len(), 1, "{src}");
        }
    }
}
