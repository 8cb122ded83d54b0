//! The HTTP API (`/api/v1`): routes, who may call them, their limits and their JSON errors
//! (`{"error":{"code","message","field"?}}` with real status codes). Handlers stay thin: the
//! database runs on blocking threads, the models on the service's two worker threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing_subscriber::filter::LevelFilter;

use super::auth::{self, Caller};
use super::folder::{check_image, DataFolder, Format, Refused, HEAD};
use super::images::{self, ImageRow, Listing, NewImage};
use super::jobs::{self, JobRow, LocateParams, OverQuota};
use super::store::Database;
use super::workers::{crash_point, Busy, ImageQuery, Interactive, Page, Ranked, Update};
use super::ServeConfig;
use crate::search::Query;

/// The largest JSON body.
const MAX_JSON: usize = 64 * 1024;
/// The longest query or keywords, in characters.
const MAX_QUERY_CHARS: usize = 512;
/// Interactive requests end after this long.
const INTERACTIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Uploads end after this long.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// A token's `last_used` is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// The side of a thumbnail's longer edge.
const THUMBNAIL_SIDE: u32 = 160;

/// What every handler shares.
pub struct AppState {
    pub db: Arc<Database>,
    pub folder: DataFolder,
    pub interactive: Interactive,
    pub wake: Mutex<std::sync::mpsc::Sender<()>>,
    pub max_upload: u64,
    pub max_pixels: u64,
    pub public_read: bool,
    pub checkpoint_sha256: String,
    /// The side of the model's input images.
    pub image_size: u32,
    pub started: Instant,
    touched: Mutex<HashMap<String, Instant>>,
    pub draining: AtomicBool,
}

impl AppState {
    /// The state of a service started with `config`.
    pub fn new(
        db: Arc<Database>,
        folder: DataFolder,
        interactive: Interactive,
        wake: std::sync::mpsc::Sender<()>,
        config: &ServeConfig,
        checkpoint_sha256: String,
        image_size: u32,
    ) -> AppState {
        AppState {
            db,
            folder,
            interactive,
            wake: Mutex::new(wake),
            max_upload: config.max_upload,
            max_pixels: config.max_pixels,
            public_read: config.public_read,
            checkpoint_sha256,
            image_size,
            started: Instant::now(),
            touched: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
        }
    }
}

impl AppState {
    /// Whether a valid token's `last_used` is due to be written (at most every
    /// [`TOUCH_EVERY`]); only tokens that authenticated are remembered, so the map stays as
    /// small as the token table.
    fn touch_due(&self, token: &str) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        let due = touched.get(token).is_none_or(|t| t.elapsed() >= TOUCH_EVERY);
        if due {
            touched.insert(token.to_owned(), Instant::now());
        }
        due
    }
}

type Shared = State<Arc<AppState>>;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None }
    }

    fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    fn bad_request(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message).field(field)
    }

    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such image")
    }

    fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "give a valid token: Authorization: Bearer <token>")
    }

    fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only the image's owner or an admin may change it")
    }

    fn internal(error: anyhow::Error) -> ApiError {
        crate::report::warn(format!("serve: {}", crate::fsutil::one_line(&format!("{error:#}"))));
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed; see its log")
    }
}

impl From<Busy> for ApiError {
    fn from(_: Busy) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many requests are waiting; retry in a second")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking work (files, decoding) on the blocking pool; its error is an internal one.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(e.into()))?.map_err(ApiError::internal)
}

/// Runs database work on a blocking thread.
async fn db<T: Send + 'static>(
    state: &Arc<AppState>,
    work: impl FnOnce(&Database) -> anyhow::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let state = state.clone();
    blocking(move || work(&state.db)).await
}

/// The caller a request's bearer token stands for; `None` without an `Authorization` header.
async fn caller(state: &Arc<AppState>, headers: &HeaderMap) -> ApiResult<Option<Caller>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(ApiError::unauthorized)?;
    if token.len() > 256 {
        return Err(ApiError::unauthorized());
    }
    let (token, shared) = (token.to_owned(), state.clone());
    let found = blocking(move || {
        let found = shared.db.read(|r| auth::authenticate(r, &token))?;
        if found.is_some() && shared.touch_due(&token) {
            auth::touch(&shared.db.writer(), &token)?;
        }
        Ok(found)
    })
    .await?;
    found.map(Some).ok_or_else(ApiError::unauthorized)
}

