//! The container image, built for real from the repository's Dockerfile by
//! `deploy/container/build-local.sh` (podman, with local stand-ins for the base images this
//! machine cannot pull), then run the way this machine can: containers cannot start here
//! (no cgroups for an OCI runtime), so the image's root file system is mounted (`podman image
//! mount`) and the binary is run inside it with `chroot --userspec`, as the image's user, with
//! the image's environment, against the private servers. A machine where it cannot be built
//! fails here, saying why; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{make_pki, start_redis, Outcome, TestEnv};

const TAG: &str = "localhost/redis-flusher:dev";

/// The image's user and environment, as its configuration says.
struct Image {
    user: String,
    env: Vec<(String, String)>,
}

/// Builds the image once for this test binary (the script's cache makes a build with no
/// change a few seconds).
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/container/build-local.sh");
        let out = Command::new(&script)
            .env("CARGO_BUILD_JOBS", "2")
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "deploy/container/build-local.sh could not build the image (it installs podman and \
             debootstrap with apt when missing, and needs root or sudo):\n{}",
            said.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        let inspect = |format: &str| {
            let out = Command::new("podman")
                .args(["image", "inspect", "--format", format, TAG])
                .output()
                .expect("podman image inspect");
            assert!(out.status.success(), "podman image inspect {TAG}");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let env = inspect("{{range .Config.Env}}{{println .}}{{end}}")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Image {
            user: inspect("{{.Config.User}}"),
            env,
        }
    })
}

/// The image's root file system, mounted while this lives.
struct Mounted(PathBuf);

impl Mounted {
    fn new() -> Mounted {
        let out = Command::new("podman")
            .args(["image", "mount", TAG])
            .output()
            .expect("podman image mount");
        assert!(
            out.status.success(),
            "podman image mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    /// The image's binary, run inside it as its user with its environment and `vars`.
    fn run(&self, args: &[&str], vars: &[(&str, String)]) -> Outcome {
        let img = image();
        let uid_gid = if img.user.contains(':') {
            img.user.clone()
        } else {
            format!("{0}:{0}", img.user)
        };
        let out = Command::new("chroot")
            .arg(format!("--userspec={uid_gid}"))
            .arg(&self.0)
            .arg("/usr/local/bin/redis-flusher")
            .args(args)
            .env_clear()
            .envs(img.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("run chroot");
        Outcome::of(&out)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["image", "unmount", TAG])
            .output();
    }
}

/// A file bind-mounted over one of the image's, while this lives.
struct Over(PathBuf);

impl Over {
    fn new(file: &Path, target: PathBuf) -> Over {
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(file)
            .arg(&target)
            .status()
            .expect("run mount");
        assert!(
            ok.success(),
            "mount --bind {} {}",
            file.display(),
            target.display()
        );
        Over(target)
    }
}

impl Drop for Over {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn the_image_flushes_exactly_as_its_own_user_and_trusts_its_own_ca_roots() {
    let img = image();
    assert_eq!(img.user, "65532:65532", "a non-root numeric user");
    let env = TestEnv::new(4);
    let sent = env.set_many(4, |i| i64::from(i) * 3);
    env.set("unknown", "5");
    let mnt = Mounted::new();
    let vars = env.vars();

    let version = mnt.run(&["--version"], &[]);
    version.expect(0);
    assert!(
        version.stdout.starts_with("redis-flusher "),
        "{}",
        version.stdout
    );
    // No shell: nothing in the image could run one.
    assert!(!mnt.0.join("bin/sh").exists() && !mnt.0.join("usr/bin/sh").exists());

    mnt.run(&["check"], &vars).expect(0);
    let out = mnt.run(&["run"], &vars);
    out.expect(0);
    assert_eq!(env.total(), sent, "{}", out.stderr);
    assert!(env.keys(&env.prefix).is_empty() && env.journals().is_empty());
    assert_eq!(env.ledger_unknown_hits(), 5);

    // TLS to Redis, its certificate signed by a private CA, checked against the image's CA
    // roots (ca-certificates' bundle, which the image's SSL_CERT_FILE names).
    let bundle = mnt.0.join("etc/ssl/certs/ca-certificates.crt");
    let roots = std::fs::read_to_string(&bundle).expect("the image's CA roots");
    assert!(
        roots.matches("BEGIN CERTIFICATE").count() > 100,
        "the image holds the public CA roots"
    );
    let pki = make_pki();
    let tls_port = crate::common::free_port();
    let _tls = start_redis(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        pki.ip_server_cert.to_str().unwrap(),
        "--tls-key-file",
        pki.ip_server_key.to_str().unwrap(),
        "--tls-ca-cert-file",
        pki.ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let tls: Vec<(&str, String)> = vars
        .iter()
        .filter(|(k, _)| *k != "REDIS_PORT")
        .cloned()
        .chain([
            ("REDIS_PORT", tls_port.to_string()),
            ("REDIS_TLS", "true".to_owned()),
        ])
        .collect();
    // The private CA is not among the public roots: refused, as a setting to fix.
    let out = mnt.run(&["run"], &tls);
    out.expect(2);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    // With the private CA added to the image's bundle, as an image built on this one would.
    let mut with_ours = roots.clone();
    with_ours.push_str(&std::fs::read_to_string(&pki.ca).unwrap());
    let added = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(added.path(), with_ours).unwrap();
    std::fs::set_permissions(
        added.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let over = Over::new(added.path(), bundle);
    redis::cmd("SET")
        .arg(env.key("c1"))
        .arg(7)
        .query::<()>(
            &mut redis::Client::open(format!("redis://127.0.0.1:{}/", _tls.port))
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    let out = mnt.run(&["run"], &tls);
    drop(over);
    out.expect(0);
    assert_eq!(env.total(), sent + 7, "{}", out.stderr);
}
