//! Data half of the pipeline: the readers of real datasets (precomp files), fold splits, image
//! transforms and the loader. The synthetic set is made by [`crate::synthetic`].

pub mod dataset;
pub mod image_file;
pub mod loader;
pub mod precomp;
pub mod release;
pub mod split;
pub mod transforms;

pub use dataset::CaptionSet;
pub use loader::{shares, Images, Loader, LoaderConfig, PairBatch, Pixels};
pub use precomp::PrecompSplit;
pub use split::FoldSplit;
pub use transforms::Transform;
