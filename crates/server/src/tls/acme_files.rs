//! What an ACME CA gave, kept in the data dir so that a restart neither asks
//! again nor opens a new account. Under `acme/`, one folder per directory
//! URL: `account.json` (the account's key and URL) and `certificate.pem`
//! (the chain, then its key), readable by their owner only.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use instant_acme::AccountCredentials;

const ACCOUNT_FILE: &str = "account.json";
const CERTIFICATE_FILE: &str = "certificate.pem";

/// The files of one ACME directory.
#[derive(Debug, Clone)]
pub(super) struct AcmeFiles {
    dir: PathBuf,
}

impl AcmeFiles {
    pub(super) fn new(data_dir: &Path, directory: &str) -> Self {
        Self { dir: data_dir.join("acme").join(folder_name(directory)) }
    }

    /// The account kept for this directory, if there is one.
    pub(super) fn account(&self) -> Result<Option<AccountCredentials>, String> {
        let path = self.dir.join(ACCOUNT_FILE);
        let Some(text) = read(&path)? else { return Ok(None) };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            format!("{}: not an ACME account Herald wrote ({e}); move it away to open a new one", path.display())
        })
    }

    pub(super) fn save_account(&self, credentials: &AccountCredentials) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(credentials).map_err(|e| format!("ACME account: {e}"))?;
        write_private(&self.dir.join(ACCOUNT_FILE), &text)
    }

    /// The certificate kept for this directory (PEM: chain, then key), if
    /// there is one.
    pub(super) fn certificate(&self) -> Result<Option<Vec<u8>>, String> {
        read(&self.certificate_path())
    }

    pub(super) fn save_certificate(&self, pem: &str) -> Result<(), String> {
        write_private(&self.certificate_path(), pem.as_bytes())
    }

    pub(super) fn certificate_path(&self) -> PathBuf {
        self.dir.join(CERTIFICATE_FILE)
    }
}

/// A folder name for a directory URL: its host, port and path, with
/// anything but letters, digits, `.` and `-` as `_`.
fn folder_name(directory: &str) -> String {
    let rest = directory.split_once("://").map_or(directory, |(_, rest)| rest);
    let name: String = rest
        .trim_end_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    // Never `.` or `..`: the folder stays under `acme/`.
    if name.chars().all(|c| c == '.') { name.replace('.', "_") } else { name }
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: cannot read it ({e})", path.display())),
    }
}

/// Writes `bytes` to `path` whole or not at all (a temporary file renamed
/// over it), readable by the owner only: it holds a private key.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: io::Error| format!("{}: cannot write it ({e})", path.display());
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    let temporary = path.with_extension("tmp");
    // Made anew, never reused: a file (or link) left there keeps its own
    // permissions and target.
    match fs::remove_file(&temporary) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).map_err(fail)?;
    io::Write::write_all(&mut file, bytes).and_then(|()| file.sync_all()).map_err(fail)?;
    fs::rename(&temporary, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_has_its_own_folder() {
        assert_eq!(
            folder_name("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(folder_name("https://127.0.0.1:14000/dir/"), "127.0.0.1_14000_dir");
        assert_eq!(folder_name("https://[::1]:9/../x"), "___1__9_.._x");
        assert_eq!(folder_name("https://.."), "__");
    }

    #[test]
    fn a_certificate_is_written_whole_and_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = AcmeFiles::new(dir.path(), "https://ca.test/dir");
        assert_eq!(files.certificate(), Ok(None));
        files.save_certificate("one").expect("saved");
        files.save_certificate("two").expect("saved again");
        assert_eq!(files.certificate(), Ok(Some(b"two".to_vec())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(files.certificate_path()).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!files.certificate_path().with_extension("tmp").exists());
        // A temporary file left behind, readable by all, is not reused.
        let stale = files.certificate_path().with_extension("tmp");
        fs::write(&stale, "stale").expect("stale file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).expect("chmod");
            files.save_certificate("three").expect("saved over a stale temporary file");
            let mode = fs::metadata(files.certificate_path()).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
