//! The signing secret generated when none is configured: made once, kept in
//! the data dir (mode 0600), reused by every later start and by `herald token`.

use std::{io::Write as _, path::Path};

use crate::config::Secret;

/// File name of the generated secret inside the data dir.
pub const SECRET_FILE: &str = "jwt-secret";

/// Reads the data dir's secret, creating it first if there is none.
pub fn load_or_generate(data_dir: &Path) -> Result<Secret, String> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(Secret(text.trim().to_owned())),
        Ok(_) => {
            return Err(format!("{} is too short to be a signing secret; delete it to make a new one", path.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
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
            Ok(Secret(secret))
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_generate(data_dir),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}
