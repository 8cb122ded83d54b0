//! `amfmn serve`: the retrieval system as an HTTP service. Users hold bearer tokens; images are
//! uploaded as bytes into a data folder (content-addressed originals, one SQLite database),
//! encoded in the background, and searched by sentence, keywords or image with the same scores
//! as `retrieve`, over the images each caller may see. Every acknowledged write survives a crash;
//! start-up repairs what one left.

pub mod api;
pub mod auth;
pub mod folder;
pub mod images;
pub mod import;
pub mod jobs;
pub mod store;
pub mod workers;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::Device;

use self::folder::DataFolder;
use self::store::Database;
use self::workers::{Background, Interactive};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data folder.
    pub data: PathBuf,
    /// The trained checkpoint both model threads load.
    pub checkpoint: PathBuf,
    pub device: Device,
    /// The largest upload, in bytes.
    pub max_upload: u64,
    /// The most pixels an uploaded image may have (from its header).
    pub max_pixels: u64,
    /// Search requests that may wait for the interactive worker.
    pub queue: usize,
    /// Anyone may search the public images without a token.
    pub public_read: bool,
    /// Accept a checkpoint other than the one the stored codes were made with, and encode every
    /// image again.
    pub reencode: bool,
    /// An index whose images are added at start-up.
    pub import: Option<import::Import>,
}

/// What start-up found and repaired.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Repairs {
    /// Files of interrupted uploads removed from `tmp/`.
    pub temporaries: usize,
    /// Originals no image refers to, removed.
    pub orphan_blobs: usize,
    /// Images still waiting to be encoded.
    pub pending: usize,
    /// Images whose codes were dropped for another checkpoint (`--reencode`).
    pub reencoded: usize,
    /// Images searchable at once.
    pub ready: usize,
    /// Locate jobs that were running, queued again from zero.
    pub requeued_jobs: usize,
    /// Result folders of no job, removed.
    pub orphan_results: usize,
}

impl std::fmt::Display for Repairs {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} images searchable, {} waiting to be encoded; removed {} unfinished upload(s) and {} unreferenced original(s)",
            self.ready, self.pending, self.temporaries, self.orphan_blobs
        )?;
        if self.requeued_jobs + self.orphan_results > 0 {
            write!(
                f,
                "; {} interrupted locate job(s) queued again, {} orphan result folder(s) removed",
                self.requeued_jobs, self.orphan_results
            )?;
        }
        if self.reencoded > 0 {
            write!(f, "; {} image(s) to encode again with the new checkpoint", self.reencoded)?;
        }
        Ok(())
    }
}

/// The running service: its shared state and its two model threads.
pub struct Service {
    pub state: Arc<api::AppState>,
    pub repairs: Repairs,
    /// What `--import-index` added.
    pub imported: Option<import::Imported>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Checks the database, records or checks the checkpoint it serves, and repairs what a crash
/// left: temporaries, unreferenced originals; pending images stay queued.
fn recover(db: &Database, folder: &DataFolder, config: &ServeConfig, checkpoint_sha: &str) -> Result<Repairs> {
    let writer = db.writer();
    store::check_integrity(&writer)?;
    let mut repairs = Repairs { temporaries: folder.sweep_temporaries()?, ..Repairs::default() };
    repairs.orphan_blobs = folder.collect_garbage(&images::referenced_blobs(&writer)?)?;
    let requeued = jobs::requeue_running(&writer)?;
    for job in &requeued {
        folder.remove_results(job)?;
    }
    repairs.requeued_jobs = requeued.len();
    repairs.orphan_results = folder.collect_results(&jobs::all_ids(&writer)?)?;
    match store::meta(&writer, "checkpoint_sha256")? {
        Some(stored) if stored != checkpoint_sha && !config.reencode => bail!(
            "{}: the images in {} were encoded with another checkpoint (SHA-256 {stored}); give --reencode to encode \
             them all again with this one",
            config.checkpoint.display(),
            config.data.display()
        ),
        Some(stored) if stored != checkpoint_sha => repairs.reencoded = images::forget_codes(&writer)?,
        _ => {}
    }
    store::set_meta(&writer, "checkpoint_sha256", checkpoint_sha)?;
    store::set_meta(&writer, "amfmn_version", env!("CARGO_PKG_VERSION"))?;
    for (status, count) in images::counts(&writer)? {
        match status.as_str() {
            "pending" => repairs.pending = count as usize,
            "ready" => repairs.ready = count as usize,
            _ => {}
        }
    }
    Ok(repairs)
}

impl Service {
    /// Opens the data folder, repairs it, loads the model (once per thread) and starts both threads.
    pub fn start(config: &ServeConfig) -> Result<Service> {
        let folder = DataFolder::open(&config.data)?;
        let db = Arc::new(Database::new(store::open(&folder.database(), true)?, &folder.database()));
        let opening = crate::checkpoint::Opening::on(config.device);
        let trained = crate::checkpoint::TrainedModel::open(&config.checkpoint, opening)?;
        let checkpoint_sha = trained.weights_sha256()?;
        let (embed_dim, image_size) = (trained.model.embed_dim(), trained.model.image_size());
        let soft = trained.model.net.cross_attention_s.is_soft();
        let repairs = recover(&db, &folder, config, &checkpoint_sha)?;
        store::set_meta(&db.writer(), "embed_dim", &embed_dim.to_string())?;
        let target = import::Target {
            checkpoint_sha256: checkpoint_sha.clone(),
            embed_dim,
            image_size,
            soft,
            max_upload: config.max_upload,
            max_pixels: config.max_pixels,
        };
        let imported = config.import.as_ref().map(|i| import::import_index(&db, &folder, i, &target)).transpose()?;
        let codes = db.read(|r| images::ready_codes(r, embed_dim as usize))?;
        if codes.iter().any(|c| c.gate.is_some() != soft) {
            bail!("the stored codes do not fit the checkpoint's attention type: give --reencode");
        }
        let (interactive, search_thread) = workers::start_interactive(trained, codes, config.queue)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (wake_tx, wake_rx) = std::sync::mpsc::channel();
        let background = Background {
            db: db.clone(),
            folder: folder.clone(),
            interactive: interactive.clone(),
            checkpoint_sha256: checkpoint_sha.clone(),
            stop: stop.clone(),
            max_pixels: config.max_pixels,
        };
        let encode_thread = workers::start_background(&config.checkpoint, config.device, background, wake_rx)?;
        let state = api::AppState::new(db, folder, interactive, wake_tx, config, checkpoint_sha, image_size);
        Ok(Service { state: Arc::new(state), repairs, imported, threads: vec![search_thread, encode_thread], stop })
    }

    /// The service's routes.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// The interactive worker's handle.
    pub fn interactive(&self) -> &Interactive {
        &self.state.interactive
    }

    /// Stops both threads (the background one after its current batch) and folds the
    /// write-ahead log into the database.
    pub fn shutdown(self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.state.interactive.stop();
        let _ = self.state.wake.lock().map(|w| w.send(()));
        for thread in self.threads {
            let _ = thread.join();
        }
        self.state.db.checkpoint()
    }
}