/// The caller, who must have a valid token.
async fn user(state: &Arc<AppState>, headers: &HeaderMap) -> ApiResult<Caller> {
    caller(state, headers).await?.ok_or_else(ApiError::unauthorized)
}

/// An image id from the path: a positive decimal integer, refused before any storage access.
fn image_id(raw: &str) -> ApiResult<i64> {
    let valid = !raw.is_empty() && raw.len() <= 15 && raw.bytes().all(|b| b.is_ascii_digit()) && !raw.starts_with('0');
    match raw.parse::<i64>() {
        Ok(id) if valid => Ok(id),
        _ => Err(ApiError::bad_request("id", "an image id is a positive integer")),
    }
}

/// The error serde reported, naming the field it concerns when it can.
fn parse_error(path: String, error: impl std::fmt::Display) -> ApiError {
    let message = error.to_string();
    let field = match (path.as_str(), message.strip_prefix("unknown field `")) {
        (_, Some(rest)) => rest.split('`').next().unwrap_or("").to_owned(),
        (".", None) => String::new(),
        (path, None) => path.to_owned(),
    };
    let error = ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
    if field.is_empty() {
        error
    } else {
        error.field(field)
    }
}

/// A JSON body of at most [`MAX_JSON`] bytes, unknown fields refused by name.
async fn json_body<T: DeserializeOwned>(body: Body) -> ApiResult<T> {
    let bytes = axum::body::to_bytes(body, MAX_JSON).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("JSON bodies are at most {MAX_JSON} bytes"))
    })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| parse_error(e.path().to_string(), e.inner()))
}

/// Query parameters, unknown ones refused by name.
fn query_params<T: DeserializeOwned>(raw: Option<String>) -> ApiResult<T> {
    let raw = raw.unwrap_or_default();
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| parse_error(e.path().to_string(), e.inner()))
}

/// The routes of the service, with its security headers, timeouts and panic guard.
pub fn router(state: Arc<AppState>) -> Router {
    let uploads = Router::new()
        .route("/api/v1/images", post(upload).get(list_images))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, UPLOAD_TIMEOUT));
    let interactive = Router::new()
        .route("/api/v1/images/{id}", get(get_image).patch(patch_image).delete(delete_image))
        .route("/api/v1/images/{id}/file", get(image_file))
        .route("/api/v1/images/{id}/thumbnail", get(thumbnail))
        .route("/api/v1/images/{id}/locate", post(locate))
        .route("/api/v1/jobs/{id}", get(get_job).delete(delete_job))
        .route("/api/v1/jobs/{id}/{file}", get(job_file))
        .route("/api/v1/search/text", post(search_text))
        .route("/api/v1/search/image", post(search_image))
        .route("/api/v1/status", get(status))
        .route("/", get(|| async { page_file(PAGE_HTML, "text/html; charset=utf-8") }))
        .route("/static/app.js", get(|| async { page_file(PAGE_JS, "text/javascript; charset=utf-8") }))
        .route("/static/app.css", get(|| async { page_file(PAGE_CSS, "text/css; charset=utf-8") }))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, INTERACTIVE_TIMEOUT));
    let header = |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    uploads
        .merge(interactive)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed").into_response()
        }))
        .layer(header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; frame-ancestors 'none'",
        ))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_odd_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
}

/// The request header that names a request in the log and in its response.
const REQUEST_ID: &str = "x-request-id";

/// The log span of a request: its id (a proxy's `x-request-id` when it is a plain token of at
/// most 64 characters, otherwise a fresh UUID; sent back in the response), method and path.
/// Never the query string or a header: a token is a header, and queries say what a user
/// searches for.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path())
}

