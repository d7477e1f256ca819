//! The viewer in a real browser: starts `pairlens serve` on the built-in model and a free port,
//! then runs e2e/viewer.mjs (headless Chromium driven by playwright-core), which checks that the
//! page's numbers, token colours and heatmap pixels match the JSON API. Screenshots go to
//! target/e2e-screenshots/. Skipped with a message when node, /usr/bin/chromium or
//! e2e/node_modules/playwright-core is missing, unless PAIRLENS_E2E=require (as in .ci/run).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// First start materialises the built-in model into the cache; a busy CI machine is slow.
const START_TIMEOUT: Duration = Duration::from_secs(180);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(900);

fn repo() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    repo.canonicalize().unwrap_or(repo)
}

/// Kills the child on drop, so a failed assertion never leaves a server or browser behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the browser test needs and this machine lacks.
fn missing_prerequisites(repo: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(node, Ok(s) if s.success()) {
        missing.push("node (Node.js) on PATH".to_string());
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!(
            "{CHROMIUM} (apt-get install chromium chromium-driver)"
        ));
    }
    let pw = repo.join("e2e/node_modules/playwright-core/package.json");
    if !pw.exists() {
        missing.push(format!("{} (npm ci --prefix e2e)", pw.display()));
    }
    missing
}

#[test]
fn viewer_in_headless_chromium() {
    let repo = repo();
    let missing = missing_prerequisites(&repo);
    if !missing.is_empty() {
        let msg = format!("browser test needs: {}", missing.join("; "));
        if std::env::var("PAIRLENS_E2E").as_deref() == Ok("require") {
            panic!("{msg} (PAIRLENS_E2E=require)");
        }
        eprintln!("SKIPPED serve_browser: {msg} (set PAIRLENS_E2E=require to fail instead)");
        return;
    }

    let cache = std::env::temp_dir().join(format!("pairlens-serve-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_pairlens"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("XDG_CACHE_HOME", &cache)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pairlens serve"),
    );

    // Read stdout on a thread (and keep draining it, so the server never blocks on the pipe).
    let stdout = server.0.stdout.take().expect("server stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("[server] {line}");
            let _ = tx.send(line);
        }
    });
    let url = loop {
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    break url.trim().to_string();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("pairlens serve printed no `listening on` line within {START_TIMEOUT:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.0.wait().expect("wait for the server");
                panic!("pairlens serve exited ({status}) before printing `listening on`");
            }
        }
    };
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "unexpected address line: {url}"
    );

    let shots = repo.join("target/e2e-screenshots");
    for name in ["viewer.png", "viewer-box.png", "failure.png"] {
        let _ = std::fs::remove_file(shots.join(name));
    }
    let mut browser = KillOnDrop(
        Command::new("node")
            .arg(repo.join("e2e/viewer.mjs"))
            .arg(&url)
            .arg(&shots)
            .current_dir(&repo)
            .stdin(Stdio::null())
            .spawn()
            .expect("start node e2e/viewer.mjs"),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = browser.0.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            panic!("e2e/viewer.mjs did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(server);
    let _ = std::fs::remove_dir_all(&cache);
    assert!(
        status.success(),
        "e2e/viewer.mjs failed ({status}); see its output above and {}",
        shots.join("failure.png").display()
    );
    for name in ["viewer.png", "viewer-box.png"] {
        assert!(
            shots.join(name).exists(),
            "no screenshot {}",
            shots.join(name).display()
        );
    }
}
