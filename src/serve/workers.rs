//! The two model threads of the service. libtorch tensors may move between threads but not be
//! shared, so each thread owns its own model, loaded from the same checkpoint:
//! - the interactive worker owns the codes of every ready image and answers searches, taking
//!   requests through an admission-bounded queue (a full queue is refused at once, never waited
//!   on) and code updates through the same channel, unbounded;
//! - the background worker encodes pending images from the database, oldest first, in batches,
//!   woken by a channel and polling every 2 s so that a lost wake-up loses nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

use super::auth::Caller;
use super::folder::DataFolder;
use super::images::{self, Coded};
use super::jobs::{self, JobRow};
use super::store::Database;
use crate::checkpoint::{Opening, TrainedModel};
use crate::locate::raster::Gray;
use crate::model::Model;
use crate::search::{EncodedQuery, Query, Searcher};

/// Images encoded per batch by the background worker.
const ENCODE_BATCH: i64 = 32;
/// Text searches answered together at most (their texts encoded in one batch).
const TEXT_BATCH: usize = 16;
/// How often the background worker looks for pending images without being woken.
const POLL: Duration = Duration::from_secs(2);

/// Aborts the process at the crash point `name` when `AMFMN_SERVE_CRASH_AT` names it: the
/// durability tests kill the service between the steps of an operation this way.
pub fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var("AMFMN_SERVE_CRASH_AT").ok()).as_deref() == Some(name) {
        std::process::abort();
    }
}

/// One page of ranked images: (image id, score), best first, and how many images the caller
/// may see in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub total_visible: usize,
    pub hits: Vec<(i64, f32)>,
}

/// What an image search starts from.
pub enum ImageQuery {
    /// The evaluation input `[3, S, S]` of an uploaded image.
    Input(Vec<f32>),
    /// An image of the collection (already checked as visible to the caller).
    Id(i64),
}

/// A ranking request: for whom, which page (`skip` then `take`).
pub struct Page {
    pub caller: Option<Caller>,
    pub skip: usize,
    pub take: usize,
}

/// A change to the searchable codes.
pub enum Update {
    Add(Vec<Coded>),
    Remove(i64),
    Visibility(i64, bool),
}

enum Message {
    Text(Query, Page, oneshot::Sender<Result<Ranked>>),
    Image(ImageQuery, Page, oneshot::Sender<Result<Ranked>>),
    Count(oneshot::Sender<usize>),
    Update(Update),
    Stop,
}

/// The handle to the interactive worker.
#[derive(Clone)]
pub struct Interactive {
    sender: Sender<Message>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
}

/// The interactive worker's queue is full: answer 503.
#[derive(Debug)]
pub struct Busy;

impl Interactive {
    fn admit<T>(&self, message: impl FnOnce(oneshot::Sender<T>) -> Message) -> Result<oneshot::Receiver<T>, Busy> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        let (tx, rx) = oneshot::channel();
        if self.sender.send(message(tx)).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        Ok(rx)
    }

    /// Ranks the images `page.caller` may see for a text query.
    pub fn text(&self, query: Query, page: Page) -> Result<oneshot::Receiver<Result<Ranked>>, Busy> {
        self.admit(|tx| Message::Text(query, page, tx))
    }

    /// Ranks the images `page.caller` may see by cosine with an image's Fv.
    pub fn image(&self, query: ImageQuery, page: Page) -> Result<oneshot::Receiver<Result<Ranked>>, Busy> {
        self.admit(|tx| Message::Image(query, page, tx))
    }

    /// How many images are searchable.
    pub fn count(&self) -> Result<oneshot::Receiver<usize>, Busy> {
        self.admit(Message::Count)
    }

    /// Requests waiting for the worker.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Applies a change to the codes (never refused: updates come from committed writes).
    pub fn update(&self, update: Update) {
        let _ = self.sender.send(Message::Update(update));
    }

    /// Stops the worker after the messages already queued.
    pub fn stop(&self) {
        let _ = self.sender.send(Message::Stop);
    }
}

