//! Credentials shared with a running Kiro IDE, kiro-cli or a second gateway: re-read before
//! refresh, the lock across read-refresh-write, re-read and retry after a refused refresh,
//! serving a still-valid token, merged write-back, and SQLITE_READONLY.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{
    cli_token, creds_file, ide_refresh, in_secs, make_cli_db, manager, read_json, write_json,
};
use kiro_gateway::auth::lock::{lock_path, open_lock_file};
use kiro_gateway::auth::{CredentialSettings, SourceLock, TokenConfig, TokenManager};
use kiro_gateway::mock::{MockConfig, MockKiro};
use serde_json::json;

fn json_manager(mock: &MockKiro, path: &Path) -> TokenManager {
    manager(
        mock,
        CredentialSettings {
            creds_file: Some(path.to_path_buf()),
            ..Default::default()
        },
        TokenConfig::default(),
    )
}

fn db_manager(mock: &MockKiro, db: &Path, readonly: bool) -> TokenManager {
    manager(
        mock,
        CredentialSettings {
            cli_db_file: Some(db.to_path_buf()),
            sqlite_readonly: readonly,
            ..Default::default()
        },
        TokenConfig::default(),
    )
}

// ---------------------------------------------------------------------------------------------
// re-read before refresh

#[tokio::test]
async fn reread_before_refresh_adopts_a_refresh_token_rotated_by_the_ide() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(-60)}),
    );
    let tm = json_manager(&mock, &path);
    // the IDE refreshes (mock-refresh-0 is now spent) and writes a token that is already
    // due again: only its refresh token is worth taking
    let (_, r1) = ide_refresh(&mock, "mock-refresh-0").await.unwrap();
    write_json(
        &path,
        &json!({"accessToken": "ide-access", "refreshToken": r1, "expiresAt": in_secs(-1)}),
    );
    let t = tm.access_token().await.unwrap();
    assert_eq!(t.token.expose(), "mock-access-2");
    // one refresh by the IDE, one by us, none refused
    assert_eq!(mock.desktop_refreshes(), 2);
    assert_eq!(tm.refresh_count(), 1);
    assert_eq!(
        read_json(&path)["refreshToken"],
        mock.current_refresh_token()
    );
}

