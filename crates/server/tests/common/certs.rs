//! Test certificates, made by the `openssl` command: authorities, and
//! certificates they sign for `localhost` and 127.0.0.1.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A new P-256 key for `openssl req`, unencrypted.
const NEW_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/// Runs `openssl` with `args` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A certificate authority `NAME.pem` (key `NAME.key`) in `dir`.
pub fn authority(dir: &Path, name: &str) -> PathBuf {
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    let subject = format!("/CN=Herald test authority {name}");
    let rest = ["-keyout", &key, "-out", &cert, "-days", "3650", "-subj", &subject];
    openssl(dir, &[&["req", "-x509"][..], &NEW_KEY, &rest].concat());
    dir.join(cert)
}

/// A certificate for `localhost` and 127.0.0.1 signed by authority `ca`
/// (made by [`authority`]): `NAME.pem` and its key `NAME.key` in `dir`.
/// Its request `NAME.csr` and extensions `server.ext` stay there too.
pub fn certificate(dir: &Path, ca: &str, name: &str) -> (PathBuf, PathBuf) {
    let (key, csr, cert) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    openssl(dir, &[&["req"][..], &NEW_KEY, &["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]].concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    let signing = ["-in", &csr, "-CA", &ca_cert, "-CAkey", &ca_key, "-CAcreateserial", "-out", &cert];
    openssl(dir, &[&["x509", "-req"][..], &signing, &["-days", "3650", "-extfile", "server.ext"]].concat());
    (dir.join(cert), dir.join(key))
}
