//! Sample quality from feature vectors: the Fréchet distance between feature Gaussians (FID) and the
//! kernel inception distance (KID), against reference statistics; and prompt accuracy from class logits.

mod accuracy;
mod fid;
mod kid;
mod reference;

pub use accuracy::{Accuracy, accuracy, predicted_classes};
pub use fid::{FeatureStats, frechet_distance};
pub use kid::{Kid, kernel_inception_distance};
pub use reference::{ReferenceError, ReferenceStats};