#[tokio::test]
async fn reread_before_refresh_adopts_newer_tokens_from_the_kiro_cli_database() {
    let mock = MockKiro::start(MockConfig {
        initial_access_token: Some("cli-access".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite3");
    make_cli_db(
        &db,
        json!({"access_token": "old", "refresh_token": "mock-refresh-0", "expires_at": in_secs(10)}),
    );
    let tm = db_manager(&mock, &db, false);
    // kiro-cli refreshes in the meantime
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE auth_kv SET value = ?1 WHERE key = 'kirocli:odic:token'",
        [json!({"access_token": "cli-access", "refresh_token": "mock-refresh-0", "expires_at": in_secs(3600)}).to_string()],
    )
    .unwrap();
    assert_eq!(
        tm.access_token().await.unwrap().token.expose(),
        "cli-access"
    );
    assert_eq!(mock.oidc_refreshes(), 0);
}

// ---------------------------------------------------------------------------------------------
// the lock across read-refresh-write

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_on_one_json_file_never_both_refresh() {
    let mock = MockKiro::start(MockConfig {
        refresh_delay: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(-60)}),
    );
    // two managers, as two gateway processes would have: separate state, one file
    let (a, b) = (json_manager(&mock, &path), json_manager(&mock, &path));
    let (ta, tb) = tokio::join!(a.access_token(), b.access_token());
    let (ta, tb) = (ta.unwrap(), tb.unwrap());
    assert_eq!(ta.token, tb.token, "the second adopted the first's token");
    assert_eq!(mock.desktop_refreshes(), 1);
    assert_eq!(
        read_json(&path)["refreshToken"],
        mock.current_refresh_token()
    );
    // both get a 403 for that token at once: still one refresh between the two processes
    mock.revoke_access_tokens();
    let (fa, fb) = tokio::join!(a.force_refresh(&ta), b.force_refresh(&tb));
    assert_eq!(fa.unwrap().token, fb.unwrap().token);
    assert_eq!(mock.desktop_refreshes(), 2);
    assert_eq!(a.refresh_count() + b.refresh_count(), 2);
    assert_eq!(
        read_json(&path)["refreshToken"],
        mock.current_refresh_token()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_on_one_kiro_cli_database_never_both_refresh() {
    let mock = MockKiro::start(MockConfig {
        refresh_delay: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite3");
    make_cli_db(
        &db,
        json!({"access_token": "old", "refresh_token": "mock-refresh-0", "expires_at": in_secs(-5),
               "region": "us-east-1", "scopes": ["codewhisperer:completions"]}),
    );
    let (a, b) = (db_manager(&mock, &db, false), db_manager(&mock, &db, false));
    let (ta, tb) = tokio::join!(a.access_token(), b.access_token());
    assert_eq!(ta.unwrap().token, tb.unwrap().token);
    assert_eq!(mock.oidc_refreshes(), 1);
    assert_eq!(a.refresh_count() + b.refresh_count(), 1);
    assert_eq!(
        cli_token(&db)["refresh_token"],
        mock.current_refresh_token()
    );
}

#[tokio::test]
async fn a_crashed_lock_holder_does_not_wedge_and_a_hung_one_times_out() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(-60)}),
    );
    let src = kiro_gateway::auth::CredentialSource::JsonFile { path: path.clone() };
    // the gateway creates the lock file (private); flock(1) would create it with the umask's mode
    drop(open_lock_file(&path).unwrap());
    // another process holds the lock (flock(1), the same advisory lock)
    // (-o: the `sleep` child does not inherit the locked descriptor, so killing flock(1)
    // really is the holder dying)
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(lock_path(&path))
        .args(["sleep", "20"])
        .spawn()
        .expect("flock(1) from util-linux");
    let src_ref = &src;
    common::eventually_async(
        "flock(1) to take the lock",
        Duration::from_secs(5),
        || async { !SourceLock::acquire(src_ref, Duration::ZERO).await.is_held() },
    )
    .await;
    // a hung holder: the refresh waits for the timeout, then goes ahead without the lock
    let tm = manager(
        &mock,
        CredentialSettings {
            creds_file: Some(path.clone()),
            ..Default::default()
        },
        TokenConfig {
            lock_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        tm.access_token().await.unwrap().token.expose(),
        "mock-access-1"
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));
    // the holder crashes: its lock is gone with it
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(SourceLock::acquire(&src, Duration::from_secs(2))
        .await
        .is_held());
    // the lock file is never deleted and is private
    let f = open_lock_file(&path).unwrap();
    drop(f);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lock_path(&path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}

#[tokio::test]
async fn wait_saved_returns_at_once_when_the_rotation_is_already_written() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(-60)}),
    );
    let tm = json_manager(&mock, &path);
    assert_eq!(
        tm.access_token().await.unwrap().token.expose(),
        "mock-access-1"
    );
    // the write-back happened inside the refresh: nothing is left to wait for
    assert!(!tm.status().unsaved_rotation);
    tokio::time::timeout(Duration::from_millis(100), tm.wait_saved())
        .await
        .expect("nothing unsaved: wait_saved must not wait");
    assert_eq!(read_json(&path)["refreshToken"], "mock-refresh-1");
}

