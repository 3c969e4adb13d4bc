//! An ACME CA of the test's own: Debian's `pebble` (Let's Encrypt's test
//! server), with `pebble-challtestsrv` as its DNS, which answers every name
//! with 127.0.0.1. Both run on free ports of loopback and are killed on
//! drop.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{certs, redis::free_port};

/// A running Pebble.
pub struct Pebble {
    /// Its directory URL.
    pub directory: String,
    /// The authority of its own HTTPS (for `--acme-directory-ca`).
    pub https_ca: PathBuf,
    /// Where its management API listens (the roots it issues under).
    management: u16,
    children: Vec<Child>,
}

impl Pebble {
    /// Starts Pebble in `dir`. It validates TLS-ALPN-01 on `tls_port` of
    /// 127.0.0.1 and issues certificates valid for `validity`.
    pub fn start(dir: &Path, tls_port: u16, validity: Duration) -> Self {
        let https_ca = certs::authority(dir, "pebble-ca");
        let (cert, key) = certs::certificate(dir, "pebble-ca", "pebble");
        let (listen, management, dns, http) = (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity.as_secs(),
        }});
        let config_file = dir.join("pebble.json");
        std::fs::write(&config_file, config.to_string()).expect("write pebble.json");
        let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("run pebble-challtestsrv: run scripts/install-test-deps");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random waits before validating, no refused nonces: the
            // test is about Herald, not about retries.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("run pebble: run scripts/install-test-deps");
        let server = Self {
            directory: format!("https://localhost:{listen}/dir"),
            https_ca,
            management,
            children: vec![dns_server, pebble],
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", listen)).is_err() || TcpStream::connect(("127.0.0.1", dns)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not listen on {listen}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The root its certificates chain to (PEM), written to `path`.
    pub fn root(&self, path: &Path) -> PathBuf {
        let url = format!("https://localhost:{}/roots/0", self.management);
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.https_ca)
            .arg(&url)
            .output()
            .expect("run curl");
        assert!(output.status.success(), "{url}: {}", String::from_utf8_lossy(&output.stderr));
        std::fs::write(path, &output.stdout).expect("write the root");
        path.to_owned()
    }

    /// Stops it (and its DNS).
    pub fn kill(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.kill();
    }
}
