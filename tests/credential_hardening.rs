//! The gateway's own Kiro credentials under stress (issue 18 items 3, 5, 9, 10, 11, 12 and
//! issue 17 item 7): refresh answers out of range, a locked kiro-cli database, a write-back
//! cut short by a crash, a read-only credentials folder, health while refreshes fail, what a
//! client hears when the gateway's credentials are refused, and an adopted token that the
//! service refuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{creds_file, in_secs, read_json, start_with, write_json, Running};
use http::StatusCode;
use kiro_gateway::config::Config;
use kiro_gateway::mock::{MockConfig, MockKiro};
use serde_json::{json, Value};

const REFUSED: &str = kiro_gateway::kiro::KIRO_CREDENTIALS_REFUSED;

/// A refresh through the mock's desktop endpoint, as the Kiro IDE does it: (access, refresh).
async fn ide_refresh(mock: &MockKiro, refresh: &str) -> (String, String) {
    common::ide_refresh(mock, refresh)
        .await
        .expect("the IDE's refresh was refused")
}

fn openai_body() -> Value {
    json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
}

fn anthropic_body() -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
           "messages": [{"role": "user", "content": "hi"}]})
}

async fn get_json(r: &Running, path: &str) -> (StatusCode, Value) {
    let (s, _, b) = r.send(r.req("GET", path, "")).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// A gateway on the JSON credentials file `path`, without fake reasoning.
async fn on_file(path: &Path, tweak: impl FnOnce(&mut Config)) -> Running {
    common::start_on_creds_file(MockConfig::default(), path, |c: &mut Config| {
        c.fake_reasoning = false;
        tweak(c);
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// item 3: an out-of-range expiresIn

#[tokio::test]
async fn an_out_of_range_expires_in_is_clamped_to_a_day_and_nothing_answers_500() {
    let r = start_with(MockConfig::default(), |c| c.fake_reasoning = false).await;
    for (expires_in, dialect) in [(json!(3e11), "openai"), (json!(1e20), "anthropic")] {
        r.mock.set_expires_in_answer(expires_in.clone());
        // the current token dies: the next request refreshes and gets the odd expiresIn
        r.mock.revoke_access_tokens();
        let before = r.mock.desktop_refreshes();
        let (s, _, b) = match dialect {
            "openai" => r.chat(openai_body()).await,
            _ => {
                r.send(r.req("POST", "/v1/messages", anthropic_body().to_string()))
                    .await
            }
        };
        let body = String::from_utf8_lossy(&b);
        assert_eq!(s, 200, "{expires_in}: {body}");
        assert_eq!(r.mock.desktop_refreshes(), before + 1, "{expires_in}");
        let (s, health) = get_json(&r, "/health").await;
        assert_eq!(s, 200, "{expires_in}: {health}");
        assert_eq!(health["status"], "healthy");
        let left = health["auth"]["token_expires_in_secs"].as_u64().unwrap();
        assert!((86_390..=86_400).contains(&left), "{expires_in}: {left}");
        let (s, accounts) = get_json(&r, "/health/accounts").await;
        assert_eq!(s, 200, "{expires_in}: {accounts}");
        let left = accounts["accounts"][0]["token_expires_in_secs"]
            .as_u64()
            .unwrap();
        assert!((86_390..=86_400).contains(&left), "{expires_in}: {left}");
        let (s, _, _) = r.send(r.req("GET", "/metrics", "")).await;
        assert_eq!(s, 200, "{expires_in}");
    }
}

// ---------------------------------------------------------------------------------------------
// item 12: a refused refresh is the gateway's problem, not the client's key

#[tokio::test]
async fn a_refused_refresh_is_a_503_in_the_dialect_without_any_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = creds_file(
        dir.path(),
        json!({"refreshToken": "mock-refresh-0", "expiresAt": "2020-01-01T00:00:00.000Z"}),
    );
    let r = on_file(&path, |_| {}).await;
    r.mock.revoke_access_tokens();
    r.mock.revoke_refresh_token();
    let dir_text = dir.path().display().to_string();
    let (s, h, b) = r.chat(openai_body()).await;
    assert!(!String::from_utf8_lossy(&b).contains(&dir_text));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(
        v,
        json!({"error": {"message": REFUSED, "type": "api_error", "param": null,
                         "code": "kiro_credentials_refused"}})
    );
    assert_eq!(h["content-type"], "application/json");
    let (s, _, b) = r
        .send(r.req("POST", "/v1/messages", anthropic_body().to_string()))
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "api_error", "message": REFUSED}})
    );
    assert!(!String::from_utf8_lossy(&b).contains(&dir_text));
    // the detail, with the file, is for the operator
    let (_, accounts) = get_json(&r, "/health/accounts").await;
    let a = &accounts["accounts"][0];
    assert_eq!(a["state"], "refresh-failing", "{accounts}");
    assert_eq!(a["available"], false, "{accounts}");
    let why = a["refresh_error"].as_str().unwrap();
    assert!(why.contains(&path.display().to_string()), "{why}");
    assert!(why.contains("refused the refresh token"), "{why}");
    assert!(why.contains("Invalid refresh token provided"), "{why}");
    assert!(!why.contains("mock-refresh-0"), "never the secret: {why}");
}