/// Opens the checkpoint for one worker thread.
fn open_model(checkpoint: &std::path::Path, device: Device) -> Result<TrainedModel> {
    TrainedModel::open(checkpoint, Opening::on(device))
}

/// Starts the interactive worker on `trained` (moved to its thread) with the ready codes.
pub fn start_interactive(
    trained: TrainedModel,
    codes: Vec<Coded>,
    queue: usize,
) -> Result<(Interactive, std::thread::JoinHandle<()>)> {
    let (sender, receiver) = channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    let counter = waiting.clone();
    let mut collection = Collection::new(trained.model, trained.vocab, codes)?;
    let thread =
        std::thread::Builder::new().name("amfmn-search".into()).spawn(move || collection.serve(receiver, &counter))?;
    Ok((Interactive { sender, waiting, queue: queue.max(1) }, thread))
}

/// The rows a ranking request may see: all (`visible` `None`) or those marked (`[N]` booleans),
/// how many, and how many best rows to rank (`None`: the page starts past the last one).
struct Scope {
    visible: Option<Tensor>,
    total_visible: usize,
    best: Option<usize>,
}

impl Scope {
    /// The page of the `best` rows (row, score), best first, as image ids.
    fn page(&self, page: &Page, best: Vec<(usize, f32)>, rows: &[(i64, i64, bool)]) -> Ranked {
        let hits = best.into_iter().skip(page.skip).map(|(row, score)| (rows[row].0, score)).collect();
        Ranked { total_visible: self.total_visible, hits }
    }
}

/// Batch sizes of the text searches answered lately: whether clients search concurrently.
#[derive(Default)]
struct Gathering {
    recent: std::collections::VecDeque<usize>,
}

/// How many batches [`Gathering`] remembers.
const GATHER_HISTORY: usize = 8;
/// A batch waits for another search while searches keep arriving at most this far apart...
const GATHER_QUIET: Duration = Duration::from_millis(2);
/// ...and for this long at most.
const GATHER_LIMIT: Duration = Duration::from_millis(8);

impl Gathering {
    /// Remembers the size of a batch of text searches (none: not a search batch).
    fn record(&mut self, searches: usize) {
        if searches > 0 {
            self.recent.push_back(searches);
            if self.recent.len() > GATHER_HISTORY {
                self.recent.pop_front();
            }
        }
    }

    /// A window to gather a batch in, when one of the recent batches held several searches;
    /// none for a lone client, whose searches then never wait.
    fn window(&self) -> Option<GatherWindow> {
        let concurrent = self.recent.iter().any(|&n| n > 1);
        concurrent.then(|| GatherWindow { limit: Instant::now() + GATHER_LIMIT })
    }
}

/// The time left to gather one batch in.
struct GatherWindow {
    limit: Instant,
}

impl GatherWindow {
    /// The next message if one arrives within [`GATHER_QUIET`] and before the limit.
    fn next<T>(&mut self, receiver: &Receiver<T>) -> Option<T> {
        let left = self.limit.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        receiver.recv_timeout(GATHER_QUIET.min(left)).ok()
    }
}

/// The searchable codes and, per row, the image's id, owner and visibility.
struct Collection {
    searcher: Searcher,
    rows: Vec<(i64, i64, bool)>,
}

impl Collection {
    fn new(model: Model, vocab: crate::text::Vocabulary, codes: Vec<Coded>) -> Result<Collection> {
        let searcher = empty_searcher(model, vocab).with_packed_text_encoder()?;
        let mut collection = Collection { searcher, rows: Vec::new() };
        collection.add(codes)?;
        Ok(collection)
    }

