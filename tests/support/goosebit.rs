//! A real goosebit (a hawkBit DDI server) for the agent tests: the virtual environment
//! scripts/install-deps made (goosebit with hup's plugin, dist/goosebit-hup), started on
//! 127.0.0.1 at a free port with its own database and artifact directory, migrated first,
//! stopped when dropped; and its operator REST API (upload, assign, roll out, read).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::Digest;

const USER: &str = "admin@hup.test";
const PASSWORD: &str = "hup-test-password";

/// The virtual environment of scripts/install-deps: `~/.cache/hup/goosebit-KEY/venv`,
/// KEY as the script computes it. Panics with the install hint when it is missing.
pub fn venv() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/goosebit-hup");
    let mut h = sha2::Sha256::new();
    for f in [
        "constraints.txt",
        "pyproject.toml",
        "goosebit_hup/__init__.py",
    ] {
        h.update(std::fs::read(src.join(f)).unwrap());
    }
    let key = &hex::encode(h.finalize())[..16];
    let home = std::env::var("HOME").expect("HOME");
    let dir = PathBuf::from(home).join(format!(".cache/hup/goosebit-{key}"));
    assert!(
        dir.join("ok").exists(),
        "goosebit is not installed (no {}): run scripts/install-deps",
        dir.display()
    );
    dir.join("venv")
}

/// A running goosebit.
pub struct Goosebit {
    pub url: String,
    child: Child,
    pub dir: tempfile::TempDir,
    token: String,
    agent: ureq::Agent,
}

impl Goosebit {
    /// Migrates a fresh database and starts the server; returns once it answers and the
    /// operator is logged in.
    pub fn start() -> Goosebit {
        let venv = venv();
        let site = std::fs::read_dir(venv.join("lib"))
            .unwrap()
            .map(|e| e.unwrap().path().join("site-packages"))
            .find(|p| p.join("goosebit").is_dir())
            .expect("goosebit in the venv's site-packages");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("pyproject.toml"),
            format!(
                "[tool.aerich]\ntortoise_orm = \"goosebit.db.config.TORTOISE_CONF\"\nlocation = \"{}\"\nsrc_folder = \"./.\"\n",
                site.join("goosebit/db/migrations").display()
            ),
        )
        .unwrap();
        let env = |c: &mut Command| {
            c.current_dir(d)
                .env(
                    "GOOSEBIT_DB_URI",
                    format!("sqlite:///{}/db.sqlite3", d.display()),
                )
                .env("GOOSEBIT_ARTIFACTS_DIR", d.join("artifacts"))
                .env("GOOSEBIT_POLL_TIME", "00:00:05")
                .env(
                    "GOOSEBIT_SECRET_KEY",
                    "hup-agent-tests-secret-key-0123456789",
                )
                .env("GOOSEBIT_PLUGINS", "[\"hup\"]")
                .env("GOOSEBIT_SETTINGS", d.join("goosebit.yaml"));
        };
        std::fs::write(d.join("goosebit.yaml"), "{}\n").unwrap();
        let mut mig = Command::new(venv.join("bin/aerich"));
        mig.arg("upgrade");
        env(&mut mig);
        let o = mig.output().expect("running aerich");
        assert!(
            o.status.success(),
            "aerich upgrade: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        let mut srv = Command::new(venv.join("bin/uvicorn"));
        srv.args([
            "goosebit:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
        env(&mut srv);
        let child = srv.spawn().expect("starting uvicorn");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut g = Goosebit {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            token: String::new(),
            agent,
        };
        let t = Instant::now();
        while g.agent.get(&format!("{}/login", g.url)).call().is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "goosebit did not start: {}",
                g.log()
            );
            if let Ok(Some(st)) = g.child.try_wait() {
                panic!("goosebit exited ({st}): {}", g.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        g.form("/setup");
        let login: Value = serde_json::from_str(&g.form("/login")).unwrap();
        g.token = login["access_token"].as_str().unwrap().to_string();
        g
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn form(&self, path: &str) -> String {
        let body = format!("username={}&password={PASSWORD}", USER.replace('@', "%40"));
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(body.as_bytes())
            .unwrap();
        let st = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        assert!(st < 400, "POST {path}: HTTP {st}: {text}");
        text
    }

    /// An operator API call; the JSON answer.
    pub fn api(&self, method: &str, path: &str, json: Option<Value>) -> Value {
        let url = format!("{}/api/v1{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let resp = match (method, json) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            (m, Some(j)) => {
                let b = serde_json::to_vec(&j).unwrap();
                let req = if m == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.patch(&url)
                };
                req.header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(&b[..])
            }
            (m, None) => panic!("{m} without a body"),
        };
        let mut r = resp.unwrap();
        let st = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        assert!(
            st < 300,
            "{method} {path}: HTTP {st}: {text}\n{}",
            self.log()
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Uploads a file as software (`PUT /api/v1/software`, multipart); its id, or the
    /// HTTP status and answer when refused.
    pub fn upload(&self, file: &Path) -> Result<u64, (u16, String)> {
        let name = file.file_name().unwrap().to_str().unwrap();
        let mut body = format!(
            "--hupboundary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend(std::fs::read(file).unwrap());
        body.extend(b"\r\n--hupboundary--\r\n");
        let mut r = self
            .agent
            .put(&format!("{}/api/v1/software", self.url))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "multipart/form-data; boundary=hupboundary")
            .send(&body[..])
            .unwrap();
        let st = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        if st >= 300 {
            return Err((st, text));
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        Ok(v["id"].as_u64().unwrap())
    }

    /// Puts `device` into rollout mode on the `default` feed and starts a rollout of
    /// software `id`.
    pub fn rollout(&self, device: &str, name: &str, id: u64) {
        self.api(
            "PATCH",
            "/devices",
            Some(serde_json::json!({ "devices": [device], "software": "rollout", "feed": "default" })),
        );
        self.api(
            "PUT",
            "/rollouts",
            Some(serde_json::json!({ "name": name, "feed": "default", "software_id": id })),
        );
    }

    /// The device as `GET /api/v1/devices` lists it.
    pub fn device(&self, id: &str) -> Value {
        let all = self.api("GET", "/devices", None);
        all["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no device {id}: {all}"))
            .clone()
    }

    /// The rollout named `name`.
    /// Asserts the device's `(last_state, sw_version)` and the rollout's `(success_count,
    /// failure_count)` as goosebit's REST API gives them.
    pub fn expect_rollout(
        &self,
        device: &str,
        state_version: (&str, &str),
        rollout: &str,
        success_failure: (u64, u64),
    ) {
        let d = self.device(device);
        assert_eq!(
            (d["last_state"].as_str(), d["sw_version"].as_str()),
            (Some(state_version.0), Some(state_version.1)),
            "{d}"
        );
        let r = self.rollout_named(rollout);
        assert_eq!(
            (r["success_count"].as_u64(), r["failure_count"].as_u64()),
            (Some(success_failure.0), Some(success_failure.1)),
            "{r}"
        );
    }

    pub fn rollout_named(&self, name: &str) -> Value {
        let all = self.api("GET", "/rollouts", None);
        all["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no rollout {name}: {all}"))
            .clone()
    }

    /// The device's log (feedback details).
    pub fn device_log(&self, id: &str) -> String {
        self.api("GET", &format!("/devices/{id}/log"), None)
            .to_string()
    }
}

impl Drop for Goosebit {
    fn drop(&mut self) {
        // SIGTERM: uvicorn stops in 1-2 s.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