// ---------------------------------------------------------------------------------------------
// item 11: /health while refreshes fail

#[tokio::test]
async fn health_is_503_while_refreshes_fail_and_recovers_when_the_source_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "dead", "refreshToken": "mock-refresh-0",
                "expiresAt": "2020-01-01T00:00:00.000Z"}),
    );
    // nothing listens on port 1: every refresh fails in transit
    let r = on_file(&path, |c| {
        c.kiro_desktop_auth_url = "http://127.0.0.1:1".into()
    })
    .await;
    for _ in 0..3 {
        let (s, _, b) = r.chat(openai_body()).await;
        assert_eq!(
            s,
            StatusCode::BAD_GATEWAY,
            "{}",
            String::from_utf8_lossy(&b)
        );
    }
    let (s, health) = get_json(&r, "/health").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["accounts"], json!({"total": 1, "ok": 0}));
    let (_, accounts) = get_json(&r, "/health/accounts").await;
    assert_eq!(accounts["can_serve"], false, "{accounts}");
    let a = &accounts["accounts"][0];
    assert_eq!(a["state"], "refresh-failing", "{accounts}");
    assert_eq!(a["available"], false);
    let why = a["refresh_error"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "refreshing the Kiro access token from KIRO_CREDS_FILE ({}) failed: ",
            path.display()
        )),
        "{why}"
    );
    // the IDE signs in again and writes a good token: /health sees it without any request
    let (access, refresh) = ide_refresh(&r.mock, "mock-refresh-0").await;
    write_json(
        &path,
        &json!({"accessToken": access, "refreshToken": refresh, "expiresAt": in_secs(3600)}),
    );
    // past the token manager's failure cool-down (2 s): the cool-down is the behaviour under
    // test, not a writer to wait for (the file above is already written)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, health) = get_json(&r, "/health").await;
    assert_eq!(s, 200, "{health}");
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["accounts"], json!({"total": 1, "ok": 1}));
    let (_, accounts) = get_json(&r, "/health/accounts").await;
    assert_eq!(accounts["accounts"][0]["state"], "ok", "{accounts}");
    assert_eq!(accounts["accounts"][0]["refresh_error"], Value::Null);
    let (s, _, _) = r.chat(openai_body()).await;
    assert_eq!(s, 200);
}

// ---------------------------------------------------------------------------------------------
// issue 17 item 7: an adopted token that the service refuses