    /// Answers messages until stopped. Text searches waiting together are answered together:
    /// their texts go through the text encoder in one batch. Once recent batches held several
    /// searches (concurrent clients), a batch also waits for the searches still arriving (see
    /// [`Gathering`]), so that clients answered together stay together.
    fn serve(&mut self, receiver: Receiver<Message>, waiting: &AtomicUsize) {
        let mut gathering = Gathering::default();
        while let Ok(first) = receiver.recv() {
            let (mut texts, mut message, mut stop) = (Vec::new(), Some(first), false);
            let mut window = gathering.window();
            while let Some(next) = message.take() {
                match next {
                    Message::Text(query, page, reply) => texts.push((query, page, reply)),
                    Message::Stop => stop = true,
                    other => self.handle(other, waiting),
                }
                if texts.len() < TEXT_BATCH && !stop {
                    message = receiver.try_recv().ok();
                    if message.is_none() && !texts.is_empty() {
                        message = window.as_mut().and_then(|w| w.next(&receiver));
                    }
                }
            }
            gathering.record(texts.len());
            self.answer_texts(texts, waiting);
            if stop {
                return;
            }
        }
    }

    /// Answers text searches together: their texts encoded in one batch, their first
    /// (half-precision) scoring pass one product.
    fn answer_texts(&self, texts: Vec<(Query, Page, oneshot::Sender<Result<Ranked>>)>, waiting: &AtomicUsize) {
        let queries: Vec<Query> = texts.iter().map(|t| t.0.clone()).collect();
        let encoded = self.searcher.encode_all(&queries);
        let scopes: Vec<Scope> = texts.iter().map(|t| self.scope(&t.1)).collect();
        let asks: Vec<(&EncodedQuery, usize, Option<&Tensor>)> = encoded
            .iter()
            .zip(&scopes)
            .filter_map(|(e, w)| Some((e.as_ref().ok()?, w.best?, w.visible.as_ref())))
            .collect();
        let mut tops = self.searcher.top_encoded_all(&asks).into_iter();
        for (((_, page, reply), encoded), scope) in texts.into_iter().zip(encoded).zip(&scopes) {
            let ranked = match (encoded, scope.best) {
                (Err(e), _) => Err(e),
                (Ok(_), None) => Ok(scope.page(&page, Vec::new(), &self.rows)),
                (Ok(_), Some(_)) => {
                    tops.next().expect("a ranking per ask").map(|best| scope.page(&page, best, &self.rows))
                }
            };
            let _ = reply.send(ranked);
            waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Answers any other message.
    fn handle(&mut self, message: Message, waiting: &AtomicUsize) {
        match message {
            Message::Image(query, page, reply) => {
                let _ = reply.send(self.rank_image(query, &page));
            }
            Message::Count(reply) => {
                let _ = reply.send(self.rows.len());
            }
            Message::Update(update) => {
                if let Err(e) = self.apply(update) {
                    crate::report::warn(format!("the search thread could not update its codes: {e:#}"));
                }
                return;
            }
            Message::Text(..) | Message::Stop => unreachable!("answered by serve"),
        }
        waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Which rows `caller` may see (`None`: all, for an admin).
    fn visible(&self, caller: Option<&Caller>) -> Option<Tensor> {
        if caller.is_some_and(|c| c.admin) {
            return None;
        }
        let id = caller.map_or(-1, |c| c.id);
        let mask: Vec<bool> = self.rows.iter().map(|&(_, owner, public)| public || owner == id).collect();
        Some(Tensor::from_slice(&mask))
    }

    /// What `page` asks of the codes: the rows its caller may see and how many.
    fn scope(&self, page: &Page) -> Scope {
        let visible = self.visible(page.caller.as_ref());
        let total_visible = visible.as_ref().map_or(self.rows.len(), |v| v.sum(Kind::Int64).int64_value(&[]) as usize);
        let best = (total_visible > 0 && page.skip < total_visible).then_some(page.skip + page.take);
        Scope { visible, total_visible, best }
    }

    fn rank(
        &self,
        page: &Page,
        top: impl FnOnce(&Searcher, usize, Option<&Tensor>) -> Result<Vec<(usize, f32)>>,
    ) -> Result<Ranked> {
        let scope = self.scope(page);
        let best = match scope.best {
            Some(k) => top(&self.searcher, k, scope.visible.as_ref())?,
            None => Vec::new(),
        };
        Ok(scope.page(page, best, &self.rows))
    }

    fn rank_image(&self, query: ImageQuery, page: &Page) -> Result<Ranked> {
        let fv = match query {
            ImageQuery::Id(id) => match self.rows.iter().position(|r| r.0 == id) {
                Some(row) => self.searcher.image_fv(row),
                None => bail!("image {id} is not encoded yet"),
            },
            ImageQuery::Input(input) => {
                let side = self.searcher.model.image_size() as i64;
                let images = Tensor::from_slice(&input).view([1, 3, side, side]);
                crate::encode::image_codes(&self.searcher.model, &images).0
            }
        };
        self.rank(page, |s, k, v| Ok(s.image_top(&fv, k, v)))
    }

    fn apply(&mut self, update: Update) -> Result<()> {
        match update {
            Update::Add(codes) => self.add(codes),
            Update::Remove(id) => {
                if let Some(row) = self.rows.iter().position(|r| r.0 == id) {
                    self.rows.remove(row);
                    let keep: Vec<i64> = (0..self.rows.len() as i64 + 1).filter(|&r| r != row as i64).collect();
                    let keep = Tensor::from_slice(&keep);
                    let (fv, gate) = self.searcher.codes();
                    let (fv, gate) = (fv.index_select(0, &keep), gate.map(|g| g.index_select(0, &keep)));
                    self.searcher.set_codes(fv, gate);
                }
                Ok(())
            }
            Update::Visibility(id, public) => {
                self.rows.iter_mut().filter(|r| r.0 == id).for_each(|r| r.2 = public);
                Ok(())
            }
        }
    }

    fn add(&mut self, codes: Vec<Coded>) -> Result<()> {
        let codes: Vec<Coded> = codes.into_iter().filter(|c| !self.rows.iter().any(|r| r.0 == c.id)).collect();
        if codes.is_empty() {
            return Ok(());
        }
        let d = self.searcher.model.embed_dim();
        let stack = |values: Vec<f32>| Tensor::from_slice(&values).view([-1, d]);
        let new_fv = stack(codes.iter().flat_map(|c| c.fv.iter().copied()).collect());
        let new_gate: Option<Vec<f32>> =
            codes.iter().map(|c| c.gate.clone()).collect::<Option<Vec<_>>>().map(|g| g.concat());
        let (fv, gate) = self.searcher.codes();
        let device = fv.device();
        let fv = Tensor::cat(&[fv.shallow_clone(), new_fv.to_device(device)], 0);
        let gate = match (gate, new_gate) {
            (Some(g), Some(new)) => Some(Tensor::cat(&[g.shallow_clone(), stack(new).to_device(device)], 0)),
            (None, _) => None,
            (Some(_), None) => bail!("codes without gates for a soft-attention model"),
        };
        self.searcher.set_codes(fv, gate);
        self.rows.extend(codes.iter().map(|c| (c.id, c.owner, c.public)));
        Ok(())
    }
}

/// What the background worker needs.
pub struct Background {
    pub db: Arc<Database>,
    pub folder: DataFolder,
    pub interactive: Interactive,
    pub checkpoint_sha256: String,
    pub stop: Arc<AtomicBool>,
    /// The most pixels a scene may have.
    pub max_pixels: u64,
}

/// Starts the background worker; returns once its model is loaded.
pub fn start_background(
    checkpoint: &std::path::Path,
    device: Device,
    work: Background,
    wake: Receiver<()>,
) -> Result<std::thread::JoinHandle<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let checkpoint = checkpoint.to_owned();
    let thread = std::thread::Builder::new().name("amfmn-encode".into()).spawn(move || {
        match open_model(&checkpoint, device) {
            Ok(trained) => {
                let _ = ready_tx.send(Ok(()));
                work.run(&mut empty_searcher(trained.model, trained.vocab), &wake);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    })?;
    ready_rx.recv().map_err(|_| anyhow::anyhow!("the encoding thread stopped while loading the model"))??;
    Ok(thread)
}

/// A searcher of `model` holding no codes yet.
fn empty_searcher(model: Model, vocab: crate::text::Vocabulary) -> Searcher {
    let d = model.embed_dim();
    let soft = model.net.cross_attention_s.is_soft();
    let empty = || Tensor::zeros([0, d], (Kind::Float, Device::Cpu));
    Searcher::new(model, vocab, empty(), soft.then(empty))
}

/// A locate job stopped because it was cancelled or deleted.
#[derive(Debug)]
struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "cancelled")
    }
}

impl std::error::Error for Cancelled {}

impl Background {
    /// Encodes pending images first, then runs queued locate jobs, until stopped.
    fn run(&self, searcher: &mut Searcher, wake: &Receiver<()>) {
        while !self.stop.load(Ordering::SeqCst) {
            let worked =
                self.encode_batch(&searcher.model).and_then(|encoded| Ok(encoded || self.locate_next(searcher)?));
            match worked {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => crate::report::warn(format!("background work failed (retrying): {e:#}")),
            }
            match wake.recv_timeout(POLL) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
            }
        }
    }

