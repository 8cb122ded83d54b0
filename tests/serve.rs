//! `amfmn serve`: the router in process (every endpoint, its errors, who may see what, limits),
//! the same scores as `retrieve`, and the binary under `kill -9` and injected crashes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amfmn::serve::auth::{self, Role};
use amfmn::serve::{store, ServeConfig, Service};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{amfmn_in, stderr, stdout};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use tower::ServiceExt;

/// A solid-colour PNG of `side` pixels.
fn png(colour: [u8; 3], side: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let image = image::RgbImage::from_pixel(side, side, image::Rgb(colour));
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

const COLOURS: [[u8; 3]; 5] = [[200, 30, 30], [30, 180, 40], [40, 60, 210], [230, 210, 40], [190, 40, 200]];

/// A checkpoint, a data folder and three users' tokens: admin, ana and bo.
struct Fixture {
    dir: tempfile::TempDir,
    checkpoint: PathBuf,
    admin: String,
    ana: String,
    bo: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = common::fresh_checkpoint(dir.path());
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let mut db = store::open(&dir.path().join("data").join(store::DATABASE), true).unwrap();
    let admin = auth::add_token(&mut db, "admin", Some(Role::Admin), "test").unwrap();
    let ana = auth::add_token(&mut db, "ana", None, "test").unwrap();
    let bo = auth::add_token(&mut db, "bo", None, "test").unwrap();
    Fixture { dir, checkpoint, admin, ana, bo }
}

impl Fixture {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config(&self) -> ServeConfig {
        ServeConfig {
            data: self.data(),
            checkpoint: self.checkpoint.clone(),
            device: tch::Device::Cpu,
            max_upload: 64 * 1024,
            max_pixels: 1_000_000,
            queue: 16,
            public_read: false,
            reencode: false,
            import: None,
        }
    }
}

/// A response: status, headers and the body as JSON (null when it is not JSON).
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    bytes: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

async fn call(router: &axum::Router, method: &str, uri: &str, token: Option<&str>, body: Body, kind: &str) -> Reply {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", kind);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec();
    Reply { status: parts.status, headers: parts.headers, bytes }
}

async fn get(router: &axum::Router, uri: &str, token: &str) -> Reply {
    call(router, "GET", uri, Some(token), Body::empty(), "application/json").await
}

async fn post_json(router: &axum::Router, uri: &str, token: Option<&str>, body: Value) -> Reply {
    call(router, "POST", uri, token, Body::from(body.to_string()), "application/json").await
}

async fn upload(router: &axum::Router, token: &str, bytes: Vec<u8>, query: &str) -> Reply {
    call(router, "POST", &format!("/api/v1/images?{query}"), Some(token), Body::from(bytes), "image/png").await
}

/// Waits (at most 60 s) until image `id` is no longer pending; returns its status.
async fn settled(router: &axum::Router, token: &str, id: i64) -> String {
    let began = Instant::now();
    loop {
        let status =
            get(router, &format!("/api/v1/images/{id}"), token).await.json()["status"].as_str().unwrap().to_owned();
        if status != "pending" || began.elapsed() > Duration::from_secs(60) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every file under `dir` with its size, sorted.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.to_string_lossy().contains("amfmn.sqlite") {
                files.push((path.clone(), std::fs::metadata(&path).unwrap().len()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_encoded_searched_changed_and_deleted() {
    let f = fixture();
    let service = Service::start(&f.config()).unwrap();
    let router = service.router();
    assert_eq!(call(&router, "GET", "/healthz", None, Body::empty(), "").await.status, StatusCode::OK);
    assert_eq!(call(&router, "GET", "/readyz", None, Body::empty(), "").await.status, StatusCode::OK);
    let first = upload(&router, &f.ana, png(COLOURS[0], 64), "name=red%20one&visibility=public").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.json());
    let id = first.json()["id"].as_i64().unwrap();
    assert_eq!(first.headers["location"], format!("/api/v1/images/{id}").as_str());
    assert_eq!(first.json()["status"], "pending");
    let again = upload(&router, &f.ana, png(COLOURS[0], 64), "").await;
    assert_eq!((again.status, again.json()["id"].as_i64()), (StatusCode::OK, Some(id)), "same bytes, same owner");
    let bos = upload(&router, &f.bo, png(COLOURS[0], 64), "").await;
    assert_eq!(bos.status, StatusCode::ACCEPTED, "same bytes, another owner: another image");
    let mut ids = vec![id, bos.json()["id"].as_i64().unwrap()];
    for colour in &COLOURS[1..] {
        ids.push(upload(&router, &f.ana, png(*colour, 64), "").await.json()["id"].as_i64().unwrap());
    }
    for &id in &ids {
        assert_eq!(settled(&router, &f.admin, id).await, "ready");
    }
    let meta = get(&router, &format!("/api/v1/images/{id}"), &f.bo).await.json();
    assert_eq!(
        (meta["name"].as_str(), meta["owner"].as_str(), meta["width"].as_i64()),
        (Some("red one"), Some("ana"), Some(64))
    );
    let file = get(&router, &format!("/api/v1/images/{id}/file"), &f.bo).await;
    assert_eq!((file.headers["content-type"].to_str().unwrap(), file.bytes), ("image/png", png(COLOURS[0], 64)));
    let thumb = get(&router, &format!("/api/v1/images/{id}/thumbnail"), &f.ana).await;
    let thumb = image::load_from_memory(&thumb.bytes).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (64, 64), "never enlarged");

    // Who sees what: ana her 5 (one public), bo his own and ana's public one, the admin all 6.
    let search = |token: String| {
        let router = router.clone();
        async move {
            post_json(&router, "/api/v1/search/text", Some(&token), json!({"query": "red boat", "limit": 100}))
                .await
                .json()
        }
    };
    let (ana, bo, admin) = (search(f.ana.clone()).await, search(f.bo.clone()).await, search(f.admin.clone()).await);
    assert_eq!(
        (ana["total_visible"].as_i64(), bo["total_visible"].as_i64(), admin["total_visible"].as_i64()),
        (Some(5), Some(2), Some(6))
    );
    let bo_ids: Vec<i64> = bo["results"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(bo_ids.iter().copied().collect::<std::collections::BTreeSet<_>>(), [ids[0], ids[1]].into());
    let ranks: Vec<i64> = admin["results"].as_array().unwrap().iter().map(|r| r["rank"].as_i64().unwrap()).collect();
    assert_eq!(ranks, [1, 2, 3, 4, 5, 6]);
    let scores: Vec<f64> = admin["results"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let paged = post_json(
        &router,
        "/api/v1/search/text",
        Some(&f.admin),
        json!({"query": "red boat", "limit": 2, "offset": 3}),
    )
    .await
    .json();
    assert_eq!(paged["results"], json!(admin["results"].as_array().unwrap()[3..5]), "a page is a slice of the ranking");

    // Search by image: the image itself first, at cosine 1.
    let by_id = post_json(&router, "/api/v1/search/image", Some(&f.ana), json!({"image_id": ids[3]})).await.json();
    assert_eq!(by_id["results"][0]["id"].as_i64(), Some(ids[3]));
    assert!((by_id["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    let by_bytes = call(
        &router,
        "POST",
        "/api/v1/search/image?limit=3",
        Some(&f.ana),
        Body::from(png(COLOURS[2], 64)),
        "image/png",
    )
    .await;
    assert_eq!(by_bytes.json()["results"][0]["id"].as_i64(), Some(ids[3]), "{:?}", by_bytes.json());
    assert_eq!(by_bytes.json()["results"].as_array().unwrap().len(), 3);

    // Visibility changes and deletes reach the search at once.
    let patch = call(
        &router,
        "PATCH",
        &format!("/api/v1/images/{}", ids[0]),
        Some(&f.ana),
        Body::from(r#"{"visibility":"private"}"#),
        "application/json",
    )
    .await;
    assert_eq!((patch.status, patch.json()["visibility"].as_str()), (StatusCode::OK, Some("private")));
    assert_eq!(search(f.bo.clone()).await["total_visible"], 1);
    let blob = f.data().join("blobs").join(&first.json()["sha256"].as_str().unwrap()[..2]);
    let delete = call(&router, "DELETE", &format!("/api/v1/images/{}", ids[0]), Some(&f.ana), Body::empty(), "").await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read_dir(&blob).unwrap().count(), 1, "bo's copy still refers to the original");
    call(&router, "DELETE", &format!("/api/v1/images/{}", ids[1]), Some(&f.admin), Body::empty(), "").await;
    assert_eq!(std::fs::read_dir(&blob).unwrap().count(), 0, "the last reference gone, the original goes");
    assert_eq!(search(f.admin.clone()).await["total_visible"], 4);
    assert_eq!(get(&router, &format!("/api/v1/images/{}", ids[0]), &f.admin).await.status, StatusCode::NOT_FOUND);

    let status = get(&router, "/api/v1/status", &f.admin).await.json();
    assert_eq!((status["images"]["ready"].as_i64(), status["searchable"].as_i64()), (Some(4), Some(4)));
    assert_eq!(get(&router, "/api/v1/status", &f.ana).await.status, StatusCode::FORBIDDEN);
    let listed = get(&router, "/api/v1/images?limit=2", &f.ana).await.json();
    assert_eq!((listed["images"].as_array().unwrap().len(), listed["next_after"].as_i64()), (2, Some(ids[3])));
    let rest = get(&router, &format!("/api/v1/images?after={}", ids[3]), &f.ana).await.json();
    assert_eq!(rest["images"].as_array().unwrap().len(), 2);
    service.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_valid_token_and_hides_what_the_caller_may_not_see() {
    let f = fixture();
    let service = Service::start(&f.config()).unwrap();
    let router = service.router();
    let private = upload(&router, &f.ana, png(COLOURS[1], 32), "").await.json()["id"].as_i64().unwrap();
    let public = upload(&router, &f.ana, png(COLOURS[2], 32), "visibility=public").await.json()["id"].as_i64().unwrap();
    settled(&router, &f.ana, public).await;
    let revoked = {
        let mut db = store::open(&f.data().join(store::DATABASE), false).unwrap();
        let token = auth::add_token(&mut db, "cy", None, "").unwrap();
        auth::revoke_tokens(&db, "cy").unwrap();
        token
    };
    let routes = [
        ("POST", "/api/v1/images".to_owned()),
        ("GET", "/api/v1/images".to_owned()),
        ("GET", format!("/api/v1/images/{public}")),
        ("PATCH", format!("/api/v1/images/{public}")),
        ("DELETE", format!("/api/v1/images/{public}")),
        ("GET", format!("/api/v1/images/{public}/file")),
        ("GET", format!("/api/v1/images/{public}/thumbnail")),
        ("POST", "/api/v1/search/text".to_owned()),
        ("POST", "/api/v1/search/image".to_owned()),
        ("GET", "/api/v1/status".to_owned()),
    ];
    for (method, uri) in &routes {
        for token in [None, Some("amfmn_wrong"), Some(revoked.as_str())] {
            let reply = call(&router, method, uri, token, Body::from("{}"), "application/json").await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri} with {token:?}");
            assert_eq!(reply.json()["error"]["code"], "unauthorized");
            assert!(reply.headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
            assert_eq!(reply.headers["x-content-type-options"], "nosniff");
            assert_eq!(reply.headers["referrer-policy"], "no-referrer");
        }
    }
    for path in ["", "/file", "/thumbnail"] {
        let reply = get(&router, &format!("/api/v1/images/{private}{path}"), &f.bo).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "bo must not learn that {private}{path} exists");
        assert_eq!(reply.json(), get(&router, &format!("/api/v1/images/999999{path}"), &f.bo).await.json());
    }
    let delete = call(&router, "DELETE", &format!("/api/v1/images/{private}"), Some(&f.bo), Body::empty(), "").await;
    assert_eq!(delete.status, StatusCode::NOT_FOUND);
    let patch = call(
        &router,
        "PATCH",
        &format!("/api/v1/images/{public}"),
        Some(&f.bo),
        Body::from(r#"{"visibility":"private"}"#),
        "application/json",
    )
    .await;
    assert_eq!(patch.status, StatusCode::FORBIDDEN, "bo sees ana's public image but may not change it");
    let by_id = post_json(&router, "/api/v1/search/image", Some(&f.bo), json!({"image_id": private})).await;
    assert_eq!(by_id.status, StatusCode::NOT_FOUND);

    let before = listing(&f.data());
    let hostile = [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f",
        "%00",
        "1%00",
        "-1",
        "0",
        "01",
        "1e3",
        &"9".repeat(1000),
        "12345678901234567890",
    ];
    for id in hostile {
        let reply = get(&router, &format!("/api/v1/images/{id}"), &f.admin).await;
        assert!(matches!(reply.status.as_u16(), 400 | 404), "{id}: {}", reply.status);
        let file = get(&router, &format!("/api/v1/images/{id}/file"), &f.admin).await;
        assert!(matches!(file.status.as_u16(), 400 | 404), "{id}/file: {}", file.status);
    }
    assert_eq!(get(&router, "/api/v1/images/../../etc/passwd", &f.admin).await.status, StatusCode::NOT_FOUND);
    assert_eq!(listing(&f.data()), before, "nothing in the data folder changed");
    service.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_input_give_one_clear_error() {
    let f = fixture();
    let service = Service::start(&f.config()).unwrap();
    let router = service.router();
    let before = listing(&f.data());
    // A streamed upload past --max-upload (64 KiB) is cut off near the limit.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let chunks = futures_stream(counter);
    let big = call(&router, "POST", "/api/v1/images", Some(&f.ana), Body::from_stream(chunks), "image/png").await;
    assert_eq!((big.status, big.json()["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")));
    let read = sent.load(std::sync::atomic::Ordering::SeqCst) * 8192;
    assert!(read <= 64 * 1024 + 2 * 8192, "read {read} bytes of a 10 MiB body");
    // A PNG header claiming 100000 x 100000 pixels, refused from the header alone.
    let mut bomb = png([1, 2, 3], 1)[..33].to_vec();
    bomb[16..24].copy_from_slice(&[0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0]);
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let began = Instant::now();
    let reply = upload(&router, &f.ana, bomb, "").await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", reply.json());
    assert!(began.elapsed() < Duration::from_secs(2));
    let text = upload(&router, &f.ana, b"this is not an image at all".to_vec(), "").await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let cases = [
        (json!({"query": "red", "colour": 1}), "colour"),
        (json!({"query": "red", "limit": 0}), "limit"),
        (json!({"query": "red", "limit": 101}), "limit"),
        (json!({"query": "red", "offset": 10001}), "offset"),
        (json!({"query": "x".repeat(513)}), "query"),
        (json!({"keywords": "  "}), "query"),
        (json!({"query": 5}), "query"),
    ];
    for (body, field) in cases {
        let reply = post_json(&router, "/api/v1/search/text", Some(&f.ana), body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.json()["error"]["field"], field, "{body}: {:?}", reply.json());
    }
    let unknown = upload(&router, &f.ana, png([0, 0, 0], 8), "owner=bo").await;
    assert_eq!((unknown.status, unknown.json()["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("owner")));
    let huge_json = post_json(&router, "/api/v1/search/text", Some(&f.ana), json!({"query": "y".repeat(70_000)})).await;
    assert_eq!(huge_json.status, StatusCode::PAYLOAD_TOO_LARGE);
    let no_route = get(&router, "/api/v2/anything", &f.ana).await;
    assert_eq!(
        (no_route.status, no_route.json()["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    assert_eq!(listing(&f.data()), before, "refused uploads leave nothing behind");
    service.shutdown().unwrap();
}

/// 1280 chunks of 8 KiB (10 MiB), counting those taken.
fn futures_stream(
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let mut head = png([9, 9, 9], 1);
    head.resize(8192, 0);
    futures_util::stream::iter((0..1280).map(move |k| {
        sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(if k == 0 { head.clone() } else { vec![0; 8192] })
    }))
}

/// PNG's CRC-32 (ISO 3309, reflected, polynomial 0xEDB88320).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn crc32_matches_the_png_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

/// `amfmn serve` running as a process on a free loopback port.
struct Server {
    child: Child,
    base: String,
    /// What it printed on stderr so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    /// The thread that reads its stderr into `log`, until the pipe closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Starts `amfmn serve` on `f`'s data folder, with `env` set; waits for its `listening on` line.
fn start_server(f: &Fixture, env: &[(&str, &str)], extra: &[&str]) -> Server {
    let (data, ckpt) = (f.data(), f.checkpoint.clone());
    let mut command = Command::new(env!("CARGO_BIN_EXE_amfmn"));
    command.args(["serve", "--data", data.to_str().unwrap(), "--checkpoint", ckpt.to_str().unwrap()]);
    command.args(["--listen", "127.0.0.1:0", "--device", "cpu", "--threads", "1"]).args(extra);
    command.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("listening on ");
    let address = address.unwrap_or_else(|| panic!("first line: {line:?}; stderr: {}", log.lock().unwrap()));
    Server { child, base: format!("http://{address}"), log, reader: Some(reader) }
}

impl Server {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// Uploads `bytes`; the status and the JSON body, or `None` when the connection failed.
    fn upload(&self, token: &str, bytes: &[u8]) -> Option<(u16, Value)> {
        let url = format!("{}/api/v1/images", self.base);
        let request = Server::agent().post(&url).header("authorization", &format!("Bearer {token}"));
        let mut response = request.header("content-type", "image/png").send(bytes).ok()?;
        let body = response.body_mut().read_to_string().ok()?;
        Some((response.status().as_u16(), serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    fn get(&self, path: &str, token: &str) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response =
            Server::agent().get(&url).header("authorization", &format!("Bearer {token}")).call().unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    fn search(&self, token: &str, body: Value) -> Value {
        let url = format!("{}/api/v1/search/text", self.base);
        let request = Server::agent().post(&url).header("authorization", &format!("Bearer {token}"));
        let mut response =
            request.header("content-type", "application/json").send(body.to_string().as_bytes()).unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// Waits (at most 120 s) until no image is pending; returns the counts by status.
    fn settle(&self, token: &str) -> Value {
        let began = Instant::now();
        loop {
            let images = self.get("/api/v1/status", token)["images"].clone();
            if images.get("pending").is_none() || began.elapsed() > Duration::from_secs(120) {
                return images;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        // Everything it wrote: the reader ends when the pipe closes.
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

impl Drop for Server {
    /// A failing test must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The data folder's state after a crash, as start-up and a reader see it: integrity, files in
/// `tmp/`, blobs without a row.
fn check_consistent(f: &Fixture) {
    let db = store::open(&f.data().join(store::DATABASE), false).unwrap();
    store::check_integrity(&db).unwrap();
    let referenced = amfmn::serve::images::referenced_blobs(&db).unwrap();
    let blobs: Vec<String> = listing(&f.data().join("blobs"))
        .into_iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs.iter().cloned().collect::<std::collections::HashSet<_>>(), referenced, "blobs = rows");
    assert!(listing(&f.data().join("tmp")).is_empty(), "no temporaries");
}

#[test]
fn acknowledged_uploads_survive_kill_9_and_start_up_repairs_the_rest() {
    let f = fixture();
    let server = start_server(&f, &[], &[]);
    let mut acknowledged = Vec::new();
    for k in 0..50u8 {
        let (status, body) = server.upload(&f.ana, &png([k * 5, 255 - k * 5, k], 16)).unwrap();
        assert_eq!(status, 202, "{body}");
        acknowledged.push(body["id"].as_i64().unwrap());
    }
    server.kill();
    // What a crash mid-upload leaves: a temporary and an original no row refers to.
    std::fs::write(f.data().join("tmp/0123abcd"), b"half an upload").unwrap();
    let orphan = "f".repeat(64);
    std::fs::create_dir_all(f.data().join("blobs/ff")).unwrap();
    std::fs::write(f.data().join("blobs/ff").join(&orphan), b"unreferenced").unwrap();
    let server = start_server(&f, &[], &[]);
    let counts = server.settle(&f.admin);
    assert_eq!(counts, json!({"ready": 50}), "every acknowledged upload was encoded");
    let listed = server.get("/api/v1/images?limit=200", &f.ana)["images"].as_array().unwrap().clone();
    assert_eq!(listed.iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>(), acknowledged);
    assert_eq!(server.search(&f.ana, json!({"keywords": "red", "limit": 5}))["total_visible"], 50);
    let (status, log) = server.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {log}");
    assert!(log.contains("removed 1 unfinished upload(s) and 1 unreferenced original(s)"), "{log}");
    check_consistent(&f);
}

#[test]
fn a_crash_at_any_step_leaves_the_state_before_or_after_it() {
    let f = fixture();
    let cases = [("after_blob", false), ("before_commit", false), ("after_commit", true), ("mid_encode", true)];
    for (k, (point, kept)) in cases.into_iter().enumerate() {
        let mut server = start_server(&f, &[("AMFMN_SERVE_CRASH_AT", point)], &[]);
        let bytes = png([40 * k as u8, 7, 7], 16);
        let reply = server.upload(&f.ana, &bytes);
        let status = server.child.wait().unwrap();
        assert!(!status.success(), "{point}: the server aborted");
        if point != "mid_encode" {
            assert!(reply.is_none(), "{point}: no acknowledgement before the crash: {reply:?}");
        }
        check_consistent_after_restart(&f, point, kept, &sha(&bytes));
    }
}

fn sha(bytes: &[u8]) -> String {
    amfmn::fsutil::sha256_hex(bytes)
}

/// Restarts the server after a crash at `point` and checks the image is there (and encoded) or
/// absent as `kept` says.
fn check_consistent_after_restart(f: &Fixture, point: &str, kept: bool, sha: &str) {
    let server = start_server(f, &[], &[]);
    server.settle(&f.admin);
    let listed = server.get("/api/v1/images?limit=200", &f.admin)["images"].as_array().unwrap().clone();
    let found: Vec<&Value> = listed.iter().filter(|r| r["sha256"] == sha).collect();
    assert_eq!(found.len(), kept as usize, "{point}: {listed:?}");
    assert!(found.iter().all(|r| r["status"] == "ready"), "{point}: {found:?}");
    server.terminate();
    check_consistent(f);
}

#[test]
fn listening_beyond_loopback_needs_allow_remote_and_a_token() {
    let f = fixture();
    let (data, ckpt) = (f.data(), f.checkpoint.clone());
    let args =
        ["serve", "--data", data.to_str().unwrap(), "--checkpoint", ckpt.to_str().unwrap(), "--listen", "0.0.0.0:0"];
    let out = amfmn_in(f.dir.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--listen 0.0.0.0:0: not a loopback address; add --allow-remote"), "{err}");
    let empty = f.dir.path().join("empty");
    let args = [
        "serve",
        "--data",
        empty.to_str().unwrap(),
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
        "--allow-remote",
    ];
    let err = stderr(&amfmn_in(f.dir.path(), &args));
    assert!(err.contains("has no active token; add one first: amfmn serve token add"), "{err}");
    let out = amfmn_in(f.dir.path(), &["serve", "token", "add", "--data", "data", "--user", "dee"]);
    let token = stdout(&out).trim().to_owned();
    assert!(out.status.success() && token.starts_with("amfmn_") && token.len() == 70, "{}", stderr(&out));
    let revoked = amfmn_in(f.dir.path(), &["serve", "token", "revoke", "--data", "data", "--user", "dee"]);
    assert_eq!(stdout(&revoked).trim(), "revoked 1 token(s) of dee");
}

#[test]
fn the_service_scores_like_retrieve() {
    let f = fixture();
    let d = f.dir.path();
    std::fs::create_dir_all(d.join("images")).unwrap();
    let server = start_server(&f, &[], &[]);
    for (k, colour) in COLOURS.iter().enumerate() {
        let bytes = png(*colour, 48 + 8 * k as u32);
        std::fs::write(d.join(format!("images/c{k}.png")), &bytes).unwrap();
        server.upload(&f.ana, &bytes).unwrap();
    }
    server.settle(&f.admin);
    let index = ["index", "--checkpoint", "ckpt", "--images", "images", "--out", "i.st", "--device", "cpu"];
    assert!(amfmn_in(d, &index).status.success());
    for (query, keywords) in
        [(Some("red boat"), None), (None, Some("white, houses")), (Some("two white houses"), Some("port"))]
    {
        let mut args = vec!["retrieve", "--index", "i.st", "--json", "--device", "cpu"];
        args.extend(query.iter().flat_map(|q| ["--query", *q]));
        args.extend(keywords.iter().flat_map(|k| ["--keywords", *k]));
        let retrieved: Value = serde_json::from_str(&stdout(&amfmn_in(d, &args))).unwrap();
        let served = server.search(&f.ana, json!({"query": query, "keywords": keywords}));
        let by_name = |r: &Value| {
            let path = r["path"].as_str().unwrap();
            amfmn::fsutil::sha256_hex(&std::fs::read(d.join("images").join(path)).unwrap())
        };
        let expected: Vec<(String, f64)> = retrieved["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (by_name(r), r["score"].as_f64().unwrap()))
            .collect();
        let rows = server.get("/api/v1/images", &f.ana)["images"].as_array().unwrap().clone();
        let sha_of = |id: i64| rows.iter().find(|r| r["id"] == id).unwrap()["sha256"].as_str().unwrap().to_owned();
        let got: Vec<(String, f64)> = served["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (sha_of(r["id"].as_i64().unwrap()), r["score"].as_f64().unwrap()))
            .collect();
        // The same images in the same order; scores equal to float rounding (the service encodes
        // each upload in a batch of its own, `index` all five in one, and libtorch's convolutions
        // round differently with the batch size).
        let order = |v: &[(String, f64)]| v.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
        assert_eq!(order(&got), order(&expected), "{query:?} {keywords:?}");
        for ((_, a), (_, b)) in got.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-5, "{query:?} {keywords:?}: {a} vs {b}");
        }
    }
    server.terminate();
}

#[test]
fn an_index_is_imported_once_with_its_codes_where_they_hold() {
    let f = fixture();
    let d = f.dir.path();
    std::fs::create_dir_all(d.join("images")).unwrap();
    for (k, colour) in COLOURS.iter().enumerate().take(4) {
        std::fs::write(d.join(format!("images/c{k}.png")), png(*colour, 48 + 8 * k as u32)).unwrap();
    }
    let index = ["index", "--checkpoint", "ckpt", "--images", "images", "--out", "i.st", "--device", "cpu"];
    assert!(amfmn_in(d, &index).status.success());
    let retrieved: Value =
        serde_json::from_str(&stdout(&amfmn_in(d, &["retrieve", "--index", "i.st", "--query", "red boat", "--json"])))
            .unwrap();
    let c0 = retrieved["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["path"].as_str().unwrap().ends_with("/c0.png")).cloned());
    let c0_score = c0.unwrap_or_else(|| panic!("{retrieved}"))["score"].as_f64().unwrap();
    // Since indexing: c1 changed, c2 gone, c3 a link out of the folder.
    std::fs::write(d.join("images/c1.png"), png(COLOURS[1], 100)).unwrap();
    std::fs::remove_file(d.join("images/c2.png")).unwrap();
    std::fs::write(d.join("outside.png"), png(COLOURS[3], 40)).unwrap();
    std::fs::remove_file(d.join("images/c3.png")).unwrap();
    std::os::unix::fs::symlink(d.join("outside.png"), d.join("images/c3.png")).unwrap();
    let index_path = d.join("i.st").display().to_string();
    let import = ["--import-index", index_path.as_str(), "--owner", "ana", "--visibility", "public"];

    let server = start_server(&f, &[], &import);
    server.settle(&f.admin);
    let found = server.search(&f.bo, json!({"query": "red boat"}));
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "public to others: {found}");
    let c0 = results.iter().find(|r| r["name"] == "c0.png").unwrap();
    // The query is encoded by two processes, whose rounding may differ in the last digits (seen
    // once in CI: 3.1e-6); codes imported into the wrong rows would differ by far more.
    assert!((c0["score"].as_f64().unwrap() - c0_score).abs() <= 1e-4, "the index's codes: {c0} vs {c0_score}");
    let (_, log) = server.terminate();
    assert!(log.contains("imported 1 image(s) with their codes and 1 to encode; 0 already there, 2 skipped"), "{log}");
    assert!(log.contains("skipped c2.png: cannot open"), "{log}");
    assert!(log.contains("skipped c3.png: `c3.png` is a link to"), "{log}");

    // SIGTERM at once, as soon as the address is announced: still a clean stop, after the report.
    let (status, again) = start_server(&f, &[], &import).terminate();
    assert!(status.success(), "SIGTERM right after start-up is a clean stop: {again}");
    assert!(
        again.contains("imported 0 image(s) with their codes and 0 to encode; 2 already there, 2 skipped"),
        "{again}"
    );
    let serve = |extra: &[&str]| {
        let data = f.data().display().to_string();
        let mut args = vec!["serve", "--data", data.as_str(), "--checkpoint", "ckpt", "--listen", "127.0.0.1:0"];
        args.extend(extra);
        stderr(&amfmn_in(d, &args))
    };
    let nobody = serve(&["--import-index", "i.st", "--owner", "nobody"]);
    assert!(nobody.contains("--owner nobody: no such user; add one first: amfmn serve token add"), "{nobody}");
    let alone = serve(&["--owner", "ana"]);
    assert!(alone.contains("--import-index"), "{alone}");
}

#[test]
fn requests_are_logged_with_an_id_and_never_with_a_token_or_a_query() {
    let f = fixture();
    let server = start_server(&f, &[], &[]);
    let status = |id: Option<&str>, token: &str| {
        let url = format!("{}/api/v1/status", server.base);
        let mut request = Server::agent().get(&url).header("authorization", &format!("Bearer {token}"));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        let response = request.call().unwrap();
        let id = response.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        (response.status().as_u16(), id)
    };
    let (code, fresh) = status(None, &f.admin);
    assert!(code == 200 && fresh.len() == 36 && fresh.matches('-').count() == 4, "a UUID: {fresh}");
    assert_eq!(status(Some("proxy-42"), &f.admin).1, "proxy-42", "a proxy's plain id is kept");
    let (_, replaced) = status(Some("a\tb{c}=x"), &f.admin);
    assert!(replaced != "a\tb{c}=x" && replaced.len() == 36, "an odd id is replaced: {replaced}");
    assert_eq!(status(None, "amfmn_not_a_token").0, 401);
    server.search(&f.ana, json!({"query": "red boat secret"}));
    let (_, log) = server.terminate();
    assert!(log.contains(&format!("request{{id={fresh} method=GET path=/api/v1/status}}")), "{log}");
    assert!(log.contains("id=proxy-42") && log.contains(&format!("id={replaced}")), "{log}");
    assert!(log.lines().any(|l| l.contains("path=/api/v1/search/text") && l.contains("status=200")), "{log}");
    assert!(log.lines().any(|l| l.contains("status=401")), "{log}");
    for secret in [f.admin.as_str(), &f.admin[..20], f.ana.as_str(), "amfmn_not_a_token", "red boat", "Bearer", "a\tb"]
    {
        assert!(!log.contains(secret), "{secret:?} logged: {log}");
    }
}

/// A 256x192 scene: a red left half, a blue right half, a green square in the blue (colours
/// none of [`COLOURS`] has).
fn scene_png() -> Vec<u8> {
    let scene = image::RgbImage::from_fn(256, 192, |x, y| match (x, y) {
        (x, _) if x < 128 => image::Rgb([180, 20, 20]),
        (160..=223, 64..=127) => image::Rgb([20, 150, 20]),
        _ => image::Rgb([20, 40, 180]),
    });
    let mut bytes = Vec::new();
    scene.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

/// Waits (at most 120 s) until job `id` is done, failed or gone; returns it.
async fn finished(router: &axum::Router, token: &str, id: &str) -> Value {
    let began = Instant::now();
    loop {
        let job = get(router, &format!("/api/v1/jobs/{id}"), token).await.json();
        let status = job["status"].as_str().unwrap_or("gone");
        if !["queued", "running"].contains(&status) || began.elapsed() > Duration::from_secs(120) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_jobs_make_the_map_locate_makes() {
    let f = fixture();
    let service = Service::start(&ServeConfig { max_upload: 1 << 20, ..f.config() }).unwrap();
    let router = service.router();
    let scene = scene_png();
    std::fs::write(f.dir.path().join("scene.png"), &scene).unwrap();
    let image = upload(&router, &f.ana, scene, "").await.json()["id"].as_i64().unwrap();
    let body = json!({"query": "red boat", "steps": [64, 128], "filter": "median:31"});
    let posted = post_json(&router, &format!("/api/v1/images/{image}/locate"), Some(&f.ana), body).await;
    assert_eq!(posted.status, StatusCode::ACCEPTED, "{:?}", posted.json());
    let id = posted.json()["job_id"].as_str().unwrap().to_owned();
    assert_eq!(posted.headers["location"], format!("/api/v1/jobs/{id}").as_str());
    let job = finished(&router, &f.ana, &id).await;
    assert_eq!(job["status"], "done", "{job}");
    let crops = amfmn::locate::heat::crops(192, 256, &[64, 128]).len() as i64;
    assert_eq!((job["progress"]["done"].as_i64(), job["progress"]["total"].as_i64()), (Some(crops), Some(crops)));
    assert!(job["centers"].as_array().is_some_and(|c| !c.is_empty()), "{job}");
    let mut pictures = Vec::new();
    for name in ["prob", "heat", "overlay"] {
        let reply = get(&router, job["results"][name].as_str().unwrap(), &f.ana).await;
        assert_eq!(reply.headers["content-type"], "image/png");
        let picture = image::load_from_memory(&reply.bytes).unwrap();
        assert_eq!((picture.width(), picture.height()), (256, 192), "{name}");
        pictures.push(picture);
    }
    // `amfmn locate` on the same scene with the same settings draws the same map, pixel for pixel.
    let args = ["locate", "--checkpoint", "ckpt", "--image", "scene.png", "--query", "red boat", "--out", "o.png"];
    let settings =
        ["--prob", "p.png", "--steps", "64,128", "--filter", "median:31", "--batch-size", "32", "--device", "cpu"];
    let out = amfmn_in(f.dir.path(), &[&args[..], &settings].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let cli = image::open(f.dir.path().join("p.png")).unwrap();
    assert_eq!(pictures[0].to_luma8(), cli.to_luma8(), "the job's prob.png equals locate's");

    // Only the owner (and admins) see a job; hostile ids are refused before any lookup.
    assert_eq!(get(&router, &format!("/api/v1/jobs/{id}"), &f.bo).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&router, &format!("/api/v1/jobs/{id}"), &f.admin).await.status, StatusCode::OK);
    assert_eq!(get(&router, &format!("/api/v1/jobs/{id}/secret.png"), &f.ana).await.status, StatusCode::NOT_FOUND);
    for hostile in ["..%2F..%2Fetc", "%00", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"] {
        assert_eq!(get(&router, &format!("/api/v1/jobs/{hostile}"), &f.ana).await.status, StatusCode::BAD_REQUEST);
    }
    let bo_locate =
        post_json(&router, &format!("/api/v1/images/{image}/locate"), Some(&f.bo), json!({"query": "x"})).await;
    assert_eq!(bo_locate.status, StatusCode::NOT_FOUND, "bo may not see ana's private scene");
    let bad = post_json(
        &router,
        &format!("/api/v1/images/{image}/locate"),
        Some(&f.ana),
        json!({"query": "x", "steps": [32]}),
    )
    .await;
    assert_eq!((bad.status, bad.json()["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("steps")));

    // Deleting the job removes its results; deleting the image removes its jobs.
    let results = f.data().join("results").join(&id);
    assert!(results.join("summary.json").is_file());
    let delete = call(&router, "DELETE", &format!("/api/v1/jobs/{id}"), Some(&f.ana), Body::empty(), "").await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert!(!results.exists());
    let body = json!({"keywords": "boat", "steps": [64], "filter": "none"});
    let second = post_json(&router, &format!("/api/v1/images/{image}/locate"), Some(&f.ana), body).await.json();
    let second = second["job_id"].as_str().unwrap().to_owned();
    assert_eq!(finished(&router, &f.ana, &second).await["status"], "done");
    call(&router, "DELETE", &format!("/api/v1/images/{image}"), Some(&f.ana), Body::empty(), "").await;
    assert_eq!(get(&router, &format!("/api/v1/jobs/{second}"), &f.ana).await.status, StatusCode::NOT_FOUND);
    assert!(listing(&f.data().join("results")).is_empty());
    service.shutdown().unwrap();
}

#[test]
fn a_locate_job_interrupted_by_a_crash_runs_again_from_zero() {
    let f = fixture();
    let mut server = start_server(&f, &[("AMFMN_SERVE_CRASH_AT", "mid_locate")], &["--max-upload", "1MiB"]);
    let (_, body) = server.upload(&f.ana, &scene_png()).unwrap();
    let image = body["id"].as_i64().unwrap();
    server.settle(&f.admin);
    let url = format!("{}/api/v1/images/{image}/locate", server.base);
    let request = Server::agent().post(&url).header("authorization", &format!("Bearer {}", f.ana));
    let body = json!({"query": "red boat", "steps": [64, 128], "filter": "none"}).to_string();
    let mut reply = request.header("content-type", "application/json").send(body.as_bytes()).unwrap();
    let job: Value = serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
    let job = job["job_id"].as_str().unwrap().to_owned();
    assert!(!server.child.wait().unwrap().success(), "aborted after the first crop batch");
    let server = start_server(&f, &[], &[]);
    let began = Instant::now();
    let done = loop {
        let state = server.get(&format!("/api/v1/jobs/{job}"), &f.ana);
        if state["status"] == "done" || began.elapsed() > Duration::from_secs(120) {
            break state;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["status"], "done", "{done}");
    let (_, log) = server.terminate();
    assert!(log.contains("1 interrupted locate job(s) queued again"), "{log}");
    check_consistent(&f);
}

/// The DOM of `url` after its scripts ran, from headless Chromium.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = common::chromium()
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The centre of the pixels of `colour` in `shot` (none: `None`).
fn centre_of(shot: &image::RgbImage, colour: [u8; 3]) -> Option<(f64, f64)> {
    let hits: Vec<(u32, u32)> = shot.enumerate_pixels().filter(|p| p.2 .0 == colour).map(|p| (p.0, p.1)).collect();
    (hits.len() > 1000).then(|| {
        let n = hits.len() as f64;
        (hits.iter().map(|h| h.0 as f64).sum::<f64>() / n, hits.iter().map(|h| h.1 as f64).sum::<f64>() / n)
    })
}

/// Whether `picture` appears pixel for pixel somewhere in `shot`.
fn contains(shot: &image::RgbImage, picture: &image::RgbImage) -> bool {
    let (w, h) = picture.dimensions();
    let first = picture.get_pixel(0, 0);
    (0..=shot.height().saturating_sub(h)).any(|y| {
        (0..=shot.width().saturating_sub(w)).any(|x| {
            shot.get_pixel(x, y) == first
                && picture.enumerate_pixels().all(|(px, py, p)| shot.get_pixel(x + px, y + py) == p)
        })
    })
}

#[test]
fn the_page_shows_ranked_thumbnails_and_a_located_overlay() {
    let f = fixture();
    let server = start_server(&f, &[], &["--max-upload", "1MiB"]);
    for colour in COLOURS {
        server.upload(&f.ana, &png(colour, 64)).unwrap();
    }
    let (_, scene) = server.upload(&f.ana, &scene_png()).unwrap();
    server.settle(&f.admin);
    let ranked = server.search(&f.ana, json!({"query": "two white houses", "limit": 24}));
    let expected: Vec<i64> = ranked["results"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let url = format!("{}/#token={}&q=two%20white%20houses", server.base, f.ana);
    let dom = dump_dom(&url);
    let shown: Vec<i64> =
        dom.split("data-id=\"").skip(1).map(|s| s.split('"').next().unwrap().parse().unwrap()).collect();
    assert_eq!(shown, expected, "the cards in rank order");
    assert!(dom.contains("6 of 6 images"), "{dom}");
    let shot = common::chromium_screenshot(&url, (900, 900), &["--virtual-time-budget=10000"]);
    // Each colour's thumbnail sits in its rank's cell: four 180 px cells a row.
    let rows = server.get("/api/v1/images", &f.ana)["images"].as_array().unwrap().clone();
    let mut placed = Vec::new();
    for (rank, id) in expected.iter().enumerate() {
        let k = rows.iter().position(|r| r["id"] == *id).unwrap();
        if k < COLOURS.len() {
            let (x, y) = centre_of(&shot, COLOURS[k]).unwrap_or_else(|| panic!("no thumbnail of image {id}"));
            placed.push((rank, x, y));
        }
    }
    // The cell of rank r is (r % 4, r / 4): every thumbnail's centre less its cell's offset is
    // the same point.
    let origins: Vec<(f64, f64)> =
        placed.iter().map(|&(rank, x, y)| (x - 180.0 * (rank % 4) as f64, y - 200.0 * (rank / 4) as f64)).collect();
    assert!(placed.len() == COLOURS.len(), "{placed:?}");
    assert!(origins.iter().all(|o| (o.0 - origins[0].0).abs() < 1.0 && (o.1 - origins[0].1).abs() < 1.0), "{placed:?}");

    // A finished locate job's overlay, shown by the page pixel for pixel.
    let image = scene["id"].as_i64().unwrap();
    let url_locate = format!("{}/api/v1/images/{image}/locate", server.base);
    let body = json!({"query": "red boat", "steps": [64, 128], "filter": "none"}).to_string();
    let request = Server::agent().post(&url_locate).header("authorization", &format!("Bearer {}", f.ana));
    let mut reply = request.header("content-type", "application/json").send(body.as_bytes()).unwrap();
    let job = serde_json::from_str::<Value>(&reply.body_mut().read_to_string().unwrap()).unwrap()["job_id"].clone();
    let job = job.as_str().unwrap().to_owned();
    let began = Instant::now();
    while server.get(&format!("/api/v1/jobs/{job}"), &f.ana)["status"] != "done"
        && began.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let overlay = image::open(f.data().join("results").join(&job).join("overlay.png")).unwrap().to_rgb8();
    let url = format!("{}/#token={}&job={job}", server.base, f.ana);
    let shot = common::chromium_screenshot(&url, (900, 700), &["--virtual-time-budget=10000"]);
    assert!(contains(&shot, &overlay), "the overlay is on the page");
    server.terminate();
}

/// One client of the concurrency test: 100 operations of one user on their own uploads, mixed
/// by a seeded stream; returns the ids it still holds, and checks as it goes that nothing answers
/// 5xx and no search shows an image it deleted.
async fn client(router: axum::Router, token: String, seed: u64) -> Vec<i64> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut mine, mut deleted) = (Vec::<i64>::new(), Vec::<i64>::new());
    for step in 0..100 {
        let choice = rng.random_range(0..10);
        let reply = match choice {
            0..=3 => {
                let colour = [seed as u8 * 30, step as u8 * 2, rng.random::<u8>()];
                let query = if rng.random::<bool>() { "visibility=public" } else { "" };
                let reply = upload(&router, &token, png(colour, 16), query).await;
                mine.extend(reply.json()["id"].as_i64());
                reply
            }
            4..=6 => {
                let reply =
                    post_json(&router, "/api/v1/search/text", Some(&token), json!({"keywords": "boat", "limit": 100}))
                        .await;
                let shown: Vec<i64> = reply.json()["results"]
                    .as_array()
                    .map_or(vec![], |r| r.iter().map(|h| h["id"].as_i64().unwrap()).collect());
                assert!(shown.iter().all(|id| !deleted.contains(id)), "a deleted image was found");
                reply
            }
            7 | 8 if !mine.is_empty() => {
                let id = mine[rng.random_range(0..mine.len())];
                let visibility = if rng.random::<bool>() { "public" } else { "private" };
                let body = Body::from(json!({ "visibility": visibility }).to_string());
                call(&router, "PATCH", &format!("/api/v1/images/{id}"), Some(&token), body, "application/json").await
            }
            _ if !mine.is_empty() => {
                let id = mine.swap_remove(rng.random_range(0..mine.len()));
                deleted.push(id);
                call(&router, "DELETE", &format!("/api/v1/images/{id}"), Some(&token), Body::empty(), "").await
            }
            _ => continue,
        };
        assert!(reply.status.as_u16() < 500, "step {step}: {} {:?}", reply.status, reply.json());
    }
    mine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_clients_leave_a_consistent_service() {
    let f = fixture();
    let service = Service::start(&ServeConfig { queue: 64, ..f.config() }).unwrap();
    let router = service.router();
    let tokens = [&f.ana, &f.bo];
    let tasks: Vec<_> =
        (0..8u64).map(|k| tokio::spawn(client(router.clone(), tokens[k as usize % 2].clone(), k))).collect();
    let mut kept = Vec::new();
    for task in tasks {
        kept.extend(task.await.unwrap());
    }
    let began = Instant::now();
    let status = loop {
        let status = get(&router, "/api/v1/status", &f.admin).await.json();
        if status["images"].get("pending").is_none() || began.elapsed() > Duration::from_secs(120) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let db = store::open(&f.data().join(store::DATABASE), false).unwrap();
    let ready: i64 = db.query_row("SELECT COUNT(*) FROM images WHERE status = 'ready'", [], |r| r.get(0)).unwrap();
    let rows: i64 = db.query_row("SELECT COUNT(*) FROM images", [], |r| r.get(0)).unwrap();
    assert_eq!(rows as usize, kept.len(), "every upload kept is a row, every delete is gone");
    assert_eq!((status["images"]["ready"].as_i64(), status["searchable"].as_i64()), (Some(ready), Some(ready)));
    for (token, user) in [(&f.ana, "ana"), (&f.bo, "bo")] {
        let found = post_json(&router, "/api/v1/search/text", Some(token), json!({"keywords": "boat", "limit": 100}))
            .await
            .json();
        let visible: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM images i JOIN users u ON u.id = i.owner WHERE i.status = 'ready' AND (u.name = ?1 OR i.visibility = 'public')",
                [user],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found["total_visible"].as_i64(), Some(visible), "{user}");
        for hit in found["results"].as_array().unwrap() {
            let (owner, visibility): (String, String) = db
                .query_row(
                    "SELECT u.name, i.visibility FROM images i JOIN users u ON u.id = i.owner WHERE i.id = ?1",
                    [hit["id"].as_i64().unwrap()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert!(owner == user || visibility == "public", "{user} was shown {hit}");
        }
    }
    service.shutdown().unwrap();
}