// ---------------------------------------------------------------------------------------------
// refused refresh: re-read and retry; a still-valid token keeps serving

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_rereads_the_file_and_retries_with_what_is_there() {
    let mock = MockKiro::start(MockConfig {
        refresh_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(-60)}),
    );
    let tm = json_manager(&mock, &path);
    // the IDE (which knows nothing of our lock) refreshes at the same moment, wins, and
    // writes its rotation while our refresh is still in flight
    let ide = async {
        let (_, r1) = ide_refresh(&mock, "mock-refresh-0").await.unwrap();
        write_json(
            &path,
            &json!({"accessToken": "ide-access", "refreshToken": r1, "expiresAt": in_secs(-1)}),
        );
    };
    let ours = async {
        // lets the IDE's refresh start first: the race under test, not a wait for a writer
        tokio::time::sleep(Duration::from_millis(50)).await;
        tm.access_token().await
    };
    let ((), t) = tokio::join!(ide, ours);
    let t = t.unwrap();
    assert_eq!(t.token.expose(), "mock-access-2");
    // IDE 1 + ours refused 1 + ours retried 1
    assert_eq!(mock.desktop_refreshes(), 3);
    assert_eq!(tm.refresh_count(), 2);
    assert_eq!(
        read_json(&path)["refreshToken"],
        mock.current_refresh_token()
    );
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_refused_refresh_keeps_serving_a_still_valid_token_with_a_warning() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mock = MockKiro::start(MockConfig {
        initial_access_token: Some("still-valid".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    mock.revoke_refresh_token();
    let dir = tempfile::tempdir().unwrap();
    // inside the 5-minute margin, but 2 minutes from expiry
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "still-valid", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(120)}),
    );
    let tm = json_manager(&mock, &path);
    for _ in 0..3 {
        assert_eq!(
            tm.access_token().await.unwrap().token.expose(),
            "still-valid"
        );
    }
    // one refused refresh (the cool-down spares the auth service the other two)
    assert_eq!(mock.desktop_refreshes(), 1);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("has not expired yet"), "{text}");
    assert!(
        !text.contains("mock-refresh-0") && !text.contains("still-valid"),
        "no secrets: {text}"
    );
    // once it has expired, the refusal reaches the caller
    write_json(
        &path,
        &json!({"accessToken": "still-valid", "refreshToken": "mock-refresh-0", "expiresAt": in_secs(-1)}),
    );
    let tm = json_manager(&mock, &path);
    assert!(tm.access_token().await.is_err());
}

// ---------------------------------------------------------------------------------------------
// merged write-back

#[tokio::test]
async fn json_write_back_keeps_unknown_fields_and_the_date_style() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // the Python original's style: +00:00 and microseconds
    let path = creds_file(
        dir.path(),
        json!({"accessToken": "old", "refreshToken": "mock-refresh-0",
                "expiresAt": "2020-01-01T00:00:00.123456+00:00",
                "provider": "Github", "authMethod": "social", "nested": {"keep": [1, 2]}}),
    );
    let tm = json_manager(&mock, &path);
    tm.access_token().await.unwrap();
    let v = read_json(&path);
    assert_eq!(v["accessToken"], "mock-access-1");
    assert_eq!(v["refreshToken"], mock.current_refresh_token());
    assert_eq!(v["provider"], "Github");
    assert_eq!(v["authMethod"], "social");
    assert_eq!(v["nested"], json!({"keep": [1, 2]}));
    let exp = v["expiresAt"].as_str().unwrap();
    assert!(exp.ends_with("+00:00"), "{exp}");
    assert_eq!(
        exp.split_once('.').unwrap().1.len(),
        "123456+00:00".len(),
        "{exp}"
    );
    // and the IDE's own style, .000Z
    write_json(
        &path,
        &json!({"accessToken": "old", "refreshToken": mock.current_refresh_token(),
                "expiresAt": "2020-01-01T00:00:00.000Z"}),
    );
    json_manager(&mock, &path).access_token().await.unwrap();
    let exp = read_json(&path)["expiresAt"].as_str().unwrap().to_owned();
    assert!(
        exp.ends_with('Z') && exp.split_once('.').unwrap().1.len() == 4,
        "{exp}"
    );
}