    /// Encodes the oldest pending images; false when there were none.
    fn encode_batch(&self, model: &Model) -> Result<bool> {
        let pending = self.db.read(|db| images::pending(db, ENCODE_BATCH))?;
        if pending.is_empty() {
            return Ok(false);
        }
        let side = model.image_size();
        let len = 3 * side as usize * side as usize;
        let (mut inputs, mut decoded) = (Vec::new(), Vec::new());
        for (id, sha) in &pending {
            let mut input = vec![0f32; len];
            let read = self.folder.blob(sha).and_then(|blob| crate::encode::image_file_input(&blob, side, &mut input));
            match read {
                Ok(()) => {
                    inputs.extend(input);
                    decoded.push(*id);
                }
                Err(e) => images::mark_failed(&self.db.writer(), *id, &crate::fsutil::one_line(&format!("{e:#}")))?,
            }
        }
        let images = Tensor::from_slice(&inputs).view([decoded.len() as i64, 3, side as i64, side as i64]);
        let (fv, gate) = crate::encode::image_codes(model, &images);
        self.store(&decoded, &fv, gate.as_ref())?;
        Ok(true)
    }

    /// Stores the images' codes in one transaction and hands those still present to the
    /// interactive worker before the writer is released, so a visibility change made meanwhile
    /// reaches it after them.
    fn store(&self, ids: &[i64], fv: &Tensor, gate: Option<&Tensor>) -> Result<()> {
        let row = |t: &Tensor, k: usize| Vec::<f32>::try_from(t.get(k as i64).contiguous());
        let mut db = self.db.writer();
        let tx = db.transaction()?;
        let mut added = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            let (fv, gate) = (row(fv, k)?, gate.map(|g| row(g, k)).transpose()?);
            if images::mark_ready(&tx, id, &fv, gate.as_deref(), &self.checkpoint_sha256)? {
                let (owner, public) =
                    tx.query_row("SELECT owner, visibility = 'public' FROM images WHERE id = ?1", [id], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                added.push(Coded { id, owner, public, fv, gate });
            }
            crash_point("mid_encode");
        }
        tx.commit()?;
        self.interactive.update(Update::Add(added));
        Ok(())
    }