/// Removes a request id that is not plain, so that a fresh one replaces it.
async fn drop_odd_request_id(mut request: Request) -> Request {
    let plain = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).is_some_and(plain_id);
    if !plain {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Whether a request id is safe to write in a log line.
fn plain_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Writes the request log on stderr at `level` (`off` for none): only amfmn's own events and
/// tower-http's request lines, so that no library below logs what a request carries.
pub fn init_request_log(level: LevelFilter) {
    let filter = tracing_subscriber::EnvFilter::new(format!("off,amfmn={level},tower_http::trace={level}"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// The page: one HTML file, its script and its style sheet, in the binary.
const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/app.js");
const PAGE_CSS: &str = include_str!("page/app.css");

/// A file of the page.
fn page_file(text: &'static str, media_type: &'static str) -> Response {
    let headers = [(header::CONTENT_TYPE, media_type), (header::CACHE_CONTROL, "no-cache")];
    (headers, text).into_response()
}

/// Query parameters of an upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadParams {
    #[serde(default)]
    visibility: Visibility,
    name: Option<String>,
}

/// Who may see an image.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Visibility {
    #[default]
    Private,
    Public,
}

/// An upload streamed to `tmp/`: its path, SHA-256, size and first bytes.
struct Received {
    path: std::path::PathBuf,
    sha256: String,
    bytes: u64,
    head: Vec<u8>,
}

/// Streams `body` to a new file in `tmp/`, hashing it; refuses it (removing the file) as soon as
/// it passes `max` bytes.
async fn receive(state: &Arc<AppState>, body: Body, max: u64) -> ApiResult<Received> {
    use http_body_util::BodyExt;
    use std::io::Write;
    let mut body = body;
    let (file, path) = state.folder.temporary().map_err(ApiError::internal)?;
    let mut file = std::io::BufWriter::new(file);
    let (mut hasher, mut bytes, mut head) = (Sha256::new(), 0u64, Vec::new());
    let outcome: ApiResult<()> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad_request("body", format!("the upload broke off: {e}")))?;
            let Ok(chunk) = frame.into_data() else { continue };
            bytes += chunk.len() as u64;
            if bytes > max {
                return Err(too_large(max));
            }
            if head.len() < HEAD {
                head.extend(chunk.iter().take(HEAD - head.len()));
            }
            hasher.update(&chunk);
            tokio::task::block_in_place(|| file.write_all(&chunk)).map_err(|e| ApiError::internal(e.into()))?;
        }
        let file = file.into_inner().map_err(|e| ApiError::internal(e.into_error().into()))?;
        tokio::task::block_in_place(|| file.sync_all()).map_err(|e| ApiError::internal(e.into()))
    }
    .await;
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(Received { path, sha256: crate::fsutil::hex(&hasher.finalize()), bytes, head })
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("uploads are at most {max} bytes"))
}

/// Checks a received upload's format and size from its header: 415 or 413 otherwise.
fn check_upload(received: &Received, max_pixels: u64) -> ApiResult<(Format, u32, u32)> {
    check_image(&received.path, &received.head, max_pixels).map_err(|refused| match refused {
        Refused::Unsupported(why) => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported", why),
        Refused::TooManyPixels(why) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", why),
    })
}

/// `POST /api/v1/images`: stores the bytes, records a pending image, wakes the encoder.
async fn upload(
    State(state): Shared,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    request: Request,
) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let params: UploadParams = query_params(raw)?;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_upload) {
        return Err(too_large(state.max_upload));
    }
    let received = receive(&state, request.into_body(), state.max_upload).await?;
    let max_pixels = state.max_pixels;
    let checked = tokio::task::spawn_blocking(move || {
        let checked = check_upload(&received, max_pixels);
        if checked.is_err() {
            let _ = std::fs::remove_file(&received.path);
        }
        checked.map(|c| (c, received))
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?;
    let ((format, width, height), received) = checked?;
    let image = NewImage {
        name: images::display_name(params.name, &received.sha256),
        sha256: received.sha256.clone(),
        owner: caller.id,
        public: params.visibility == Visibility::Public,
        format: format.name(),
        width,
        height,
        bytes: received.bytes,
    };
    let folder = state.folder.clone();
    let (id, created, row) = db(&state, move |db| {
        let mut writer = db.writer();
        folder.keep_blob(&received.path, &received.sha256)?;
        crash_point("after_blob");
        let tx = writer.transaction()?;
        let (id, created) = images::insert(&tx, &image)?;
        crash_point("before_commit");
        tx.commit()?;
        crash_point("after_commit");
        Ok((id, created, images::get(&writer, id)?))
    })
    .await?;
    let _ = state.wake.lock().map(|w| w.send(()));
    let row = row.ok_or_else(ApiError::not_found)?;
    let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
    let location = HeaderValue::from_str(&format!("/api/v1/images/{id}")).expect("ascii");
    Ok((status, [(header::LOCATION, location)], Json(json!({ "id": id, "sha256": row.sha256, "status": row.status })))
        .into_response())
}

/// Query parameters of a listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    mine: u8,
    status: Option<String>,
    limit: Option<i64>,
    after: Option<i64>,
}