#[tokio::test]
async fn an_adopted_token_that_is_refused_leads_to_a_real_refresh_in_the_same_request() {
    let dir = tempfile::tempdir().unwrap();
    // the gateway starts on a token the IDE got (A1, R1)
    let path = creds_file(
        dir.path(),
        json!({"refreshToken": "mock-refresh-0", "expiresAt": "2020-01-01T00:00:00.000Z",
                "provider": "Github"}),
    );
    let r = on_file(&path, |_| {}).await;
    // startup refreshed: the gateway holds mock-access-1 / mock-refresh-1, also in the file
    assert_eq!(read_json(&path)["refreshToken"], "mock-refresh-1");
    // the IDE rotates (A2, R2), writes the file; then a second rotation elsewhere revokes
    // every access token issued so far, A2 included
    let (a2, r2) = ide_refresh(&r.mock, "mock-refresh-1").await;
    assert_eq!(
        (a2.as_str(), r2.as_str()),
        ("mock-access-2", "mock-refresh-2")
    );
    write_json(
        &path,
        &json!({"accessToken": a2, "refreshToken": r2, "expiresAt": in_secs(3600),
                "provider": "Github"}),
    );
    r.mock.revoke_access_tokens();
    let generate_before = r.mock.requests_to("/generateAssistantResponse").len();
    let refreshes_before = r.mock.desktop_refreshes();
    let (s, _, b) = r.chat(openai_body()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let tokens: Vec<Option<String>> = r.mock.requests_to("/generateAssistantResponse")
        [generate_before..]
        .iter()
        .map(|q| q.token.clone())
        .collect();
    assert_eq!(
        tokens,
        [
            Some("mock-access-1".to_owned()),
            Some("mock-access-2".to_owned()),
            Some("mock-access-3".to_owned())
        ],
        "its own token, the adopted one, then the one from its real refresh"
    );
    assert_eq!(r.mock.desktop_refreshes(), refreshes_before + 1);
    let last_refresh = r
        .mock
        .requests_to("/refreshToken")
        .last()
        .unwrap()
        .body
        .clone();
    assert_eq!(
        last_refresh,
        json!({"refreshToken": "mock-refresh-2"}),
        "the source's current refresh token"
    );
    let on_disk = read_json(&path);
    assert_eq!(on_disk["accessToken"], "mock-access-3");
    assert_eq!(on_disk["refreshToken"], "mock-refresh-3");
    assert_eq!(on_disk["provider"], "Github");
}

// ---------------------------------------------------------------------------------------------
// item 5: a kiro-cli database held locked by another program

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_kiro_cli_database_delays_the_refresh_by_the_lock_timeout_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite3");
    common::make_cli_db(
        &db,
        json!({"access_token": "dead", "refresh_token": "mock-refresh-0",
               "expires_at": "2020-01-01T00:00:00Z", "region": "us-east-1"}),
    );
    let db_path = db.clone();
    let r = start_with(MockConfig::default(), move |c: &mut Config| {
        c.refresh_token = None;
        c.kiro_cli_db_file = Some(db_path);
        c.fake_reasoning = false;
        c.credentials_lock_timeout_secs = 1.0;
        // one attempt: a refresh that does not fit in the first-token timeout is a 504
        c.first_token_timeout_secs = 2.5;
        c.first_token_max_retries = 1;
    })
    .await;
    assert_eq!(common::cli_token(&db)["refresh_token"], "mock-refresh-1");
    // kiro-cli (here: another connection) holds the database's exclusive lock for 4 s
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let db_path = db.clone();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db_path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        // the lock held for 4 s is the situation under test, not a wait for a writer
        std::thread::sleep(Duration::from_secs(4));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    r.mock.revoke_access_tokens();
    let refreshes = r.mock.oidc_refreshes();
    let started = tokio::time::Instant::now();
    let (s, _, b) = r.chat(openai_body()).await;
    let took = started.elapsed();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(
        took >= Duration::from_secs(1),
        "it waited for the lock: {took:?}"
    );
    assert_eq!(r.mock.oidc_refreshes(), refreshes + 1);
    assert!(
        r.gateway.parts.tokens.status().unsaved_rotation,
        "the write-back failed while the database was locked"
    );
    holder.join().unwrap();
    // the rotation could not be written while the database was locked: it is, once it is not
    // the background retry (1 s, then 2 s, ...) writes it once the lock is gone
    tokio::time::timeout(Duration::from_secs(10), r.gateway.parts.tokens.wait_saved())
        .await
        .expect("the rotation was written back within 10 s of the lock going");
    let on_disk = common::cli_token(&db);
    assert_eq!(on_disk["refresh_token"], "mock-refresh-2");
    assert_eq!(on_disk["access_token"], "mock-access-2");
    assert_eq!(on_disk["region"], "us-east-1");
}

// ---------------------------------------------------------------------------------------------
// item 9: a write-back cut short by kill -9

