//! The signing secret generated when none is configured: made once by the
//! server, kept in the data dir (mode 0600), reused by every later start and
//! read (never made) by `herald token`.

use std::{io::Write as _, path::Path};

use crate::config::Secret;

/// File name of the generated secret inside the data dir.
pub const SECRET_FILE: &str = "jwt-secret";

/// Where the server's secret came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An earlier start made it; this one read it.
    Loaded,
    /// This start made it.
    Generated,
}

/// Reads the data dir's secret; `None` if there is none yet.
pub fn load(data_dir: &Path) -> Result<Option<Secret>, String> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => Ok(Some(Secret(text.trim().to_owned()))),
        Ok(_) => Err(format!("{} is too short to be a signing secret; delete it to make a new one", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Reads the data dir's secret, creating it first if there is none.
pub fn load_or_generate(data_dir: &Path) -> Result<(Secret, Origin), String> {
    if let Some(secret) = load(data_dir)? {
        return Ok((secret, Origin::Loaded));
    }
    let path = data_dir.join(SECRET_FILE);
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok((Secret(secret), Origin::Generated))
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_generate(data_dir),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}