    /// Runs the oldest queued locate job; false when there is none.
    fn locate_next(&self, searcher: &mut Searcher) -> Result<bool> {
        let Some(job) = self.db.read(jobs::next_queued)? else { return Ok(false) };
        let outcome = self.locate(searcher, &job);
        let empty = |t: &Tensor| t.narrow(0, 0, 0);
        let (fv, gate) = searcher.codes();
        let (fv, gate) = (empty(fv), gate.map(empty));
        searcher.set_codes(fv, gate);
        if let Err(e) = outcome {
            if !e.is::<Cancelled>() {
                jobs::fail(&self.db.writer(), &job.id, &crate::fsutil::one_line(&format!("{e:#}")))?;
            }
            self.folder.remove_results(&job.id)?;
        }
        Ok(true)
    }

    /// Makes a job's map and pictures, recording progress batch by batch; stops at the first
    /// batch after the job was cancelled.
    fn locate(&self, searcher: &mut Searcher, job: &JobRow) -> Result<()> {
        let Some(image) = self.db.read(|db| images::get(db, job.image_id))? else { bail!(Cancelled) };
        let blob = self.folder.blob(&image.sha256)?;
        let settings = jobs::settings(&job.params, self.max_pixels)?;
        let rects = settings.scene_crops(&blob)?;
        if !jobs::start(&self.db.writer(), &job.id, rects.len())? {
            bail!(Cancelled);
        }
        let scene = crate::data::image_file::load_rgb_within(&blob, self.max_pixels)?;
        let mut done = 0;
        let batching = (settings.crop_resize, settings.batch_size);
        let codes = crate::locate::crops::encode_crops(&searcher.model, &scene, &rects, batching, |n| {
            done += n;
            if !jobs::progress(&self.db.writer(), &job.id, done)? {
                bail!(Cancelled);
            }
            crash_point("mid_locate");
            Ok(())
        })?;
        searcher.set_codes(codes.fv, codes.gate);
        let query = Query { sentence: job.params.query.clone(), keywords: job.params.keywords.clone() };
        let scores = Vec::<f32>::try_from(settings.scores(searcher, &query)?)?;
        let (height, width) = (scene.height() as usize, scene.width() as usize);
        let (map, _) = settings.probability_map(height, width, &rects, &scores);
        let centers = serde_json::json!(crate::locate::selo::attention_centres(&map));
        self.write_results(&job.id, scene, &map, &centers)?;
        let writer = self.db.writer();
        if !jobs::finish(&writer, &job.id, &centers)? {
            self.folder.remove_results(&job.id)?;
        }
        Ok(())
    }

