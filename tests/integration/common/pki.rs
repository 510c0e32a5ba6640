//! A private certificate authority for the TLS tests, made with the openssl CLI.

use std::path::PathBuf;
use std::process::Command;

/// A private certificate authority and what it signed, made with the openssl CLI: a server
/// certificate for `localhost` (not for 127.0.0.1, so that verify-ca and verify-full differ),
/// one for the address 127.0.0.1 (for a root file system without /etc/hosts, as an image's),
/// a client certificate, and a second CA that signed nothing of ours.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub ip_server_cert: PathBuf,
    pub ip_server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn make_pki() -> Pki {
    let dir = tempfile::Builder::new()
        .prefix("flusher-pki-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("could not run openssl ({e}): install it (apt-get install openssl)")
            });
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other_ca"] {
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=redis-flusher test {ca}"),
                ],
            ]
            .concat(),
        );
    }
    for (name, ext) in [
        // Client use too: Redis Cluster nodes present it to each other on the bus.
        (
            "server",
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        (
            "ip_server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write the extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    Pki {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other_ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        ip_server_cert: dir.join("ip_server.crt"),
        ip_server_key: dir.join("ip_server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        dir,
    }
}
