//! The WebDriver side of the dashboard's tests: a `chromedriver` of the
//! test's own and a headless Chromium behind a small synchronous API
//! (open, click, type, read, wait), with a report of what the page showed
//! when a test fails.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::*;

/// The longest a test waits for the page to show something: a bound, so a
/// broken page fails instead of hanging, not a measure of speed.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// Where Debian's packages put the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// A `chromedriver` of the test's own on a free loopback port; killed on
/// drop.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        // A port the kernel just handed out and nobody listens on (as the
        // NATS harness does): chromedriver needs the number before it starts.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver is needed for the dashboard tests ({e}): scripts/test.sh \
                     installs it (Debian: `apt-get install chromium chromium-driver`)"
                )
            });
        let mut driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = client();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http
                .get(format!("{}/status", driver.url))
                .timeout(Duration::from_secs(2))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return driver;
            }
            if let Some(status) = driver.child.try_wait().unwrap() {
                panic!("chromedriver exited before it was ready: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port} within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium showing a host's dashboard: a synchronous face over
/// fantoccini (the tests are synchronous, like the rest of the e2e tests),
/// which runs on a runtime of the test's own.
pub(super) struct Browser {
    // Field order is drop order: the session ends (closing Chromium) in
    // `Drop`, then the runtime, then chromedriver.
    client: Option<Client>,
    runtime: tokio::runtime::Runtime,
    driver: Chromedriver,
    /// `<admin URL>/ui/`.
    ui: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280×800), and opens
    /// the host's dashboard.
    pub(super) fn open(w: &Wisp) -> Browser {
        let driver = Chromedriver::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the WebDriver client");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--window-size=1280,800",
                    "--disable-dev-shm-usage",
                ],
                "binary": CHROMIUM,
            }),
        );
        // The console (errors, CSP violations) for the failure report.
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = runtime
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&driver.url),
            )
            .unwrap_or_else(|e| panic!("starting {CHROMIUM} through chromedriver failed: {e}"));
        let b = Browser {
            client: Some(client),
            runtime,
            driver,
            ui: format!("{}/ui/", w.admin_url),
        };
        b.goto("");
        b
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Opens the dashboard at a hash route (`#/functions/f`; "" for the
    /// page itself).
    pub(super) fn goto(&self, route: &str) {
        let url = format!("{}{route}", self.ui);
        self.runtime
            .block_on(self.c().goto(&url))
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Loads the page anew (its script too), and waits for the load.
    pub(super) fn reload(&self) {
        self.runtime
            .block_on(self.c().refresh())
            .expect("reloading the page");
    }

    /// Opens any URL (another origin's page, say).
    pub(super) fn goto_url(&self, url: &str) {
        self.runtime
            .block_on(self.c().goto(url))
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Runs an asynchronous script in the page: it calls its last argument
    /// with its result.
    pub(super) fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime
            .block_on(self.c().execute_async(script, args))
            .unwrap_or_else(|e| panic!("running a script in the page: {e}\n{script}"))
    }

    /// Runs a script in the page (its arguments as `arguments[i]`) and
    /// returns what it returns.
    pub(super) fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime
            .block_on(self.c().execute(script, args))
            .unwrap_or_else(|e| panic!("running a script in the page: {e}\n{script}"))
    }

    /// The visible text (`innerText`) of each element matching `css`.
    pub(super) fn texts(&self, css: &str) -> Vec<String> {
        let v = self.js(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);",
            vec![json!(css)],
        );
        serde_json::from_value(v).unwrap()
    }

    /// The visible text of the first element matching `css`, if any.
    pub(super) fn text(&self, css: &str) -> Option<String> {
        self.texts(css).into_iter().next()
    }

    /// How many elements match `css`.
    pub(super) fn count(&self, css: &str) -> usize {
        self.js(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .as_u64()
        .unwrap() as usize
    }

    /// An attribute of the first element matching `css`.
    pub(super) fn attr(&self, css: &str, name: &str) -> Option<String> {
        let v = self.js(
            "const e = document.querySelector(arguments[0]);
             return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(name)],
        );
        v.as_str().map(str::to_string)
    }

    /// Whether some element matching `css` is shown (in the page, laid
    /// out, not hidden).
    pub(super) fn shown(&self, css: &str) -> bool {
        self.js(
            "return Array.from(document.querySelectorAll(arguments[0])).some(e =>
                 !e.closest('[hidden]') && e.getClientRects().length > 0
                 && getComputedStyle(e).visibility !== 'hidden');",
            vec![json!(css)],
        )
        .as_bool()
        .unwrap()
    }

    /// Waits until an element matching `css` is shown.
    pub(super) fn wait_shown(&self, css: &str) {
        self.wait_for(&format!("`{css}` to be shown"), || {
            self.shown(css).then_some(())
        });
    }

    /// Polls `ready` until it gives a value, for at most [`WAIT`].
    pub(super) fn wait_for<T>(&self, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = ready() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out ({WAIT:?}) waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks (a real WebDriver click) the first element matching `css`,
    /// once it is shown.
    pub(super) fn click(&self, css: &str) {
        self.wait_shown(css);
        self.runtime
            .block_on(async { self.c().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    /// Types `text` into the field matching `css` (cleared first). For a
    /// file input, `text` is the path of the file to choose.
    pub(super) fn type_into(&self, css: &str, text: &str) {
        self.wait_shown(css);
        self.runtime
            .block_on(async {
                let field = self.c().find(Locator::Css(css)).await?;
                if field.attr("type").await?.as_deref() != Some("file") {
                    field.clear().await?;
                }
                field.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
    }

    /// Chooses the option of value `value` in the select matching `css`.
    pub(super) fn select(&self, css: &str, value: &str) {
        self.wait_shown(css);
        self.runtime
            .block_on(async {
                self.c()
                    .find(Locator::Css(css))
                    .await?
                    .select_by_value(value)
                    .await
            })
            .unwrap_or_else(|e| panic!("choosing {value} in `{css}`: {e}"));
    }

    /// Signs in with `token` and waits for the answer: the navigation when
    /// the token is accepted, the sign-in error when it is refused.
    pub(super) fn sign_in(&self, token: &str) {
        self.type_into("input#signin-token", token);
        self.click("button#signin-submit");
        self.wait_for(
            "the sign-in to be answered (`#nav` or `#signin-error`)",
            || (self.shown("nav#nav") || self.shown("#signin-error")).then_some(()),
        );
    }

    /// Signs in with `token`, which must be accepted.
    pub(super) fn sign_in_ok(&self, token: &str) {
        self.sign_in(token);
        assert!(
            self.shown("nav#nav"),
            "signing in failed: {:?}",
            self.text("#signin-error")
        );
    }

    /// Whether a dialog (`alert`, `confirm`, `prompt`) is open.
    pub(super) fn dialog_open(&self) -> Option<String> {
        self.runtime.block_on(self.c().get_alert_text()).ok()
    }

    /// The page's visible text.
    pub(super) fn page_text(&self) -> String {
        self.js(
            "return document.body ? document.body.innerText : '';",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The page's DOM as markup, with the current value of every field
    /// (which the markup leaves out).
    pub(super) fn page_dom(&self) -> String {
        self.js(
            "const values = Array.from(document.querySelectorAll('input, textarea, select'),
                 e => e.value).join('\\n');
             return document.documentElement.outerHTML + '\\n' + values;",
            vec![],
        )
        .as_str()
        .unwrap()
        .to_string()
    }

    /// Sizes the window so that the page's viewport is `width`×`height`
    /// (the window's frame takes some of `--window-size`).
    pub(super) fn set_viewport(&self, width: u32, height: u32) {
        let frame = self.js(
            "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
            vec![],
        );
        let (dw, dh) = (frame[0].as_u64().unwrap(), frame[1].as_u64().unwrap());
        self.runtime
            .block_on(
                self.c()
                    .set_window_size(width + dw as u32, height + dh as u32),
            )
            .expect("sizing the window");
        let inner = self.js("return [window.innerWidth, window.innerHeight];", vec![]);
        assert_eq!(inner, json!([width, height]), "the viewport");
    }

    /// A PNG of the window.
    pub(super) fn screenshot(&self) -> Vec<u8> {
        self.runtime
            .block_on(self.c().screenshot())
            .expect("a screenshot")
    }

    /// The browser's console since the last call (chromedriver's log
    /// endpoint; nothing where it has none).
    pub(super) fn console(&self) -> Vec<String> {
        let Some(id) = self.runtime.block_on(self.c().session_id()).ok().flatten() else {
            return Vec::new();
        };
        let answer = client()
            .post(format!("{}/session/{id}/se/log", self.driver.url))
            .json(&json!({"type": "browser"}))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok());
        answer
            .as_ref()
            .and_then(|v| v["value"].as_array())
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() && self.client.is_some() {
            // What the page showed, and what the browser said.
            let url = self
                .runtime
                .block_on(self.c().current_url())
                .map(|u| u.to_string())
                .unwrap_or_default();
            let text = self
                .runtime
                .block_on(self.c().execute(
                    "return document.body ? document.body.innerText : '';",
                    vec![],
                ))
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            eprintln!("the page at {url} showed:\n{text}\n");
            // And as a picture, named for the test.
            if let Ok(png) = self.runtime.block_on(self.c().screenshot()) {
                let dir = root().join("target/ui-failures");
                let test = std::thread::current()
                    .name()
                    .unwrap_or("ui")
                    .replace("::", "-");
                let file = dir.join(format!("{test}.png"));
                if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&file, png).is_ok() {
                    eprintln!("a screenshot of it: {}", file.display());
                }
            }
            eprintln!("the browser's console:\n{}\n", self.console().join("\n"));
        }
        if let Some(client) = self.client.take() {
            // Ends the session, which closes Chromium: killing chromedriver
            // alone would leave the browser behind.
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(WAIT, client.close()).await });
        }
    }
}
