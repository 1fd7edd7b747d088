//! The `jetedge check` command as an operator runs it: exit 0 for a valid
//! config, 2 with every problem and its key path for an invalid one.

use crate::support;

use std::process::Command;
use support::TempDir;

fn check(config: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["check", "-c"])
        .arg(config)
        .envs([
            ("SHOP_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("GITHUB_WEBHOOK_SECRET", "gh"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_stripe"),
            ("PARTNER_SECRET", "p"),
            ("KIOSK_TOKEN", "k1"),
            ("KIOSK_TOKEN_NEXT", "k2"),
            ("REDACT_KEY", "r"),
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

/// `check` of a config file holding `text`.
fn check_text(name: &str, text: &str) -> (i32, String) {
    let dir = TempDir::new(name);
    let file = dir.path().join("jetedge.toml");
    std::fs::write(&file, text).unwrap();
    check(&file)
}

#[test]
fn the_annotated_example_and_the_default_config_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["conf/example.toml", "conf/jetedge.toml"] {
        let (code, text) = check(&root.join(file));
        assert_eq!(code, 0, "{file}: {text}");
        assert!(text.contains("valid"), "{text}");
    }
}

#[test]
fn bad_rules_exit_2_and_name_every_problem_by_key_path() {
    let (code, text) = check_text(
        "cli-check",
        r#"
[[source]]
name = "shop"
verify = "none"
[[route]]
match = { prefx = { type = "order." } }
action = "drop"
[[route]]
match = { path = "data/region", in = ["x"] }
action = "forward"
[[redact]]
patterns = ["(unclosed"]
[[redact]]
detectors = ["email"]
action = "hash"
"#,
    );
    assert_eq!(code, 2, "{text}");
    for want in [
        "route[0].match.prefx: unknown filter dialect",
        "route[1].match.path:",
        "redact[0].patterns[0]: not a valid regex",
        "redact[1].key: action = \"hash\" needs a key",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn bad_subscriptions_exit_2_with_their_key_paths() {
    let (code, text) = check_text(
        "cli-check-subscription",
        r#"
[admin]
listen = "0.0.0.0:9090"
[[subscription]]
name = "orders"
subjects = ["events..x", "events.>.x"]
deliver = "since:yesterday"
to_subject = "site.orders"
to_webhook = { url = "ftp://x/hook", secret = "env:NO_SUCH_SECRET_VAR" }
[subscription.retry]
max_attempts = 0
[[subscription]]
name = "orders"
subjects = ["events.>"]
"#,
    );
    assert_eq!(code, 2, "{text}");
    for want in [
        "admin.token: an admin listener off loopback needs a token",
        "subscription[0].subjects[0]: \"events..x\" is not a subject filter",
        "subscription[0].subjects[1]:",
        "subscription[0].deliver: \"yesterday\" is neither",
        "subscription[0].to_subject: publishing to the site's NATS needs a [local] section",
        "subscription[0].to_webhook.url: must be an http:// or https:// URL",
        "subscription[0].to_webhook.secret: environment variable NO_SUCH_SECRET_VAR is not set",
        "subscription[0].retry.max_attempts: must be at least 1",
        "subscription[1].name: duplicate subscription name",
        "subscription[1]: has no target",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn an_open_source_on_a_public_listener_is_refused_and_short_dedupe_ttls_are_warned() {
    let dir = TempDir::new("cli-open");
    let file = dir.path().join("open.toml");
    let text = r#"
[ingress]
listen = "0.0.0.0:8080"
[[source]]
name = "kiosk"
verify = "none"
"#;
    std::fs::write(&file, text).unwrap();
    let (code, out) = check(&file);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("source[0].verify") && out.contains("allow_unauthenticated"),
        "{out}"
    );
    // Said on purpose, it is allowed.
    std::fs::write(&file, format!("{text}allow_unauthenticated = true\n")).unwrap();
    let (code, out) = check(&file);
    assert_eq!(code, 0, "{out}");

    // A Stripe source that forgets keys before Stripe stops retrying.
    let stripe = r#"
[[source]]
name = "pay"
verify = "stripe"
secrets = ["env:STRIPE_WEBHOOK_SECRET"]
dedupe_ttl = "24h"
"#;
    std::fs::write(&file, stripe).unwrap();
    let (code, out) = check(&file);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: source[0].dedupe_ttl") && out.contains("3days"),
        "{out}"
    );
    // Its default covers the retries: no warning.
    std::fs::write(&file, stripe.replace("dedupe_ttl = \"24h\"\n", "")).unwrap();
    let (_, out) = check(&file);
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn bad_rate_limits_and_tls_files_exit_2_with_their_key_paths() {
    let (code, text) = check_text(
        "cli-check-rate",
        r#"
[ingress]
rate_limit = { per_second = 0 }
tls = { cert = "/nonexistent/cert.pem", key = "/nonexistent/key.pem" }
[[source]]
name = "shop"
verify = "none"
rate_limit = { per_second = 5, burst = 0 }
client_identities = ["kiosk-1"]
"#,
    );
    assert_eq!(code, 2, "{text}");
    for want in [
        "ingress.rate_limit.per_second: must be a number of requests per second larger than zero",
        "source[0].rate_limit.burst: must be at least 1",
        "ingress.tls: cert /nonexistent/cert.pem:",
        "source[0].client_identities: needs client certificates",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn check_shows_the_encryption_key_by_id_and_never_a_secret() {
    let dir = TempDir::new("cli-secrets");
    let key = dir.path().join("store.key");
    let key_text = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    std::fs::write(&key, format!("{key_text}\n")).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "k1-token-value").unwrap();
    let hook = dir.path().join("hook");
    std::fs::write(&hook, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let file = dir.path().join("secrets.toml");
    let text = format!(
        r#"
[node]
encryption_key = "file:{}"
[upstream]
servers = ["nats://edge:hunter2-pass@127.0.0.1:4222"]
token = "file:{}"
[[subscription]]
name = "apps"
subjects = ["events.>"]
to_webhook = {{ url = "http://127.0.0.1:9/hook?token=url-token-value", secret = "file:{}" }}
"#,
        key.display(),
        token.display(),
        hook.display()
    );
    std::fs::write(&file, &text).unwrap();
    let (code, out) = check(&file);
    assert_eq!(code, 0, "{out}");
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    let id = jetedge::store::key_id(&bytes).to_string();
    assert!(
        out.contains(&format!("encryption at rest: key {id}")),
        "{out}"
    );
    for secret in [
        key_text,
        "hunter2-pass",
        "url-token-value",
        "k1-token",
        "whsec_",
    ] {
        assert!(!out.contains(secret), "{secret:?} shown in:\n{out}");
    }
    let cfg = jetedge::config::Config::load(&file).unwrap();
    let shown = format!("{cfg:?}");
    for secret in [
        key_text,
        "hunter2-pass",
        "url-token-value",
        "k1-token",
        "whsec_",
    ] {
        assert!(!shown.contains(secret), "{secret:?} in the config's Debug");
    }

    // A key that is not 32 bytes of base64 is named by its key path.
    std::fs::write(&key, "c2hvcnQ=").unwrap();
    let (code, out) = check(&file);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("node.encryption_key") && out.contains("5 bytes, not 32"),
        "{out}"
    );
}

#[test]
fn check_print_shows_the_file_with_its_overrides_and_hides_url_credentials() {
    let dir = TempDir::new("cli-print");
    let file = dir.path().join("print.toml");
    std::fs::write(
        &file,
        "[node]\nid = \"site-1\"\n[upstream]\nservers = [\"nats://edge:hunter2-pass@127.0.0.1:4222\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["check", "--print", "-c"])
        .arg(&file)
        .env("JETEDGE_NODE__ID", "site-2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("id = \"site-2\""),
        "the override shows:\n{text}"
    );
    assert!(text.contains("nats://edge:***@127.0.0.1:4222"), "{text}");
    assert!(!text.contains("hunter2-pass"), "{text}");
}

#[test]
fn ten_common_mistakes_are_all_found_in_one_run_with_the_names_meant() {
    let (code, text) = check_text(
        "cli-ten",
        r#"
[node]
fsync = "yes"
max_buffer = "lots"
dedupe_tll = "2d"
[ingres]
listen = "127.0.0.1:8080"
[admin]
listen = "localhost"
[[source]]
name = "shop"
verify = "standard-webhook"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
[[route]]
match = { prefix = { type = "order." } }
action = "forwards"
[[redact]]
detectors = ["emial"]
action = "mask"
[[subscription]]
name = "apps"
subjects = ["events.>"]
to_subject = "apps.events"
[subscription.retry]
max_attempts = 0
"#,
    );
    assert_eq!(code, 2, "{text}");
    for want in [
        "node.fsync: invalid type: string \"yes\", expected a boolean",
        "node.max_buffer: invalid size \"lots\"",
        "node.dedupe_tll: unknown key; did you mean `dedupe_ttl`?",
        "ingres: unknown key; did you mean `ingress`?",
        "admin.listen:",
        "source[0].verify: unknown variant `standard-webhook`",
        "did you mean `standard-webhooks`?",
        "source[0].secrets[0]: secrets are references",
        "route[0].action: unknown variant `forwards`",
        "did you mean `forward`?",
        "redact[0].detectors[0]: unknown detector \"emial\"",
        "did you mean `email`?",
        "subscription[0].retry.max_attempts: must be at least 1",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    // A filter on an attribute no event carries compiles, and is warned about.
    let (code, text) = check_text(
        "cli-tpye",
        "[[route]]\nmatch = { any = [ { prefix = { tpye = \"order.\" } } ] }\naction = \"drop\"\n",
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "warning: route[0].match.any[0].prefix.tpye: no event carries an attribute `tpye`"
        ) && text.contains("did you mean `type`?"),
        "{text}"
    );
}