/// `GET /api/v1/images`: the images the caller may see, by id, after a cursor.
async fn list_images(State(state): Shared, headers: HeaderMap, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let params: ListParams = query_params(raw)?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit", "limit is 1 to 200"));
    }
    if params.status.as_deref().is_some_and(|s| !["pending", "ready", "failed"].contains(&s)) {
        return Err(ApiError::bad_request("status", "status is pending, ready or failed"));
    }
    let listing = Listing { mine: params.mine == 1, status: params.status, limit, after: params.after.unwrap_or(0) };
    let rows = db(&state, move |db| db.read(|r| images::list(r, Some(&caller), &listing))).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id)).flatten();
    Ok(Json(json!({ "images": rows, "next_after": next })).into_response())
}

/// The image `raw` names if `caller` may see it; 404 otherwise (whether it exists or not).
async fn visible_image(state: &Arc<AppState>, caller: Option<&Caller>, raw: &str) -> ApiResult<ImageRow> {
    let id = image_id(raw)?;
    let row = db(state, move |db| db.read(|r| images::get(r, id))).await?;
    row.filter(|r| r.visible_to(caller)).ok_or_else(ApiError::not_found)
}

/// `GET /api/v1/images/{id}`.
async fn get_image(State(state): Shared, headers: HeaderMap, Path(raw): Path<String>) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    Ok(Json(visible_image(&state, Some(&caller), &raw).await?).into_response())
}

/// A file's bytes as a response of `media_type`.
fn file_response(bytes: Vec<u8>, media_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(media_type))], Bytes::from(bytes)).into_response()
}

/// `GET /api/v1/images/{id}/file`: the original bytes.
async fn image_file(State(state): Shared, headers: HeaderMap, Path(raw): Path<String>) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let row = visible_image(&state, Some(&caller), &raw).await?;
    let format =
        Format::from_name(&row.format).ok_or_else(|| ApiError::internal(anyhow::anyhow!("format {}", row.format)))?;
    let blob = state.folder.blob(&row.sha256).map_err(ApiError::internal)?;
    let bytes = blocking(move || crate::fsutil::read(&blob)).await?;
    Ok(file_response(bytes, format.media_type()))
}

/// The thumbnail of `row` (made and kept on first request): a PNG whose longer side is at most
/// [`THUMBNAIL_SIDE`] (smaller images are never enlarged).
fn make_thumbnail(folder: &DataFolder, row: &ImageRow) -> anyhow::Result<Vec<u8>> {
    let path = folder.thumbnail(&row.sha256)?;
    if let Ok(bytes) = crate::fsutil::read(&path) {
        return Ok(bytes);
    }
    let image = crate::data::image_file::load_rgb(&folder.blob(&row.sha256)?)?;
    let image = image::DynamicImage::ImageRgb8(image);
    let fits = image.width().max(image.height()) <= THUMBNAIL_SIDE;
    let small = if fits { image } else { image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE) };
    let mut bytes = Vec::new();
    small.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    crate::fsutil::write_atomic(&path, &bytes)?;
    Ok(bytes)
}

/// `GET /api/v1/images/{id}/thumbnail`.
async fn thumbnail(State(state): Shared, headers: HeaderMap, Path(raw): Path<String>) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let row = visible_image(&state, Some(&caller), &raw).await?;
    let folder = state.folder.clone();
    let bytes = tokio::task::spawn_blocking(move || make_thumbnail(&folder, &row))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "undecodable", format!("{e:#}")))?;
    Ok(file_response(bytes, "image/png"))
}