#[tokio::test]
async fn sqlite_write_back_keeps_profile_arn_scopes_and_unknown_members() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite3");
    let arn = "arn:aws:codewhisperer:us-east-1:111111111111:profile/KEEP";
    make_cli_db(
        &db,
        json!({"access_token": "old", "refresh_token": "mock-refresh-0", "expires_at": in_secs(-5),
               "region": "us-east-1", "scopes": ["codewhisperer:completions", "codewhisperer:conversations"],
               "profile_arn": arn, "start_url": "https://x.awsapps.com/start", "future_member": {"a": 1}}),
    );
    let tm = db_manager(&mock, &db, false);
    tm.access_token().await.unwrap();
    let v = cli_token(&db);
    assert_eq!(v["access_token"], "mock-access-1");
    assert_eq!(v["refresh_token"], mock.current_refresh_token());
    assert_eq!(v["profile_arn"], arn);
    assert_eq!(
        v["scopes"],
        json!(["codewhisperer:completions", "codewhisperer:conversations"])
    );
    assert_eq!(v["start_url"], "https://x.awsapps.com/start");
    assert_eq!(v["future_member"], json!({"a": 1}));
    assert_eq!(v["region"], "us-east-1");
}

// ---------------------------------------------------------------------------------------------
// SQLITE_READONLY

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let m = std::fs::metadata(&p).unwrap();
            (p.clone(), std::fs::read(&p).unwrap(), m.modified().unwrap())
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn sqlite_readonly_never_writes() {
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite3");
    make_cli_db(
        &db,
        json!({"access_token": "old", "refresh_token": "mock-refresh-0", "expires_at": in_secs(-5)}),
    );
    let before = snapshot(dir.path());
    // so that any later write gets a different mtime: not a wait for a writer
    tokio::time::sleep(Duration::from_millis(20)).await;
    let tm = db_manager(&mock, &db, true);
    let t = tm.access_token().await.unwrap();
    assert_eq!(t.token.expose(), "mock-access-1");
    // a forced refresh too
    tm.force_refresh(&t).await.unwrap();
    assert_eq!(mock.oidc_refreshes(), 2);
    assert_eq!(
        snapshot(dir.path()),
        before,
        "bytes, mtimes and the file list unchanged"
    );
    assert_eq!(cli_token(&db)["refresh_token"], "mock-refresh-0");
}

// ---------------------------------------------------------------------------------------------
// the token-state seam

/// Two managers (two gateways) for one account on `REFRESH_TOKEN`, with their token state in
/// one store: the first refreshes, the second hands out that token without a refresh of its
/// own (with a store each, the second would refresh too, with a spent refresh token).
#[tokio::test]
async fn two_managers_sharing_a_token_store_refresh_once() {
    use kiro_gateway::auth::{source, MemoryTokenStore, TokenStore};
    use kiro_gateway::kiro::KiroHeaders;
    let mock = MockKiro::start(MockConfig::default()).await.unwrap();
    let settings = CredentialSettings {
        refresh_token: Some(kiro_gateway::Secret::new(
            mock.config().initial_refresh_token.clone(),
        )),
        ..Default::default()
    };
    let shared: Arc<Mutex<Option<Arc<dyn TokenStore>>>> = Arc::default();
    let build = |store: &mut dyn FnMut(kiro_gateway::auth::TokenState) -> Arc<dyn TokenStore>| {
        let (creds, src) = source::load(&settings).unwrap();
        TokenManager::new_with_store(
            creds,
            src,
            &common::endpoints(&mock),
            common::http(),
            KiroHeaders::new("test-fingerprint"),
            TokenConfig::default(),
            store,
        )
        .unwrap()
    };
    let first = build(&mut |seed| {
        let s: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new(seed));
        *shared.lock().unwrap() = Some(s.clone());
        s
    });
    let second = build(&mut |_seed| shared.lock().unwrap().clone().unwrap());
    let t1 = first.access_token().await.unwrap();
    let t2 = second.access_token().await.unwrap();
    assert_eq!(t1.token.expose(), "mock-access-1");
    assert_eq!(t2.token.expose(), "mock-access-1");
    assert_eq!(t2.generation, t1.generation);
    assert_eq!(mock.desktop_refreshes(), 1);
    assert_eq!((first.refresh_count(), second.refresh_count()), (1, 0));
}