/// What a write-back killed between writing its temp file and renaming it leaves behind: the
/// file with a refresh token the service has rotated away, the new one in the temp file.
#[tokio::test]
async fn a_write_back_cut_short_is_recovered_from_its_temp_file_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "spent-0",
                "expiresAt": "2020-01-01T00:00:00.000Z", "provider": "Github"}),
    );
    let set_mtime = |p: &Path, t: SystemTime| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    let file_time = SystemTime::now() - Duration::from_secs(60);
    set_mtime(&path, file_time);
    // a stale leftover from long ago, a half-written one, and the complete new one
    let stale = dir.path().join(".kiro-auth-token.json.tmp-0001");
    std::fs::write(
        &stale,
        json!({"accessToken": "older", "refreshToken": "ancient"}).to_string(),
    )
    .unwrap();
    set_mtime(&stale, file_time - Duration::from_secs(3600));
    let partial = dir.path().join(".kiro-auth-token.json.tmp-0002");
    std::fs::write(&partial, "{\n  \"accessToken\": \"rotated-acc").unwrap();
    let orphan = dir.path().join(".kiro-auth-token.json.tmp-0003");
    std::fs::write(
        &orphan,
        serde_json::to_string_pretty(&json!({"accessToken": "access-1",
            "refreshToken": "rotated-1", "expiresAt": in_secs(3600), "provider": "Github"}))
        .unwrap(),
    )
    .unwrap();
    // the service accepts only what the interrupted refresh got
    let mock_cfg = MockConfig {
        initial_refresh_token: "rotated-1".into(),
        initial_access_token: Some("access-1".into()),
        ..Default::default()
    };
    let r = common::start_on_creds_file(mock_cfg, &path, |c: &mut Config| {
        c.fake_reasoning = false;
    })
    .await;
    let (s, _, b) = r.chat(openai_body()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        r.mock.desktop_refreshes(),
        0,
        "the recovered token was used"
    );
    let on_disk = read_json(&path);
    assert_eq!(on_disk["refreshToken"], "rotated-1");
    assert_eq!(on_disk["accessToken"], "access-1");
    assert_eq!(on_disk["provider"], "Github");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["kiro-auth-token.json", "kiro-auth-token.json.lock"],
        "no temp file is left"
    );
    // and the recovered refresh token refreshes
    r.mock.revoke_access_tokens();
    let (s, _, _) = r.chat(openai_body()).await;
    assert_eq!(s, 200);
    assert_eq!(r.mock.desktop_refreshes(), 1);
    assert_eq!(read_json(&path)["refreshToken"], "mock-refresh-1");
}

// ---------------------------------------------------------------------------------------------
// item 10: a read-only credentials folder (the file itself writable)

/// The real binary, as user `nobody` when the tests run as root (root writes anywhere, so a
/// read-only folder would test nothing).
#[cfg(unix)]
struct Binary {
    child: std::process::Child,
    url: String,
}

#[cfg(unix)]
impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
fn spawn_binary(dir: &Path, creds: &Path, mock: &MockKiro, uid: Option<u32>) -> Binary {
    use std::os::unix::process::CommandExt;
    let mut cmd = common::binary_on_creds_file(dir, creds, mock, "test-key");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    // killed on drop, also when it does not start
    let mut gw = Binary {
        child: cmd.spawn().unwrap(),
        url: String::new(),
    };
    gw.url = common::listening_url(&mut gw.child);
    gw
}

#[cfg(unix)]
async fn chat_binary(b: &Binary) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    let client = common::http_client();
    let req = http::Request::post(format!("{}/v1/chat/completions", b.url))
        .header("authorization", "Bearer test-key")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            openai_body().to_string(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_folder_gets_the_rotated_token_written_in_place_and_it_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let folder = dir.path().join("sso-cache");
    std::fs::create_dir(&folder).unwrap();
    let creds = creds_file(
        &folder,
        json!({"refreshToken": "mock-refresh-0", "expiresAt": "2020-01-01T00:00:00.000Z",
                "provider": "Github"}),
    );
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    // who runs the tests: the owner of a file just created
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&creds).unwrap()) == 0;
    let uid = root.then_some(65534); // nobody
    if let Some(uid) = uid {
        std::os::unix::fs::chown(&creds, Some(uid), Some(uid)).unwrap();
    }
    // the folder: nobody (or we) may read it and write the file, but not create files in it
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
    {
        let gw = spawn_binary(dir.path(), &creds, &mock, uid);
        let (s, body) = chat_binary(&gw).await;
        assert_eq!(s, 200, "{body}");
    }
    assert_eq!(mock.desktop_refreshes(), 1);
    let on_disk = read_json(&creds);
    assert_eq!(on_disk["refreshToken"], "mock-refresh-1", "{on_disk}");
    assert_eq!(on_disk["accessToken"], "mock-access-1");
    assert_eq!(on_disk["provider"], "Github");
    let names: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["kiro-auth-token.json"], "nothing else was created");
    // a restart finds the rotated token: no refresh, and the next refresh is not refused
    let gw = spawn_binary(dir.path(), &creds, &mock, uid);
    let (s, body) = chat_binary(&gw).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(mock.desktop_refreshes(), 1);
    mock.revoke_access_tokens();
    let (s, body) = chat_binary(&gw).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(mock.desktop_refreshes(), 2);
    assert_eq!(read_json(&creds)["refreshToken"], "mock-refresh-2");
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
}
