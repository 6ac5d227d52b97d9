//! A real browser for end-to-end tests: Debian's headless Chromium driven
//! through chromedriver (WebDriver) by fantoccini. Each [`Browser`] has its
//! own chromedriver on a free port and its own profile directory; both go
//! away on drop. Chromedriver runs in a process group of its own, and drop
//! kills the whole group: killing chromedriver alone would leave its
//! Chromium running after a test that panicked.
//!
//! `apt-get install -y chromium chromium-driver` (scripts/test.sh does);
//! `SWITCHBOARD_TEST_CHROMIUM` and `SWITCHBOARD_TEST_CHROMEDRIVER` override
//! the paths.

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// A chromedriver process and one browser session through it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = crate::free_port();
        let chromedriver = binary("SWITCHBOARD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        // One language and time zone whatever the machine's: pages render
        // dates and numbers with them (the wallboard's "closed until Mon").
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .env("TZ", "UTC")
            .env("LANG", "en_US.UTF-8")
            .env("LANGUAGE", "en_US")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {chromedriver}: {e}. `apt-get install -y chromium chromium-driver` \
                     (scripts/test.sh does) or set SWITCHBOARD_TEST_CHROMEDRIVER"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited at start ({status}), on port {port}");
            }
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::Builder::new()
            .prefix("switchboard-chromium-")
            .tempdir()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary("SWITCHBOARD_TEST_CHROMIUM", "/usr/bin/chromium"),
                "args": [
                    "--headless=new",
                    "--lang=en-US",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session through chromedriver");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Runs `script` (a function body: `arguments` and `return` work) in
    /// the page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Clicks the element `css` finds, finding it again when the page
    /// replaced it between the find and the click (a list that re-renders,
    /// such as the console's offers with their countdown). Panics after 5 s.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let clicked = match self.client.find(fantoccini::Locator::Css(css)).await {
                Ok(element) => element.click().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("cannot click {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until `script` returns something truthy; returns it.
    pub async fn until(&self, limit: Duration, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.js(script, vec![]).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("waited {limit:?} for {what}; last value {value}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session and chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        // Drop kills what is left of the group.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`); Chromium
        // and its helpers are in it too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where tests save screenshots: `target/screenshots/` (kept after the run,
/// for a person to look at).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::repo_root().join("target"));
    target.join("screenshots")
}
