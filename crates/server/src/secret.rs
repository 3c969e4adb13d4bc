//! The signing secret generated when none is configured: made once by the
//! server, kept in the data dir (mode 0600), reused by every later start and
//! read (never made) by `herald token`.

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

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

/// Why the secret cannot be read or made. The cause shows in the message.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file is there but too short to be a secret.
    #[error("{} is too short to be a signing secret; delete it to make a new one", path.display())]
    TooShort {
        /// The secret's file.
        path: PathBuf,
    },
    /// The file is there but cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Unreadable {
        /// The secret's file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The data dir cannot be made.
    #[error("cannot create data dir {}: {error}", dir.display())]
    CreateDir {
        /// The data dir.
        dir: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The file cannot be made.
    #[error("cannot create {}: {error}", path.display())]
    Create {
        /// The secret's file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The file was made but the secret cannot be written to it.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The secret's file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
}

/// Reads the data dir's secret; `None` if there is none yet.
pub fn load(data_dir: &Path) -> Result<Option<Secret>, SecretError> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => Ok(Some(Secret(text.trim().to_owned()))),
        Ok(_) => Err(SecretError::TooShort { path }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(SecretError::Unreadable { path, error }),
    }
}

/// Reads the data dir's secret, creating it first if there is none.
pub fn load_or_generate(data_dir: &Path) -> Result<(Secret, Origin), SecretError> {
    if let Some(secret) = load(data_dir)? {
        return Ok((secret, Origin::Loaded));
    }
    let path = data_dir.join(SECRET_FILE);
    std::fs::create_dir_all(data_dir).map_err(|error| SecretError::CreateDir { dir: data_dir.into(), error })?;
    let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|error| SecretError::Write { path, error })?;
            Ok((Secret(secret), Origin::Generated))
        }
        // Another process made it first: use theirs.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => load_or_generate(data_dir),
        Err(error) => Err(SecretError::Create { path, error }),
    }
}
