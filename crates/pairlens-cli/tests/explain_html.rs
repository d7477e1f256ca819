//! `pairlens explain --html`: one self-contained report file, never overwritten without --force.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models")
}

fn pairlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .output()
        .expect("run pairlens")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "pairlens-explain-html-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn writes_a_self_contained_report_and_refuses_to_overwrite_it() {
    let dir = temp_dir("report");
    let report = dir.join("report.html");
    let (m, i, r) = (
        fixtures().join("hf-tiny-quickgelu").display().to_string(),
        fixtures()
            .join("images/gradient_44x30.png")
            .display()
            .to_string(),
        report.display().to_string(),
    );
    let args = [
        "explain",
        "--model",
        &m,
        "--image",
        &i,
        "--caption",
        "a \"dog\" on a 'red' car",
        "--caption",
        "a cat",
        "--span",
        "1:3",
        "--box",
        "0,0,20,15",
        "--steps",
        "3",
        "--json",
        "--html",
        &r,
    ];
    let out = pairlens(&args);
    assert!(
        out.status.success(),
        "pairlens failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the report must not fetch anything"
    );
    let srcs: Vec<&str> = html.split("src=\"").skip(1).collect();
    // Per caption: original, whole caption, one span, one box thumbnail.
    assert_eq!(srcs.len(), 2 * 4);
    assert!(srcs.iter().all(|s| s.starts_with("data:image/png;base64,")));
    // Quotes are escaped (`<`, `>` and `&` are covered by the library's unit test: the tiny
    // fixture's vocabulary gives them ids above EOT, which its argmax pooling cannot explain).
    assert!(html.contains("a &quot;dog&quot; on a &#39;red&#39; car"));
    // The numbers printed in the JSON summary appear in the report.
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in j["captions"].as_array().unwrap() {
        for v in [
            &c["score"],
            &c["sum"],
            &c["residual"],
            &c["reference_terms"]["reference_vs_reference"],
        ] {
            let n = v.as_f64().unwrap() as f32;
            assert!(html.contains(&format!("{n:+.6}")), "missing {n:+.6}");
        }
    }

    // A second run refuses to replace it, before doing any work, and leaves it as it was.
    let again = pairlens(&args);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force") && err.contains("report.html"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&report).unwrap(), html);
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(pairlens(&forced).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