/// The body of `PATCH /api/v1/images/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    visibility: Visibility,
}

/// An image the caller may change: 404 when they may not see it, 403 when they may only see it.
async fn changeable_image(state: &Arc<AppState>, caller: &Caller, raw: &str) -> ApiResult<ImageRow> {
    let row = visible_image(state, Some(caller), raw).await?;
    if !row.changeable_by(caller) {
        return Err(ApiError::forbidden());
    }
    Ok(row)
}

/// `PATCH /api/v1/images/{id}`: sets its visibility.
async fn patch_image(
    State(state): Shared,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let row = changeable_image(&state, &caller, &raw).await?;
    let patch: Patch = json_body(body).await?;
    let (id, public) = (row.id, patch.visibility == Visibility::Public);
    let interactive = state.interactive.clone();
    let row = db(&state, move |db| {
        let writer = db.writer();
        if images::set_visibility(&writer, id, public)? {
            interactive.update(Update::Visibility(id, public));
        }
        images::get(&writer, id)
    })
    .await?;
    Ok(Json(row.ok_or_else(ApiError::not_found)?).into_response())
}

/// `DELETE /api/v1/images/{id}`: the row, then its original when no other row refers to it.
async fn delete_image(State(state): Shared, headers: HeaderMap, Path(raw): Path<String>) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let id = changeable_image(&state, &caller, &raw).await?.id;
    let (folder, interactive) = (state.folder.clone(), state.interactive.clone());
    db(&state, move |db| {
        let mut writer = db.writer();
        let results = jobs::of_image(&writer, id)?;
        if let Some((sha, unreferenced)) = images::delete(&mut writer, id)? {
            interactive.update(Update::Remove(id));
            if unreferenced {
                folder.remove_blob(&sha)?;
            }
            for job in results {
                folder.remove_results(&job)?;
            }
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The body of `POST /api/v1/search/text`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextSearch {
    query: Option<String>,
    keywords: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_limit() -> usize {
    10
}

/// The page a search asks for: `limit` 1 to 100, `offset` at most 10000.
fn page(caller: Option<Caller>, limit: usize, offset: usize) -> ApiResult<Page> {
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit", "limit is 1 to 100"));
    }
    if offset > 10_000 {
        return Err(ApiError::bad_request("offset", "offset is at most 10000"));
    }
    Ok(Page { caller, skip: offset, take: limit })
}

/// A query text: trimmed, not empty, at most [`MAX_QUERY_CHARS`].
fn query_text(text: Option<String>, field: &'static str) -> ApiResult<Option<String>> {
    let Some(text) = text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) else { return Ok(None) };
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(field, format!("{field} is at most {MAX_QUERY_CHARS} characters")));
    }
    Ok(Some(text))
}

/// `POST /api/v1/search/text`: images ranked for a sentence, keywords or both.
async fn search_text(State(state): Shared, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let caller = caller(&state, &headers).await?;
    if caller.is_none() && !state.public_read {
        return Err(ApiError::unauthorized());
    }
    let search: TextSearch = json_body(body).await?;
    let query =
        Query { sentence: query_text(search.query, "query")?, keywords: query_text(search.keywords, "keywords")? };
    if query.sentence.is_none() && query.keywords.is_none() {
        return Err(ApiError::bad_request("query", "give a query, keywords or both"));
    }
    let page = page(caller.clone(), search.limit, search.offset)?;
    let ranked = state.interactive.text(query, page)?.await.map_err(|e| ApiError::internal(e.into()))?;
    let ranked = ranked.map_err(|e| ApiError::bad_request("query", format!("{e:#}")))?;
    results(&state, caller, ranked, search.offset).await
}

/// The body of `POST /api/v1/search/image` when it is JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSearch {
    image_id: i64,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

/// Query parameters of an image search by bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSearchParams {
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

