//! The config file's parser, for the `config` fuzz target (`fuzz/`): the text of a file
//! to the profiles envoi would use, with no file read. Not part of the API.

use std::path::Path;

use crate::error::Result;
use crate::profile::Profile;

/// The path the errors name.
pub const CONFIG_PATH: &str = "/fuzz/config.toml";

/// `text` parsed as the config file at [`CONFIG_PATH`], then each of its profiles
/// selected by name, as `--profile NAME` would, and last the default one.
pub fn config_profiles(text: &str) -> Result<Vec<Result<Option<Profile>>>> {
    let file = super::config::parse(Path::new(CONFIG_PATH), text)?;
    let names = file.summaries().into_iter().map(|s| Some(s.name));
    Ok(names
        .chain([None])
        .map(|name| file.select(name.as_deref()).map(|p| p.map(|(_, p)| p)))
        .collect())
}