    /// Writes a job's probability map, its JET picture, their overlay on the scene and a
    /// summary, each atomically.
    fn write_results(&self, job: &str, scene: image::RgbImage, map: &Gray, centers: &serde_json::Value) -> Result<()> {
        use crate::locate::render;
        let dir = self.folder.results(job)?;
        let gray = image::GrayImage::from_raw(map.width as u32, map.height as u32, map.pixels.clone())
            .ok_or_else(|| anyhow::anyhow!("a map of the wrong size"))?;
        let pictures: [(&str, image::DynamicImage); 3] = [
            ("prob.png", gray.into()),
            ("heat.png", render::jet_image(map).into()),
            ("overlay.png", render::overlay(scene, map, 0.3).into()),
        ];
        for (name, picture) in pictures {
            let path = dir.join(name);
            crate::fsutil::write_atomic(&path, &render::png_bytes(&picture, &path)?)?;
        }
        let summary =
            serde_json::json!({ "job": job, "centers": centers, "checkpoint_sha256": self.checkpoint_sha256 });
        crate::fsutil::write_atomic(&dir.join("summary.json"), summary.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_wait_for_more_searches_only_after_concurrent_ones() {
        let mut gathering = Gathering::default();
        assert!(gathering.window().is_none(), "a first search never waits");
        gathering.record(1);
        gathering.record(0);
        assert!(gathering.window().is_none(), "a lone client's searches never wait");
        gathering.record(3);
        assert!(gathering.window().is_some());
        (0..GATHER_HISTORY).for_each(|_| gathering.record(1));
        assert!(gathering.window().is_none(), "concurrency forgotten after {GATHER_HISTORY} lone batches");
    }

    #[test]
    fn a_gather_window_takes_what_arrives_and_ends() {
        let (sender, receiver) = channel();
        let mut window = Gathering { recent: [2].into() }.window().unwrap();
        sender.send(7).unwrap();
        assert_eq!(window.next(&receiver), Some(7));
        assert_eq!(window.next(&receiver), None, "a quiet queue ends the wait");
        sender.send(8).unwrap();
        std::thread::sleep(GATHER_LIMIT);
        assert_eq!(window.next(&receiver), None, "nothing more once the limit has passed");
    }
}