/// The evaluation input of uploaded image bytes, within the service's limits.
async fn image_input(state: &Arc<AppState>, body: Body) -> ApiResult<Vec<f32>> {
    let received = receive(state, body, state.max_upload).await?;
    let (max_pixels, side) = (state.max_pixels, state.image_size);
    tokio::task::spawn_blocking(move || {
        let checked = check_upload(&received, max_pixels).and_then(|_| {
            let mut input = vec![0f32; 3 * side as usize * side as usize];
            crate::encode::image_file_input(&received.path, side, &mut input)
                .map(|()| input)
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "undecodable", format!("{e:#}")))
        });
        let _ = std::fs::remove_file(&received.path);
        checked
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
}

/// `POST /api/v1/search/image`: images ranked by the cosine of their Fv with an image's, given
/// as bytes or as `{image_id}`.
async fn search_image(
    State(state): Shared,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let json = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let (query, limit, offset) = if json {
        let search: ImageSearch = json_body(body).await?;
        let row = visible_image(&state, Some(&caller), &search.image_id.to_string()).await?;
        if row.status != "ready" {
            let message = format!("image {} is {}, not ready to search with", row.id, row.status);
            return Err(ApiError::new(StatusCode::CONFLICT, "not_ready", message).field("image_id"));
        }
        (ImageQuery::Id(row.id), search.limit, search.offset)
    } else {
        let params: ImageSearchParams = query_params(raw)?;
        (ImageQuery::Input(image_input(&state, body).await?), params.limit, params.offset)
    };
    let page = page(Some(caller.clone()), limit, offset)?;
    let ranked = state.interactive.image(query, page)?.await.map_err(|e| ApiError::internal(e.into()))?;
    let ranked = ranked.map_err(|e| ApiError::new(StatusCode::CONFLICT, "not_ready", format!("{e:#}")))?;
    results(&state, Some(caller), ranked, offset).await
}

/// The response of a search: each hit with its rank and metadata, leaving out what was deleted
/// or hidden since it was ranked.
async fn results(state: &Arc<AppState>, caller: Option<Caller>, ranked: Ranked, offset: usize) -> ApiResult<Response> {
    let Ranked { total_visible, hits } = ranked;
    let rows = db(state, move |db| {
        db.read(|r| hits.iter().map(|&(id, score)| Ok(images::get(r, id)?.map(|row| (row, score)))).collect())
    })
    .await?;
    let rows: Vec<Option<(ImageRow, f32)>> = rows;
    let results: Vec<_> = rows
        .into_iter()
        .flatten()
        .filter(|(row, _)| row.visible_to(caller.as_ref()))
        .enumerate()
        .map(|(k, (row, score))| {
            json!({ "rank": offset + k + 1, "id": row.id, "score": score, "name": row.name, "owner": row.owner,
                    "visibility": row.visibility })
        })
        .collect();
    Ok(Json(json!({ "total_visible": total_visible, "results": results })).into_response())
}

/// `GET /api/v1/status` (admins): queue depths, image counts, checkpoint, uptime.
async fn status(State(state): Shared, headers: HeaderMap) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    if !caller.admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the status is for admins"));
    }
    let (counts, job_counts) = db(&state, |db| db.read(|r| Ok((images::counts(r)?, jobs::counts(r)?)))).await?;
    let jobs: serde_json::Map<String, serde_json::Value> = job_counts.into_iter().map(|(s, n)| (s, json!(n))).collect();
    let searchable = state.interactive.count()?.await.map_err(|e| ApiError::internal(e.into()))?;
    let images: serde_json::Map<String, serde_json::Value> = counts.into_iter().map(|(s, n)| (s, json!(n))).collect();
    Ok(Json(json!({
        "images": images,
        "searchable": searchable,
        "jobs": jobs,
        "search_queue": state.interactive.waiting(),
        "checkpoint_sha256": state.checkpoint_sha256,
        "uptime_s": state.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response())
}

/// `GET /readyz`: the models are loaded (they are before the service listens) and the database
/// takes writes.
async fn ready(State(state): Shared) -> ApiResult<Response> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the service is stopping"));
    }
    db(&state, |db| Ok(db.writer().execute_batch("BEGIN IMMEDIATE; ROLLBACK")?)).await?;
    Ok(Json(json!({ "status": "ready" })).into_response())
}

/// The body of `POST /api/v1/images/{id}/locate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocateRequest {
    query: Option<String>,
    keywords: Option<String>,
    #[serde(default = "default_steps")]
    steps: Vec<usize>,
    #[serde(default = "default_score")]
    score: String,
    #[serde(default = "default_filter")]
    filter: String,
}

fn default_steps() -> Vec<usize> {
    vec![256, 512, 768]
}

fn default_score() -> String {
    "vga".into()
}

fn default_filter() -> String {
    "median:251".into()
}

/// `POST /api/v1/images/{id}/locate`: queues a locate job on a visible image (at most
/// [`jobs::QUOTA`] per user at a time: 429 beyond).
async fn locate(State(state): Shared, headers: HeaderMap, Path(raw): Path<String>, body: Body) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let image = visible_image(&state, Some(&caller), &raw).await?;
    let request: LocateRequest = json_body(body).await?;
    let params = LocateParams {
        query: query_text(request.query, "query")?,
        keywords: query_text(request.keywords, "keywords")?,
        steps: request.steps,
        score: request.score,
        filter: request.filter,
    };
    jobs::check(&params).map_err(|(field, message)| ApiError::bad_request(field, message))?;
    let created = db(&state, move |db| Ok(jobs::create(&mut db.writer(), caller.id, image.id, &params))).await?;
    let id = created.map_err(|e| match e.downcast_ref::<OverQuota>() {
        Some(quota) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota", quota.to_string()),
        None => ApiError::internal(e),
    })?;
    let _ = state.wake.lock().map(|w| w.send(()));
    let location = HeaderValue::from_str(&format!("/api/v1/jobs/{id}")).expect("ascii");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(json!({ "job_id": id }))).into_response())
}

/// The job `raw` names if `caller` owns it or is an admin; 404 otherwise.
async fn own_job(state: &Arc<AppState>, caller: &Caller, raw: &str) -> ApiResult<JobRow> {
    if !jobs::is_job_id(raw) {
        return Err(ApiError::bad_request("id", "a job id is 26 characters of base32"));
    }
    let id = raw.to_owned();
    let job = db(state, move |db| db.read(|r| jobs::get(r, &id))).await?;
    job.filter(|j| caller.admin || j.owner_id == caller.id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such job"))
}

/// The pictures a finished job has.
const JOB_FILES: [&str; 3] = ["prob", "heat", "overlay"];

/// `GET /api/v1/jobs/{id}`: status, progress and, once done, the pictures' URLs and centres.
async fn get_job(State(state): Shared, headers: HeaderMap, Path(raw): Path<String>) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let job = own_job(&state, &caller, &raw).await?;
    let results: Option<serde_json::Map<String, serde_json::Value>> = (job.status == "done").then(|| {
        JOB_FILES.iter().map(|f| (f.to_string(), json!(format!("/api/v1/jobs/{}/{f}.png", job.id)))).collect()
    });
    Ok(Json(json!({
        "id": job.id,
        "image_id": job.image_id,
        "status": job.status,
        "progress": { "done": job.done, "total": job.total },
        "params": job.params,
        "results": results,
        "centers": job.centers,
        "error": job.error,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
    }))
    .into_response())
}

/// `GET /api/v1/jobs/{id}/{prob|heat|overlay}.png`.
async fn job_file(
    State(state): Shared,
    headers: HeaderMap,
    Path((raw, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let job = own_job(&state, &caller, &raw).await?;
    let known = file.strip_suffix(".png").is_some_and(|f| JOB_FILES.contains(&f));
    if !known || job.status != "done" {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such result (yet)"));
    }
    let path = state.folder.results(&job.id).map_err(ApiError::internal)?.join(&file);
    let bytes = blocking(move || crate::fsutil::read(&path)).await?;
    Ok(file_response(bytes, "image/png"))
}

/// `DELETE /api/v1/jobs/{id}`: cancels a queued or running job and removes its results.
async fn delete_job(State(state): Shared, headers: HeaderMap, Path(raw): Path<String>) -> ApiResult<Response> {
    let caller = user(&state, &headers).await?;
    let id = own_job(&state, &caller, &raw).await?.id;
    let folder = state.folder.clone();
    db(&state, move |db| {
        let writer = db.writer();
        jobs::delete(&writer, &id)?;
        folder.remove_results(&id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
